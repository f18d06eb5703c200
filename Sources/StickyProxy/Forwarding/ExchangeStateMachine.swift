/// The life of one request on a client connection, from its head to the end of its response: which
/// attempt it is on, what to do with request body parts, whether a failure is retried, whether the
/// backend connection can be reused. A value with pure transitions; `ProxyHandler` carries out the
/// actions.
struct ExchangeStateMachine {
    enum Phase: Equatable {
        /// No request in progress.
        case idle
        /// The router answered the request itself; the rest of its body is dropped.
        case answered
        /// Waiting for a connection to the backend of the current attempt.
        case connecting
        /// The request is being sent; no response head yet.
        case awaitingResponse
        /// The response head was forwarded; its body is streaming.
        case streamingResponse
        /// The response is complete but the client is still sending the request body (dropped).
        case drainingRequest
        /// Switched protocols: raw bytes are tunnelled.
        case upgraded
    }

    private(set) var phase: Phase = .idle
    private(set) var requestComplete = false
    private(set) var progress = AttemptProgress()
    private(set) var attempt = 0
    /// The whole request so far is kept, so it can be sent again.
    private(set) var replayable = true
    private(set) var retainedBytes = 0
    private(set) var idempotent = false
    private(set) var isUpgradeRequest = false
    private var reconnects = 0

    let maxReplayBytes: Int
    let retryPolicy: RetryPolicy

    init(maxReplayBytes: Int, retryPolicy: RetryPolicy) {
        self.maxReplayBytes = maxReplayBytes
        self.retryPolicy = retryPolicy
    }

    var isIdle: Bool { phase == .idle }
    /// A response head went to the client.
    var responseStarted: Bool { phase == .streamingResponse || phase == .drainingRequest || phase == .upgraded }

    // MARK: Request side

    /// A new request head arrived.
    mutating func requestHead(idempotent: Bool, isUpgrade: Bool) {
        precondition(phase == .idle, "request head while \(phase)")
        self.idempotent = idempotent
        self.isUpgradeRequest = isUpgrade
        requestComplete = false
        replayable = true
        retainedBytes = 0
        attempt = 0
        reconnects = 0
        progress = AttemptProgress()
    }

    /// The router answers this request itself (an error).
    mutating func answered() {
        phase = requestComplete ? .idle : .answered
    }

    /// The next attempt starts connecting.
    mutating func dispatch() {
        attempt += 1
        reconnects = 0
        progress = AttemptProgress()
        phase = .connecting
    }

    enum BodyAction: Equatable {
        /// Not connected yet: keep it to send once connected.
        case buffer
        /// Send it; `retain` keeps a copy for a retry.
        case forward(retain: Bool)
        case drop
    }

    mutating func requestBody(bytes: Int) -> BodyAction {
        switch phase {
        case .connecting:
            retain(bytes)
            return .buffer
        case .awaitingResponse:
            retain(bytes)
            return .forward(retain: replayable)
        case .streamingResponse:
            return .forward(retain: false)
        case .idle, .answered, .drainingRequest, .upgraded:
            return .drop
        }
    }

    private mutating func retain(_ bytes: Int) {
        guard replayable else { return }
        retainedBytes += bytes
        if retainedBytes > maxReplayBytes { replayable = false }
    }

    enum EndAction: Equatable {
        case buffer
        case forward
        /// The request that was answered or drained is over: ready for the next one.
        case becomeIdle
        case drop
    }

    mutating func requestEnd() -> EndAction {
        requestComplete = true
        switch phase {
        case .connecting: return .buffer
        case .awaitingResponse, .streamingResponse: return .forward
        case .answered, .drainingRequest:
            phase = .idle
            return .becomeIdle
        case .idle, .upgraded: return .drop
        }
    }

    // MARK: Backend side

    mutating func connected(reused: Bool) {
        guard phase == .connecting else { return }
        progress.reusedConnection = reused
        phase = .awaitingResponse
    }

    mutating func headWritten() {
        progress.headWritten = true
    }

    enum FailureAction: Equatable {
        /// Send again on a fresh connection to the same endpoint (a stale keep-alive connection).
        case reconnect
        /// Try another endpoint.
        case retry(markFailed: Bool)
        /// Answer 502.
        case respondBadGateway(markFailed: Bool)
        /// A response already started: close the client connection.
        case closeClient
        /// Nothing is waiting on this backend any more.
        case ignore
    }

    /// The current attempt failed. `attemptsAllowed`: min(max attempts, the attempts made plus the
    /// route's endpoints not tried yet).
    mutating func backendFailed(_ failure: BackendFailure, attemptsAllowed: Int) -> FailureAction {
        switch phase {
        case .connecting, .awaitingResponse:
            // A stale keep-alive connection is replaced once; after that the endpoint itself failed.
            if reconnects > 0 { progress.reusedConnection = false }
            let canReplay = replayable || (!progress.headWritten && retainedBytes == 0)
            let verdict = retryPolicy.verdict(
                for: failure,
                progress: progress,
                idempotent: idempotent,
                replayable: canReplay,
                attempt: attempt,
                attemptsAllowed: attemptsAllowed
            )
            switch verdict {
            case .reconnectSameEndpoint:
                reconnects += 1
                progress = AttemptProgress()
                phase = .connecting
                return .reconnect
            case .retry(let markFailed):
                return .retry(markFailed: markFailed)
            case .fail(let markFailed):
                answered()
                return .respondBadGateway(markFailed: markFailed)
            case .abort:
                return .closeClient
            }
        case .streamingResponse, .drainingRequest:
            return .closeClient
        case .idle, .answered, .upgraded:
            return .ignore
        }
    }

    /// No endpoint is left for another attempt: answer 502.
    mutating func exhausted() {
        answered()
    }

    enum HeadAction: Equatable {
        /// 1xx other than 101: pass it on and keep waiting.
        case forwardInformational
        /// 101 to an upgrade request: switch to tunnelling.
        case upgrade
        case forward
    }

    mutating func responseHead(status: Int) -> HeadAction {
        guard phase == .awaitingResponse else { return .forward }
        if status == 101 && isUpgradeRequest {
            phase = .upgraded
            progress.responseStarted = true
            return .upgrade
        }
        if (100..<200).contains(status) && status != 101 { return .forwardInformational }
        progress.responseStarted = true
        phase = .streamingResponse
        return .forward
    }

    /// The response ended. Returns true when the backend connection can go back to the pool.
    mutating func responseEnd(backendKeepAlive: Bool) -> Bool {
        guard phase == .streamingResponse else { return false }
        let reusable = requestComplete && backendKeepAlive && !isUpgradeRequest
        phase = requestComplete ? .idle : .drainingRequest
        return reusable
    }

    // MARK: Client side and time

    enum AbortAction: Equatable {
        /// Stop the attempt in progress: close its backend connection. `responseStarted`: whether the
        /// client already had a response head (otherwise the request is logged as 499).
        case abortBackend(responseStarted: Bool)
        case none
    }

    mutating func clientClosed() -> AbortAction {
        defer { phase = .idle }
        switch phase {
        case .connecting, .awaitingResponse: return .abortBackend(responseStarted: false)
        case .streamingResponse, .drainingRequest: return .abortBackend(responseStarted: true)
        case .idle, .answered, .upgraded: return .none
        }
    }

    enum TimeoutAction: Equatable {
        case respondBadGateway
        case closeClient
        case none
    }

    mutating func requestTimedOut() -> TimeoutAction {
        switch phase {
        case .connecting, .awaitingResponse:
            answered()
            return .respondBadGateway
        case .streamingResponse, .drainingRequest:
            return .closeClient
        case .idle, .answered, .upgraded:
            return .none
        }
    }
}
