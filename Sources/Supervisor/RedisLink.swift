import CloudFoundry

/// What can go wrong on the network between one instance and Redis (`cluster redis slow|hang|cut`),
/// as Toxiproxy's latency, timeout and reset_peer toxics do: Redis itself keeps running, and the other
/// instances keep their own link.
public enum RedisLinkFault: Sendable, Equatable {
    /// Every chunk Redis sends (replies, pub/sub messages) is held for `latency` ± `jitter`
    /// (uniform), in order; what the instance sends goes at once.
    case slow(latency: Duration, jitter: Duration)
    /// Open connections are reset (RST) and new ones are accepted and reset at once, as a peer that
    /// restarted or a firewall that rejects does.
    case cut
    /// Nothing gets through, either way, and nothing is refused: a partition that drops packets.
    /// Connections stay open with what was sent held, new ones are accepted and wait; when it ends,
    /// everything held goes on, in order, as TCP delivers it after a partition shorter than its
    /// own timeouts (even what a client sent before it gave up waiting).
    case hang

    /// The latencies `cluster redis slow --latency` takes.
    public static let latencyRange = Duration.milliseconds(1)...Duration.seconds(10)

    /// How long to hold one chunk: `latency` ± `jitter`, from a random value (pure: the caller draws it).
    public func delay(random: UInt64) -> Duration {
        guard case .slow(let latency, let jitter) = self else { return .zero }
        let spread = jitter.nanosecondsClamped
        guard spread > 0 else { return latency }
        // Uniform over [latency - jitter, latency + jitter].
        let offset = Int64(random % UInt64(2 * spread + 1)) - spread
        return max(.zero, latency + .nanoseconds(offset))
    }

    /// `slow (+200ms ±50ms)`, `hung`, `cut`.
    public var summary: String {
        switch self {
        case .slow(let latency, let jitter):
            "slow (+\(DurationText.format(latency))\(jitter > .zero ? " ±\(DurationText.format(jitter))" : ""))"
        case .cut: "cut"
        case .hang: "hung"
        }
    }

    /// `cluster redis slow`'s fault from its options as typed (`--latency 200ms --jitter 50ms`), or
    /// what is wrong with them: for the command line and for the running cluster alike.
    public static func slow(latency: String?, jitter: String?) -> Result<RedisLinkFault, FigureError> {
        guard let latency else { return .failure(FigureError("slow needs --latency (e.g. --latency 200ms)")) }
        guard let delay = DurationText.parse(latency) else { return .failure(FigureError("--latency '\(latency)' is not a duration (e.g. 200ms)")) }
        let jitterText = jitter ?? "0ms"
        guard let spread = DurationText.parse(jitterText) else {
            return .failure(FigureError("--jitter '\(jitterText)' is not a duration (e.g. 50ms)"))
        }
        if let problem = problem(latency: delay, jitter: spread) { return .failure(FigureError(problem)) }
        return .success(.slow(latency: delay, jitter: spread))
    }

    public struct FigureError: Error, Equatable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Checks the figures of `cluster redis slow`; nil when they are fine, else what is wrong.
    public static func problem(latency: Duration, jitter: Duration) -> String? {
        if !latencyRange.contains(latency) {
            return "--latency \(DurationText.format(latency)) is not from 1ms to 10s"
        }
        if jitter < .zero || jitter > latency {
            return
                "--jitter \(DurationText.format(jitter)) is more than --latency \(DurationText.format(latency)); a chunk cannot arrive before it was sent"
        }
        return nil
    }
}

/// The link between one instance index and Redis: healthy, or under a fault until a time (pure state
/// machine; the supervisor carries out the actions with its relay and a timer).
public struct RedisLinkState: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        /// Give the relay this fault (nil: forward as it comes).
        case apply(RedisLinkFault?)
        /// Reset every connection open through the relay now.
        case resetConnections
        /// Call `expire(generation:)` at this time.
        case scheduleEnd(generation: Int, at: Duration)
    }

    public private(set) var fault: RedisLinkFault?
    public private(set) var ends: Duration?
    /// Counts impositions, so that the timer of an earlier fault ends nothing.
    public private(set) var generation = 0

    public init() {}

    /// Puts the link under `fault` for `duration` from `now`, replacing any other fault.
    public mutating func impose(_ fault: RedisLinkFault, for duration: Duration, now: Duration) -> [Action] {
        generation += 1
        self.fault = fault
        ends = now + duration
        var actions: [Action] = [.apply(fault)]
        if fault == .cut { actions.append(.resetConnections) }
        actions.append(.scheduleEnd(generation: generation, at: now + duration))
        return actions
    }

    /// Ends the fault now; nothing to do when the link is healthy.
    public mutating func heal() -> [Action] {
        guard fault != nil else { return [] }
        generation += 1
        fault = nil
        ends = nil
        return [.apply(nil)]
    }

    /// The timer of the imposition `generation` fired: ends that fault, unless another replaced it.
    public mutating func expire(generation: Int) -> [Action] {
        guard generation == self.generation else { return [] }
        return heal()
    }

    /// The time left, for `cluster status`.
    public func remaining(now: Duration) -> Duration? {
        guard fault != nil, let ends else { return nil }
        return max(.zero, ends - now)
    }
}
