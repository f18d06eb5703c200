/// How an attempt to reach a backend failed.
public enum BackendFailure: Sendable, Equatable {
    /// Could not connect (refused, unreachable, dial timeout).
    case connectFailed(String)
    /// The backend closed the connection before any byte of the response (EOF).
    case closedBeforeResponse
    /// The connection was reset (or failed with another socket error) before the response.
    case connectionReset(String)
    /// The request timeout expired.
    case timedOut

    /// The error text for `X-Cf-Routererror: endpoint_failure (<text>)` and the logs, worded like Go's.
    public func description(address: String) -> String {
        switch self {
        case .connectFailed(let reason): return "dial tcp \(address): \(reason)"
        case .closedBeforeResponse: return "EOF"
        case .connectionReset(let reason): return "read tcp \(address): \(reason)"
        case .timedOut: return "context deadline exceeded"
        }
    }
}

/// How far one attempt got.
public struct AttemptProgress: Sendable, Equatable {
    /// The request head was completely written to the backend socket.
    public var headWritten = false
    /// The connection came from the keep-alive pool.
    public var reusedConnection = false
    /// A response head was received (and maybe forwarded).
    public var responseStarted = false

    public init(headWritten: Bool = false, reusedConnection: Bool = false, responseStarted: Bool = false) {
        self.headWritten = headWritten
        self.reusedConnection = reusedConnection
        self.responseStarted = responseStarted
    }
}

/// What to do after a failed attempt.
public enum FailureVerdict: Sendable, Equatable {
    /// A keep-alive connection from the pool had gone stale: send again on a new connection to the
    /// same endpoint; this does not count as an attempt (Go's transport does the same, unseen by gorouter).
    case reconnectSameEndpoint
    /// Try another endpoint.
    case retry(markFailed: Bool)
    /// Answer 502 `endpoint_failure`.
    case fail(markFailed: Bool)
    /// A response was already forwarded: close the client connection, never retry.
    case abort
}

/// gorouter's retry rules (cloud-foundry-behaviour.md, section 2): at most `maxAttempts` attempts on
/// distinct endpoints; retriable are connect failures, any error before the request head was fully
/// written, and EOF on idempotent requests; nothing is retried once a response started. Failed
/// connects and resets mark the endpoint failed (skipped by round-robin for 30 s); an EOF does not
/// (gorouter's `FailableClassifiers`: dial errors and a reset on read): an app that closes an idle
/// keep-alive connection is not taken out of rotation.
public struct RetryPolicy: Sendable {
    public var maxAttempts: Int

    public init(maxAttempts: Int = 3) {
        self.maxAttempts = maxAttempts
    }

    /// `idempotent`: GET, HEAD, OPTIONS, TRACE, or an `Idempotency-Key` header (and no body that can
    /// no longer be replayed). `replayable`: the request (head and any body) can be sent again.
    public func verdict(
        for failure: BackendFailure,
        progress: AttemptProgress,
        idempotent: Bool,
        replayable: Bool,
        attempt: Int,
        attemptsAllowed: Int
    ) -> FailureVerdict {
        if progress.responseStarted { return .abort }
        if failure == .timedOut { return .fail(markFailed: false) }

        let markFailed: Bool
        let retriable: Bool
        switch failure {
        case .connectFailed:
            markFailed = true
            retriable = true
        case .closedBeforeResponse:
            retriable = !progress.headWritten || idempotent
            markFailed = false
        case .connectionReset:
            retriable = !progress.headWritten || idempotent
            markFailed = true
        case .timedOut:
            return .fail(markFailed: false)
        }

        if progress.reusedConnection && replayable && (!progress.headWritten || idempotent || failure == .closedBeforeResponse) {
            if case .connectFailed = failure {} else { return .reconnectSameEndpoint }
        }
        guard retriable, replayable, attempt < min(maxAttempts, attemptsAllowed) else { return .fail(markFailed: markFailed) }
        return .retry(markFailed: markFailed)
    }

    /// gorouter's (and Go's) idempotency rule.
    public static func isIdempotent(method: String, hasIdempotencyKey: Bool) -> Bool {
        switch method {
        case "GET", "HEAD", "OPTIONS", "TRACE": return true
        default: return hasIdempotencyKey
        }
    }
}
