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
    /// A state folder this call created is removed again when it refuses to start, so that a mistake
    /// leaves nothing behind.
    public static func run(config: ClusterConfig, binDirectory: String = ExecutableLocation.directory.path, echo: Bool = true) async throws {
        signal(SIGPIPE, SIG_IGN)
        try config.validate()
        let stateDirectory = StateDirectory(path: config.stateDirectory)
        let createdHere = !FileManager.default.fileExists(atPath: stateDirectory.url.path)
        do {
            try await run(config: config, stateDirectory: stateDirectory, binDirectory: binDirectory, echo: echo)
        } catch {
            // Thrown only before anything was started (the supervisor's run does not throw).
            if createdHere { try? FileManager.default.removeItem(at: stateDirectory.url) }
            throw error
        }
    }

    private static func run(config: ClusterConfig, stateDirectory: StateDirectory, binDirectory: String, echo: Bool) async throws {
        try stateDirectory.prepare()
        let logs = LogHub(logFile: stateDirectory.logFile, echo: echo)
        defer { logs.close() }
        logs.reserveWidth(for: "\(config.app.name).\(max(0, config.app.instances - 1))")

        try await stopLeftovers(stateDirectory) { logs.emit(source: "cluster", $0) }

        let base = ProcessInfo.processInfo.environment
        let searchPath = binDirectory + ":" + (base["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
        if let program = CommandLookup.program(of: config.app.command), CommandLookup.resolve(program, path: searchPath) == nil {
            throw Failure(
                "the app command '\(config.app.command)' cannot start: '\(program)' is not in \(binDirectory) nor on PATH. "
                    + (program == "chat-node" ? "Build it first (`swift build`), or set" : "Set") + " app.command in the config or pass --app \"CMD\""
            )
        }

        var proxyCommand: String?
        var proxyAdmin: ProxyAdmin?
        var proxyPort = config.proxy.port
        var frontRouter: FrontRouter?
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
                } else {
                    Probe.reserve(port: proxyPort)
                }
                proxyCommand = config.proxy.command
                var generator = SystemRandomNumberGenerator()
                let token = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
                let traceKey = (0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
                proxyAdmin = ProxyAdmin(port: try Probe.freePort(), token: token, traceKey: traceKey)
                if config.proxy.frontRouter {
                    frontRouter = FrontRouter(appRouterPort: try Probe.freePort())
                }
            }
        }

        if config.proxy.frontRouter && proxyCommand == nil {
            logs.emit(source: "cluster", "no front router: it sits in front of the proxy, and this cluster runs without one")
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
            redisBinding = .redis(host: parsed.host, port: parsed.port, password: parsed.password, uri: url)
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
                + (frontRouter.map { " (a front router there, the app's router on port \($0.appRouterPort))" } ?? "")
                + " (restart policy \(config.restartPolicy.rawValue)\(config.timeScale == 1 ? "" : ", time scale \(config.timeScale)")); state in \(stateDirectory.url.path)"
        )
        let supervisor = ClusterSupervisor(
            config: config, stateDirectory: stateDirectory, logs: logs, launch: launch, pidRecord: record, proxyCommand: proxyCommand,
            proxyPort: proxyPort, proxyAdmin: proxyAdmin, frontRouter: frontRouter, redisPort: redisPort, redisCommand: redisCommand)
        await supervisor.run(control: control)
    }

    /// The cluster recorded in this state folder's pid file and what of it is still running (nothing
    /// when its supervisor is alive: see `supervisorAlive`); nil when there is no pid file.
    public static func recorded(_ stateDirectory: StateDirectory) -> (record: PidRecord, leftovers: Leftovers)? {
        guard let record = stateDirectory.readPidRecord() else { return nil }
        return (record, Leftovers(record: record, table: ProcessTable.snapshot(), selfPID: getpid()))
    }

    /// What to tell a user whose cluster cannot be asked because it was killed, when it left processes
    /// running; nil otherwise.
    public static func leftoversHint(_ stateDirectory: StateDirectory) -> String? {
        guard let (record, leftovers) = recorded(stateDirectory), !leftovers.supervisorAlive, !leftovers.processes.isEmpty else { return nil }
        return "the cluster last started there (pid \(record.pid)) was killed and left \(leftovers.processes.count) processes running: "
            + "\(Leftovers.describe(leftovers.processes)); `cluster down` stops them"
    }

    /// Stops the processes a cluster killed with -9 left behind: those carrying its run marker or
    /// recorded in its pid file with the same kernel start time (SIGTERM to their groups, SIGKILL after
    /// 5 s), and removes its pid file and socket. Says what it does through `report`; returns how many
    /// it stopped, or nil when the state folder records no killed cluster. Refuses if that cluster is
    /// alive.
    @discardableResult
    public static func stopLeftovers(_ stateDirectory: StateDirectory, report: (String) -> Void) async throws -> Int? {
        guard let (record, leftovers) = recorded(stateDirectory) else { return nil }
        if leftovers.supervisorAlive {
            throw StateError.alreadyRunning(pid: record.pid, stateDirectory: stateDirectory.url.path)
        }
        stateDirectory.removeRunFiles()
        guard !leftovers.processes.isEmpty else { return 0 }
        report(
            "a previous cluster (pid \(record.pid)) was killed and left \(leftovers.processes.count) processes behind: "
                + "\(Leftovers.describe(leftovers.processes)); stopping them")
        func alive() -> [Leftovers.Process] {
            leftovers.processes.filter { ProcessTable.isRunning($0.pid, startTime: $0.startTime) }
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
        guard remaining.isEmpty else {
            throw ClusterUp.Failure("could not stop processes left by a killed cluster: \(remaining.map { "pid \($0.pid)" }.joined(separator: ", "))")
        }
        report("cleaned up \(leftovers.processes.count) leftover processes")
        return leftovers.processes.count
    }

}
