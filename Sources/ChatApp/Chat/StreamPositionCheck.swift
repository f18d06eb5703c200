/// Whether every line stored in the stream reaches this instance through its subscription, as a value.
///
/// Redis pub/sub delivers at most once. A PUBLISH made while the subscriber is between two connections
/// is accounted for (the subscriber reports the reconnect and the hub reads the gap from the stream),
/// but a message lost any other way would go unnoticed until the next one: its readers would simply
/// never see it. So the hub compares, every interval, the stream's newest id with the last line it
/// delivered. A line that is in the stream and still not delivered one whole interval later was missed:
/// the hub reads the gap from the stream. A line merely in flight (stored a moment ago, its PUBLISH on
/// the way, or queued behind a backlog) is given that interval. Centrifugo checks stream positions the
/// same way for the same reason.
public struct StreamPositionCheck: Sendable, Equatable {
    public enum Decision: Sendable, Equatable {
        /// Everything in the stream was delivered.
        case inStep
        /// The stream is ahead; look again at the next check.
        case wait
        /// The stream was already ahead, up to `missed`, at the previous check, and still is: read the
        /// lines after the last delivered one from the stream.
        case fillGap(missed: StreamID)
    }

    /// The stream's newest id at the previous check, when it was ahead of the delivery.
    public private(set) var ahead: StreamID?

    public init() {}

    /// One check: `newest` is the stream's newest entry (nil: the stream is empty or gone), `delivered`
    /// the newest line this instance has delivered.
    public mutating func check(newest: StreamID?, delivered: StreamID?) -> Decision {
        let delivered = delivered ?? .zero
        guard let newest, newest > delivered else {
            // In step; or the stream is behind (emptied, or a Redis that lost data): new lines get newer ids.
            ahead = nil
            return .inStep
        }
        if let ahead, ahead > delivered {
            self.ahead = nil
            return .fillGap(missed: ahead)
        }
        ahead = newest
        return .wait
    }
}
