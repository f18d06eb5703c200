/// When a client counts as too slow, for both transports: the bytes waiting for it (the long-polling
/// queue, or what a WebSocket has not handed to the kernel) pass `limit`. A burst (a recovery replay:
/// finite, sent once) sent while the client is within the limit raises the limit by the burst's own
/// size until the client has drained back within it. The client is judged by what it fails to drain,
/// not by the size of what it was owed, and what follows the burst (a welcome, live lines) still has
/// the usual room. Without this, a client that missed more than the limit was closed, came back with
/// the same offset, was sent the same replay, and so on for as long as its offset stayed in the log.
struct SlowClientLimit: Sendable, Hashable {
    let limit: Int
    /// What bursts added to the limit, until the client drains back within it.
    private(set) var allowance = 0

    init(limit: Int) {
        self.limit = limit
    }

    /// A burst of `bytes` is sent to a client with `waiting` bytes not yet taken.
    mutating func burst(of bytes: Int, waiting: Int) {
        if waiting <= limit { allowance += bytes }
    }

    /// Whether a client with `waiting` bytes not yet taken is too slow.
    func isSlow(waiting: Int) -> Bool {
        waiting > limit + allowance
    }

    /// The client took what it was sent down to `waiting` bytes: back within the limit, the bursts'
    /// allowance is gone.
    mutating func drained(to waiting: Int) {
        if waiting <= limit { allowance = 0 }
    }
}
