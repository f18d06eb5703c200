/// The life of one kept-open Redis connection, as a value: connected, reconnecting (with the attempt
/// number and the last error), or closed. It decides; `ConnectionKeeper` carries the decisions out.
public struct ConnectionStateMachine: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case connected(generation: Int)
        case reconnecting(attempt: Int, lastError: String?)
        case closed
    }

    public enum Action: Sendable, Equatable {
        /// Wait this long, then try to connect.
        case retry(after: Duration, attempt: Int)
        /// Use the new connection.
        case useConnection(generation: Int)
        /// The keeper was closed meanwhile: close the new connection and stop.
        case closeConnectionAndStop
        case stop
    }

    public private(set) var state: State
    public let backoff: Backoff
    private var generation = 0

    public init(backoff: Backoff) {
        self.backoff = backoff
        self.state = .reconnecting(attempt: 0, lastError: nil)
    }

    public var isConnected: Bool {
        if case .connected = state { return true }
        return false
    }

    public var lastError: String? {
        if case .reconnecting(_, let lastError) = state { return lastError }
        return nil
    }

    /// A connection (first or later) is ready.
    public mutating func connected() -> Action {
        guard state != .closed else { return .closeConnectionAndStop }
        generation += 1
        state = .connected(generation: generation)
        return .useConnection(generation: generation)
    }

    /// The open connection went away. `random` in 0..<1 picks the jitter.
    public mutating func connectionLost(reason: String, random: Double) -> Action {
        guard state != .closed else { return .stop }
        state = .reconnecting(attempt: 0, lastError: reason)
        return .retry(after: backoff.delay(attempt: 0, random: random), attempt: 1)
    }

    /// A reconnection attempt failed.
    public mutating func connectFailed(reason: String, random: Double) -> Action {
        guard case .reconnecting(let attempt, _) = state else { return .stop }
        let next = attempt + 1
        state = .reconnecting(attempt: next, lastError: reason)
        return .retry(after: backoff.delay(attempt: next, random: random), attempt: next + 1)
    }

    public mutating func close() {
        state = .closed
    }
}
