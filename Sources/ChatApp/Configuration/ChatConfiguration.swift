import CloudFoundry
import Foundation
import Logging
import RedisClient

/// How far a chat message goes (FANOUT).
public enum Fanout: String, Sendable, Hashable, CaseIterable {
    /// Through Redis to every instance: one chat, one history, one presence list (the default).
    case redis
    /// Only to this instance's own users: what an in-process pub/sub (no Redis adapter) does when the
    /// app is scaled out: a split brain, kept as a teaching scenario.
    case local
}

/// Where chat-node keeps login sessions (SESSION_STORE).
public enum SessionStorage: String, Sendable, Hashable, CaseIterable {
    /// express-session's Redis layout, shared by every instance (the default).
    case redis
    /// This instance's memory: what the original sample's default MemoryStore did, kept as a scenario.
    case memory
}

/// Everything chat-node reads from its environment, the way Cloud Foundry and Kubernetes configure an
/// app. Built by `init(environment:)`, a pure function of the variables: every invalid value is an
/// error naming the variable. `ChatConfiguration.variables` documents them (chat-node --help prints it).
public struct ChatConfiguration: Sendable, Hashable {
    /// Address to bind; loopback by default (the project's policy), `0.0.0.0` on a real platform.
    public var bindHost: String
    public var port: Int
    /// Redis URL from REDIS_URL, else from a Redis binding in VCAP_SERVICES.
    public var redisURL: String
    /// Where the Redis URL came from, for messages ("REDIS_URL", "VCAP_SERVICES binding 'redis'", "default").
    public var redisSource: String
    /// Secrets that sign session cookies: the first signs, all of them verify (rotation).
    /// Empty: a random secret shared through Redis is used (and a warning logged).
    public var sessionSecrets: [String]
    public var cookieName: String
    public var sessionTTL: Duration
    /// Where sessions live: Redis (shared by every instance), or this instance's memory (a teaching
    /// scenario: users are logged out when their instance dies).
    public var sessionStorage: SessionStorage
    /// Whether messages reach every instance's users (Redis) or only this instance's.
    public var fanout: Fanout
    /// The instance, as the page and the messages show it.
    public var instance: InstanceIdentity
    public var historyLimit: Int
    /// How many history messages a page load and a fresh connection receive.
    public var recentHistory: Int
    /// Largest chat text accepted, in UTF-8 bytes.
    public var maxMessageBytes: Int
    /// Longest user name accepted, in characters.
    public var maxNameLength: Int
    /// Path of the official socket.io client bundle served at /socket.io/socket.io.js.
    public var socketIOClientPath: String
    /// How long a SIGTERM may take before open connections are dropped.
    public var drainTimeout: Duration
    /// Presence heartbeat: each instance refreshes its users every `presenceInterval`; an instance
    /// silent for `presenceTTL` is considered gone and its users offline.
    public var presenceInterval: Duration
    public var presenceTTL: Duration
    /// How long a disconnected client may come back and recover its session (socket.io's
    /// maxDisconnectionDuration).
    public var recoveryWindow: Duration
    /// Prefix of every Redis key and channel chat-node uses (sessions keep express-session's `sess:`).
    public var keyPrefix: String
    /// Browser origins allowed to open Socket.IO sessions: empty means the page's own origin only
    /// (no cross-site WebSocket hijacking); `["*"]` allows any.
    public var allowedOrigins: [String]
    /// How long a client's WebSocket flush may wait to carry the messages that follow
    /// (`SocketIOConfiguration.writeCoalescing`): a quiet room's message leaves at once; a busy room's
    /// stream leaves in one write per client per window. Zero: one write per message.
    public var writeCoalescing: Duration
    /// How often the delivery compares the stream's newest line with the last one the subscription
    /// delivered (`StreamPositionCheck`): a line still missing one interval later is read from the
    /// stream. Zero: no check (a gap is then only filled after the subscription reconnects).
    public var positionCheckInterval: Duration

    public init(
        bindHost: String = "127.0.0.1",
        port: Int = 8080,
        redisURL: String = "redis://127.0.0.1:6379",
        redisSource: String = "default",
        sessionSecrets: [String] = [],
        cookieName: String = "JSESSIONID",
        sessionTTL: Duration = .seconds(86_400),
        sessionStorage: SessionStorage = .redis,
        fanout: Fanout = .redis,
        instance: InstanceIdentity = InstanceIdentity(index: nil, guid: nil, port: 8080),
        historyLimit: Int = 1_000,
        recentHistory: Int = 100,
        maxMessageBytes: Int = 2_000,
        maxNameLength: Int = 32,
        socketIOClientPath: String = ".deps/socket.io.min.js",
        drainTimeout: Duration = .seconds(10),
        presenceInterval: Duration = .seconds(5),
        presenceTTL: Duration = .seconds(15),
        recoveryWindow: Duration = .seconds(120),
        keyPrefix: String = "chat:",
        allowedOrigins: [String] = [],
        writeCoalescing: Duration = .milliseconds(20),
        positionCheckInterval: Duration = .seconds(1)
    ) {
        self.bindHost = bindHost
        self.port = port
        self.redisURL = redisURL
        self.redisSource = redisSource
        self.sessionSecrets = sessionSecrets
        self.cookieName = cookieName
        self.sessionTTL = sessionTTL
        self.sessionStorage = sessionStorage
        self.fanout = fanout
        self.instance = instance
        self.historyLimit = historyLimit
        self.recentHistory = recentHistory
        self.maxMessageBytes = maxMessageBytes
        self.maxNameLength = maxNameLength
        self.socketIOClientPath = socketIOClientPath
        self.drainTimeout = drainTimeout
        self.presenceInterval = presenceInterval
        self.presenceTTL = presenceTTL
        self.recoveryWindow = recoveryWindow
        self.keyPrefix = keyPrefix
        self.allowedOrigins = allowedOrigins
        self.writeCoalescing = writeCoalescing
        self.positionCheckInterval = positionCheckInterval
    }

    /// The prefix of the chat's own keys (history, channel, presence, recovery): shared by every
    /// instance, or this instance's own with `FANOUT=local`. Sessions and their secret stay shared.
    public var chatKeyPrefix: String {
        switch fanout {
        case .redis: keyPrefix
        case .local: keyPrefix + "instance:" + instance.id + ":"
        }
    }

    /// One documented environment variable.
    public struct Variable: Sendable, Hashable {
        public var name: String
        public var meaning: String
    }

    /// Every variable chat-node reads, in the order `--help` lists them.
    public static let variables: [Variable] = [
        Variable(name: "PORT", meaning: "port to listen on (default 8080, or VCAP_APP_PORT)"),
        Variable(name: "BIND / HOST", meaning: "address to listen on (default 127.0.0.1)"),
        Variable(name: "REDIS_URL", meaning: "redis://[:pw@]host:port[/db] (default 127.0.0.1:6379)"),
        Variable(name: "VCAP_SERVICES", meaning: "CF bindings: the first Redis one, when no REDIS_URL"),
        Variable(name: "SESSION_SECRET", meaning: "cookie signing secret; a,b,c for rotation (a signs)"),
        Variable(name: "COOKIE_NAME", meaning: "session cookie (default JSESSIONID: CF stickiness)"),
        Variable(name: "SESSION_TTL", meaning: "session lifetime in Redis, seconds (default 86400)"),
        Variable(name: "SESSION_STORE", meaning: "redis (default) or memory (the sample's bug; teaching)"),
        Variable(name: "FANOUT", meaning: "redis (default) or local (a split brain; teaching)"),
        Variable(name: "CF_INSTANCE_INDEX", meaning: "instance index shown on the page (or INSTANCE_INDEX)"),
        Variable(name: "CF_INSTANCE_GUID", meaning: "instance GUID shown on the page and on messages"),
        Variable(name: "HISTORY_LIMIT", meaning: "messages kept in the Redis stream (default 1000)"),
        Variable(name: "RECENT_HISTORY", meaning: "messages a fresh page gets (default 100)"),
        Variable(name: "MAX_MESSAGE_BYTES", meaning: "largest message, UTF-8 bytes (default 2000)"),
        Variable(name: "MAX_NAME_LENGTH", meaning: "longest user name, characters (default 32)"),
        Variable(name: "SOCKETIO_CLIENT_JS", meaning: "socket.io.min.js (default .deps/ found upwards)"),
        Variable(name: "DRAIN_TIMEOUT", meaning: "seconds SIGTERM may take to drain (default 10)"),
        Variable(name: "PRESENCE_INTERVAL", meaning: "seconds between presence heartbeats (default 5)"),
        Variable(name: "PRESENCE_TTL", meaning: "seconds until a silent instance's users go (default 15)"),
        Variable(name: "RECOVERY_WINDOW", meaning: "seconds a client may recover its session (default 120)"),
        Variable(name: "KEY_PREFIX", meaning: "prefix of the Redis keys and channel (default chat:)"),
        Variable(name: "WRITE_COALESCING_MS", meaning: "ms a busy client's writes wait to merge (20; 0: off)"),
        Variable(name: "POSITION_CHECK_MS", meaning: "ms between checks for lines pub/sub lost (1000; 0: off)"),
        Variable(name: "ALLOWED_ORIGINS", meaning: "other origins for Socket.IO, comma-separated, or *"),
        Variable(name: "LOG_LEVEL", meaning: "trace, debug, info (default), notice, warning, error"),
    ]

    /// Reads the configuration; `workingDirectory` is where a relative SOCKETIO_CLIENT_JS is resolved
    /// (and, by default, searched upwards for .deps/socket.io.min.js, then upwards from
    /// `executableDirectory`: `.build/release/chat-node` started from another folder, by `cluster up`
    /// run elsewhere, finds the project's bundle).
    public init(
        environment: [String: String],
        workingDirectory: String = FileManager.default.currentDirectoryPath,
        executableDirectory: String = ExecutableLocation.directory.path
    ) throws(ChatConfigurationError) {
        self.init()
        let env = environment.filter { !$0.value.isEmpty }
        let app: AppEnvironment
        do {
            app = try AppEnvironment(env)
        } catch {
            throw .invalid(variable: Self.variableName(of: error), reason: error.description)
        }
        port = app.port ?? 8080
        let bind = AppEnvironment.first(["BIND", "HOST"], in: env)
        bindHost = bind?.value ?? "127.0.0.1"
        if let bind, bind.value.contains(where: \.isWhitespace) {
            throw .invalid(variable: bind.name, reason: "'\(bind.value)' is not an address")
        }
        if let url = env["REDIS_URL"] {
            redisURL = url
            redisSource = "REDIS_URL"
        } else if let binding = app.services?.redisBinding, let url = binding.redisURL {
            redisURL = url
            redisSource = "VCAP_SERVICES binding '\(binding.name)'"
        } else if app.services != nil {
            throw .invalid(variable: "VCAP_SERVICES", reason: "it has no Redis binding (label, name or tag containing 'redis'); set REDIS_URL")
        }
        do {
            _ = try RedisConfiguration(url: redisURL)
        } catch {
            throw .invalid(variable: redisSource == "REDIS_URL" ? "REDIS_URL" : "VCAP_SERVICES", reason: error.description)
        }
        if let secrets = env["SESSION_SECRET"] {
            sessionSecrets = secrets.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            if sessionSecrets.isEmpty { throw .invalid(variable: "SESSION_SECRET", reason: "it holds no secret") }
        }
        cookieName = env["COOKIE_NAME"] ?? "JSESSIONID"
        guard SessionCookie.isValidName(cookieName) else {
            throw .invalid(variable: "COOKIE_NAME", reason: "'\(cookieName)' is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)")
        }
        sessionTTL = .seconds(try Self.integer(env, "SESSION_TTL", default: 86_400, range: 1...(365 * 86_400)))
        sessionStorage = try Self.choice(env, "SESSION_STORE", default: .redis)
        fanout = try Self.choice(env, "FANOUT", default: .redis)
        instance = InstanceIdentity(index: app.instanceIndex, guid: app.instanceGUID, port: port)
        historyLimit = try Self.integer(env, "HISTORY_LIMIT", default: 1_000, range: 1...10_000_000)
        recentHistory = try Self.integer(env, "RECENT_HISTORY", default: 100, range: 0...10_000)
        maxMessageBytes = try Self.integer(env, "MAX_MESSAGE_BYTES", default: 2_000, range: 1...1_000_000)
        maxNameLength = try Self.integer(env, "MAX_NAME_LENGTH", default: 32, range: 1...256)
        drainTimeout = .seconds(try Self.integer(env, "DRAIN_TIMEOUT", default: 10, range: 0...3_600))
        presenceInterval = .seconds(try Self.integer(env, "PRESENCE_INTERVAL", default: 5, range: 1...3_600))
        presenceTTL = .seconds(try Self.integer(env, "PRESENCE_TTL", default: 15, range: 2...86_400))
        if presenceTTL <= presenceInterval {
            // Named after the one the user set (both, or only one with the other's default).
            func setting(_ name: String, _ value: Duration) -> String {
                "\(name) (\(value.components.seconds) s\(env[name] == nil ? ", the default" : ""))"
            }
            throw .invalid(
                variable: env["PRESENCE_TTL"] != nil ? "PRESENCE_TTL" : "PRESENCE_INTERVAL",
                reason: "\(setting("PRESENCE_TTL", presenceTTL)) must be longer than \(setting("PRESENCE_INTERVAL", presenceInterval)), "
                    + "or every heartbeat would expire before the next")
        }
        recoveryWindow = .seconds(try Self.integer(env, "RECOVERY_WINDOW", default: 120, range: 1...86_400))
        keyPrefix = env["KEY_PREFIX"] ?? "chat:"
        writeCoalescing = .milliseconds(try Self.integer(env, "WRITE_COALESCING_MS", default: 20, range: 0...1_000))
        positionCheckInterval = .milliseconds(try Self.integer(env, "POSITION_CHECK_MS", default: 1_000, range: 0...3_600_000))
        allowedOrigins = (env["ALLOWED_ORIGINS"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
            !$0.isEmpty
        }
        for origin in allowedOrigins where origin != "*" && !(origin.hasPrefix("http://") || origin.hasPrefix("https://")) {
            throw .invalid(variable: "ALLOWED_ORIGINS", reason: "'\(origin)' is not an origin such as https://chat.example.com, nor *")
        }
        if let path = env["SOCKETIO_CLIENT_JS"] {
            socketIOClientPath = path.hasPrefix("/") ? path : workingDirectory + "/" + path
        } else {
            socketIOClientPath = Self.findUpwards(".deps/socket.io.min.js", from: [workingDirectory, executableDirectory])
        }
    }

    /// LOG_LEVEL (read before the rest, to set up logging): info unless set; a name it is not is an error.
    public static func logLevel(_ environment: [String: String]) throws(ChatConfigurationError) -> Logger.Level {
        try choice(environment.filter { !$0.value.isEmpty }, "LOG_LEVEL", default: Logger.Level.info)
    }

    /// One of an enumeration's values, by name (any case).
    private static func choice<Value: RawRepresentable & CaseIterable>(
        _ env: [String: String], _ name: String, default value: Value
    ) throws(ChatConfigurationError) -> Value where Value.RawValue == String {
        guard let text = env[name] else { return value }
        guard let chosen = Value(rawValue: text.lowercased()) else {
            let names = Value.allCases.map(\.rawValue).joined(separator: " or ")
            throw .invalid(variable: name, reason: "'\(text)' is not \(names)")
        }
        return chosen
    }

    private static func integer(
        _ env: [String: String], _ name: String, default value: Int, range: ClosedRange<Int>
    ) throws(ChatConfigurationError) -> Int {
        guard let text = env[name] else { return value }
        guard let number = Int(text.trimmingCharacters(in: .whitespaces)), range.contains(number) else {
            throw .invalid(variable: name, reason: "'\(text)' is not a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    private static func variableName(of error: CloudFoundryError) -> String {
        switch error {
        case .invalidJSON(let variable, _), .invalidValue(let variable, _, _): variable
        }
    }

    /// `relative` in `directory` or the closest parent that has it; else `directory/relative` (so the
    /// error names where it was expected).
    /// `relative` in the first of `directories` or a parent of it that has it; else under the first
    /// directory (where the error message says it was looked for).
    static func findUpwards(_ relative: String, from directories: [String]) -> String {
        for directory in directories where !directory.isEmpty {
            var current = URL(fileURLWithPath: directory).standardizedFileURL
            while true {
                let candidate = current.appendingPathComponent(relative).path
                if FileManager.default.fileExists(atPath: candidate) { return candidate }
                let parent = current.deletingLastPathComponent()
                if parent.path == current.path { break }
                current = parent
            }
        }
        return URL(fileURLWithPath: directories.first ?? "").appendingPathComponent(relative).path
    }
}

/// Which instance this is, as users see it on the page and on every message.
public struct InstanceIdentity: Sendable, Hashable, Codable {
    public var index: Int?
    public var guid: String?
    public var port: Int

    public init(index: Int?, guid: String?, port: Int) {
        self.index = index
        self.guid = guid
        self.port = port
    }

    /// A short stable name: the GUID when Cloud Foundry gave one, else `port-<port>`.
    public var id: String { guid ?? "port-\(port)" }

    /// What the page shows: `#0 · 1b2c…` or `port 8080`.
    public var label: String {
        switch (index, guid) {
        case (let index?, let guid?): "#\(index) · \(guid)"
        case (nil, let guid?): guid
        case (let index?, nil): "#\(index) · port \(port)"
        case (nil, nil): "port \(port)"
        }
    }
}

public enum ChatConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalid(variable: String, reason: String)

    public var description: String {
        switch self {
        case .invalid(let variable, let reason):
            "Invalid configuration: \(variable): \(reason)\(reason.hasSuffix(".") ? "" : ".") See chat-node --help."
        }
    }
}
