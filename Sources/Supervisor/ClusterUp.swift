import CloudFoundry
import Foundation
import RedisClient

/// `cluster up`: checks everything that can be checked before starting anything (so that mistakes
/// give one clear message, not a crash loop), cleans up what a killed predecessor left, then runs the
/// supervisor until it is stopped.
public enum ClusterUp {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Runs the cluster in the foreground; returns when it has been stopped. Throws before starting
    /// anything when the configuration or the machine does not allow it to start.
    public static func run(config: ClusterConfig, binDirectory: String = CommandLookup.executableDirectory(), echo: Bool = true) async throws {
        signal(SIGPIPE, SIG_IGN)
        try config.validate()
        let stateDirectory = StateDirectory(path: config.stateDirectory)
        try stateDirectory.prepare()
        let logs = LogHub(logFile: stateDirectory.logFile, echo: echo)
        defer { logs.close() }
        logs.reserveWidth(for: "\(config.app.name).\(max(0, config.app.instances - 1))")

        try await cleanUpLeftovers(stateDirectory, logs: logs)

        let base = ProcessInfo.processInfo.environment
        let searchPath = binDirectory + ":" + (base["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
        if let program = CommandLookup.program(of: config.app.command), CommandLookup.resolve(program, path: searchPath) == nil {
            throw Failure(
                "the app command '\(config.app.command)' cannot start: '\(program)' is not in \(binDirectory) nor on PATH. "
                    + (program == "chat-node" ? "Build it first (`swift build`), or " : "") + "set app.command in the config or pass --app \"CMD\"")
        }

        var proxyCommand: String?
        var proxyAdmin: ProxyAdmin?
        var proxyPort = config.proxy.port
        if config.proxy.enabled {
            let program = CommandLookup.program(of: config.proxy.command)
            if let program, CommandLookup.resolve(program, path: searchPath) == nil {
                logs.emit(
                    source: "cluster",
                    "\(program) is not in \(binDirectory) nor on PATH: running WITHOUT the proxy (each instance answers on its own port). "
                        + "Build it (`swift build`) to get the proxy")
            } else {
                if proxyPort == 0 {
                    proxyPort = try Probe.freePort()
                } else if !Probe.isFree(port: proxyPort) {
                    throw Failure(
                        "port \(proxyPort) on 127.0.0.1 is already in use; pass --port P (or --port 0 for a free one; with make run: make run RUN_ARGS='--port 0')"
                    )
                }
                proxyCommand = config.proxy.command
                var generator = SystemRandomNumberGenerator()
                let token = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
                proxyAdmin = ProxyAdmin(port: try Probe.freePort(), token: token)
            }
        }

        var redisURL: String
        var redisPort: Int?
        var redisBinding: ServiceBinding
        var redisCommand: String?
        if let url = config.redis.url {
            let parsed: RedisConfiguration
            do {
                parsed = try RedisConfiguration(url: url)
            } catch {
                throw Failure("--redis-url: \(error)")
            }
            redisURL = url
            redisBinding = .redis(host: parsed.host, port: parsed.port, password: parsed.password)
        } else {
            guard let program = CommandLookup.program(of: config.redis.command), CommandLookup.resolve(program, path: searchPath) != nil else {
                throw Failure(
                    "redis-server is not installed (looked for '\(config.redis.command)'); run `make deps`, or pass --redis-url for an existing Redis"
                )
            }
            let port = try Probe.freePort()
            redisPort = port
            redisCommand = config.redis.command
            redisURL = "redis://127.0.0.1:\(port)"
            redisBinding = .redis(host: "127.0.0.1", port: port, password: nil)
        }

        let identity = try stateDirectory.identity()
        let runID = UUID().uuidString.lowercased()
        let launch = InstanceLaunch(
            appName: config.app.name, appGUID: identity.appGUID, version: runID, routes: config.app.routes, memoryMB: config.app.memoryMB,
            redisURL: redisURL, redisBinding: redisBinding, sessionSecret: config.app.sessionSecret ?? identity.sessionSecret, runID: runID,
            binDirectory: binDirectory, baseEnvironment: base, extraEnvironment: config.app.environment)

        let pid = getpid()
        let record = PidRecord(
            pid: pid, startTime: ProcessTable.startTime(pid) ?? 0, runID: runID,
            proxyURL: proxyCommand == nil ? nil : "http://localhost:\(proxyPort)/")
        try stateDirectory.writePidRecord(record)
        let control: ControlServer
        do {
            control = try await ControlServer.bind(path: stateDirectory.controlSocket.path)
        } catch {
            stateDirectory.removeRunFiles()
            throw Failure("cannot open the control socket \(stateDirectory.controlSocket.path): \(error)")
        }
        logs.emit(
            source: "cluster",
            "starting \(config.app.instances) instance\(config.app.instances == 1 ? "" : "s") of '\(config.app.command)'"
                + (redisPort != nil ? ", an embedded Redis" : "") + (proxyCommand != nil ? " and sticky-proxy on port \(proxyPort)" : "")
                + " (restart policy \(config.restartPolicy.rawValue)\(config.timeScale == 1 ? "" : ", time scale \(config.timeScale)")); state in \(stateDirectory.url.path)"
        )
        let supervisor = ClusterSupervisor(
            config: config, stateDirectory: stateDirectory, logs: logs, launch: launch, pidRecord: record, proxyCommand: proxyCommand,
            proxyPort: proxyPort, proxyAdmin: proxyAdmin, redisPort: redisPort, redisCommand: redisCommand)
        await supervisor.run(control: control)
    }

    /// Stops what a cluster killed with -9 left behind: the processes carrying its run marker or
    /// recorded in its pid file with the same kernel start time. Refuses if that cluster is alive.
    static func cleanUpLeftovers(_ stateDirectory: StateDirectory, logs: LogHub) async throws {
        guard let record = stateDirectory.readPidRecord() else { return }
        let leftovers = Leftovers(record: record, table: ProcessTable.snapshot(), selfPID: getpid())
        if leftovers.supervisorAlive {
            throw StateError.alreadyRunning(pid: record.pid, stateDirectory: stateDirectory.url.path)
        }
        stateDirectory.removeRunFiles()
        guard !leftovers.processes.isEmpty else { return }
        let names = leftovers.processes.map { "\($0.command) (pid \($0.pid))" }.joined(separator: ", ")
        logs.emit(
            source: "cluster",
            "a previous cluster (pid \(record.pid)) was killed and left \(leftovers.processes.count) processes behind: \(names); stopping them")
        func alive() -> [Leftovers.Process] {
            leftovers.processes.filter { ProcessTable.startTime($0.pid) == $0.startTime && !isZombie($0.pid) }
        }
        for group in leftovers.processGroups { ProcessGroup.signal(group, SIGTERM) }
        for process in leftovers.processes { kill(process.pid, SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(5)
        while !alive().isEmpty && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let stubborn = alive()
        if !stubborn.isEmpty {
            for process in stubborn {
                ProcessGroup.signal(process.processGroup, SIGKILL)
                kill(process.pid, SIGKILL)
            }
            let killDeadline = ContinuousClock.now + .seconds(5)
            while !alive().isEmpty && ContinuousClock.now < killDeadline {
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        let remaining = alive()
        if remaining.isEmpty {
            logs.emit(source: "cluster", "cleaned up \(leftovers.processes.count) leftover processes")
        } else {
            throw ClusterUp.Failure("could not stop processes left by a killed cluster: \(remaining.map { "pid \($0.pid)" }.joined(separator: ", "))")
        }
    }

    static func isZombie(_ pid: Int32) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return false }
        return text[text.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }
}
