/// A repeated event logged at most once per `interval`, counting the occurrences it left out, so that a
/// misconfiguration explains itself without flooding the log.
public struct ThrottledLog: Sendable {
    public let interval: Duration
    private var lastLogged: ContinuousClock.Instant?
    private var suppressed = 0

    public init(interval: Duration) {
        self.interval = interval
    }

    /// Records one occurrence at `now`. nil: stay quiet; a number: log now, mentioning that many
    /// occurrences left out since the previous line.
    public mutating func record(now: ContinuousClock.Instant) -> Int? {
        if let lastLogged, now - lastLogged < interval {
            suppressed += 1
            return nil
        }
        lastLogged = now
        defer { suppressed = 0 }
        return suppressed
    }
}
