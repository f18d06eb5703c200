import CloudFoundry
import RedisClient

/// When a crashed instance comes back. Pure: time is passed in as the duration since the supervisor
/// started, and every duration of a policy is multiplied by `timeScale`.
///
/// - `diego` (Cloud Foundry's BBS, the default): crash_count 1 and 2 restart at once; from 3 the
///   instance waits 30 s x 2^(crash_count-3), capped at 16 min, and is restarted on the first 30 s
///   convergence tick after that; at crash_count 200 it is never restarted. The count starts again at 1
///   when the instance had been running (healthy) for more than 5 min.
/// - `pm2`: exponential backoff restart delay from 100 ms, x1.5 per crash, capped at 15 s, reset after
///   30 s of uptime; gives up after 16 restarts in a row of instances that lived less than 1 s.
/// - `kubernetes` (CrashLoopBackOff): the first restart at once, then 10 s doubling to 300 s; reset
///   after 10 min of running; never gives up.
public struct RestartPolicy: Sendable, Equatable {
    public enum Name: String, Sendable, Equatable, CaseIterable, Codable {
        case diego
        case pm2
        case kubernetes
    }

    public var name: Name
    public var timeScale: Double

    public init(name: Name = .diego, timeScale: Double = 1) {
        self.name = name
        self.timeScale = timeScale
    }

    /// An instance's crash record, as the policy keeps it.
    public struct CrashHistory: Sendable, Equatable {
        /// Diego's crash_count (and the count the others back off on).
        public var count = 0
        /// PM2: crashes in a row of instances that lived less than min_uptime.
        public var unstable = 0
        public init(count: Int = 0, unstable: Int = 0) {
            self.count = count
            self.unstable = unstable
        }
    }

    public enum Decision: Sendable, Equatable {
        case now
        /// At this time (since the supervisor started).
        case at(Duration)
        case never
    }

    // Diego's numbers (BBS models/actual_lrp.go, restart calculator).
    public static let diegoImmediateRestarts = 3
    public static let diegoMaxRestarts = 200
    public static let diegoMinBackoff: Duration = .seconds(30)
    public static let diegoMaxBackoff: Duration = .seconds(16 * 60)
    public static let diegoResetAfter: Duration = .seconds(5 * 60)
    public static let diegoConvergenceTick: Duration = .seconds(30)
    // PM2's (exp_backoff_restart_delay, min_uptime, max_restarts).
    public static let pm2InitialDelay: Duration = .milliseconds(100)
    public static let pm2MaxDelay: Duration = .seconds(15)
    public static let pm2ResetAfter: Duration = .seconds(30)
    public static let pm2MinUptime: Duration = .seconds(1)
    public static let pm2MaxUnstableRestarts = 16
    // Kubernetes' (kubelet crash loop back-off).
    public static let kubernetesInitialDelay: Duration = .seconds(10)
    public static let kubernetesMaxDelay: Duration = .seconds(300)
    public static let kubernetesResetAfter: Duration = .seconds(10 * 60)

    /// The convergence tick that restarts backed-off instances (Diego only).
    public var convergenceTick: Duration? { name == .diego ? Self.diegoConvergenceTick.scaled(by: timeScale) : nil }

    /// The history after one more crash. `lived` is how long the process ran; `healthyFor` how long it
    /// had been healthy (nil if it never became healthy).
    public func recordCrash(_ history: CrashHistory, lived: Duration, healthyFor: Duration?) -> CrashHistory {
        var next = history
        switch name {
        case .diego:
            if let healthyFor, healthyFor > Self.diegoResetAfter.scaled(by: timeScale) { next.count = 0 }
            next.count += 1
        case .pm2:
            if lived >= Self.pm2ResetAfter.scaled(by: timeScale) { next.count = 0 }
            next.count += 1
            next.unstable = lived < Self.pm2MinUptime.scaled(by: timeScale) ? history.unstable + 1 : 0
        case .kubernetes:
            if lived >= Self.kubernetesResetAfter.scaled(by: timeScale) { next.count = 0 }
            next.count += 1
        }
        return next
    }

    /// When to restart after the crash recorded in `history`, which happened at `crashedAt`.
    public func decision(after history: CrashHistory, crashedAt: Duration) -> Decision {
        switch name {
        case .diego:
            if history.count < Self.diegoImmediateRestarts { return .now }
            if history.count >= Self.diegoMaxRestarts { return .never }
            let due = crashedAt + backoff(crashCount: history.count)
            // BBS restarts on the first convergence tick at which `now > crashedAt + backoff`.
            let tick = Self.diegoConvergenceTick.scaled(by: timeScale)
            guard tick > .zero else { return .at(due) }
            let ticks = due.nanosecondsClamped / tick.nanosecondsClamped + 1
            return .at(tick * ticks)
        case .pm2:
            if history.unstable > Self.pm2MaxUnstableRestarts { return .never }
            return .at(crashedAt + backoff(crashCount: history.count))
        case .kubernetes:
            let delay = backoff(crashCount: history.count)
            return delay == .zero ? .now : .at(crashedAt + delay)
        }
    }

    /// The wait before the restart for a crash count (for Diego: before the convergence tick).
    public func backoff(crashCount: Int) -> Duration {
        switch name {
        case .diego:
            guard crashCount >= Self.diegoImmediateRestarts else { return .zero }
            let exponent = min(crashCount - Self.diegoImmediateRestarts, 20)
            return min(Self.diegoMinBackoff * (1 << exponent), Self.diegoMaxBackoff).scaled(by: timeScale)
        case .pm2:
            var delay = Self.pm2InitialDelay.seconds
            for _ in 1..<max(1, min(crashCount, 40)) { delay *= 1.5 }
            return min(Duration.seconds(delay), Self.pm2MaxDelay).scaled(by: timeScale)
        case .kubernetes:
            guard crashCount > 1 else { return .zero }
            let exponent = min(crashCount - 2, 20)
            return min(Self.kubernetesInitialDelay * (1 << exponent), Self.kubernetesMaxDelay).scaled(by: timeScale)
        }
    }
}

/// How the cluster restarts its own helpers (sticky-proxy, the embedded Redis) when they die: not an
/// app instance, so no Diego rules: 0.5 s, doubling, at most 30 s; a helper that ran for more than a
/// minute starts again from 0.5 s.
public struct HelperBackoff: Sendable, Equatable {
    public private(set) var restarts = 0

    public static let first: Duration = .milliseconds(500)
    public static let maximum: Duration = .seconds(30)
    public static let resetAfter: Duration = .seconds(60)

    public init() {}

    /// Records a crash after running for `lived`; returns the delay before the next start.
    public mutating func crashed(lived: Duration) -> Duration {
        if lived > Self.resetAfter { restarts = 0 }
        restarts += 1
        return min(Self.first * (1 << min(restarts - 1, 10)), Self.maximum)
    }
}

extension Duration {
    /// The duration multiplied by a factor (time_scale), never below zero.
    func scaled(by factor: Double) -> Duration {
        .nanoseconds(Int64(max(0, (Double(nanosecondsClamped) * factor).rounded())))
    }
}
