import NIOCore

/// When a WebSocket's queued frames go to the kernel: at once, or a little later together with the
/// frames that follow them (`SocketIOConfiguration.writeCoalescing`). Value type, no I/O: the outbox
/// asks, carries out, and reports back.
///
/// The rule is Nagle's, per connection and with a clock instead of an ACK: a connection that was not
/// flushed within the last `window` is flushed at once (a lone message waits for nothing); one that
/// was is flushed `window` after its last flush, with everything written to it meanwhile. A client
/// that receives a stream of messages (every broadcast of a busy room) gets them in one write system
/// call per window instead of one per message, for at most `window` of added latency.
///
/// `Waiting` is what a deferred flush needs to find its connection again (the outbox keeps the
/// channel), handed back by `due(now:)`.
struct FlushPacing<Waiting> {
    typealias Key = ObjectIdentifier

    enum Decision: Equatable {
        /// Flush now.
        case flush
        /// Flushed recently: leave the frames queued; the deferred flush happens at this deadline (a
        /// timer is needed unless one is set for this deadline or earlier).
        case deferUntil(NIODeadline)
        /// Already waiting for a deferred flush: nothing to do.
        case alreadyDeferred
    }

    /// The last flush of each connection flushed within the last window (older entries are pruned).
    private(set) var lastFlush: [Key: NIODeadline] = [:]
    /// Connections whose flush waits, with the earliest deadline among them.
    private(set) var deferred: [Key: Waiting] = [:]
    private(set) var nextDeadline: NIODeadline?
    private var lastPrune: NIODeadline = .uptimeNanoseconds(0)
    /// The longest window asked for: an entry older than this can no longer defer anything.
    private var longestWindow: TimeAmount = .zero

    /// A connection has frames written and not flushed; `waiting` is kept if its flush is deferred.
    mutating func wrote(_ key: Key, _ waiting: Waiting, window: TimeAmount, now: NIODeadline) -> Decision {
        guard window > .zero else { return .flush }
        longestWindow = max(longestWindow, window)
        if deferred[key] != nil { return .alreadyDeferred }
        if let last = lastFlush[key], now < last + window {
            let due = last + window
            deferred[key] = waiting
            if let next = nextDeadline, next <= due { return .alreadyDeferred }
            nextDeadline = due
            return .deferUntil(due)
        }
        lastFlush[key] = now
        pruneIfDue(now: now)
        return .flush
    }

    /// The deferred flushes are due: the connections to flush now.
    mutating func due(now: NIODeadline) -> [Waiting] {
        let due = deferred
        deferred.removeAll(keepingCapacity: true)
        nextDeadline = nil
        for key in due.keys { lastFlush[key] = now }
        pruneIfDue(now: now)
        return Array(due.values)
    }

    /// A connection went away (or was flushed by other means, a close): forget it.
    mutating func forget(_ key: Key) {
        lastFlush.removeValue(forKey: key)
        deferred.removeValue(forKey: key)
        if deferred.isEmpty { nextDeadline = nil }
    }

    /// Drops the entries that can no longer defer anything, at most once a second, on a flush at
    /// once or a deferred one (the table holds the connections flushed within the last window, not
    /// every connection ever seen, also when the peers of some closed their connections).
    private mutating func pruneIfDue(now: NIODeadline) {
        guard now - lastPrune >= .seconds(1) else { return }
        lastPrune = now
        lastFlush = lastFlush.filter { key, last in now < last + longestWindow || deferred[key] != nil }
    }
}
