import CloudFoundry
import Foundation
import RedisClient

/// What every instance of one cluster shares, and how one instance's environment and route
/// registration are built from it (pure: no process, no clock).
public struct InstanceLaunch: Sendable, Equatable {
    public var appName: String
    public var appGUID: String
    /// VCAP_APPLICATION's version: new for every `cluster up`, like a new droplet.
    public var version: String
    public var routes: [String]
    public var memoryMB: Int
    public var redisURL: String?
    public var redisBinding: ServiceBinding?
    /// Where the instances' relays connect: `redisURL` read (its `host`, `port` and `endpoint` text).
    public var redisEndpoint: RedisConfiguration? { redisURL.flatMap { try? RedisConfiguration(url: $0) } }
    public var sessionSecret: String
    /// STICKYLAB_CLUSTER_RUN, to recognise our processes after a crash of the supervisor.
    public var runID: String
    /// The folder of the `cluster` executable, put first on PATH (so `chat-node` resolves).
    public var binDirectory: String
    /// The supervisor's own environment, inherited by instances (PATH, HOME, ...).
    public var baseEnvironment: [String: String]
    /// The config's extra variables (win over everything).
    public var extraEnvironment: [String: String]

    public init(
        appName: String, appGUID: String, version: String, routes: [String], memoryMB: Int, redisURL: String?, redisBinding: ServiceBinding?,
        sessionSecret: String, runID: String, binDirectory: String, baseEnvironment: [String: String], extraEnvironment: [String: String]
    ) {
        self.appName = appName
        self.appGUID = appGUID
        self.version = version
        self.routes = routes
        self.memoryMB = memoryMB
        self.redisURL = redisURL
        self.redisBinding = redisBinding
        self.sessionSecret = sessionSecret
        self.runID = runID
        self.binDirectory = binDirectory
        self.baseEnvironment = baseEnvironment
        self.extraEnvironment = extraEnvironment
    }

    /// The environment of a helper process (proxy, Redis): inherited, our folder first on PATH, marked.
    public func helperEnvironment() -> [String: String] {
        var environment = baseEnvironment
        for name in Self.inheritedCFVariables { environment.removeValue(forKey: name) }
        let path = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        environment["PATH"] = binDirectory.isEmpty ? path : binDirectory + ":" + path
        environment[PidRecord.markerVariable] = runID
        return environment
    }

    /// Cloud Foundry's instance environment (CloudFoundry.InstanceEnvironment), plus SESSION_SECRET and
    /// REDIS_URL for apps that do not read VCAP_SERVICES. With `redisRelayPort`, Redis is reached
    /// through the instance's relay on that loopback port (`RedisLinkRelay`), in both: the same URL
    /// (user, password, database) with the relay's host and port.
    public func environment(index: Int, guid: InstanceGUID, port: Int, redisRelayPort: Int? = nil) -> [String: String] {
        var environment = helperEnvironment()
        let application = VCAPApplication(
            applicationID: appGUID, applicationName: appName, uris: routes, version: version,
            limits: VCAPApplication.Limits(mem: memoryMB))
        var redisURL = redisURL
        var redisBinding = redisBinding
        if let redisRelayPort {
            let relayed = redisURL.map { RedisConfiguration.url($0, reachedAt: "127.0.0.1", port: redisRelayPort) }
            redisURL = relayed ?? "redis://127.0.0.1:\(redisRelayPort)"
            redisBinding = .redis(
                name: redisBinding?.name ?? "redis", host: "127.0.0.1", port: redisRelayPort, password: redisBinding?.credentials.password,
                uri: relayed)
        }
        let services = redisBinding.map { VCAPServices(binding: $0) } ?? VCAPServices()
        let instance = InstanceEnvironment(
            port: port, index: index, guid: guid, memoryLimitMB: memoryMB, application: application, services: services)
        environment.merge(instance.variables) { _, new in new }
        environment["SESSION_SECRET"] = sessionSecret
        if let redisURL { environment["REDIS_URL"] = redisURL }
        environment.merge(extraEnvironment) { _, new in new }
        return environment
    }

    /// gorouter's register message for this instance.
    public func registration(index: Int, guid: InstanceGUID, port: Int) -> RouteRegistration {
        RouteRegistration(
            host: "127.0.0.1", port: port, uris: routes, app: appGUID, privateInstanceID: guid.value,
            privateInstanceIndex: String(index), tags: ["component": "cluster", "app_name": appName], staleThresholdInSeconds: 120)
    }

    /// Variables a parent shell may carry that must not leak into helpers (each instance gets its own).
    static let inheritedCFVariables = [
        "PORT", "VCAP_APP_PORT", "VCAP_APP_HOST", "INSTANCE_INDEX", "CF_INSTANCE_INDEX", "INSTANCE_GUID", "CF_INSTANCE_GUID",
        "CF_INSTANCE_IP", "CF_INSTANCE_INTERNAL_IP", "CF_INSTANCE_PORT", "CF_INSTANCE_ADDR", "CF_INSTANCE_PORTS", "MEMORY_LIMIT",
        "VCAP_APPLICATION", "VCAP_SERVICES", PidRecord.markerVariable,
    ]
}

/// Finds the program a command starts, to fail early with a clear message instead of a crash loop.
public enum CommandLookup {
    /// Words `/bin/sh` runs itself (POSIX builtins and reserved words), and wrappers whose program is
    /// a later word: a command starting with one has no program to look for.
    static let shellWords: Set<String> = [
        ".", ":", "[", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done", "echo", "elif", "else", "env", "esac",
        "eval", "exec", "exit", "export", "false", "fc", "fg", "fi", "for", "getopts", "hash", "if", "jobs", "kill", "local", "nice",
        "nohup", "printf", "pwd", "read", "readonly", "return", "set", "shift", "source", "test", "then", "time", "times", "trap",
        "true", "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while", "!",
    ]

    /// The first word of a shell command when it is a plain program name or path (nil when the
    /// command starts with shell syntax we cannot judge, such as a variable assignment or a builtin).
    public static func program(of command: String) -> String? {
        let trimmed = command.trimmingCharacters(in: .whitespaces)
        guard let first = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" }).first else { return nil }
        let word = String(first)
        let special: Set<Character> = ["$", "=", ";", "|", "&", "(", ")", "<", ">", "'", "\"", "`", "\\", "{", "}", "*", "?", "~"]
        guard !word.contains(where: { special.contains($0) }) else { return nil }
        if shellWords.contains(word) { return nil }
        return word
    }

    /// The full path of `program` on `path` (a PATH value), or itself when it contains a slash and is
    /// executable; nil when not found.
    public static func resolve(_ program: String, path: String) -> String? {
        if program.contains("/") {
            return FileManager.default.isExecutableFile(atPath: program) ? program : nil
        }
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(program)"
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
                FileManager.default.isExecutableFile(atPath: candidate)
            {
                return candidate
            }
        }
        return nil
    }
}
