import CloudFoundry
import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import Supervisor

@Suite("Health check schedule")
struct HealthCheckScheduleTests {
    let schedule = HealthCheckSchedule()

    @Test("Startup: at spawn, then every 2 s from the spawn, until 60 s")
    func startup() {
        let spawn = Duration.seconds(100)
        #expect(schedule.nextStartup(spawnedAt: spawn, after: nil) == .attempt(at: spawn))
        #expect(schedule.nextStartup(spawnedAt: spawn, after: spawn) == .attempt(at: .seconds(102)))
        // An attempt that started late still keeps the 2 s grid.
        #expect(schedule.nextStartup(spawnedAt: spawn, after: .milliseconds(102_700)) == .attempt(at: .seconds(104)))
        #expect(schedule.nextStartup(spawnedAt: spawn, after: .seconds(156)) == .attempt(at: .seconds(158)))
        #expect(schedule.nextStartup(spawnedAt: spawn, after: .seconds(158)) == .timeout(at: .seconds(160)))
    }

    @Test("Liveness: every 30 s after the last check")
    func liveness() {
        #expect(schedule.nextLiveness(after: .seconds(5)) == .seconds(35))
        let fast = HealthCheckSchedule(startupInterval: .milliseconds(100), startupTimeout: .seconds(1), livenessInterval: .seconds(1))
        #expect(fast.nextStartup(spawnedAt: .zero, after: .milliseconds(900)) == .timeout(at: .seconds(1)))
    }

    @Test("Where the app listens is looked at from 5 s after the spawn (half a short timeout), then once a second")
    func portDiagnosis() {
        let spawn = Duration.seconds(100)
        #expect(!schedule.portDiagnosisDue(spawnedAt: spawn, attemptAt: .seconds(104), lastDiagnosis: nil))
        #expect(schedule.portDiagnosisDue(spawnedAt: spawn, attemptAt: .seconds(106), lastDiagnosis: nil))
        #expect(!schedule.portDiagnosisDue(spawnedAt: spawn, attemptAt: .milliseconds(106_500), lastDiagnosis: .seconds(106)))
        #expect(schedule.portDiagnosisDue(spawnedAt: spawn, attemptAt: .seconds(107), lastDiagnosis: .seconds(106)))
        let short = HealthCheckSchedule(startupInterval: .milliseconds(50), startupTimeout: .seconds(2))
        #expect(!short.portDiagnosisDue(spawnedAt: .zero, attemptAt: .milliseconds(950), lastDiagnosis: nil))
        #expect(short.portDiagnosisDue(spawnedAt: .zero, attemptAt: .seconds(1), lastDiagnosis: nil))
    }

    @Test("Readiness: at once when healthy, then every interval (5 s by default)")
    func readiness() {
        #expect(schedule.nextReadiness(healthyAt: .seconds(3), after: nil) == .seconds(3))
        #expect(schedule.nextReadiness(healthyAt: .seconds(3), after: .seconds(3)) == .seconds(8))
        var config = ClusterConfig()
        config.readinessCheck.interval = .milliseconds(200)
        #expect(HealthCheckSchedule(config).nextReadiness(healthyAt: .zero, after: .seconds(1)) == .milliseconds(1200))
    }
}

@Suite("Scale plans")
struct ScalePlanTests {
    @Test("Parses N, +k and -k")
    func parse() {
        #expect(ScaleRequest("5") == .absolute(5))
        #expect(ScaleRequest("+2") == .relative(2))
        #expect(ScaleRequest("-1") == .relative(-1))
        #expect(ScaleRequest(" 3 ") == .absolute(3))
        #expect(ScaleRequest("five") == nil)
        #expect(ScaleRequest("") == nil)
        #expect(ScaleRequest("+") == nil)
        #expect(ScaleRequest("++1") == nil)
        #expect(ScaleRequest("2.5") == nil)
        #expect(ScaleRequest("-1").map { $0.target(current: 3) } == 2)
        #expect(ScaleRequest("+2").map { $0.target(current: 3) } == 5)
        // Beyond an Int: no count (this overflowed and crashed the running supervisor).
        #expect(ScaleRequest("+9223372036854775807")?.target(current: 3) == nil)
        #expect(ScaleRequest("+9223372036854775807")?.target(current: 0) == Int.max)
        #expect(ScaleRequest("-9223372036854775807")?.target(current: 3) == 3 - Int.max)
        #expect(ScaleRequest("-9223372036854775808") == nil)
        #expect(ScaleRequest("99999999999999999999") == nil)
        #expect(ScaleRequest.decide("+2", current: 3) == .success(5))
        #expect(ScaleRequest.decide("0", current: 3) == .success(0))
        #expect(
            ScaleRequest.decide("+9223372036854775807", current: 3)
                == .failure(.init(message: "cannot scale from 3 by +9223372036854775807 instances: the count must be 0 to 100")))
        #expect(ScaleRequest.decide("-4", current: 3) == .failure(.init(message: "cannot scale from 3 to -1 instances: the count must be 0 to 100")))
        #expect(ScaleRequest.decide(nil, current: 3) == .failure(.init(message: "cannot scale to '': give a count (5), or a change (+2, -1)")))
    }

    @Test("Scale-down removes the highest indices first")
    func down() {
        let plan = ScalePlan(current: [0, 1, 2, 3, 4], target: 2)
        #expect(plan.remove == [4, 3, 2])
        #expect(plan.add.isEmpty)
    }

    @Test("Scale-up adds the missing lowest indices")
    func up() {
        #expect(ScalePlan(current: [0, 1, 2], target: 5).add == [3, 4])
        #expect(ScalePlan(current: [0, 2], target: 3).add == [1])
        #expect(ScalePlan(current: [0, 1, 2], target: 3).isEmpty)
        #expect(ScalePlan(current: [0, 1], target: 0).remove == [1, 0])
    }
}

@Suite("Aggregated log lines")
struct LogLineTests {
    @Test("HH:MM:SS name.N | line, padded")
    func format() {
        let line = LogLine(time: LogLine.clock(hour: 9, minute: 5, second: 3), source: "chat.1", index: 1, text: "listening")
        #expect(line.formatted(width: 7) == "09:05:03 chat.1  | listening")
        #expect(line.formatted() == "09:05:03 chat.1 | listening")
        let coloured = line.coloured(width: 7)
        #expect(coloured.contains("\u{1B}["))
        #expect(coloured.hasSuffix(" listening"))
    }

    @Test("Each instance has its own colour; the cluster's own lines are bold")
    func colours() {
        #expect(LogColour.for(source: "chat.0", index: 0) != LogColour.for(source: "chat.1", index: 1))
        #expect(LogColour.for(source: "cluster", index: 1) == "\u{1B}[1m")
    }

    @Test("Lines are split on LF and CRLF; overlong ones are cut")
    func splitter() {
        var splitter = LineSplitter(maximum: 4)
        let bytes = Array("ab\r\ncdefgh\nij".utf8)
        let lines = bytes.withUnsafeBytes { splitter.feed($0) }
        #expect(lines == ["ab", "cdef", "gh"])
        #expect(splitter.finish() == "ij")
        #expect(splitter.finish() == nil)
    }

    @Test("The log hub keeps recent lines per instance and feeds followers")
    func hub() async {
        let hub = LogHub(logFile: nil, echo: false, capacity: 3)
        let stream = hub.follow(index: 1)
        hub.emit(source: "chat.0", index: 0, "a")
        hub.emit(source: "chat.1", index: 1, "b")
        hub.emit(source: "cluster", "c")
        hub.emit(source: "chat.1", index: 1, "d")
        #expect(hub.recent().map(\.text) == ["b", "c", "d"])
        #expect(hub.recent(index: 1).map(\.text) == ["b", "d"])
        #expect(hub.recent(limit: 1).map(\.text) == ["d"])
        hub.close()
        var followed: [String] = []
        for await line in stream { followed.append(line.text) }
        #expect(followed == ["b", "d"])
    }
}

@Suite("Log file rotation")
struct LogRotationTests {
    @Test("A write that would pass the limit rotates first; an empty file takes any write")
    func rule() {
        var rotation = LogRotation(maxBytes: 100)
        let decisions = [rotation.append(60), rotation.append(40), rotation.append(1)]
        #expect(decisions == [false, false, true])
        #expect(rotation.currentBytes == 1)
        var empty = LogRotation(maxBytes: 10)
        let emptyDecisions = [empty.append(500), empty.append(1)]
        #expect(emptyDecisions == [false, true])
        var resumed = LogRotation(maxBytes: 100, currentBytes: 95)
        let resumedDecision = resumed.append(10)
        #expect(resumedDecision)
    }

    @Test("The cluster log keeps the newest lines in cluster.log and the previous ones in cluster.log.1")
    func files() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("stickylab-logs-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("cluster.log")
        let hub = LogHub(logFile: file, echo: false, maxFileBytes: 2_000)
        for index in 0..<200 { hub.emit(source: "chat.0", index: 0, "line \(index)") }
        hub.close()
        let current = try String(contentsOf: file, encoding: .utf8)
        let previous = try String(contentsOf: file.appendingPathExtension("1"), encoding: .utf8)
        #expect(current.utf8.count <= 2_000)
        #expect(previous.utf8.count <= 2_000)
        #expect(current.hasSuffix("line 199\n"))
        #expect(!previous.isEmpty)
        // Nothing is lost across the rotation: the previous file ends where the current one begins.
        let last = try #require(previous.split(separator: "\n").last)
        let first = try #require(current.split(separator: "\n").first)
        let lastNumber = try #require(Int(last.split(separator: " ").last ?? ""))
        let firstNumber = try #require(Int(first.split(separator: " ").last ?? ""))
        #expect(firstNumber == lastNumber + 1)
    }
}

@Suite("Leftovers of a killed cluster")
struct LeftoversTests {
    let record = PidRecord(
        pid: 100, startTime: 5000, runID: "run-a", children: [PidRecord.Child(name: "chat.0#1", pid: 200, startTime: 6000)])

    func process(_ pid: Int32, group: Int32? = nil, start: UInt64, marker: String? = nil) -> Leftovers.Process {
        Leftovers.Process(pid: pid, processGroup: group ?? pid, startTime: start, marker: marker, command: "p\(pid)")
    }

    @Test("A live supervisor is never touched")
    func alive() {
        let leftovers = Leftovers(record: record, table: [process(100, start: 5000), process(200, start: 6000)], selfPID: 1)
        #expect(leftovers.supervisorAlive)
        #expect(leftovers.processes.isEmpty)
    }

    @Test("After kill -9: the marked and the recorded processes, nothing else")
    func dead() {
        let table = [
            process(100, start: 9999),  // the pid was reused by something else
            process(200, start: 6000),  // recorded child, same start time
            process(201, group: 200, start: 6001, marker: "run-a"),  // its grandchild, marked
            process(300, start: 7000, marker: "run-b"),  // another cluster's process
            process(400, start: 6000),  // unrelated, same start time but another pid
            process(500, start: 8000, marker: "run-a"),  // ourselves
        ]
        let leftovers = Leftovers(record: record, table: table, selfPID: 500)
        #expect(!leftovers.supervisorAlive)
        #expect(leftovers.processes.map(\.pid) == [200, 201])
        #expect(leftovers.processGroups == [200])
    }

    @Test("A recorded pid reused by another process is not ours")
    func reused() {
        let leftovers = Leftovers(record: record, table: [process(200, start: 6500)], selfPID: 1)
        #expect(leftovers.processes.isEmpty)
        #expect(Leftovers(record: nil, table: [process(200, start: 6000)], selfPID: 1).processes.isEmpty)
    }

    @Test("Reads /proc/PID/stat, even with spaces and parentheses in the command")
    func stat() {
        let line = "1234 (my (odd) app) S 1 1230 1230 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615"
        let parsed = ProcessTable.parseStat(line)
        #expect(parsed?.command == "my (odd) app")
        #expect(parsed?.processGroup == 1230)
        #expect(parsed?.startTime == 987654)
        #expect(parsed?.zombie == false)
        #expect(ProcessTable.parseStat(line.replacingOccurrences(of: ") S ", with: ") Z "))?.zombie == true)
        #expect(ProcessTable.parseStat("garbage") == nil)
        let own = ProcessTable.stat(getpid())
        #expect(own?.startTime ?? 0 > 0)
    }
}

@Suite("Instance environment and registration")
struct InstanceLaunchTests {
    let launch = InstanceLaunch(
        appName: "chat", appGUID: "0b5e2c1e-0000-4000-8000-000000000001", version: "v1", routes: ["localhost", "127.0.0.1"], memoryMB: 256,
        redisURL: "redis://127.0.0.1:6399", redisBinding: .redis(host: "127.0.0.1", port: 6399, password: nil), sessionSecret: "secret",
        runID: "run-1", binDirectory: "/opt/bin", baseEnvironment: ["PATH": "/usr/bin", "HOME": "/root", "PORT": "1", "CF_INSTANCE_GUID": "stale"],
        extraEnvironment: ["FEATURE": "on"])

    @Test("Cloud Foundry's variables, readable back by an app")
    func environment() throws {
        let guid = InstanceGUID()
        let environment = launch.environment(index: 2, guid: guid, port: 4321)
        #expect(environment["PORT"] == "4321")
        #expect(environment["VCAP_APP_PORT"] == "4321")
        #expect(environment["VCAP_APP_HOST"] == "0.0.0.0")
        #expect(environment["INSTANCE_INDEX"] == "2")
        #expect(environment["CF_INSTANCE_INDEX"] == "2")
        #expect(environment["CF_INSTANCE_GUID"] == guid.value)
        #expect(environment["CF_INSTANCE_IP"] == "127.0.0.1")
        #expect(environment["CF_INSTANCE_PORT"] == "4321")
        #expect(environment["CF_INSTANCE_ADDR"] == "127.0.0.1:4321")
        #expect(environment["MEMORY_LIMIT"] == "256m")
        #expect(environment["SESSION_SECRET"] == "secret")
        #expect(environment["REDIS_URL"] == "redis://127.0.0.1:6399")
        #expect(environment["FEATURE"] == "on")
        #expect(environment["HOME"] == "/root")
        #expect(environment["PATH"] == "/opt/bin:/usr/bin")
        #expect(environment[PidRecord.markerVariable] == "run-1")
        let app = try AppEnvironment(environment)
        #expect(app.port == 4321)
        #expect(app.instanceIndex == 2)
        #expect(app.instanceGUID == guid.value)
        #expect(app.application?.applicationName == "chat")
        #expect(app.application?.uris == ["localhost", "127.0.0.1"])
        #expect(app.application?.limits.mem == 256)
        #expect(app.services?.redisBinding?.redisURL == "redis://127.0.0.1:6399")
    }

    @Test("Through its relay, an instance's REDIS_URL and binding both name the relay's port")
    func relayedRedis() throws {
        let environment = launch.environment(index: 1, guid: InstanceGUID(), port: 4321, redisRelayPort: 7001)
        #expect(environment["REDIS_URL"] == "redis://127.0.0.1:7001")
        let app = try AppEnvironment(environment)
        #expect(app.services?.redisBinding?.redisURL == "redis://127.0.0.1:7001")
    }

    @Test("An external Redis's URL keeps its user, password and database through the relay, in REDIS_URL and the binding")
    func relayedExternalRedis() throws {
        var external = launch
        external.redisURL = "redis://app:p%40ss@redis.example:6380/3?protocol=3"
        external.redisBinding = .redis(name: "cache", host: "redis.example", port: 6380, password: "p@ss", uri: external.redisURL)
        #expect(external.redisEndpoint?.host == "redis.example")
        #expect(external.redisEndpoint?.port == 6380)
        let direct = try AppEnvironment(external.environment(index: 0, guid: InstanceGUID(), port: 4321))
        #expect(direct.services?.redisBinding?.redisURL == "redis://app:p%40ss@redis.example:6380/3?protocol=3")
        let environment = external.environment(index: 0, guid: InstanceGUID(), port: 4321, redisRelayPort: 7001)
        #expect(environment["REDIS_URL"] == "redis://app:p%40ss@127.0.0.1:7001/3?protocol=3")
        let binding = try #require(try AppEnvironment(environment).services?.redisBinding)
        #expect(binding.name == "cache")
        #expect(binding.redisURL == "redis://app:p%40ss@127.0.0.1:7001/3?protocol=3")
        #expect(binding.credentials.host == "127.0.0.1" && binding.credentials.port == 7001 && binding.credentials.password == "p@ss")
    }

    @Test("A helper inherits no instance variables from the shell")
    func helper() {
        let environment = launch.helperEnvironment()
        #expect(environment["PORT"] == nil)
        #expect(environment["CF_INSTANCE_GUID"] == nil)
        #expect(environment[PidRecord.markerVariable] == "run-1")
    }

    @Test("The registration names the instance as gorouter's register message does")
    func registration() throws {
        let guid = InstanceGUID()
        let registration = launch.registration(index: 1, guid: guid, port: 4000)
        #expect(registration.host == "127.0.0.1")
        #expect(registration.port == 4000)
        #expect(registration.uris == ["localhost", "127.0.0.1"])
        #expect(registration.privateInstanceID == guid.value)
        #expect(registration.privateInstanceIndex == "1")
        #expect(registration.app == launch.appGUID)
        let json = try #require(try JSONSerialization.jsonObject(with: registration.json()) as? [String: Any])
        #expect(json["private_instance_id"] as? String == guid.value)
    }

    @Test("Command lookup: plain programs are checked, shell syntax is left alone")
    func lookup() {
        #expect(CommandLookup.program(of: "chat-node --flag") == "chat-node")
        #expect(CommandLookup.program(of: "  python3 -m http.server $PORT") == "python3")
        #expect(CommandLookup.program(of: "PORT=1 node app.js") == nil)
        #expect(CommandLookup.program(of: "exec node app.js") == nil)
        // The shell runs builtins itself: `ulimit -n 4096 && app` was refused as "'ulimit' is not on PATH".
        for command in ["ulimit -n 4096 && node app.js", "export X=1; node app.js", "set -e; node app.js", "exit 3", "if true; then node; fi"] {
            #expect(CommandLookup.program(of: command) == nil, "\(command)")
        }
        #expect(CommandLookup.resolve("sh", path: "/nonexistent:/bin:/usr/bin") != nil)
        #expect(CommandLookup.resolve("surely-not-a-program", path: "/bin:/usr/bin") == nil)
        #expect(CommandLookup.resolve("/bin/sh", path: "") == "/bin/sh")
    }
}

@Suite("Proxy counters and the status table")
struct StatusTests {
    @Test("GET /routes: one set of counters per instance guid, however many routes list it")
    func parseRoutes() {
        let json = """
            {"localhost": [{"address": "127.0.0.1:4000", "private_instance_id": "g1", "in_flight": 2, "requests_total": 10, "open_tunnels": 3},
                           {"address": "127.0.0.1:4001", "private_instance_id": "g2", "in_flight": 0, "requests_total": 4, "open_tunnels": 0}],
             "127.0.0.1": {"endpoints": [{"private_instance_id": "g1", "in_flight": 2, "requests_total": 11, "open_tunnels": 3}]}}
            """
        let stats = EndpointStats.parse(routesJSON: Array(json.utf8))
        #expect(stats["g1"] == EndpointStats(inFlight: 2, requestsTotal: 11, openTunnels: 3))
        #expect(stats["g1"]?.connections == 5)
        #expect(stats["g2"]?.requestsTotal == 4)
        #expect(EndpointStats.parse(routesJSON: Array("not json".utf8)).isEmpty)
    }

    @Test("The table has a row per instance and says why a crashed one crashed")
    func table() {
        let status = ClusterStatus(
            app: "chat", command: "chat-node", ready: false, desiredInstances: 2, affinity: "cf", restartPolicy: "diego", timeScale: 1,
            proxy: .init(state: "running", pid: 10, url: "http://localhost:8080/"), redis: .init(state: "running", url: "redis://127.0.0.1:1"),
            instances: [
                .init(
                    index: 0, guid: "g0", pid: 11, port: 4000, state: .running, routable: false, uptimeSeconds: 65, connections: 4,
                    requestsPerSecond: 2.5, frozenSeconds: 12),
                .init(index: 1, guid: "g1", state: .crashed, crashes: 3, nextRestartSeconds: 29, lastCrash: "exited with code 1"),
            ])
        let text = status.table()
        #expect(text.contains("STATE                             ROUTABLE"))
        #expect(text.contains("running, frozen (resumes in 12s)  no"))
        #expect(text.contains("1/2 running, 1 not routable (readiness check failing) (not ready)"))
        #expect(text.contains("running, frozen (resumes in 12s)"))
        #expect(text.contains("INDEX  GUID"))
        #expect(text.contains("1m05s"))
        #expect(text.contains("in 29s"))
        #expect(text.contains("2.5"))
        #expect(text.contains("chat.1 last crash: exited with code 1"))
    }

    @Test("Control messages round-trip as JSON")
    func protocolRoundTrip() throws {
        let request = ControlRequest(command: .restart, all: true, rolling: true, wait: true)
        let decoded = try JSONDecoder().decode(ControlRequest.self, from: JSONEncoder().encode(request))
        #expect(decoded == request)
        let freeze = ControlRequest(command: .redis, action: "freeze", duration: "10s")
        #expect(try JSONDecoder().decode(ControlRequest.self, from: JSONEncoder().encode(freeze)) == freeze)
        let response = ControlResponse.failure("no instance 7: valid indices are 0, 1, 2")
        #expect(try JSONDecoder().decode(ControlResponse.self, from: JSONEncoder().encode(response)) == response)
    }
}

@Suite("Stop signals")
struct StopSignalsTests {
    @Test("The first signal stops gracefully, its twin is ignored, a later one kills everything")
    func decisions() {
        var stops = StopSignals(echo: .milliseconds(250))
        #expect(stops.received(at: .seconds(10)) == .stop)
        #expect(stops.received(at: .seconds(10) + .microseconds(40)) == .ignoreEcho)
        #expect(stops.received(at: .seconds(10) + .milliseconds(249)) == .ignoreEcho)
        #expect(stops.received(at: .seconds(10) + .milliseconds(250)) == .killEverything)
        #expect(stops.received(at: .seconds(30)) == .killEverything)
    }
}

@Suite("Shell commands")
struct ShellCommandTests {
    @Test("A simple command is exec'd so that the app itself gets the signals")
    func simple() {
        #expect(ShellCommand.execPrefixed("chat-node") == "exec chat-node")
        #expect(ShellCommand.execPrefixed("python3 -m http.server $PORT --bind 127.0.0.1") == "exec python3 -m http.server $PORT --bind 127.0.0.1")
        #expect(ShellCommand.execPrefixed("  node app.js  ") == "exec node app.js")
        #expect(ShellCommand.execPrefixed("DEBUG=1 LEVEL=x node app.js") == "DEBUG=1 LEVEL=x exec node app.js")
    }

    @Test("A compound command is left to the shell")
    func compound() {
        for command in ["cd app && node index.js", "a; b", "a | b", "a &", "(a)", "exec node", "if true; then a; fi", "X=\"a b\" node", "FOO=1"] {
            #expect(ShellCommand.execPrefixed(command) == command, "\(command)")
        }
    }
}

@Suite("Where an app listens (/proc/net/tcp)")
struct ListeningPortsTests {
    // Lines as the kernel prints them: a listener on 127.0.0.1:3000 (inode 256912), one on
    // 0.0.0.0:2024, an established connection (state 01), and a listener whose inode is 0 (not ours).
    let tcp = """
          sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 256912 1 00000000150f3b34 100 0 0 10 0
           1: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1056 1 00000000ecb6ee1d 100 0 0 10 0
           2: 0100007F:A1B2 0100007F:0BB8 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1
           3: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 100 0 0 10 0
        """
    // ::1 port 8080, :: port 9090, and ::ffff:127.0.0.1 port 80.
    let tcp6 = """
          sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
           1: 00000000000000000000000000000000:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0
           2: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
        garbage
        """

    @Test("LISTEN sockets by inode, IPv4 and IPv6; connections and unparsable lines skipped")
    func parse() {
        #expect(
            ListeningPorts.parse(procNetTCP: tcp) == [
                256_912: .init(address: "127.0.0.1", port: 3000), 1056: .init(address: "0.0.0.0", port: 2024),
            ])
        #expect(
            ListeningPorts.parse(procNetTCP: tcp6) == [
                4242: .init(address: "::1", port: 8080), 4343: .init(address: "::", port: 9090),
                4444: .init(address: "127.0.0.1", port: 80),
            ])
        #expect(ListeningPorts.parse(procNetTCP: "").isEmpty)
    }

    @Test("Socket inodes from /proc/PID/fd links")
    func inodes() {
        #expect(ListeningPorts.socketInode(linkTarget: "socket:[256912]") == 256_912)
        #expect(ListeningPorts.socketInode(linkTarget: "pipe:[12]") == nil)
        #expect(ListeningPorts.socketInode(linkTarget: "/dev/null") == nil)
        #expect(ListeningPorts.socketInode(linkTarget: "socket:[x]") == nil)
    }

    @Test("A hint only when the app listens, and not where the check connects")
    func hint() {
        let own = ListeningPorts.Listener(address: "127.0.0.1", port: 3000)
        #expect(ListeningPorts.hint(instance: "web.1", port: 41000, listeners: []) == nil)
        #expect(ListeningPorts.hint(instance: "web.1", port: 41000, listeners: [.init(address: "127.0.0.1", port: 41000), own]) == nil)
        #expect(ListeningPorts.hint(instance: "web.1", port: 41000, listeners: [.init(address: "0.0.0.0", port: 41000)]) == nil)
        #expect(ListeningPorts.hint(instance: "web.1", port: 41000, listeners: [.init(address: "::", port: 41000)]) == nil)
        let wrongPort = ListeningPorts.hint(instance: "web.1", port: 41000, listeners: [own, .init(address: "::1", port: 9090), own])
        #expect(wrongPort?.hasPrefix("web.1 listens on 127.0.0.1:3000, [::1]:9090 but not on its port 41000 ($PORT)") == true)
        #expect(wrongPort?.contains("make the app listen on the port in $PORT") == true)
        let wrongAddress = ListeningPorts.hint(instance: "web.1", port: 41000, listeners: [.init(address: "127.0.0.2", port: 41000)])
        #expect(wrongAddress?.hasPrefix("web.1 listens on 127.0.0.2:41000, which the health check cannot reach") == true)
    }

    @Test("An address in use, in the words of Node, Python, Go and Java, and what is said about it")
    func addressInUse() {
        for line in [
            "Error: listen EADDRINUSE: address already in use :::3000", "OSError: [Errno 98] Address already in use",
            "listen tcp :3000: bind: address already in use", "java.net.BindException: Address already in use",
            "Starting inspector on 127.0.0.1:9229 failed: address already in use",
        ] {
            #expect(ListeningPorts.addressInUseLine(in: ["Traceback", line, "exiting"]) == line)
        }
        #expect(ListeningPorts.addressInUseLine(in: ["Error: Cannot find module 'express'", "exiting"]) == nil)
        let others: [(name: String, listeners: [ListeningPorts.Listener])] = [
            ("web.2", []), ("web.0", [.init(address: "127.0.0.1", port: 9229), .init(address: "0.0.0.0", port: 3000)]),
        ]
        let hint = ListeningPorts.addressInUseHint(instance: "web.1", port: 41000, line: "Error: listen EADDRINUSE", others: others)
        #expect(
            hint
                == "web.1 is exiting after saying that an address is already in use (\"Error: listen EADDRINUSE\"): all instances run on "
                + "this one machine, each with a port of its own in $PORT (41000 for this run of web.1), so an app that listens on a "
                + "fixed port (its own, or a second one such as a debugger's or a metrics port) collides with its other instances, "
                + "and in a rolling restart with the old process it replaces (listening on ports other than their $PORT: web.0 on 0.0.0.0:3000, 127.0.0.1:9229). Make the app listen only on "
                + "the port in $PORT, or give each instance its own port for anything else")
        let alone = ListeningPorts.addressInUseHint(instance: "web.1", port: 41000, line: String(repeating: "x", count: 300), others: [])
        #expect(alone.contains("(\"\(String(repeating: "x", count: 200))...\")") && !alone.contains("listening on ports other"))
    }

    @Test("This test process's own listener is found through its process group")
    func ownProcessGroup() async throws {
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(listener.localAddress?.port)
        let found = ListeningPorts.ofProcessGroup(getpgrp())
        try await listener.close()
        #expect(found.contains(.init(address: "127.0.0.1", port: port)))
    }
}

@Suite("What clients got through the proxy (its Prometheus counters)")
struct ProxyTrafficTests {
    let metrics = """
        # HELP sticky_proxy_responses_total Responses sent to clients, by status class
        # TYPE sticky_proxy_responses_total counter
        sticky_proxy_responses_total{code="1xx"} 0
        sticky_proxy_responses_total{code="2xx"} 1234567
        sticky_proxy_responses_total{code="5xx"} 7
        sticky_proxy_routing_decisions_total{decision="sticky_hit"} 1200000
        sticky_proxy_routing_decisions_total{decision="fallback_instance_gone"} 31
        sticky_proxy_router_errors_total{error="endpoint_failure"} 5
        sticky_proxy_router_errors_total{error="Connection Limit Reached"} 2
        sticky_proxy_backend_failures_total 9
        sticky_proxy_retries_total 4
        sticky_proxy_request_duration_seconds_bucket{le="0.001"} 100
        sticky_proxy_routes 1
        """

    @Test("Counters read from sticky-proxy's /metrics; other series ignored")
    func parse() {
        let traffic = ProxyTraffic.parse(prometheus: metrics)
        #expect(traffic.responses == ["1xx": 0, "2xx": 1_234_567, "5xx": 7])
        #expect(traffic.decisions == ["sticky_hit": 1_200_000, "fallback_instance_gone": 31])
        #expect(traffic.routerErrors == ["endpoint_failure": 5, "Connection Limit Reached": 2])
        #expect(traffic.retries == 4 && traffic.backendFailures == 9)
        #expect(traffic.responseCount == 1_234_574 && traffic.serverErrors == 7)
        #expect(ProxyTraffic.parse(prometheus: "garbage\n{}\n") == ProxyTraffic())
    }

    @Test("Between two readings; a proxy restarted meanwhile counts from zero")
    func since() {
        let before = ProxyTraffic(responses: ["2xx": 10, "5xx": 1], retries: 3)
        let after = ProxyTraffic(responses: ["2xx": 25, "5xx": 1, "4xx": 2], retries: 5)
        #expect(after.since(before) == ProxyTraffic(responses: ["2xx": 15, "5xx": 0, "4xx": 2], retries: 2))
        let restarted = ProxyTraffic(responses: ["2xx": 4], retries: 1)
        #expect(restarted.since(before) == ProxyTraffic(responses: ["2xx": 4], retries: 1))
    }

    @Test("One line, with thousands grouped and zero counts left out")
    func summary() {
        #expect(
            ProxyTraffic.parse(prometheus: metrics).summary
                == "1,234,574 responses (2xx 1,234,567, 5xx 7); router errors: Connection Limit Reached 2, endpoint_failure 5; "
                + "4 retried on another instance; routing: fallback_instance_gone 31, sticky_hit 1,200,000")
        #expect(ProxyTraffic().summary == "0 responses; no router errors; 0 retried on another instance")
    }
}
