import NIOCore

/// The deadlines of one client connection: keep-alive idle time between requests, the time to send a
/// complete request head once it started (slow clients), and the whole-request timeout. Upgraded
/// connections have none. A value: the handler feeds it events and arms one timer for `deadline`.
struct ConnectionTimeouts: Equatable {
    enum Phase: Equatable {
        case idle(since: NIODeadline)
        case readingHead(since: NIODeadline)
        case inRequest(since: NIODeadline)
        case tunnel
    }

    enum Expiry: Equatable {
        /// No request for the idle timeout: close quietly.
        case idle
        /// The request head did not complete in time: close (slow client).
        case headerRead
        /// The request took longer than the request timeout.
        case request
    }

    private(set) var phase: Phase
    let idleTimeout: TimeAmount
    let headerReadTimeout: TimeAmount
    let requestTimeout: TimeAmount

    init(now: NIODeadline, idleTimeout: TimeAmount, headerReadTimeout: TimeAmount, requestTimeout: TimeAmount) {
        self.phase = .idle(since: now)
        self.idleTimeout = idleTimeout
        self.headerReadTimeout = headerReadTimeout
        self.requestTimeout = requestTimeout
    }

    /// Bytes arrived from the client.
    mutating func bytesReceived(now: NIODeadline) {
        if case .idle = phase { phase = .readingHead(since: now) }
    }

    mutating func headReceived(now: NIODeadline) {
        if phase != .tunnel { phase = .inRequest(since: now) }
    }

    /// The response is complete and the connection waits for the next request.
    mutating func exchangeFinished(now: NIODeadline) {
        if phase != .tunnel { phase = .idle(since: now) }
    }

    mutating func upgraded() {
        phase = .tunnel
    }

    /// When the current phase expires, and as what; nil when it never does.
    var deadline: (at: NIODeadline, expiry: Expiry)? {
        switch phase {
        case .idle(let since):
            return idleTimeout.nanoseconds > 0 ? (since + idleTimeout, .idle) : nil
        case .readingHead(let since):
            return headerReadTimeout.nanoseconds > 0 ? (since + headerReadTimeout, .headerRead) : nil
        case .inRequest(let since):
            return requestTimeout.nanoseconds > 0 ? (since + requestTimeout, .request) : nil
        case .tunnel:
            return nil
        }
    }

    /// What expired at `now`, if anything.
    func expired(now: NIODeadline) -> Expiry? {
        guard let deadline, deadline.at <= now else { return nil }
        return deadline.expiry
    }
}
