import CloudFoundry

/// How long the simulated users waited for their answers: counts in buckets of two significant digits
/// (1.2ms, 34ms, 560ms, 4.9s), so that a day of a thousand users takes a few hundred counters, and
/// the percentiles are read to that precision. The longest wait is kept exactly.
public struct ResponseTimes: Sendable, Equatable {
    /// Count per bucket, by the bucket's lower bound in microseconds.
    public private(set) var buckets: [Int64: Int] = [:]
    public private(set) var count = 0
    public private(set) var longest: Duration = .zero

    public init() {}

    public mutating func record(_ duration: Duration) {
        let microseconds = max(0, duration.nanosecondsClamped / 1_000)
        buckets[Self.bucket(microseconds), default: 0] += 1
        count += 1
        longest = max(longest, duration)
    }

    /// `microseconds` rounded down to two significant digits (at least 1 µs steps below 100 µs).
    static func bucket(_ microseconds: Int64) -> Int64 {
        var step: Int64 = 1
        while microseconds / step >= 100 { step *= 10 }
        return microseconds / step * step
    }

    /// The time within which `fraction` (0.5, 0.99) of the answers came, to two significant digits
    /// (the lower bound of its bucket); nil before any answer.
    public func percentile(_ fraction: Double) -> Duration? {
        guard count > 0 else { return nil }
        let rank = max(1, Int((Double(count) * fraction).rounded(.up)))
        var seen = 0
        for (bound, number) in buckets.sorted(by: { $0.key < $1.key }) {
            seen += number
            if seen >= rank { return .microseconds(bound) }
        }
        return .microseconds(buckets.keys.max() ?? 0)
    }

    /// How many answers took `limit` or longer.
    public func count(atLeast limit: Duration) -> Int {
        let bound = limit.nanosecondsClamped / 1_000
        // A bucket below the limit can hold nothing at or over it; one at or over it, nothing below.
        return buckets.filter { $0.key >= bound }.values.reduce(0, +)
    }

    /// `p50 3.4ms, p99 850ms, longest 4.98s (12 took 1s or more)`; nil before any answer.
    public var summary: String? {
        guard let median = percentile(0.5), let p99 = percentile(0.99) else { return nil }
        var text = "p50 \(DurationText.format(median)), p99 \(DurationText.format(p99)), longest \(DurationText.format(longest))"
        let slow = count(atLeast: .seconds(1))
        if slow > 0 { text += " (\(CountText.grouped(slow)) took 1s or more)" }
        return text
    }
}
