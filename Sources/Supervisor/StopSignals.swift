import UnixSignals

/// What a stop signal (SIGINT, SIGTERM, SIGHUP) asks of `cluster up`: the first, a graceful stop; a
/// later one, a second Ctrl-C, to kill every process at once. A repeat that comes within `echo` of
/// the first is the same request delivered twice, not a second one: `timeout(1)` signals both its
/// child and its own process group, and process managers do the same, so the two arrive together.
/// A person pressing Ctrl-C twice is slower than that.
public struct StopSignals: Sendable, Equatable {
    public enum Action: Sendable, Equatable {
        /// Stop gracefully: instances, then the proxy, then Redis.
        case stop
        /// The first signal's twin: nothing to do.
        case ignoreEcho
        /// SIGKILL every process group now.
        case killEverything
    }

    public static let defaultEcho: Duration = .milliseconds(250)

    public let echo: Duration
    private var firstAt: Duration?

    public init(echo: Duration = StopSignals.defaultEcho) {
        self.echo = echo
    }

    /// The action for a signal received at `now` (any monotonic clock's reading).
    public mutating func received(at now: Duration) -> Action {
        guard let firstAt else {
            self.firstAt = now
            return .stop
        }
        return now - firstAt < echo ? .ignoreEcho : .killEverything
    }
}

/// Runs `body` until it returns; SIGINT or SIGTERM (Ctrl-C) cancels it, and what it returns then (a
/// summary of what it did before) is returned all the same. What `cluster chaos`, `cluster users` and
/// `cluster status --watch` end with.
public func cancellingOnInterrupt<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let work = Task { try await body() }
    let signals = Task {
        for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
            work.cancel()
            return
        }
    }
    defer { signals.cancel() }
    return try await withTaskCancellationHandler {
        try await work.value
    } onCancel: {
        work.cancel()
    }
}
