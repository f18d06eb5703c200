import Synchronization

/// How many subscription events wait in the hub's queue, and the rule for taking more: at most
/// `limit` at a time. A value, tested without I/O; `SubscriberBacklog` applies it.
///
/// The hub's delivery loop reads one queue (subscription events, new sockets, position checks). Were
/// every subscription event copied into it as it came, a loop that falls behind (a slow Redis while it
/// fills a gap, a machine under load) would grow the queue without bound, and the subscriber's own
/// bound, which drops messages and says so, would never apply.
struct BacklogCount: Equatable {
    let limit: Int
    private(set) var queued = 0

    /// `limit`: at least 1 (a smaller one would hold the subscription for good).
    init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// Takes one more event in if there is room.
    mutating func admit() -> Bool {
        guard queued < limit else { return false }
        queued += 1
        return true
    }

    /// The loop took an event out of the queue.
    mutating func taken() {
        queued = max(0, queued - 1)
    }
}

/// Moves a subscription's events into the hub's queue, at most `limit` at a time: past it, it stops
/// reading the subscription until the loop has taken one. The subscription then buffers up to its own
/// bound, past which it drops messages and yields `.mayHaveMissedMessages(.bufferOverflow)`, and the
/// hub reads what it missed from the stream. Memory stays bounded; nothing is lost silently.
final class SubscriberBacklog: Sendable {
    private struct State {
        var count: BacklogCount
        var waiter: CheckedContinuation<Bool, Never>?
        var cancelled = false
    }

    private let state: Mutex<State>

    init(limit: Int) {
        state = Mutex(State(count: BacklogCount(limit: limit)))
    }

    /// Events in the queue now.
    var queued: Int { state.withLock { $0.count.queued } }

    /// Forwards every event of `events` to `yield`, waiting while the queue is full. Returns when the
    /// sequence ends or the task is cancelled.
    func forward<Event: Sendable>(_ events: AsyncStream<Event>, to yield: (Event) -> Void) async {
        for await event in events {
            guard await admit() else { return }
            yield(event)
        }
    }

    /// The loop took an event out of the queue: a forwarder waiting for room goes on.
    func taken() {
        let waiter: CheckedContinuation<Bool, Never>? = state.withLock { state in
            state.count.taken()
            guard state.waiter != nil, state.count.admit() else { return nil }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: true)
    }

    /// Waits for room in the queue and takes it; false when the task was cancelled. With room (the
    /// usual case), it takes it without suspending: a suspension per event is a hop through the
    /// task executor for every line, which showed in the latency under load.
    private func admit() async -> Bool {
        let now: Bool? = state.withLock { state in
            if state.cancelled { return false }
            return state.count.admit() ? true : nil
        }
        if let now { return now }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let now: Bool? = state.withLock { state in
                    if state.cancelled { return false }
                    if state.count.admit() { return true }
                    state.waiter = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                state.cancelled = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: false)
        }
    }
}
