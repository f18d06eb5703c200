import CloudFoundry
import Foundation

/// One request to a running cluster over its control socket: one JSON object on one line.
public struct ControlRequest: Codable, Sendable, Equatable {
    public enum Command: String, Codable, Sendable, CaseIterable {
        case status, scale, kill, stop, start, restart, freeze, redis, logs, down
    }

    public var command: Command
    public var index: Int?
    /// `scale`: `N`, `+k` or `-k`.
    public var scale: String?
    /// `restart`: every instance.
    public var all: Bool?
    /// `restart --all`: one at a time, each replacement routable before its old process stops (Cloud Foundry's rolling strategy).
    public var rolling: Bool?
    /// `redis`: stop, start, restart or freeze (Redis itself); slow, hang, cut or heal (the links of
    /// `index`, or of every instance without one).
    public var action: String?
    /// `freeze` and `redis freeze`: for how long (`10s`, `500ms`), within `freezeRange`.
    public var duration: String?
    /// `logs`: keep streaming new lines.
    public var follow: Bool?
    /// `logs`: how many recent lines.
    public var lines: Int?
    /// Answer only once the change is done (instances healthy, Redis ready).
    public var wait: Bool?
    /// `status`: read the proxy's counters now instead of giving the last sample (taken every 2 s).
    public var fresh: Bool?
    /// `redis slow`: the delay added to what Redis sends (`200ms`), and its random spread (`50ms`).
    public var latency: String?
    public var jitter: String?

    /// The shortest and longest freeze (`cluster freeze`, `cluster redis freeze`, `chaos --freeze-for`).
    public static let freezeRange = Duration.milliseconds(100)...Duration.seconds(600)

    public init(
        command: Command, index: Int? = nil, scale: String? = nil, all: Bool? = nil, rolling: Bool? = nil, action: String? = nil,
        duration: String? = nil, follow: Bool? = nil, lines: Int? = nil, wait: Bool? = nil, fresh: Bool? = nil, latency: String? = nil,
        jitter: String? = nil
    ) {
        self.command = command
        self.index = index
        self.scale = scale
        self.all = all
        self.rolling = rolling
        self.action = action
        self.duration = duration
        self.follow = follow
        self.lines = lines
        self.wait = wait
        self.fresh = fresh
        self.latency = latency
        self.jitter = jitter
    }
}

/// One answer line. A request gets one, except `logs`, which gets one per log line and then `done`.
public struct ControlResponse: Codable, Sendable, Equatable {
    public var ok: Bool
    public var message: String?
    public var error: String?
    public var status: ClusterStatus?
    public var line: LogLine?
    public var done: Bool?

    public init(ok: Bool, message: String? = nil, error: String? = nil, status: ClusterStatus? = nil, line: LogLine? = nil, done: Bool? = nil) {
        self.ok = ok
        self.message = message
        self.error = error
        self.status = status
        self.line = line
        self.done = done
    }

    public static func success(_ message: String) -> ControlResponse { ControlResponse(ok: true, message: message, done: true) }
    public static func failure(_ error: String) -> ControlResponse { ControlResponse(ok: false, error: error, done: true) }
}

/// The whole cluster as `cluster status` shows it.
public struct ClusterStatus: Codable, Sendable, Equatable {
    public struct Instance: Codable, Sendable, Equatable {
        public var index: Int
        public var guid: String?
        public var pid: Int32?
        public var port: Int?
        public var state: InstanceLifecycle.State
        /// In the route pool (what `cf app` shows as routable); nil when not running. False while a
        /// readiness check fails.
        public var routable: Bool?
        public var uptimeSeconds: Double?
        public var crashes: Int
        public var nextRestartSeconds: Double?
        public var connections: Int?
        public var requestsPerSecond: Double?
        public var lastCrash: String?
        /// Where the app listens instead of its port, or why it could not listen (an address in use),
        /// while it is not healthy (see `ListeningPorts`).
        public var listeningHint: String?
        /// Frozen by `cluster freeze`: the seconds until it resumes.
        public var frozenSeconds: Double?
        /// The old process a rolling restart is replacing with this one, until it has exited.
        public var replacing: Replacing?
        /// A fault on its link to Redis (`cluster redis slow|hang|cut`), while it lasts.
        public var redisLink: RedisLink?

        public struct RedisLink: Codable, Sendable, Equatable {
            /// `slow`, `hang` or `cut`.
            public var fault: String
            public var latencyMilliseconds: Double?
            public var jitterMilliseconds: Double?
            public var remainingSeconds: Double?

            /// A cut or hung link: the instance answers, but cannot reach Redis (a slow one can).
            public var cutsOffRedis: Bool { fault == "cut" || fault == "hang" }

            public init(fault: RedisLinkFault, remainingSeconds: Double?) {
                switch fault {
                case .slow(let latency, let jitter):
                    self.fault = "slow"
                    latencyMilliseconds = Double(latency.nanosecondsClamped) / 1e6
                    jitterMilliseconds = Double(jitter.nanosecondsClamped) / 1e6
                case .cut:
                    self.fault = "cut"
                case .hang:
                    self.fault = "hang"
                }
                self.remainingSeconds = remainingSeconds
            }

            /// `slow (+200ms ±50ms), heals in 25s`.
            public var summary: String {
                guard let remainingSeconds else { return faultSummary }
                return faultSummary + ", heals in \(DurationText.short(.milliseconds(Int64(remainingSeconds * 1000))))"
            }

            /// The fault these fields describe (nil for a name this version does not know).
            public var linkFault: RedisLinkFault? {
                switch fault {
                case "slow":
                    .slow(
                        latency: .nanoseconds(Int64((latencyMilliseconds ?? 0) * 1e6)), jitter: .nanoseconds(Int64((jitterMilliseconds ?? 0) * 1e6)))
                case "cut": .cut
                case "hang": .hang
                default: nil
                }
            }

            /// `slow (+200ms ±50ms)`, `hung`, `cut`: `RedisLinkFault.summary`.
            public var faultSummary: String { linkFault?.summary ?? fault }

            enum CodingKeys: String, CodingKey {
                case fault
                case latencyMilliseconds = "latency_ms"
                case jitterMilliseconds = "jitter_ms"
                case remainingSeconds = "remaining_seconds"
            }
        }

        public struct Replacing: Codable, Sendable, Equatable {
            public var pid: Int32?
            public var guid: String?
            /// `serving` (until this one is routable) or `stopping`.
            public var state: Retirement.State
            /// Its port, while it is registered with the proxy.
            public var port: Int?
            public init(pid: Int32?, guid: String?, state: Retirement.State, port: Int? = nil) {
                self.pid = pid
                self.guid = guid
                self.state = state
                self.port = port
            }
        }

        public init(
            index: Int, guid: String? = nil, pid: Int32? = nil, port: Int? = nil, state: InstanceLifecycle.State, routable: Bool? = nil,
            uptimeSeconds: Double? = nil,
            crashes: Int = 0, nextRestartSeconds: Double? = nil, connections: Int? = nil, requestsPerSecond: Double? = nil, lastCrash: String? = nil,
            frozenSeconds: Double? = nil, replacing: Replacing? = nil, listeningHint: String? = nil, redisLink: RedisLink? = nil
        ) {
            self.index = index
            self.guid = guid
            self.pid = pid
            self.port = port
            self.state = state
            self.routable = routable
            self.uptimeSeconds = uptimeSeconds
            self.crashes = crashes
            self.nextRestartSeconds = nextRestartSeconds
            self.connections = connections
            self.requestsPerSecond = requestsPerSecond
            self.lastCrash = lastCrash
            self.listeningHint = listeningHint
            self.frozenSeconds = frozenSeconds
            self.replacing = replacing
            self.redisLink = redisLink
        }

        enum CodingKeys: String, CodingKey {
            case index, guid, pid, port, state, routable, crashes, connections, replacing
            case redisLink = "redis_link"
            case uptimeSeconds = "uptime_seconds"
            case nextRestartSeconds = "next_restart_seconds"
            case requestsPerSecond = "requests_per_second"
            case lastCrash = "last_crash"
            case listeningHint = "listening_hint"
            case frozenSeconds = "frozen_seconds"
        }
    }

    public struct Component: Codable, Sendable, Equatable {
        /// running, starting, stopped, crashed, external, absent.
        public var state: String
        public var pid: Int32?
        public var url: String?
        /// The proxy's trace key (`X-Vcap-Trace`), for `cluster users` to see which instance answers.
        public var traceKey: String?

        public init(state: String, pid: Int32? = nil, url: String? = nil, traceKey: String? = nil) {
            self.state = state
            self.pid = pid
            self.url = url
            self.traceKey = traceKey
        }
    }

    public var app: String
    public var command: String
    /// All desired instances running and none frozen, the proxy healthy (when enabled) and Redis ready and not frozen.
    public var ready: Bool
    public var desiredInstances: Int
    public var affinity: String
    public var restartPolicy: String
    public var timeScale: Double
    public var proxy: Component
    /// The second router in front of the app's (`proxy.front_router`); its url is the one users open,
    /// the proxy's then the app's router behind it.
    public var frontRouter: Component?
    /// The front router's affinity mode (nil: the proxy's).
    public var frontRouterAffinity: String?
    public var redis: Component
    public var instances: [Instance]
    /// What clients got through the proxy since it started (nil without a proxy, or before its first sample).
    public var proxyTraffic: ProxyTraffic?

    public init(
        app: String, command: String, ready: Bool, desiredInstances: Int, affinity: String, restartPolicy: String, timeScale: Double,
        proxy: Component, frontRouter: Component? = nil, frontRouterAffinity: String? = nil, redis: Component, instances: [Instance],
        proxyTraffic: ProxyTraffic? = nil
    ) {
        self.app = app
        self.command = command
        self.ready = ready
        self.desiredInstances = desiredInstances
        self.affinity = affinity
        self.restartPolicy = restartPolicy
        self.timeScale = timeScale
        self.proxy = proxy
        self.frontRouter = frontRouter
        self.frontRouterAffinity = frontRouterAffinity
        self.redis = redis
        self.instances = instances
        self.proxyTraffic = proxyTraffic
    }

    enum CodingKeys: String, CodingKey {
        case app, command, ready, affinity, proxy, redis, instances
        case proxyTraffic = "proxy_traffic"
        case frontRouter = "front_router"
        case frontRouterAffinity = "front_router_affinity"
        case desiredInstances = "desired_instances"
        case restartPolicy = "restart_policy"
        case timeScale = "time_scale"
    }

    /// The URL users open and its router, when it runs: the front router's when there is one, else
    /// the proxy's; nil (with that router's state) when it is absent or not running.
    public var entry: (url: String?, state: String) {
        let router = frontRouter ?? proxy
        return (
            router.state == "running" && proxy.state == "running" ? router.url : nil,
            frontRouter.map { _ in "front router \(router.state), proxy \(proxy.state)" } ?? proxy.state
        )
    }

    /// The table `cluster status` prints.
    public func table() -> String {
        var lines: [String] = []
        let proxyText = proxy.url.map { "\($0) (affinity \(affinity), \(proxy.state))" } ?? "\(proxy.state)"
        let running = instances.filter { $0.state == .running }
        let unroutable = running.filter { $0.routable == false }.count
        let replaced = instances.filter { $0.replacing?.state == .serving }.count
        lines.append(
            "app \(app): \(running.count)/\(desiredInstances) running"
                + (unroutable == 0 ? "" : ", \(unroutable) not routable (readiness check failing)")
                + (replaced == 0 ? "" : ", \(replaced) being replaced (the old process serves meanwhile)") + (ready ? "" : " (not ready)"))
        if let frontRouter {
            lines.append(
                "front  \(frontRouter.url ?? "-") (a second router in front, affinity \(frontRouterAffinity ?? affinity), \(frontRouter.state))")
        }
        lines.append("proxy  \(proxyText)")
        if let proxyTraffic { lines.append("       \(proxyTraffic.summary)") }
        lines.append("redis  \(redis.url ?? "-") (\(redis.state))")
        lines.append("restart policy \(restartPolicy)\(timeScale == 1 ? "" : ", time scale \(timeScale)")")
        lines.append("")
        let header = ["INDEX", "GUID", "PID", "PORT", "STATE", "ROUTABLE", "UPTIME", "CRASHES", "NEXT RESTART", "CONNECTIONS", "REQ/S"]
        let rows = instances.map { instance -> [String] in
            [
                "\(instance.index)",
                instance.guid ?? "-",
                instance.pid.map { "\($0)" } ?? "-",
                instance.port.map { "\($0)" } ?? "-",
                instance.state.rawValue
                    + (instance.frozenSeconds.map { ", frozen (resumes in \(DurationText.short(.milliseconds(Int64($0 * 1000)))))" } ?? ""),
                instance.routable.map { $0 ? "yes" : "no" } ?? "-",
                instance.uptimeSeconds.map { DurationText.short(.milliseconds(Int64($0 * 1000))) } ?? "-",
                "\(instance.crashes)",
                instance.nextRestartSeconds.map { "in " + DurationText.short(.milliseconds(Int64($0 * 1000))) } ?? "-",
                instance.connections.map { "\($0)" } ?? "-",
                instance.requestsPerSecond.map { String(format: "%.1f", $0) } ?? "-",
            ]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            lines.append(row.indices.map { row[$0].padding(toLength: widths[$0]) }.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
        for instance in instances where instance.lastCrash != nil && instance.state != .running {
            lines.append("\(app).\(instance.index) last crash: \(instance.lastCrash ?? "")")
        }
        for instance in instances {
            if let hint = instance.listeningHint { lines.append(hint) }
        }
        for instance in instances {
            if let link = instance.redisLink { lines.append("\(app).\(instance.index) link to Redis: \(link.summary)") }
        }
        for instance in instances {
            guard let old = instance.replacing else { continue }
            let until = old.state == .serving ? "serving until this one is routable" : old.state.rawValue
            lines.append(
                "\(app).\(instance.index) replacing its old process (pid \(old.pid.map(String.init) ?? "-"), guid \(old.guid ?? "-")): \(until)")
        }
        return lines.joined(separator: "\n")
    }
}
