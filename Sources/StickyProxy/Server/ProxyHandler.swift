import CloudFoundry
import Logging
import NIOCore
import NIOPosix

/// The data of the request in progress on a client connection.
final class Exchange {
    let requestID: String
    let head: HTTPHead
    let startedAt: NIODeadline
    let startedAtWall: WallClockTime
    let request: InboundRequest
    /// The forwarded head without the per-attempt instance headers and the final empty line.
    let forwardedBase: ByteBuffer
    var pool: RoutingTable.Pool?
    var endpoints: [Endpoint] = []
    var balancer = Balancer(algorithm: .roundRobin, maxConnsPerBackend: 0)
    var isTargeted = false
    var pin: AffinityPin = .none
    var tried = TriedEndpoints()
    var selection: Selection?
    var endpoint: Endpoint?
    var holdsInFlight = false
    /// Request body bytes kept to be sent once connected, or again on a retry.
    var retained: [ByteBuffer] = []
    var bytesReceived = 0
    var bytesSent = 0
    var status = 0
    var routerError: String?
    var lastFailure: String?
    var decision: RoutingDecisionKind?
    /// When the first attempt started: from then on the time is the app's, as gorouter counts it
    /// (its `AppRequestStartedAt`, around the whole proxying, body and retries included).
    var appStartedAt: NIODeadline?
    var response = OutboundResponse()
    var logged = false

    init(requestID: String, head: HTTPHead, startedAt: NIODeadline, startedAtWall: WallClockTime, request: InboundRequest, forwardedBase: ByteBuffer)
    {
        self.requestID = requestID
        self.head = head
        self.startedAt = startedAt
        self.startedAtWall = startedAtWall
        self.request = request
        self.forwardedBase = forwardedBase
        self.minorVersion = head.minorVersion
        self.isHeadRequest = head.isMethod("HEAD")
    }

    /// The request target, read once: the path and query (an absolute-form target without its scheme and authority, as Go's `URL.RequestURI()`).
    private(set) lazy var target: String = head.routingTarget
    private(set) lazy var method: String = head.method

    /// The client's HTTP minor version (0 or 1), read once.
    let minorVersion: Int
    let isHeadRequest: Bool
}

/// The only handler of a client connection: reads requests from the raw bytes, routes each one,
/// connects to (or reuses a connection to) the chosen backend, forwards both ways byte for byte
/// (only the heads are rewritten), retries, answers the router's errors, tunnels after a 101, and
/// logs. Decisions come from value types (`RoutingTable`, `RoutingDecider`, `ExchangeStateMachine`,
/// `ConnectionTimeouts`, `BodyFramer`, the rewriters); this class only carries them out.
final class ProxyHandler: ChannelDuplexHandler, RemovableChannelHandler, BackendConnectionOwner {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let core: ProxyCore
    private let loop: LoopContext
    private var context: ChannelHandlerContext?
    private var clientIP = ""
    private var clientAddress = ""
    private var machine: ExchangeStateMachine
    private var timeouts: ConnectionTimeouts
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private var exchange: Exchange?
    private var backend: BackendHandler?
    private var opened = false

    // Client input
    private var inbound: ByteBuffer?
    private var headScanned = 0
    private var requestFramer: BodyFramer?
    private var pendingRead = false
    private var needsBackendFlush = false
    private var closeAfterExchange = false
    private var closing = false
    /// The drain timeout closed this connection: a request cut off is not the client's 499.
    private var closedByDrainTimeout = false
    private var processingClientInput = false

    // Backend input
    private var responseInbound: ByteBuffer?
    private var responseScanned = 0
    private var responseFramer: BodyFramer?
    private var needsClientFlush = false
    private var attemptToken = 0
    /// A response head not written yet, so that a small body can go out in the same write.
    private var pendingClientHead: ByteBuffer?

    // Tunnel
    private var tunnel = false
    private var tunnelStats: EndpointStats?

    init(core: ProxyCore, loop: LoopContext) {
        self.core = core
        self.loop = loop
        let configuration = core.configuration
        self.machine = ExchangeStateMachine(maxReplayBytes: configuration.maxReplayBodyBytes, retryPolicy: core.retryPolicy)
        self.timeouts = ConnectionTimeouts(
            now: .now(),
            idleTimeout: configuration.idleTimeout,
            headerReadTimeout: configuration.headerReadTimeout,
            requestTimeout: configuration.requestTimeout
        )
    }

    private var configuration: ProxyConfiguration { core.configuration }

    // MARK: Connection lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { connectionOpened(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        connectionOpened(context: context)
        context.fireChannelActive()
    }

    private func connectionOpened(context: ChannelHandlerContext) {
        guard !opened else { return }
        opened = true
        if let remote = context.channel.remoteAddress {
            clientIP = remote.ipAddress ?? ""
            clientAddress = remote.port.map { "\(clientIP):\($0)" } ?? clientIP
        }
        timeouts = ConnectionTimeouts(
            now: .now(),
            idleTimeout: configuration.idleTimeout,
            headerReadTimeout: configuration.headerReadTimeout,
            requestTimeout: configuration.requestTimeout
        )
        armTimer()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        closing = true
        if tunnel {
            endTunnel()
        } else {
            switch machine.clientClosed() {
            case .abortBackend(let responseStarted):
                releaseInFlight()
                dropBackend()
                if let exchange, !exchange.logged {
                    if !responseStarted && !closedByDrainTimeout {
                        exchange.status = 499
                        core.metrics.routerError(.clientClosedRequest)
                    }
                    finishLogging(exchange)
                }
            case .none:
                if let exchange, !exchange.logged { finishLogging(exchange) }
            }
        }
        exchange = nil
        inbound = nil
        responseInbound = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Draining: close idle connections now, the others after their response. Tunnels are
            // closed at the end of the drain timeout.
            if tunnel { return }
            closeAfterExchange = true
            if machine.isIdle && (inbound?.readableBytes ?? 0) == 0 { context.close(promise: nil) }
            return
        }
        if case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
            return
        }
        if event is StickyProxyServer.DrainTimeoutReached {
            closedByDrainTimeout = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: Client input

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        if tunnel {
            backend?.send(buffer)
            needsBackendFlush = true
            return
        }
        if case .idle = timeouts.phase { timeouts.bytesReceived(now: .now()) }
        if inbound == nil || inbound!.readableBytes == 0 {
            inbound = buffer
        } else {
            var more = buffer
            inbound!.writeBuffer(&more)
        }
        processClientInput(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsBackendFlush {
            needsBackendFlush = false
            backend?.flush()
        }
        if case .readingHead = timeouts.phase { armTimer() }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if shouldHoldClientReads {
            pendingRead = true
        } else {
            context.read()
        }
    }

    /// Stop reading from the client while the backend cannot take more, or while bytes of a
    /// pipelined request (or an upgrade) wait for the current exchange.
    private var shouldHoldClientReads: Bool {
        if let backend, !backend.isWritable { return true }
        if machine.phase == .connecting && !machine.replayable { return true }
        if !tunnel && machine.requestComplete && !machine.isIdle && (inbound?.readableBytes ?? 0) > 0 { return true }
        return false
    }

    private func resumeClientReads() {
        guard pendingRead, !shouldHoldClientReads, let context else { return }
        pendingRead = false
        context.read()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { backend?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    /// Consumes what the client sent: request heads, bodies, and what follows.
    private func processClientInput(context: ChannelHandlerContext) {
        guard !processingClientInput else { return }
        processingClientInput = true
        defer { processingClientInput = false }
        while !closing, var buffer = inbound, buffer.readableBytes > 0 {
            if tunnel {
                inbound = nil
                backend?.send(buffer)
                needsBackendFlush = true
                return
            }
            if var framer = requestFramer {
                let consumed: Int
                var payloadBytes = 0
                do {
                    consumed = try buffer.withUnsafeReadableBytes { raw throws(BodyFramer.Failure) in
                        try framer.consume(raw) { payloadBytes += $0.count }
                    }
                } catch {
                    return rejectRequest(.badRequest, context: context)
                }
                guard let slice = buffer.readSlice(length: consumed) else { return }
                inbound = buffer
                requestFramer = framer.isComplete ? nil : framer
                // The access log counts body bytes, as gorouter does (chunk framing left out).
                exchange?.bytesReceived += payloadBytes
                requestBody(slice)
                if framer.isComplete { requestEnd(context: context) }
                continue
            }
            guard machine.isIdle else {
                // A complete request waits for its response: what follows is pipelined (or tunnel
                // data after an upgrade request). Keep it for later.
                return
            }
            guard let length = HTTPHeadParser.headLength(in: buffer, scanned: &headScanned) else {
                if buffer.readableBytes > configuration.maxHeaderBytes { rejectRequest(.headersTooLarge, context: context) }
                return
            }
            guard length <= configuration.maxHeaderBytes + 4, let headBytes = buffer.readSlice(length: length) else {
                return rejectRequest(.headersTooLarge, context: context)
            }
            headScanned = 0
            inbound = buffer
            let head: HTTPHead
            do {
                head = try HTTPHeadParser.parseRequest(headBytes)
            } catch {
                return rejectRequest(RequestReadError(error), context: context)
            }
            startExchange(head, context: context)
        }
        if let buffer = inbound, buffer.readableBytes == 0 { inbound = nil }
    }

    /// A request that cannot be read: 400 or 431, then close.
    private func rejectRequest(_ error: RequestReadError, context: ChannelHandlerContext) {
        closing = true
        inbound = nil
        if machine.responseStarted {
            context.close(promise: nil)
            return
        }
        if !machine.isIdle {
            releaseInFlight()
            dropBackend()
        }
        if let exchange, !exchange.logged {
            exchange.status = Int(error.status.code)
            finishLogging(exchange)
        }
        exchange = nil
        context.writeAndFlush(wrapOutboundOut(error.response)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    // MARK: Requests

    private func startExchange(_ head: HTTPHead, context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        let wall = WallClockTime.now()
        timeouts.headReceived(now: now)
        armTimer()
        let requestID = loop.nextRequestID()
        let (base, request) = RequestRewriter.rewrite(
            head,
            clientIP: clientIP,
            vcapRequestID: requestID,
            requestStartMillis: wall.milliseconds,
            policy: core.policy,
            allocator: context.channel.allocator
        )
        let exchange = Exchange(requestID: requestID, head: head, startedAt: now, startedAtWall: wall, request: request, forwardedBase: base)
        self.exchange = exchange
        machine.requestHead(idempotent: head.hasIdempotentMethod || request.hasIdempotencyKey, isUpgrade: request.isUpgrade)
        if !head.keepAlive { closeAfterExchange = true }
        // The body, if any, is read by the framer whatever happens to the request.
        let framing = head.requestBodyFraming
        requestFramer = framing == .none ? nil : BodyFramer(framing)

        route(exchange, context: context)
        if requestFramer == nil && exchange === self.exchange { requestEnd(context: context) }
    }

    private func route(_ exchange: Exchange, context: ChannelHandlerContext) {
        let request = exchange.request
        guard !request.host.isEmpty else { return answer(.emptyHost, context: context) }
        // As gorouter's lookup: the header is checked before the route (a malformed one is a 400
        // whatever the host), and an empty one counts as none (Go's Header.Get).
        var target: AppInstanceTarget?
        if let header = request.appInstanceHeader, !header.isEmpty {
            guard let parsed = AppInstanceTarget(header: header) else { return answer(.invalidAppInstanceHeader, context: context) }
            target = parsed
        }
        let found = loop.lookup(host: request.host, path: exchange.target)
        guard let pool = found, !pool.endpoints.isEmpty else {
            if let target {
                return answer(.unknownInstance(host: request.host, appGUID: target.appGUID, index: target.index), context: context)
            }
            // A route with no endpoint exists only when --empty-pool-timeout keeps it: 503, as gorouter.
            return answer(found == nil ? .unknownRoute(host: request.host) : .noEndpoints(host: request.host), context: context)
        }
        exchange.pool = pool
        exchange.endpoints = pool.endpoints
        if let target {
            guard let endpoint = pool.endpoints.first(where: { $0.appID == target.appGUID && $0.instanceIndex == target.index }) else {
                return answer(.unknownInstance(host: request.host, appGUID: target.appGUID, index: target.index), context: context)
            }
            exchange.endpoints = [endpoint]
            exchange.isTargeted = true
        }
        exchange.balancer = Balancer(algorithm: pool.loadBalancing ?? configuration.balancing, maxConnsPerBackend: configuration.maxConnsPerBackend)
        if exchange.balancer.allOverloaded(exchange.endpoints) {
            return answer(.connectionLimitReached(host: request.host), context: context)
        }
        // Read for targeted requests too: as in gorouter, a request pinned to another instance than
        // the one it targets gets `__VCAP_ID__` of the targeted one (the selection ignores the pin).
        exchange.pin = core.policy.pin(
            for: AffinityRequest(
                cookieHeaders: request.cookieHeaders, clientAddress: clientIP, isUpgrade: request.isUpgrade,
                negotiatesAuthentication: request.negotiatesAuthentication))
        startAttempt(context: context)
    }

    private func requestBody(_ slice: ByteBuffer) {
        guard let exchange, slice.readableBytes > 0 else { return }
        switch machine.requestBody(bytes: slice.readableBytes) {
        case .buffer:
            exchange.retained.append(slice)
        case .forward(let retain):
            if retain {
                exchange.retained.append(slice)
            } else if !exchange.retained.isEmpty {
                exchange.retained.removeAll()
            }
            backend?.send(slice)
            needsBackendFlush = true
        case .drop:
            break
        }
    }

    private func requestEnd(context: ChannelHandlerContext) {
        switch machine.requestEnd() {
        case .buffer, .forward, .drop:
            break
        case .becomeIdle:
            exchange = nil
            exchangeFinished(context: context)
        }
    }

    // MARK: Attempts

    private func startAttempt(context: ChannelHandlerContext) {
        guard let exchange, let pool = exchange.pool else { return }
        let selection: Selection?
        if exchange.isTargeted {
            selection = exchange.tried.count == 0 ? Selection(index: 0, kind: .targeted) : nil
        } else {
            let selectionContext = SelectionContext(
                balancer: exchange.balancer,
                tried: exchange.tried,
                now: .now(),
                cursor: pool.cursor,
                randomSeed: loop.nextRandom()
            )
            selection = core.decider.select(endpoints: exchange.endpoints, pin: exchange.pin, attempt: machine.attempt + 1, context: selectionContext)
        }
        guard let selection else {
            machine.exhausted()
            if case .required(let id) = exchange.pin, exchange.tried.count == 0 {
                exchange.decision = .requiredInstanceUnavailable
                let why = requiredInstanceUnavailableReason(instanceID: id, endpoints: exchange.endpoints)
                core.logger.warning(
                    "A Negotiate authentication step pinned to instance '\(id)' got 502: \(why). With --sticky-sessions-for-auth-negotiate, as in gorouter, such a request never falls back to another instance; the client has to start authenticating again.",
                    metadata: ["vcap_request_id": "\(exchange.requestID)", "host": "\(exchange.request.host)"])
            }
            // gorouter's NoEndpointsAvailable, when no attempt failed before.
            return answer(.endpointFailure(exchange.lastFailure ?? "No endpoints available"), context: context)
        }
        if machine.attempt > 0 { core.metrics.retried() }
        if selection.clearedFailures {
            for endpoint in exchange.endpoints { endpoint.stats.clearFailure() }
        }
        exchange.tried.insert(selection.index)
        exchange.selection = selection
        exchange.decision = selection.kind
        let endpoint = exchange.endpoints[selection.index]
        exchange.endpoint = endpoint
        machine.dispatch()
        endpoint.stats.requestStarted()
        exchange.holdsInFlight = true
        if exchange.appStartedAt == nil { exchange.appStartedAt = .now() }
        // An upgrade gets a fresh backend connection: servers such as Hummingbird answer an upgrade on
        // a connection that already carried a request with a 307 to the same URL (gorouter also dials anew).
        connect(to: endpoint, allowPooled: !exchange.request.isUpgrade, context: context)
    }

    private func connect(to endpoint: Endpoint, allowPooled: Bool, context: ChannelHandlerContext) {
        if allowPooled, let pooled = loop.backendPool.take(ObjectIdentifier(endpoint.stats)) {
            attach(pooled, reused: true)
            return
        }
        guard let address = endpoint.socketAddress else {
            return attemptFailed(.connectFailed("lookup \(endpoint.host): no such host"), context: context)
        }
        attemptToken += 1
        let token = attemptToken
        let core = self.core
        let stats = endpoint.stats
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(configuration.dialTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let pool = core.loopContext(for: channel.eventLoop)?.backendPool else { throw ChannelError.ioOnClosedChannel }
                    try channel.pipeline.syncOperations.addHandler(BackendHandler(endpointStats: stats, pool: pool))
                }
            }
            .connect(to: address)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    guard token == self.attemptToken, self.machine.phase == .connecting,
                        let handler = try? channel.pipeline.syncOperations.handler(type: BackendHandler.self)
                    else {
                        channel.close(promise: nil)
                        return
                    }
                    self.attach(handler, reused: false)
                case .failure(let error):
                    guard token == self.attemptToken, self.machine.phase == .connecting, let context = self.context else { return }
                    self.attemptFailed(.connectFailed(Self.describe(error)), context: context)
                }
            }
    }

    private func attach(_ connection: BackendHandler, reused: Bool) {
        guard let exchange, let endpoint = exchange.endpoint, let context else {
            loop.backendPool.release(connection, now: .now())
            return
        }
        attemptToken += 1
        let token = attemptToken
        backend = connection
        connection.owner = self
        responseInbound = nil
        responseScanned = 0
        responseFramer = nil
        machine.connected(reused: reused)
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenSuccess {
            if token == self.attemptToken { self.machine.headWritten() }
        }
        // One buffer for the whole head: the base followed by this attempt's instance headers.
        var head = exchange.forwardedBase
        RequestRewriter.writeInstanceHeaders(for: endpoint, into: &head)
        connection.send(head, promise: written)
        for slice in exchange.retained { connection.send(slice) }
        if !machine.replayable { exchange.retained.removeAll() }
        connection.flush()
        resumeClientReads()
    }

    private func attemptFailed(_ failure: BackendFailure, context: ChannelHandlerContext) {
        guard let exchange, let endpoint = exchange.endpoint else { return }
        releaseInFlight()
        dropBackend()
        core.metrics.backendFailed()
        let reason = failure.description(address: endpoint.address)
        exchange.lastFailure = reason
        let attemptsAllowed: Int
        if exchange.isTargeted {
            attemptsAllowed = 1
        } else {
            refreshEndpoints(exchange)
            // Distinct endpoints: the attempts made, and one more per endpoint of the route not tried yet.
            let untried = exchange.endpoints.count - exchange.tried.count
            attemptsAllowed = max(min(configuration.maxAttempts, machine.attempt + untried), 1)
        }
        switch machine.backendFailed(failure, attemptsAllowed: attemptsAllowed) {
        case .reconnect:
            endpoint.stats.inFlightCount.add(1, ordering: .relaxed)
            exchange.holdsInFlight = true
            connect(to: endpoint, allowPooled: false, context: context)
        case .retry(let markFailed):
            if markFailed { markEndpointFailed(endpoint) }
            core.logger.warning(
                "backend failed, retrying on another instance",
                metadata: [
                    "vcap_request_id": "\(exchange.requestID)", "instance": "\(endpoint.instanceID)", "address": "\(endpoint.address)",
                    "attempt": "\(machine.attempt)", "error": "\(reason)",
                ]
            )
            startAttempt(context: context)
        case .respondBadGateway(let markFailed):
            if markFailed { markEndpointFailed(endpoint) }
            core.logger.warning(
                "backend failed, answering 502",
                metadata: [
                    "vcap_request_id": "\(exchange.requestID)", "instance": "\(endpoint.instanceID)", "address": "\(endpoint.address)",
                    "attempt": "\(machine.attempt)", "error": "\(reason)",
                ]
            )
            answer(.endpointFailure(reason), context: context)
        case .closeClient:
            exchange.routerError = RouterError.endpointFailure(reason).routerErrorHeader
            if !exchange.logged { finishLogging(exchange) }
            context.close(promise: nil)
        case .ignore:
            break
        }
    }

    /// Before a retry: the route's endpoints as they are now, the tried ones carried over
    /// (`TriedEndpoints.init(_:of:in:)`). A request that started while its route had one instance,
    /// which then stopped, used to get a 502 although a replacement had been registered meanwhile.
    private func refreshEndpoints(_ exchange: Exchange) {
        let current = loop.lookup(host: exchange.request.host, path: exchange.target)
        let endpoints = current?.endpoints ?? []
        exchange.tried = TriedEndpoints(exchange.tried, of: exchange.endpoints, in: endpoints)
        exchange.endpoints = endpoints
        if let current { exchange.pool = current }
    }

    private func markEndpointFailed(_ endpoint: Endpoint) {
        endpoint.stats.markFailed(until: .now() + configuration.retryAfterFailure)
    }

    private func releaseInFlight() {
        guard let exchange, exchange.holdsInFlight, let endpoint = exchange.endpoint else { return }
        exchange.holdsInFlight = false
        endpoint.stats.responseHeadReceived()
    }

    /// Closes the backend connection of the attempt in progress (it is in an unknown state).
    private func dropBackend() {
        attemptToken += 1
        responseInbound = nil
        responseFramer = nil
        guard let backend else { return }
        self.backend = nil
        backend.owner = nil
        backend.close()
    }

    // MARK: Backend input

    var acceptsResponseBytes: Bool { context?.channel.isWritable ?? false }

    func backendRead(_ buffer: ByteBuffer, from connection: BackendHandler) {
        guard connection === backend, let context else {
            connection.owner = nil
            connection.close()
            return
        }
        if tunnel {
            context.write(wrapOutboundOut(buffer), promise: nil)
            needsClientFlush = true
            return
        }
        if responseInbound == nil || responseInbound!.readableBytes == 0 {
            responseInbound = buffer
        } else {
            var more = buffer
            responseInbound!.writeBuffer(&more)
        }
        processBackendInput(connection: connection, context: context)
    }

    private func processBackendInput(connection: BackendHandler, context: ChannelHandlerContext) {
        while connection === backend, let exchange, var buffer = responseInbound, buffer.readableBytes > 0 {
            if var framer = responseFramer {
                let dechunk = exchange.response.clientFraming == .dechunked
                var payload: [Range<Int>] = []
                var payloadBytes = 0
                let consumed: Int
                do {
                    consumed = try buffer.withUnsafeReadableBytes { raw throws(BodyFramer.Failure) in
                        try framer.consume(raw) { range in
                            payloadBytes += range.count
                            if dechunk { payload.append(range) }
                        }
                    }
                } catch {
                    return backendMisbehaved("malformed chunked body", context: context)
                }
                guard let slice = buffer.readSlice(length: consumed) else { return }
                responseInbound = buffer
                responseFramer = framer
                // The access log counts body bytes, as gorouter does (chunk framing left out).
                exchange.bytesSent += payloadBytes
                if dechunk {
                    for range in payload where !range.isEmpty {
                        if let part = slice.getSlice(at: slice.readerIndex + range.lowerBound, length: range.count) {
                            forwardToClient(part, exchange)
                        }
                    }
                } else if slice.readableBytes > 0 {
                    forwardToClient(slice, exchange)
                }
                if framer.isComplete {
                    responseComplete(exchange: exchange, connection: connection, context: context)
                }
                continue
            }
            guard machine.phase == .awaitingResponse else {
                // Bytes after a complete response: the connection cannot be trusted any more.
                responseInbound = nil
                return
            }
            guard let length = HTTPHeadParser.headLength(in: buffer, scanned: &responseScanned) else {
                if buffer.readableBytes > 1 << 20 { backendMisbehaved("response head larger than 1 MiB", context: context) }
                return
            }
            guard let headBytes = buffer.readSlice(length: length) else { return }
            responseScanned = 0
            responseInbound = buffer
            let head: HTTPHead
            do {
                head = try HTTPHeadParser.parseResponse(headBytes)
            } catch {
                return backendMisbehaved("malformed response head", context: context)
            }
            switch machine.responseHead(status: head.statusCode) {
            case .forwardInformational:
                context.write(wrapOutboundOut(ResponseRewriter.informational(head, clientMinorVersion: exchange.minorVersion)), promise: nil)
                needsClientFlush = true
            case .upgrade:
                forwardResponseHead(head, exchange: exchange, context: context)
                startTunnel(exchange: exchange, connection: connection, context: context)
                return
            case .forward:
                if head.statusCode == 101 {
                    // Switching protocols without being asked to: the connection is no longer HTTP.
                    return backendMisbehaved("101 Switching Protocols to a request that did not ask for an upgrade", context: context)
                }
                forwardResponseHead(head, exchange: exchange, context: context)
                let framer = BodyFramer(exchange.response.backendFraming)
                if framer.isComplete {
                    responseComplete(exchange: exchange, connection: connection, context: context)
                } else {
                    responseFramer = framer
                }
            }
        }
    }

    private func forwardToClient(_ slice: ByteBuffer, _ exchange: Exchange) {
        needsClientFlush = true
        if pendingClientHead != nil && slice.readableBytes <= 16 * 1024 {
            var body = slice
            pendingClientHead!.writeBuffer(&body)
            return
        }
        writePendingHead()
        context?.write(wrapOutboundOut(slice), promise: nil)
    }

    /// Writes (without flushing) a response head kept back for coalescing.
    private func writePendingHead() {
        guard let head = pendingClientHead else { return }
        pendingClientHead = nil
        context?.write(wrapOutboundOut(head), promise: nil)
    }

    /// The app sent something that is not HTTP: a 502 when the client has no response yet, else close.
    private func backendMisbehaved(_ what: String, context: ChannelHandlerContext) {
        guard let exchange, let endpoint = exchange.endpoint else { return }
        core.logger.warning(
            "the app sent an invalid response",
            metadata: ["instance": "\(endpoint.instanceID)", "address": "\(endpoint.address)", "problem": "\(what)"])
        if machine.responseStarted {
            exchange.routerError = RouterError.endpointFailure(what).routerErrorHeader
            if !exchange.logged { finishLogging(exchange) }
            dropBackend()
            writePendingHead()
            context.close(promise: nil)
        } else {
            releaseInFlight()
            dropBackend()
            machine.exhausted()
            answer(.endpointFailure(what), context: context)
        }
    }

    func backendReadComplete(from connection: BackendHandler) {
        guard let context, needsClientFlush else { return }
        needsClientFlush = false
        writePendingHead()
        context.flush()
    }

    func backendClosed(_ connection: BackendHandler, error: (any Error)?) {
        guard connection === backend, let context else { return }
        backend = nil
        if tunnel {
            context.flush()
            closeClientAfterWrites(context: context)
            return
        }
        if let framer = responseFramer, framer.endsAtClose, let exchange {
            // A body delimited by the connection's end is complete.
            responseFramer = nil
            _ = machine.responseEnd(backendKeepAlive: false)
            finishResponse(exchange: exchange, context: context)
            return
        }
        switch machine.phase {
        case .connecting, .awaitingResponse:
            let failure: BackendFailure = error.map { .connectionReset(Self.describe($0, operation: "read")) } ?? .closedBeforeResponse
            attemptFailed(failure, context: context)
        case .streamingResponse, .drainingRequest:
            // The backend died mid-response: the client cannot be told with a status any more.
            if let exchange {
                exchange.routerError = RouterError.endpointFailure(error.map { Self.describe($0, operation: "read") } ?? "EOF").routerErrorHeader
                if !exchange.logged { finishLogging(exchange) }
            }
            context.close(promise: nil)
        case .idle, .answered, .upgraded:
            break
        }
    }

    func backendWritabilityChanged(_ connection: BackendHandler) {
        guard connection === backend, connection.isWritable else { return }
        resumeClientReads()
    }

    // MARK: Responses

    private func forwardResponseHead(_ head: HTTPHead, exchange: Exchange, context: ChannelHandlerContext) {
        releaseInFlight()
        guard let endpoint = exchange.endpoint, let pool = exchange.pool else { return }
        var response = ResponseRewriter.framing(
            of: head,
            requestMethodIsHead: exchange.isHeadRequest,
            clientMinorVersion: exchange.minorVersion,
            clientKeepAlive: !closeAfterExchange
        )
        if exchange.request.isUpgrade && head.statusCode != 101 {
            // The request's upgrade was declined: what the client sent after it is not HTTP.
            response.closeClient = true
        }
        exchange.response = response
        let setCookies = head.fields.contains { $0.kind == .setCookie } ? head.values(.setCookie) : []
        var affinity = core.policy.response(
            AffinityResponse(
                pin: exchange.pin,
                servedInstanceID: endpoint.instanceID,
                servedAddress: endpoint.address,
                setCookieHeaders: setCookies,
                contextPath: pool.uri.contextPath,
                isUpgrade: exchange.request.isUpgrade,
                nowSecondsSince1970: exchange.startedAtWall.seconds,
                requestCookieHeaders: exchange.request.cookieHeaders,
                negotiatesAuthentication: head.negotiatesAuthentication
            )
        )
        if let key = core.configuration.traceKey, exchange.head.firstValue(.xVcapTrace) == key {
            // gorouter's trace headers: which router and which instance answered.
            affinity.headers += [
                HeaderField("X-Vcap-Router", configuration.bindHost), HeaderField("X-Vcap-Backend", endpoint.address),
                HeaderField("X-Cf-Routeendpoint", endpoint.address),
            ]
        }
        let kind = exchange.selection?.kind ?? .balanced
        exchange.decision = affinity.startedSession && kind == .balanced ? .newSession : kind
        exchange.status = head.statusCode
        if head.statusCode == 400 {
            core.noteMisroutedSession(
                MisroutedSession.Exchange(
                    target: exchange.target, status: 400, decision: exchange.decision, isUpgrade: exchange.request.isUpgrade,
                    instanceIndex: endpoint.instanceIndex, instanceID: endpoint.instanceHeaderValue, pinnedInstanceID: exchange.pin.instanceID))
        }
        pendingClientHead = ResponseRewriter.rewrite(
            head,
            response: response,
            clientMinorVersion: exchange.minorVersion,
            vcapRequestID: exchange.requestID,
            affinity: affinity,
            allocator: context.channel.allocator
        )
        needsClientFlush = true
    }

    private func responseComplete(exchange: Exchange, connection: BackendHandler, context: ChannelHandlerContext) {
        let leftovers = (responseInbound?.readableBytes ?? 0) > 0
        let reusable = machine.responseEnd(backendKeepAlive: exchange.response.backendKeepAlive) && !leftovers
        backend = nil
        responseInbound = nil
        responseFramer = nil
        attemptToken += 1
        if reusable {
            loop.backendPool.release(connection, now: .now())
        } else {
            connection.owner = nil
            connection.close()
        }
        finishResponse(exchange: exchange, context: context)
    }

    private func finishResponse(exchange: Exchange, context: ChannelHandlerContext) {
        finishLogging(exchange)
        needsClientFlush = false
        writePendingHead()
        if exchange.response.closeClient || closeAfterExchange {
            closing = true
            closeClientAfterWrites(context: context)
            return
        }
        context.flush()
        if machine.isIdle {
            self.exchange = nil
            exchangeFinished(context: context)
        }
    }

    private func closeClientAfterWrites(context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: promise)
        promise.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// Sends the router's own answer (an error) for the current request.
    private func answer(_ error: RouterError, context: ChannelHandlerContext) {
        guard let exchange else { return }
        releaseInFlight()
        dropBackend()
        machine.answered()
        core.metrics.routerError(error)
        exchange.status = Int(error.status.code)
        exchange.routerError = error.routerErrorHeader
        // gorouter's access log counts the error body it wrote (its body_bytes_sent).
        exchange.bytesSent = error.body.utf8.count
        let close = closeAfterExchange || exchange.request.isUpgrade
        finishLogging(exchange)
        let response = error.response(minorVersion: exchange.minorVersion, vcapRequestID: exchange.requestID, close: close)
        if close {
            closing = true
            context.write(wrapOutboundOut(response), promise: nil)
            closeClientAfterWrites(context: context)
            return
        }
        context.writeAndFlush(wrapOutboundOut(response), promise: nil)
        if machine.isIdle {
            self.exchange = nil
            exchangeFinished(context: context)
        }
    }

    /// The connection is ready for the next request: read what was pipelined.
    private func exchangeFinished(context: ChannelHandlerContext) {
        timeouts.exchangeFinished(now: .now())
        if closeAfterExchange {
            closing = true
            closeClientAfterWrites(context: context)
            return
        }
        armTimer()
        if (inbound?.readableBytes ?? 0) > 0 { processClientInput(context: context) }
        resumeClientReads()
    }

    // MARK: Tunnels

    private func startTunnel(exchange: Exchange, connection: BackendHandler, context: ChannelHandlerContext) {
        finishLogging(exchange)
        tunnel = true
        timer?.cancel()
        timer = nil
        timeouts.upgraded()
        let stats = exchange.endpoint?.stats
        stats?.tunnelOpened()
        tunnelStats = stats
        self.exchange = nil
        // Bytes the app sent right behind its 101, and bytes the client sent right behind its
        // upgrade request, go through first.
        writePendingHead()
        if let rest = responseInbound, rest.readableBytes > 0 {
            context.write(wrapOutboundOut(rest), promise: nil)
        }
        responseInbound = nil
        responseFramer = nil
        context.flush()
        if let early = inbound, early.readableBytes > 0 {
            connection.send(early)
            connection.flush()
        }
        inbound = nil
        needsClientFlush = false
        resumeClientReads()
    }

    private func endTunnel() {
        tunnelStats?.tunnelClosed()
        tunnelStats = nil
        if let backend {
            self.backend = nil
            backend.owner = nil
            backend.closeAfterWrites()
        }
    }

    // MARK: Timeouts

    private func armTimer() {
        guard let context, let deadline = timeouts.deadline else { return }
        if let timerDeadline, timer != nil, timerDeadline <= deadline.at { return }
        timer?.cancel()
        timerDeadline = deadline.at
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline.at) {
            self.timerFired()
        }
    }

    private func timerFired() {
        timer = nil
        timerDeadline = nil
        guard let context, !closing else { return }
        switch timeouts.expired(now: .now()) {
        case .none:
            armTimer()
        case .idle:
            context.close(promise: nil)
        case .headerRead:
            core.logger.info(
                "closing a client connection that did not send a complete request head in time", metadata: ["client": "\(clientAddress)"])
            context.close(promise: nil)
        case .request:
            switch machine.requestTimedOut() {
            case .respondBadGateway:
                core.metrics.backendFailed()
                closeAfterExchange = true
                answer(.endpointFailure(BackendFailure.timedOut.description(address: exchange?.endpoint?.address ?? "-")), context: context)
            case .closeClient:
                if let exchange {
                    exchange.routerError = RouterError.endpointFailure("context deadline exceeded").routerErrorHeader
                    if !exchange.logged { finishLogging(exchange) }
                }
                context.close(promise: nil)
            case .none:
                armTimer()
            }
        }
    }

    // MARK: Logging

    private func finishLogging(_ exchange: Exchange) {
        guard !exchange.logged else { return }
        exchange.logged = true
        let duration = NIODeadline.now() - exchange.startedAt
        let endpoint = exchange.endpoint
        if exchange.status > 0 { core.metrics.responseSent(status: exchange.status) }
        if let decision = exchange.decision { core.metrics.decided(decision) }
        core.metrics.requestFinished(after: duration)
        if let accessLog = loop.accessLog {
            let head = exchange.head
            var record = AccessLogRecord()
            record.host = exchange.request.host
            record.startedAt = exchange.startedAtWall
            record.method = exchange.method
            record.uri = exchange.target
            record.proto = head.minorVersion == 0 ? "HTTP/1.0" : "HTTP/1.1"
            record.status = exchange.status
            record.bytesReceived = exchange.bytesReceived
            record.bytesSent = exchange.bytesSent
            record.referer = head.firstValue(.referer)
            record.userAgent = head.firstValue(.userAgent)
            record.clientAddress = clientAddress
            record.backendAddress = endpoint?.address
            record.forwardedFor = exchange.request.forwardedFor
            record.forwardedProto = exchange.request.forwardedProto
            record.vcapRequestID = exchange.requestID
            let total = Double(duration.nanoseconds) / 1e9
            record.responseTime = total
            // gorouter_time: the response time less the app's (from the first attempt to the end of
            // the response). A router error that reached no app is all router time.
            let appTime = exchange.appStartedAt.map { Double((NIODeadline.now() - $0).nanoseconds) / 1e9 } ?? 0
            record.gorouterTime = max(total - appTime, 0)
            record.appID = endpoint?.appID
            record.appIndex = endpoint?.instanceIndex
            record.instanceID = endpoint?.instanceID
            record.routerError = exchange.routerError
            record.decision = exchange.decision
            record.pinnedInstanceID = exchange.pin.instanceID
            record.attempts = machine.attempt
            accessLog.append(record)
        }
        if core.feed.hasSubscribers {
            let target = exchange.target
            core.feed.publish(
                RoutingEvent(
                    time: exchange.startedAtWall.rfc3339,
                    vcapRequestID: exchange.requestID,
                    method: exchange.method,
                    host: exchange.request.host,
                    path: String(target.prefix { $0 != "?" }),
                    decision: exchange.decision,
                    instanceID: exchange.decision == nil ? nil : endpoint?.instanceID,
                    instanceIndex: exchange.decision == nil ? nil : endpoint?.instanceIndex,
                    appID: exchange.decision == nil ? nil : endpoint?.appID,
                    backend: exchange.decision == nil ? nil : endpoint?.address,
                    pinnedInstanceID: exchange.pin.instanceID,
                    attempt: machine.attempt,
                    status: exchange.status,
                    responseTime: Double(duration.nanoseconds) / 1e9,
                    routerError: exchange.routerError,
                    upgrade: exchange.request.isUpgrade
                )
            )
        }
    }

    /// An error in Go's words: `connect: connection refused`, `read: connection reset by peer`.
    static func describe(_ error: any Error, operation: String = "connect") -> String {
        if let error = error as? IOError {
            return "\(operation): \(String(cString: strerror(error.errnoCode)).lowercased())"
        }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout(let amount): return "i/o timeout after \(amount.durationText)"
            case .eof: return "EOF"
            default: return "\(error)"
            }
        }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return describe(first.error, operation: operation) }
            return "connection failed"
        }
        return "\(error)"
    }
}
