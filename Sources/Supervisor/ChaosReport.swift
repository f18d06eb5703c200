import RedisClient

/// `cluster chaos --report FILE`: what a run did and what clients got, as JSON that a CI job keeps
/// next to its logs or compares between builds (as k6's `--summary-export` does for a load test).
/// Written at the end of every run that started: ready, failed or interrupted.
public struct ChaosReport: Codable, Sendable, Equatable {
    /// `ready`, `not-ready`, `too-many-5xx`, `sessions-lost` or `interrupted` (the exit code: 0, 1, 1,
    /// 1, 130).
    public var outcome: String
    public var seed: UInt64
    /// Faults done, by kind (`kill`, `restart`, `freeze`).
    public var faults: [String: Int]
    public var redisFaults: Int
    /// Faults not done: the instances left alone (`--keep`), or refused by the cluster.
    public var skipped: Int
    public var refused: Int
    /// From the start of the run to the end of the faults (or the interruption).
    public var faultSeconds: Double
    /// From the end of the faults until the cluster was ready again; nil when it was not (or the run
    /// was interrupted first).
    public var readyAgainSeconds: Double?
    /// What clients got through the proxy, from the start to the end of the settling; nil without a
    /// proxy.
    public var proxyTraffic: ProxyTraffic?
    /// What the simulated users got (`--users`); nil without them.
    public var users: Users?
    /// The `FAILED: ...` lines, as printed.
    public var failures: [String]

    public struct Users: Codable, Sendable, Equatable {
        public var count: Int
        public var requests: Int
        /// Answers by status class: `2xx` -> count.
        public var answers: [String: Int]
        /// Requests without an answer, by reason.
        public var noAnswer: [String: Int]
        public var sessionsStarted: Int
        public var usersMoved: Int
        public var moves: Int
        public var sessionsLost: Int
        /// Lost sessions by how: `replaced`, `deleted`, `logged_out`, `redirected_to_login`.
        public var losses: [String: Int]
        public var usersWithLosses: Int
        public var responseTimes: Times?

        enum CodingKeys: String, CodingKey {
            case count, requests, answers, moves, losses
            case noAnswer = "no_answer"
            case sessionsStarted = "sessions_started"
            case usersMoved = "users_moved"
            case sessionsLost = "sessions_lost"
            case usersWithLosses = "users_with_losses"
            case responseTimes = "response_times"
        }

        public init(options: VirtualUsersOptions, tally: VirtualUsersTally) {
            count = options.count
            requests = tally.requests
            answers = Dictionary(uniqueKeysWithValues: tally.statusClasses.map { ("\($0.key)xx", $0.value) })
            noAnswer = tally.noAnswer
            sessionsStarted = tally.sessionsStarted
            usersMoved = tally.usersMoved.count
            moves = tally.moves
            sessionsLost = tally.sessionsLost
            losses = Dictionary(uniqueKeysWithValues: tally.losses.map { ($0.key.name, $0.value) })
            usersWithLosses = tally.usersWithLosses.count
            responseTimes = Times(tally.responseTimes)
        }
    }

    /// The users' response times, in milliseconds (percentiles to two significant digits).
    public struct Times: Codable, Sendable, Equatable {
        public var count: Int
        public var p50Ms: Double
        public var p99Ms: Double
        public var longestMs: Double
        public var oneSecondOrMore: Int

        enum CodingKeys: String, CodingKey {
            case count
            case p50Ms = "p50_ms"
            case p99Ms = "p99_ms"
            case longestMs = "longest_ms"
            case oneSecondOrMore = "one_second_or_more"
        }
    }

    enum CodingKeys: String, CodingKey {
        case outcome, seed, faults, skipped, refused, users, failures
        case redisFaults = "redis_faults"
        case faultSeconds = "fault_seconds"
        case readyAgainSeconds = "ready_again_seconds"
        case proxyTraffic = "proxy_traffic"
    }

    public init(seed: UInt64) {
        outcome = ChaosRun.Outcome.interrupted.name
        self.seed = seed
        faults = [:]
        redisFaults = 0
        skipped = 0
        refused = 0
        faultSeconds = 0
        failures = []
    }

    /// The faults part, from the run's tally.
    mutating func record(_ tally: ChaosTally, faultTime: Duration) {
        faults = Dictionary(uniqueKeysWithValues: tally.faults.map { ($0.key.rawValue, $0.value) })
        redisFaults = tally.redisFaults
        skipped = tally.skipped
        refused = tally.refused
        faultSeconds = faultTime.seconds
    }
}

extension ChaosRun.Outcome {
    /// The report's name for it.
    public var name: String {
        switch self {
        case .ready: "ready"
        case .notReady: "not-ready"
        case .tooManyServerErrors: "too-many-5xx"
        case .sessionsLost: "sessions-lost"
        case .interrupted: "interrupted"
        }
    }
}

extension VirtualUser.Loss {
    /// The report's name for it.
    public var name: String {
        switch self {
        case .replaced: "replaced"
        case .deleted: "deleted"
        case .loggedOut: "logged_out"
        case .redirectedToLogin: "redirected_to_login"
        }
    }
}

extension ChaosReport.Times {
    /// Nil before any answer.
    init?(_ times: ResponseTimes) {
        guard let median = times.percentile(0.5), let p99 = times.percentile(0.99) else { return nil }
        self.init(
            count: times.count, p50Ms: median.seconds * 1_000, p99Ms: p99.seconds * 1_000, longestMs: times.longest.seconds * 1_000,
            oneSecondOrMore: times.count(atLeast: .seconds(1)))
    }
}
