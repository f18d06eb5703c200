import CloudFoundry

/// When Diego's health checks run, as pure functions of time (the duration since the supervisor started).
///
/// - Startup: the first attempt as soon as the process is spawned, then one on every tick of
///   `startupInterval` (2 s) counted from the spawn, until one passes or `startupTimeout` (60 s) after
///   the spawn, when the instance fails with "Instance never healthy after 1m0s: <reason>".
/// - Liveness: once healthy, a check every `livenessInterval` (30 s); the first failure is a crash.
/// - Readiness (when configured): from the moment the startup check passes, a check at once and then
///   every `readinessInterval` (5 s); its result only moves the instance in or out of the route pool.
public struct HealthCheckSchedule: Sendable, Equatable {
    public var startupInterval: Duration
    public var startupTimeout: Duration
    public var livenessInterval: Duration
    public var readinessInterval: Duration

    public init(
        startupInterval: Duration = .seconds(2), startupTimeout: Duration = .seconds(60), livenessInterval: Duration = .seconds(30),
        readinessInterval: Duration = .seconds(5)
    ) {
        self.startupInterval = startupInterval
        self.startupTimeout = startupTimeout
        self.livenessInterval = livenessInterval
        self.readinessInterval = readinessInterval
    }

    public init(_ config: ClusterConfig) {
        self.init(
            startupInterval: config.healthCheck.startupInterval, startupTimeout: config.healthCheck.startupTimeout,
            livenessInterval: config.healthCheck.livenessInterval, readinessInterval: config.readinessCheck.interval)
    }

    public enum StartupStep: Sendable, Equatable {
        /// Run an attempt at this time.
        case attempt(at: Duration)
        /// No attempt is left before the deadline: fail at this time.
        case timeout(at: Duration)
    }

    /// The next startup step for an instance spawned at `spawnedAt`, after the attempt started at
    /// `lastAttempt` failed (nil: no attempt yet).
    public func nextStartup(spawnedAt: Duration, after lastAttempt: Duration?) -> StartupStep {
        let deadline = spawnedAt + startupTimeout
        guard let lastAttempt else { return .attempt(at: spawnedAt) }
        let interval = max(startupInterval.nanosecondsClamped, 1)
        let elapsed = max(0, (lastAttempt - spawnedAt).nanosecondsClamped)
        let next = spawnedAt + .nanoseconds((elapsed / interval + 1) * interval)
        return next < deadline ? .attempt(at: next) : .timeout(at: deadline)
    }

    /// Whether a startup attempt at `attemptAt` that failed should look for where the app listens
    /// instead of its port (`ListeningPorts`): from min(5 s, half the startup timeout) after the spawn,
    /// as an app may open a port of its own (an admin port, say) before `$PORT`, then at most once a
    /// second after `lastDiagnosis`.
    public func portDiagnosisDue(spawnedAt: Duration, attemptAt: Duration, lastDiagnosis: Duration?) -> Bool {
        guard attemptAt - spawnedAt >= min(.seconds(5), startupTimeout / 2) else { return false }
        guard let lastDiagnosis else { return true }
        return attemptAt - lastDiagnosis >= .seconds(1)
    }

    /// When the liveness check after the one at `lastCheck` runs.
    public func nextLiveness(after lastCheck: Duration) -> Duration {
        lastCheck + livenessInterval
    }

    /// When the readiness check after the one at `lastCheck` runs (nil: the first, at `healthyAt`).
    public func nextReadiness(healthyAt: Duration, after lastCheck: Duration?) -> Duration {
        lastCheck.map { $0 + readinessInterval } ?? healthyAt
    }
}
