import CloudFoundry
import Foundation
import Yams

/// Everything `cluster up` needs, with Cloud Foundry's numbers as defaults
/// (shared/docs/cloud-foundry-behaviour.md section 4). Read from `Configs/cluster.yml`, then
/// overridden by command-line flags (`ClusterOverrides`), then validated.
public struct ClusterConfig: Sendable, Equatable {
    public struct App: Sendable, Equatable {
        /// The app's name: instances log as `name.N` and VCAP_APPLICATION carries it.
        public var name = "chat"
        /// Any shell command; instances only need PORT. `chat-node` and `sticky-proxy` resolve to the
        /// executables next to `cluster` (its folder is first on the instances' PATH).
        public var command = "chat-node"
        public var instances = 3
        public var memoryMB = 256
        /// The app's routes; the proxy's own names by default, so the printed URL works.
        public var routes = ["localhost", "127.0.0.1"]
        /// Extra environment for every instance.
        public var environment: [String: String] = [:]
        /// SESSION_SECRET shared by all instances; nil: generated once per state folder and kept there.
        public var sessionSecret: String?
        public init() {}
    }

    public struct HealthCheck: Sendable, Equatable {
        public var type: HealthCheckType = .port
        /// The path an `http` check GETs.
        public var endpoint = "/"
        public var startupInterval: Duration = .seconds(2)
        public var startupTimeout: Duration = .seconds(60)
        public var livenessInterval: Duration = .seconds(30)
        /// Each check's own timeout (connect, or the whole HTTP exchange).
        public var timeout: Duration = .seconds(1)
        public init() {}
    }

    /// Cloud Foundry's readiness check (`readiness-health-check-*` in a manifest): while it fails, the
    /// instance keeps running but is taken out of the route pool; when it passes again, it is routed
    /// again. Nothing is restarted. `process` (the default) means no readiness check: an instance is
    /// routable as soon as its startup check passes.
    public struct ReadinessCheck: Sendable, Equatable {
        public var type: HealthCheckType = .process
        /// The path an `http` check GETs.
        public var endpoint = "/"
        public var interval: Duration = .seconds(5)
        /// Each check's own timeout (connect, or the whole HTTP exchange).
        public var timeout: Duration = .seconds(1)
        public init() {}

        /// Whether a check runs at all.
        public var isEnabled: Bool { type != .process }
    }

    public struct Proxy: Sendable, Equatable {
        /// Without the proxy, instances are reachable only on their own ports.
        public var enabled = true
        public var command = "sticky-proxy"
        /// The port users open; 0 picks a free one.
        public var port = 8080
        public var affinity: Affinity = .cf
        public var websocketAffinity = true
        /// gorouter's `__VCAP_ID_META__` cookie (current routers); off for older ones.
        public var vcapIDMeta = true
        /// gorouter's `router.sticky_sessions_for_auth_negotiate` (off by default there too).
        public var stickySessionsForAuthNegotiate = false
        /// gorouter's `router.empty_pool_timeout` with `router.empty_pool_response_code_503: true`: how
        /// long a route whose last instance left answers 503 `no_endpoints` before it is deleted (then
        /// 404). Zero (the default, as in this project's Cloud Foundry defaults): deleted at once.
        public var emptyPoolTimeout: Duration = .zero
        /// A second router in front of the app's, on the port users open (`FrontRouter`).
        public var frontRouter = false
        /// The front router's affinity mode; nil: the app router's (`affinity`).
        public var frontRouterAffinity: Affinity?

        /// The mode the front router runs with.
        public var frontAffinity: Affinity { frontRouterAffinity ?? affinity }

        /// Both routers pin with the same cookie (`__VCAP_ID__` for cf, `SERVERID` for haproxy), so
        /// each overwrites the other's: stickiness flips.
        public var routersShareACookie: Bool { frontAffinity == affinity && (affinity == .cf || affinity == .haproxy) }
        public var balancing = "round-robin"
        /// The proxy's access log (gorouter's format, with the routing decision) in the cluster's
        /// output, as `cf logs` shows the router's RTR lines.
        public var accessLog = true
        public init() {}
    }

    public struct Redis: Sendable, Equatable {
        /// An existing Redis; nil starts an embedded redis-server on a free loopback port.
        public var url: String?
        public var appendOnly = true
        public var command = "redis-server"
        public init() {}
    }

    public var app = App()
    public var healthCheck = HealthCheck()
    public var readinessCheck = ReadinessCheck()
    public var proxy = Proxy()
    public var redis = Redis()
    public var restartPolicy: RestartPolicy.Name = .diego
    /// SIGTERM, then SIGKILL after this long (Diego's graceful_shutdown_interval).
    public var stopGracePeriod: Duration = .seconds(10)
    /// Multiplies the restart policy's durations (backoffs, convergence tick, reset windows):
    /// 0.01 turns Diego's 30 s backoff into 0.3 s for a demo or a test.
    public var timeScale = 1.0
    /// The state folder (pid file, control socket, Redis data, logs); nil: `.state` in the current folder.
    public var stateDirectory: String?

    public init() {}

    public static let maximumInstances = 100

    public var restart: RestartPolicy { RestartPolicy(name: restartPolicy, timeScale: timeScale) }

    /// Checks every value; the error names the key and what would be accepted.
    /// PORT, VCAP_*, CF_INSTANCE_* and INSTANCE_*: what each instance is given (`InstanceEnvironment`).
    static func isSetByTheCluster(_ name: String) -> Bool {
        name == "PORT" || name.hasPrefix("VCAP_") || name.hasPrefix("CF_INSTANCE_") || name.hasPrefix("INSTANCE_")
    }

    public func validate() throws(ConfigError) {
        func bad(_ key: String, _ value: String, _ expected: String) -> ConfigError {
            .invalidValue(key: key, value: value, expected: expected)
        }
        if app.name.isEmpty || app.name.contains(where: { $0.isWhitespace || $0 == "|" }) {
            throw bad("app.name", app.name, "a name without spaces")
        }
        if app.command.trimmingCharacters(in: .whitespaces).isEmpty { throw bad("app.command", app.command, "a command") }
        if !(0...Self.maximumInstances).contains(app.instances) {
            throw bad("app.instances", "\(app.instances)", "0 to \(Self.maximumInstances)")
        }
        if app.memoryMB <= 0 { throw bad("app.memory_mb", "\(app.memoryMB)", "a positive number of megabytes") }
        if app.routes.isEmpty { throw bad("app.routes", "[]", "at least one route, for example localhost") }
        // The variables each instance gets from the cluster, as from Diego: a value here would win
        // over them (an app listening on a PORT that is not its own, then "not on its port").
        if let name = app.environment.keys.sorted().first(where: Self.isSetByTheCluster) {
            throw bad(
                "app.env.\(name)", app.environment[name] ?? "",
                "no \(name): the cluster sets PORT, VCAP_*, CF_INSTANCE_* and INSTANCE_* for each instance, as Cloud Foundry does")
        }
        if !healthCheck.endpoint.hasPrefix("/") { throw bad("health_check.endpoint", healthCheck.endpoint, "a path starting with /") }
        if healthCheck.startupInterval < .milliseconds(10) {
            throw bad("health_check.startup_interval", DurationText.format(healthCheck.startupInterval), "10ms or more")
        }
        if healthCheck.startupTimeout <= .zero || healthCheck.startupTimeout > .seconds(180) {
            throw bad(
                "health_check.startup_timeout", DurationText.format(healthCheck.startupTimeout),
                "more than 0s and at most 3m0s (Cloud Foundry's maximum)")
        }
        if healthCheck.livenessInterval < .milliseconds(10) {
            throw bad("health_check.liveness_interval", DurationText.format(healthCheck.livenessInterval), "10ms or more")
        }
        if healthCheck.timeout < .milliseconds(1) { throw bad("health_check.timeout", DurationText.format(healthCheck.timeout), "1ms or more") }
        if !readinessCheck.endpoint.hasPrefix("/") {
            throw bad("readiness_check.endpoint", readinessCheck.endpoint, "a path starting with /")
        }
        if readinessCheck.interval < .milliseconds(10) {
            throw bad("readiness_check.interval", DurationText.format(readinessCheck.interval), "10ms or more")
        }
        if readinessCheck.timeout < .milliseconds(1) {
            throw bad("readiness_check.timeout", DurationText.format(readinessCheck.timeout), "1ms or more")
        }
        if !(0...65535).contains(proxy.port) { throw bad("proxy.port", "\(proxy.port)", "a port from 1 to 65535, or 0 for a free one") }
        if !["round-robin", "least-connection"].contains(proxy.balancing) {
            throw bad("proxy.balancing", proxy.balancing, "round-robin or least-connection")
        }
        if let url = redis.url {
            let lowered = url.lowercased()
            if !lowered.hasPrefix("redis://") { throw bad("redis.url", url, "a redis://host:port URL") }
        }
        if stopGracePeriod < .zero { throw bad("stop.grace_period", DurationText.format(stopGracePeriod), "0s or more") }
        if !(timeScale > 0 && timeScale <= 100) {
            // As typed for a whole number (`--time-scale 0` reads '0', not '0.0').
            let text = timeScale.rounded() == timeScale && abs(timeScale) < 1e15 ? "\(Int(timeScale))" : "\(timeScale)"
            throw bad("time_scale", text, "a factor above 0 and at most 100 (0.01 makes 30s into 0.3s)")
        }
    }
}

public enum HealthCheckType: String, Sendable, Equatable, CaseIterable, Codable {
    /// TCP connect to the instance's port (Cloud Foundry's default).
    case port
    /// GET the endpoint; healthy only on exactly 200.
    case http
    /// No check: only the process exiting counts.
    case process
}

/// The proxy's affinity mode, passed to sticky-proxy's `--affinity`.
public enum Affinity: String, Sendable, Equatable, CaseIterable, Codable {
    case cf
    case none
    case haproxy
    case ipHash = "ip-hash"
}

public enum ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case invalidYAML(path: String, reason: String)
    case unknownKey(path: String, line: Int?, key: String, known: [String])
    /// A value that cannot work, before it is known where the user set it.
    case invalidValue(key: String, value: String, expected: String)
    /// A value the config file sets, with the line it is on (nil when the file does not say).
    case invalidValueInFile(path: String, line: Int?, key: String, value: String, expected: String)
    /// A value a flag of `cluster up` sets.
    case invalidFlag(flag: String, value: String, expected: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read the config file \(path): \(reason)"
        case .invalidYAML(let path, let reason): "\(path) is not a valid cluster config: \(reason)"
        case .unknownKey(let path, let line, let key, let known):
            "\(Self.place(path, line)): unknown key '\(key)'; known keys here: \(known.joined(separator: ", "))"
        case .invalidValue(let key, let value, let expected): "\(key) = '\(value)' is not valid: expected \(expected)"
        case .invalidValueInFile(let path, let line, let key, let value, let expected):
            "\(Self.place(path, line)): \(key) = '\(value)' is not valid: expected \(expected)"
        case .invalidFlag(let flag, let value, let expected): "\(flag) '\(value)' is not valid: expected \(expected)"
        }
    }

    /// `path:line`, as compilers write it, so that editors and terminals can open the place.
    private static func place(_ path: String, _ line: Int?) -> String {
        line.map { "\(path):\($0)" } ?? path
    }
}

/// Command-line flags of `cluster up`; each one set wins over the config file.
public struct ClusterOverrides: Sendable, Equatable {
    public var instances: Int?
    public var appCommand: String?
    /// `--name`. Without it, `--app` with another program than chat-node names the app `app` when the
    /// config kept chat-node's name, so that a Python app's instances do not log as `chat.0`.
    public var appName: String?
    public var port: Int?
    public var affinity: Affinity?
    public var redisURL: String?
    public var restartPolicy: RestartPolicy.Name?
    public var timeScale: Double?
    public var stateDirectory: String?
    public var proxyEnabled: Bool?
    public var healthCheckType: HealthCheckType?
    public var readinessCheckType: HealthCheckType?
    /// `--front-router`.
    public var frontRouter: Bool?
    /// `--front-router-affinity` (implies `--front-router`).
    public var frontRouterAffinity: Affinity?

    public init(
        instances: Int? = nil, appCommand: String? = nil, appName: String? = nil, port: Int? = nil, affinity: Affinity? = nil,
        redisURL: String? = nil,
        restartPolicy: RestartPolicy.Name? = nil, timeScale: Double? = nil, stateDirectory: String? = nil, proxyEnabled: Bool? = nil,
        healthCheckType: HealthCheckType? = nil, readinessCheckType: HealthCheckType? = nil, frontRouter: Bool? = nil,
        frontRouterAffinity: Affinity? = nil
    ) {
        self.instances = instances
        self.appCommand = appCommand
        self.appName = appName
        self.port = port
        self.affinity = affinity
        self.redisURL = redisURL
        self.restartPolicy = restartPolicy
        self.timeScale = timeScale
        self.stateDirectory = stateDirectory
        self.proxyEnabled = proxyEnabled
        self.healthCheckType = healthCheckType
        self.readinessCheckType = readinessCheckType
        self.frontRouter = frontRouter
        self.frontRouterAffinity = frontRouterAffinity
    }

    /// The flag that set the value under `key` (as `ClusterConfig.validate()` names it), nil when no flag did.
    public func flag(setting key: String) -> String? {
        switch key {
        case "app.instances" where instances != nil: "--instances"
        case "app.command" where appCommand != nil: "--app"
        case "app.name" where appName != nil: "--name"
        case "proxy.port" where port != nil: "--port"
        case "proxy.front_router" where frontRouter != nil: "--front-router"
        case "redis.url" where redisURL != nil: "--redis-url"
        case "time_scale" where timeScale != nil: "--time-scale"
        default: nil
        }
    }

    public func applied(to config: ClusterConfig) -> ClusterConfig {
        var config = config
        if let instances { config.app.instances = instances }
        if let appCommand {
            config.app.command = appCommand
            let program = appCommand.split(whereSeparator: \.isWhitespace).first?.split(separator: "/").last
            if config.app.name == ClusterConfig.App().name, program != "chat-node" { config.app.name = "app" }
        }
        if let appName { config.app.name = appName }
        if let port { config.proxy.port = port }
        if let affinity { config.proxy.affinity = affinity }
        if let redisURL { config.redis.url = redisURL.isEmpty ? nil : redisURL }
        if let restartPolicy { config.restartPolicy = restartPolicy }
        if let timeScale { config.timeScale = timeScale }
        if let stateDirectory { config.stateDirectory = stateDirectory }
        if let proxyEnabled { config.proxy.enabled = proxyEnabled }
        if let healthCheckType { config.healthCheck.type = healthCheckType }
        if let readinessCheckType { config.readinessCheck.type = readinessCheckType }
        if let frontRouter { config.proxy.frontRouter = frontRouter }
        if let frontRouterAffinity {
            config.proxy.frontRouter = true
            config.proxy.frontRouterAffinity = frontRouterAffinity
        }
        return config
    }
}

// MARK: - Reading the YAML file

extension ClusterConfig {
    /// Reads a config file; a missing key keeps its default, an unknown key is an error (a typo would
    /// otherwise be silently ignored).
    public static func load(path: String) throws(ConfigError) -> ClusterConfig {
        try parse(yaml: read(path), path: path)
    }

    /// What `cluster up` runs with: the config file when there is one, then the flags, checked. A value
    /// that cannot work is named where the user set it: the flag, or the file and line.
    public static func resolve(file path: String?, overrides: ClusterOverrides) throws(ConfigError) -> ClusterConfig {
        guard let path else { return try resolve(yaml: nil, path: "", overrides: overrides) }
        return try resolve(yaml: read(path), path: path, overrides: overrides)
    }

    /// `resolve(file:overrides:)` on the file's text (nil: no file).
    static func resolve(yaml: String?, path: String, overrides: ClusterOverrides) throws(ConfigError) -> ClusterConfig {
        let base = try yaml.map { text throws(ConfigError) in try parse(yaml: text, path: path) } ?? ClusterConfig()
        let config = overrides.applied(to: base)
        do {
            try config.validate()
        } catch {
            guard case .invalidValue(let key, let value, let expected) = error else { throw error }
            if let flag = overrides.flag(setting: key) { throw .invalidFlag(flag: flag, value: value, expected: expected) }
            guard let yaml else { throw error }
            throw inFile(error, path: path, root: (try? Yams.compose(yaml: yaml)) ?? nil)
        }
        return config
    }

    /// A refused value named where the file sets it: its line, and the value as written there.
    static func inFile(_ error: ConfigError, path: String, root: Node?) -> ConfigError {
        guard case .invalidValue(let key, let value, let expected) = error else { return error }
        let found = root.flatMap { node(at: key[...], in: $0) }
        return .invalidValueInFile(path: path, line: found?.mark?.line, key: key, value: found.map(flow) ?? value, expected: expected)
    }

    private static func read(_ path: String) throws(ConfigError) -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
    }

    /// Parses the YAML text of a config (`path` only names it in errors).
    public static func parse(yaml: String, path: String = "cluster.yml") throws(ConfigError) -> ClusterConfig {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch {
            throw .invalidYAML(path: path, reason: "\(error)")
        }
        guard let node else { return ClusterConfig() }
        guard node.mapping != nil else { throw .invalidYAML(path: path, reason: "the top level must be a mapping of keys") }
        try checkKeys(node, path: path)
        do {
            return try decode(node, path: path)
        } catch {
            throw inFile(error, path: path, root: node)
        }
    }

    private static func decode(_ node: Node, path: String) throws(ConfigError) -> ClusterConfig {
        let file: ConfigFile
        do {
            file = try YAMLDecoder().decode(ConfigFile.self, from: node)
        } catch let error as ConfigError {
            throw error
        } catch let DecodingError.typeMismatch(type, context) {
            throw invalidValue(context, expected: expectation(type))
        } catch let DecodingError.dataCorrupted(context) {
            throw invalidValue(context, expected: context.debugDescription)
        } catch {
            throw .invalidYAML(path: path, reason: "\(error)")
        }
        return try file.merged(into: ClusterConfig())
    }

    /// The YAML value under a key as errors write it (`app.routes[1]`, `app.env.A.B` for a name with
    /// dots), nil when there is none.
    static func node(at key: Substring, in node: Node) -> Node? {
        if key.isEmpty { return node }
        if key.first == "[" {
            guard let close = key.firstIndex(of: "]"), let index = Int(key[key.index(after: key.startIndex)..<close]),
                let sequence = node.sequence, sequence.indices.contains(index)
            else { return nil }
            let rest = key[key.index(after: close)...]
            return self.node(at: rest.first == "." ? rest.dropFirst() : rest, in: sequence[index])
        }
        for (name, child) in node.mapping ?? [:] {
            guard let name = name.string, key.hasPrefix(name) else { continue }
            let rest = key.dropFirst(name.count)
            guard rest.isEmpty || rest.first == "." || rest.first == "[" else { continue }
            if let found = self.node(at: rest.first == "." ? rest.dropFirst() : rest, in: child) { return found }
        }
        return nil
    }

    /// A decoding error as the key and what was expected; `inFile` adds the value as the file has it.
    static func invalidValue(_ context: DecodingError.Context, expected: String) -> ConfigError {
        .invalidValue(key: CodingPathText.text(context.codingPath), value: "?", expected: expected)
    }

    /// A YAML value on one line, as flow style writes it (`[a, b]`, `{b: 1}`), cut at 80 characters.
    static func flow(_ node: Node) -> String {
        let text: String
        switch node {
        case .scalar(let scalar): text = scalar.string
        case .sequence(let sequence): text = "[" + sequence.prefix(20).map(flow).joined(separator: ", ") + "]"
        case .mapping(let mapping): text = "{" + mapping.prefix(20).map { flow($0.key) + ": " + flow($0.value) }.joined(separator: ", ") + "}"
        case .alias: text = "*alias"
        }
        return text.count > 80 ? text.prefix(77) + "..." : text
    }

    /// What a YAML value of `type` looks like, in the words of the docs.
    static func expectation(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type: "a whole number"
        case is Double.Type: "a number"
        case is Bool.Type: "true or false"
        case is String.Type, is Node.Scalar.Type: "a single value (text or a number)"
        case is [String].Type, is Node.Sequence.Type: "a list, such as [a, b]"
        case is [String: String].Type, is Node.Mapping.Type: "names with values, such as {NAME: value}"
        default: "a value of type \(type)"
        }
    }

    private static func checkKeys(_ node: Node, path: String) throws(ConfigError) {
        let sections: [String: [String]] = [
            "app": ConfigFile.AppSection.CodingKeys.allCases.map(\.rawValue),
            "health_check": ConfigFile.HealthSection.CodingKeys.allCases.map(\.rawValue),
            "readiness_check": ConfigFile.ReadinessSection.CodingKeys.allCases.map(\.rawValue),
            "proxy": ConfigFile.ProxySection.CodingKeys.allCases.map(\.rawValue),
            "redis": ConfigFile.RedisSection.CodingKeys.allCases.map(\.rawValue),
            "restart": ConfigFile.RestartSection.CodingKeys.allCases.map(\.rawValue),
            "stop": ConfigFile.StopSection.CodingKeys.allCases.map(\.rawValue),
        ]
        let topKeys = ConfigFile.CodingKeys.allCases.map(\.rawValue)
        for (key, value) in node.mapping ?? [:] {
            guard let name = key.string, topKeys.contains(name) else {
                throw .unknownKey(path: path, line: key.mark?.line, key: key.string ?? "?", known: topKeys)
            }
            guard let known = sections[name], let mapping = value.mapping else { continue }
            for (subkey, _) in mapping where !known.contains(subkey.string ?? "") {
                throw .unknownKey(path: path, line: subkey.mark?.line, key: "\(name).\(subkey.string ?? "?")", known: known)
            }
        }
    }
}

/// The file's shape: every key optional, snake_case as in the YAML.
struct ConfigFile: Decodable {
    struct AppSection: Decodable {
        var name: String?
        var command: String?
        var instances: Int?
        var memoryMB: Int?
        var routes: [String]?
        var env: [String: String]?
        var sessionSecret: String?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case name, command, instances, routes, env
            case memoryMB = "memory_mb"
            case sessionSecret = "session_secret"
        }
    }
    struct HealthSection: Decodable {
        var type: String?
        var endpoint: String?
        var startupInterval: DurationValue?
        var startupTimeout: DurationValue?
        var livenessInterval: DurationValue?
        var timeout: DurationValue?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case type, endpoint, timeout
            case startupInterval = "startup_interval"
            case startupTimeout = "startup_timeout"
            case livenessInterval = "liveness_interval"
        }
    }
    struct ReadinessSection: Decodable {
        var type: String?
        var endpoint: String?
        var interval: DurationValue?
        var timeout: DurationValue?
        enum CodingKeys: String, CodingKey, CaseIterable { case type, endpoint, interval, timeout }
    }
    struct ProxySection: Decodable {
        var enabled: FlexibleBool?
        var command: String?
        var port: Int?
        var affinity: String?
        var websocketAffinity: FlexibleBool?
        var vcapIDMeta: FlexibleBool?
        var stickySessionsForAuthNegotiate: FlexibleBool?
        var emptyPoolTimeout: DurationValue?
        var frontRouter: FlexibleBool?
        var frontRouterAffinity: String?
        var balancing: String?
        var accessLog: FlexibleBool?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case enabled, command, port, affinity, balancing
            case websocketAffinity = "websocket_affinity"
            case vcapIDMeta = "vcap_id_meta"
            case stickySessionsForAuthNegotiate = "sticky_sessions_for_auth_negotiate"
            case emptyPoolTimeout = "empty_pool_timeout"
            case frontRouter = "front_router"
            case frontRouterAffinity = "front_router_affinity"
            case accessLog = "access_log"
        }
    }
    struct RedisSection: Decodable {
        var url: String?
        var appendOnly: FlexibleBool?
        var command: String?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case url, command
            case appendOnly = "append_only"
        }
    }
    struct RestartSection: Decodable {
        var policy: String?
        enum CodingKeys: String, CodingKey, CaseIterable { case policy }
    }
    struct StopSection: Decodable {
        var gracePeriod: DurationValue?
        enum CodingKeys: String, CodingKey, CaseIterable { case gracePeriod = "grace_period" }
    }

    var app: AppSection?
    var healthCheck: HealthSection?
    var readinessCheck: ReadinessSection?
    var proxy: ProxySection?
    var redis: RedisSection?
    var restart: RestartSection?
    var stop: StopSection?
    var timeScale: Double?
    var stateDir: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case app, proxy, redis, restart, stop
        case healthCheck = "health_check"
        case readinessCheck = "readiness_check"
        case timeScale = "time_scale"
        case stateDir = "state_dir"
    }

    /// A health or readiness check's `type`, nil when the file does not set it.
    static func checkType(_ value: String?, key: String) throws(ConfigError) -> HealthCheckType? {
        guard let value else { return nil }
        guard let type = HealthCheckType(rawValue: value) else { throw .invalidValue(key: key, value: value, expected: "port, http or process") }
        return type
    }

    /// An affinity mode under `key`, nil when the file does not set it (or sets `same`, where allowed).
    static func affinity(_ value: String?, key: String, allowingSame: Bool = false) throws(ConfigError) -> Affinity? {
        guard let value, !(allowingSame && value == "same") else { return nil }
        guard let affinity = Affinity(rawValue: value) else {
            throw .invalidValue(key: key, value: value, expected: (allowingSame ? "same, " : "") + "cf, none, haproxy or ip-hash")
        }
        return affinity
    }

    func merged(into defaults: ClusterConfig) throws(ConfigError) -> ClusterConfig {
        var config = defaults
        if let app {
            if let value = app.name { config.app.name = value }
            if let value = app.command { config.app.command = value }
            if let value = app.instances { config.app.instances = value }
            if let value = app.memoryMB { config.app.memoryMB = value }
            if let value = app.routes { config.app.routes = value }
            if let value = app.env { config.app.environment = value }
            if let value = app.sessionSecret, !value.isEmpty { config.app.sessionSecret = value }
        }
        if let healthCheck {
            if let type = try Self.checkType(healthCheck.type, key: "health_check.type") { config.healthCheck.type = type }
            if let value = healthCheck.endpoint { config.healthCheck.endpoint = value }
            if let value = healthCheck.startupInterval { config.healthCheck.startupInterval = value.duration }
            if let value = healthCheck.startupTimeout { config.healthCheck.startupTimeout = value.duration }
            if let value = healthCheck.livenessInterval { config.healthCheck.livenessInterval = value.duration }
            if let value = healthCheck.timeout { config.healthCheck.timeout = value.duration }
        }
        if let readinessCheck {
            if let type = try Self.checkType(readinessCheck.type, key: "readiness_check.type") { config.readinessCheck.type = type }
            if let value = readinessCheck.endpoint { config.readinessCheck.endpoint = value }
            if let value = readinessCheck.interval { config.readinessCheck.interval = value.duration }
            if let value = readinessCheck.timeout { config.readinessCheck.timeout = value.duration }
        }
        if let proxy {
            if let value = proxy.enabled { config.proxy.enabled = value.value }
            if let value = proxy.command { config.proxy.command = value }
            if let value = proxy.port { config.proxy.port = value }
            if let affinity = try Self.affinity(proxy.affinity, key: "proxy.affinity") { config.proxy.affinity = affinity }
            if let value = proxy.websocketAffinity { config.proxy.websocketAffinity = value.value }
            if let value = proxy.vcapIDMeta { config.proxy.vcapIDMeta = value.value }
            if let value = proxy.stickySessionsForAuthNegotiate { config.proxy.stickySessionsForAuthNegotiate = value.value }
            // A duration is never negative (`DurationValue` refuses a sign).
            if let value = proxy.emptyPoolTimeout { config.proxy.emptyPoolTimeout = value.duration }
            if let value = proxy.frontRouter { config.proxy.frontRouter = value.value }
            if let affinity = try Self.affinity(proxy.frontRouterAffinity, key: "proxy.front_router_affinity", allowingSame: true) {
                config.proxy.frontRouterAffinity = affinity
            }
            if let value = proxy.accessLog { config.proxy.accessLog = value.value }
            if let value = proxy.balancing { config.proxy.balancing = value }
        }
        if let redis {
            if let value = redis.url { config.redis.url = value.isEmpty ? nil : value }
            if let value = redis.appendOnly { config.redis.appendOnly = value.value }
            if let value = redis.command { config.redis.command = value }
        }
        if let value = restart?.policy {
            guard let name = RestartPolicy.Name(rawValue: value) else {
                throw .invalidValue(key: "restart.policy", value: value, expected: "diego, pm2 or kubernetes")
            }
            config.restartPolicy = name
        }
        if let value = stop?.gracePeriod { config.stopGracePeriod = value.duration }
        if let timeScale { config.timeScale = timeScale }
        if let stateDir, !stateDir.isEmpty { config.stateDirectory = stateDir }
        return config
    }
}

/// A duration in YAML: `2s`, `500ms`, `1m30s` or a number of seconds.
struct DurationValue: Decodable {
    var duration: Duration

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let seconds = try? container.decode(Double.self), let parsed = DurationText.seconds(seconds) {
            duration = parsed
            return
        }
        let text = try container.decode(String.self)
        guard let parsed = DurationText.parse(text) else {
            throw ConfigError.invalidValue(
                key: CodingPathText.text(decoder.codingPath), value: text,
                expected: "a duration such as 2s, 500ms, 1m30s or a number of seconds")
        }
        duration = parsed
    }
}

/// A boolean in YAML, also spelt on/off or yes/no.
struct FlexibleBool: Decodable {
    var value: Bool

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let bool = try? container.decode(Bool.self) {
            value = bool
            return
        }
        let text = try container.decode(String.self).lowercased()
        switch text {
        case "on", "yes", "true": value = true
        case "off", "no", "false": value = false
        default:
            throw ConfigError.invalidValue(key: CodingPathText.text(decoder.codingPath), value: text, expected: "on or off")
        }
    }
}
