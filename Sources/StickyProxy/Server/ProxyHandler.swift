import CloudFoundry
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The data of the request in progress on a client connection.
final class Exchange {
    let requestID: String
    let method: HTTPMethod
    let uri: String
    let clientVersion: HTTPVersion
    let startedAt: NIODeadline
    let startedAtWall: WallClockTime
    let request: InboundRequest
    let forwardedHead: HTTPRequestHead
    var pool: RoutingTable.Pool?
    var endpoints: [Endpoint] = []
    var balancer = Balancer(algorithm: .roundRobin, maxConnsPerBackend: 0)
    var isTargeted = false
    var pin: AffinityPin = .none
    var tried = TriedEndpoints()
    var selection: Selection?
    var endpoint: Endpoint?
    var holdsInFlight = false
    /// Request parts kept to be sent once connected, or again on a retry.
    var retained: [HTTPClientRequestPart] = []
    var bytesReceived = 0
    var bytesSent = 0
    var status = 0
    var routerError: String?
    var lastFailure: String?
    var decision: RoutingDecisionKind?
    var attemptStartedAt: NIODeadline?
    var responseHeadAt: NIODeadline?
    var backendKeepAlive = true
    var closeClient = false
    var logged = false

    init(
        requestID: String,
        head: HTTPRequestHead,
        startedAt: NIODeadline,
        startedAtWall: WallClockTime,
        request: InboundRequest,
        forwardedHead: HTTPRequestHead
    ) {
        self.requestID = requestID
        self.method = head.method
        self.uri = head.uri
        self.clientVersion = head.version
        self.startedAt = startedAt
        self.startedAtWall = startedAtWall
        self.request = request
        self.forwardedHead = forwardedHead
    }
}

/// The last handler of a client connection: routes each request, connects to (or reuses a connection
/// to) the chosen backend, forwards both ways, retries, answers the router's errors, switches to
/// tunnelling after a 101, and logs. Decisions come from the value types (`RoutingTable`,
/// `RoutingDecider`, `ExchangeStateMachine`, `ConnectionTimeouts`, rewriters); this class only
/// carries them out.
final class ProxyHandler: ChannelDuplexHandler, RemovableChannelHandler, BackendConnectionOwner {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// The HTTP handlers of the client pipeline, removed when the connection is upgraded.
    struct ClientHandlers {
        let observer: RequestStartObserver
        let encoder: HTTPResponseEncoder
        let decoder: ByteToMessageHandler<HTTPRequestDecoder>
        let pipelining: HTTPServerPipelineHandler
    }

    private let core: ProxyCore
    private let loop: LoopContext
    private let clientHandlers: ClientHandlers
    private var context: ChannelHandlerContext?
    private var clientIP = ""
    private var clientAddress = ""
    private var machine: ExchangeStateMachine
    private var timeouts: ConnectionTimeouts
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private var exchange: Exchange?
    private var backend: BackendHandler?
    private var pendingRead = false
    private var needsBackendFlush = false
    private var needsClientFlush = false
    private var closeAfterExchange = false
    private var attemptToken = 0
    private var upgradePending = false

    init(core: ProxyCore, loop: LoopContext, clientHandlers: ClientHandlers) {
        self.core = core
        self.loop = loop
        self.clientHandlers = clientHandlers
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

    private var opened = false

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
        switch machine.clientClosed() {
        case .abortBackend(let responseStarted):
            releaseInFlight()
            dropBackend()
            if let exchange, !exchange.logged {
                if !responseStarted {
                    exchange.status = 499
                    exchange.routerError = nil
                    core.metrics.routerError(.clientClosedRequest)
                }
                finishLogging(exchange)
            }
        case .none:
            if let exchange, !exchange.logged { finishLogging(exchange) }
        }
        exchange = nil
        context.fireChannelInactive()
    }

    // MARK: Client reads

    /// Called by `RequestStartObserver` for every read from the client.
    func clientBytesArrived() {
        if case .idle = timeouts.phase { timeouts.bytesReceived(now: .now()) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            startExchange(head, context: context)
        case .body(let buffer):
            requestBody(buffer)
        case .end(let trailers):
            requestEnd(trailers, context: context)
        }
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
        if let backend, !backend.isWritable {
            pendingRead = true
        } else if machine.phase == .connecting && !machine.replayable {
            // Not connected yet and already more body than we keep: wait for the backend.
            pendingRead = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { backend?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parserError = error as? HTTPParserError {
            let readError = RequestReadError(parserError)
            if machine.responseStarted {
                context.close(promise: nil)
                return
            }
            if machine.phase != .idle && machine.phase != .answered {
                releaseInFlight()
                dropBackend()
            }
            let exchange = self.exchange
            exchange?.status = Int(readError.status.code)
            if let exchange, !exchange.logged { finishLogging(exchange) }
            self.exchange = nil
            var body = context.channel.allocator.buffer(capacity: readError.body.utf8.count)
            body.writeString(readError.body)
            context.write(wrapOutboundOut(.head(readError.responseHead)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
        context.close(promise: nil)
    }

    // MARK: Request

    private func startExchange(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard machine.isIdle else {
            // HTTPServerPipelineHandler holds pipelined requests; getting here means a broken client.
            context.close(promise: nil)
            return
        }
        let now = NIODeadline.now()
        let wall = WallClockTime.now()
        timeouts.headReceived(now: now)
        armTimer()
        let requestID = loop.nextRequestID()
        let (forwarded, request) = RequestRewriter.rewrite(
            head,
            clientIP: clientIP,
            vcapRequestID: requestID,
            requestStartMillis: wall.milliseconds,
            policy: core.policy
        )
        let exchange = Exchange(
            requestID: requestID,
            head: head,
            startedAt: now,
            startedAtWall: wall,
            request: request,
            forwardedHead: forwarded
        )
        self.exchange = exchange
        machine.requestHead(
            idempotent: RetryPolicy.isIdempotent(method: head.method.rawValue, hasIdempotencyKey: request.hasIdempotencyKey),
            isUpgrade: request.isUpgrade
        )
        if !head.isKeepAlive { closeAfterExchange = true }

        guard !request.host.isEmpty else { return answer(.emptyHost, context: context) }
        let table = loop.table()
        guard let pool = table.lookup(host: request.host, path: head.uri), !pool.endpoints.isEmpty else {
            return answer(.unknownRoute(host: request.host), context: context)
        }
        exchange.pool = pool
        exchange.endpoints = pool.endpoints
        if let header = request.appInstanceHeader {
            guard let target = AppInstanceTarget(header: header) else { return answer(.invalidAppInstanceHeader, context: context) }
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
        if !exchange.isTargeted {
            exchange.pin = core.policy.pin(
                for: AffinityRequest(cookieHeaders: request.cookieHeaders, clientAddress: clientIP, isUpgrade: request.isUpgrade)
            )
        }
        startAttempt(context: context)
    }

    private func requestBody(_ buffer: ByteBuffer) {
        guard let exchange else { return }
        exchange.bytesReceived += buffer.readableBytes
        switch machine.requestBody(bytes: buffer.readableBytes) {
        case .buffer:
            exchange.retained.append(.body(.byteBuffer(buffer)))
        case .forward(let retain):
            if retain {
                exchange.retained.append(.body(.byteBuffer(buffer)))
            } else if !exchange.retained.isEmpty {
                exchange.retained.removeAll()
            }
            backend?.send(.body(.byteBuffer(buffer)))
            needsBackendFlush = true
        case .drop:
            break
        }
    }

    private func requestEnd(_ trailers: HTTPHeaders?, context: ChannelHandlerContext) {
        switch machine.requestEnd() {
        case .buffer:
            exchange?.retained.append(.end(trailers))
        case .forward:
            if machine.replayable && !machine.responseStarted { exchange?.retained.append(.end(trailers)) }
            backend?.send(.end(trailers))
            needsBackendFlush = true
        case .becomeIdle:
            exchange = nil
            exchangeFinished(context: context)
        case .drop:
            break
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
                cursor: pool.cursor.next(count: exchange.endpoints.count),
                randomSeed: loop.nextRandom()
            )
            selection = core.decider.select(
                endpoints: exchange.endpoints,
                pin: exchange.pin,
                attempt: machine.attempt + 1,
                context: selectionContext
            )
        }
        guard let selection else {
            machine.exhausted()
            return answer(.endpointFailure(exchange.lastFailure ?? "no endpoints available"), context: context)
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
        exchange.attemptStartedAt = .now()
        connect(to: endpoint, allowPooled: true, context: context)
    }

    private func connect(to endpoint: Endpoint, allowPooled: Bool, context: ChannelHandlerContext) {
        if allowPooled, let pooled = loop.backendPool.take(endpoint.address) {
            attach(pooled, reused: true)
            return
        }
        guard let address = endpoint.socketAddress else {
            return attemptFailed(.connectFailed("lookup \(endpoint.host): no such host"), context: context)
        }
        attemptToken += 1
        let token = attemptToken
        let core = self.core
        let key = endpoint.address
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(configuration.dialTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let pool = core.loopContext(for: channel.eventLoop)?.backendPool else {
                        throw ChannelError.ioOnClosedChannel
                    }
                    var encoderConfiguration = HTTPRequestEncoder.Configuration()
                    encoderConfiguration.automaticallySetFramingHeaders = false
                    let encoder = HTTPRequestEncoder(configuration: encoderConfiguration)
                    let decoder = ByteToMessageHandler(
                        HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes, informationalResponseStrategy: .forward)
                    )
                    let handler = BackendHandler(key: key, pool: pool, encoder: encoder, decoder: decoder)
                    try channel.pipeline.syncOperations.addHandlers([encoder, decoder, handler])
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
        machine.connected(reused: reused)
        let head = RequestRewriter.addingInstanceHeaders(to: exchange.forwardedHead, endpoint: endpoint)
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenSuccess {
            if token == self.attemptToken { self.machine.headWritten() }
        }
        connection.send(.head(head), promise: written)
        for part in exchange.retained { connection.send(part) }
        if !machine.replayable { exchange.retained.removeAll() }
        connection.flush()
        if pendingRead && connection.isWritable {
            pendingRead = false
            context.read()
        }
    }

    private func attemptFailed(_ failure: BackendFailure, context: ChannelHandlerContext) {
        guard let exchange, let endpoint = exchange.endpoint else { return }
        releaseInFlight()
        dropBackend()
        core.metrics.backendFailed()
        let reason = failure.description(address: endpoint.address)
        exchange.lastFailure = reason
        let attemptsAllowed = exchange.isTargeted ? 1 : max(min(configuration.maxAttempts, exchange.endpoints.count), 1)
        let action = machine.backendFailed(failure, attemptsAllowed: attemptsAllowed)
        switch action {
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
        guard let backend else { return }
        self.backend = nil
        backend.owner = nil
        backend.close()
    }

    // MARK: Backend events

    var acceptsResponseBytes: Bool { context?.channel.isWritable ?? false }

    func backendRead(_ part: HTTPClientResponsePart, from connection: BackendHandler) {
        guard connection === backend, let exchange, let context else {
            connection.owner = nil
            connection.close()
            return
        }
        switch part {
        case .head(let head):
            switch machine.responseHead(status: Int(head.status.code)) {
            case .forwardInformational:
                let informational = HTTPResponseHead(version: exchange.clientVersion, status: head.status)
                context.write(wrapOutboundOut(.head(informational)), promise: nil)
                needsClientFlush = true
            case .upgrade:
                forwardResponseHead(head, exchange: exchange, context: context)
                context.write(wrapOutboundOut(.end(nil)), promise: nil)
                upgradePending = true
            case .forward:
                forwardResponseHead(head, exchange: exchange, context: context)
            }
        case .body(let buffer):
            guard machine.phase == .streamingResponse || machine.phase == .drainingRequest else { return }
            exchange.bytesSent += buffer.readableBytes
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            needsClientFlush = true
        case .end(let trailers):
            guard machine.phase == .streamingResponse else { return }
            responseComplete(trailers, exchange: exchange, connection: connection, context: context)
        }
    }

    func backendReadComplete(from connection: BackendHandler) {
        guard let context else { return }
        if upgradePending && connection === backend {
            upgradePending = false
            switchToTunnel(connection: connection, context: context)
            return
        }
        if needsClientFlush {
            needsClientFlush = false
            context.flush()
        }
    }

    func backendClosed(_ connection: BackendHandler, error: (any Error)?) {
        guard connection === backend, let context else { return }
        backend = nil
        switch machine.phase {
        case .connecting, .awaitingResponse:
            let failure: BackendFailure = error.map { .connectionReset(Self.describe($0)) } ?? .closedBeforeResponse
            attemptFailed(failure, context: context)
        case .streamingResponse, .drainingRequest:
            // The backend died mid-response: the client cannot be told with a status any more.
            if let exchange {
                exchange.routerError = RouterError.endpointFailure(error.map(Self.describe) ?? "EOF").routerErrorHeader
                if !exchange.logged { finishLogging(exchange) }
            }
            context.close(promise: nil)
        case .idle, .answered, .upgraded:
            break
        }
    }

    func backendWritabilityChanged(_ connection: BackendHandler) {
        guard connection === backend, connection.isWritable, pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    // MARK: Responses

    private func forwardResponseHead(_ head: HTTPResponseHead, exchange: Exchange, context: ChannelHandlerContext) {
        releaseInFlight()
        exchange.responseHeadAt = .now()
        guard let endpoint = exchange.endpoint, let pool = exchange.pool else { return }
        let (rewritten, response) = ResponseRewriter.rewrite(
            head,
            requestMethod: exchange.method,
            clientVersion: exchange.clientVersion,
            clientKeepAlive: !closeAfterExchange,
            vcapRequestID: exchange.requestID
        )
        var outgoing = rewritten
        let affinity = core.policy.response(
            AffinityResponse(
                pin: exchange.pin,
                servedInstanceID: endpoint.instanceID,
                servedAddress: endpoint.address,
                setCookieHeaders: response.setCookieHeaders,
                contextPath: pool.uri.contextPath,
                isUpgrade: exchange.request.isUpgrade,
                nowSecondsSince1970: exchange.startedAtWall.seconds
            )
        )
        for cookie in affinity.setCookies { outgoing.headers.add(name: "Set-Cookie", value: cookie) }
        for header in affinity.headers { outgoing.headers.replaceOrAdd(name: header.name, value: header.value) }
        let kind = exchange.selection?.kind ?? .balanced
        exchange.decision = affinity.startedSession && kind == .balanced ? .newSession : kind
        exchange.status = Int(head.status.code)
        exchange.backendKeepAlive = response.backendKeepAlive
        exchange.closeClient = response.closeClient
        if exchange.request.isUpgrade && head.status.code != 101 {
            // The client's HTTP decoder stopped at the upgrade request: this connection cannot carry
            // another request.
            exchange.closeClient = true
            outgoing.headers.replaceOrAdd(name: "Connection", value: "close")
        }
        context.write(wrapOutboundOut(.head(outgoing)), promise: nil)
        needsClientFlush = true
    }

    private func responseComplete(_ trailers: HTTPHeaders?, exchange: Exchange, connection: BackendHandler, context: ChannelHandlerContext) {
        let reusable = machine.responseEnd(backendKeepAlive: exchange.backendKeepAlive)
        backend = nil
        attemptToken += 1
        if reusable {
            loop.backendPool.release(connection, now: .now())
        } else {
            connection.owner = nil
            connection.close()
        }
        finishLogging(exchange)
        let closeClient = exchange.closeClient || closeAfterExchange
        if machine.isIdle {
            self.exchange = nil
            exchangeFinished(context: context, armOnly: true)
        }
        // Written last: HTTPServerPipelineHandler may hand us the next pipelined request from inside.
        if closeClient {
            context.writeAndFlush(wrapOutboundOut(.end(trailers))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            // The backend connection no longer reports to us: flush now.
            needsClientFlush = false
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
        }
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
        let close = closeAfterExchange || exchange.request.isUpgrade
        finishLogging(exchange)
        if machine.isIdle { self.exchange = nil }
        var body = context.channel.allocator.buffer(capacity: error.body.utf8.count)
        body.writeString(error.body)
        context.write(
            wrapOutboundOut(.head(error.responseHead(version: exchange.clientVersion, vcapRequestID: exchange.requestID, close: close))), promise: nil
        )
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if close {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            if machine.isIdle { exchangeFinished(context: context, armOnly: true) }
        }
    }

    /// The connection is ready for the next request.
    private func exchangeFinished(context: ChannelHandlerContext, armOnly: Bool = false) {
        timeouts.exchangeFinished(now: .now())
        if !armOnly && closeAfterExchange {
            context.close(promise: nil)
            return
        }
        armTimer()
    }

    // MARK: Upgrades

    private func switchToTunnel(connection: BackendHandler, context: ChannelHandlerContext) {
        guard let exchange, let endpoint = exchange.endpoint, let backendChannel = connection.channel else {
            context.close(promise: nil)
            return
        }
        finishLogging(exchange)
        self.exchange = nil
        backend = nil
        connection.owner = nil
        timer?.cancel()
        timer = nil
        timeouts.upgraded()
        let stats = endpoint.stats
        stats.tunnelOpened()
        var reported = false
        let reportClose = {
            if !reported {
                reported = true
                stats.tunnelClosed()
            }
        }
        let clientTunnel = TunnelHandler(onClose: reportClose)
        let backendTunnel = TunnelHandler(onClose: reportClose)
        clientTunnel.partner = backendTunnel
        backendTunnel.partner = clientTunnel
        do {
            let client = context.pipeline.syncOperations
            let server = backendChannel.pipeline.syncOperations
            try client.addHandler(clientTunnel)
            try server.addHandler(backendTunnel)
            context.flush()
            // Typed handlers first, decoders last: the decoders hand their left-over bytes (sent right
            // behind the upgrade request / the 101) to the tunnel handlers when they leave.
            client.removeHandler(context: context, promise: nil)
            client.removeHandler(clientHandlers.pipelining, promise: nil)
            client.removeHandler(clientHandlers.encoder, promise: nil)
            client.removeHandler(clientHandlers.observer, promise: nil)
            server.removeHandler(connection, promise: nil)
            server.removeHandler(connection.encoder, promise: nil)
            // A decoder leaves on the next loop tick, after handing over its left-overs (held by the
            // tunnel handlers): bytes may only flow once both are gone, or they would meet the other
            // side's decoder, which also watches writes.
            let clientDecoderGone = context.eventLoop.makePromise(of: Void.self)
            let backendDecoderGone = context.eventLoop.makePromise(of: Void.self)
            client.removeHandler(clientHandlers.decoder, promise: clientDecoderGone)
            server.removeHandler(connection.decoder, promise: backendDecoderGone)
            let clientChannel = context.channel
            clientDecoderGone.futureResult.and(backendDecoderGone.futureResult).assumeIsolated().whenComplete { result in
                switch result {
                case .success:
                    clientTunnel.activate()
                    backendTunnel.activate()
                case .failure:
                    clientChannel.close(promise: nil)
                    backendChannel.close(promise: nil)
                }
            }
        } catch {
            core.logger.error("could not switch a connection to tunnelling; closing it", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            backendChannel.close(promise: nil)
            return
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
        guard let context else { return }
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
                exchange?.lastFailure = BackendFailure.timedOut.description(address: exchange?.endpoint?.address ?? "-")
                core.metrics.backendFailed()
                answerTimedOut(context: context)
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

    private func answerTimedOut(context: ChannelHandlerContext) {
        closeAfterExchange = true
        answer(.endpointFailure(BackendFailure.timedOut.description(address: exchange?.endpoint?.address ?? "-")), context: context)
    }

    // MARK: Logging

    private func finishLogging(_ exchange: Exchange) {
        guard !exchange.logged else { return }
        exchange.logged = true
        let now = NIODeadline.now()
        let duration = now - exchange.startedAt
        let endpoint = exchange.endpoint
        if exchange.status > 0 { core.metrics.responseSent(status: exchange.status) }
        if let decision = exchange.decision { core.metrics.decided(decision) }
        core.metrics.requestFinished(after: duration)
        if let accessLog = loop.accessLog {
            var record = AccessLogRecord()
            record.host = exchange.request.host
            record.startedAt = exchange.startedAtWall
            record.method = exchange.method.rawValue
            record.uri = exchange.uri
            record.proto = exchange.clientVersion.minor == 0 ? "HTTP/1.0" : "HTTP/1.1"
            record.status = exchange.status
            record.bytesReceived = exchange.bytesReceived
            record.bytesSent = exchange.bytesSent
            record.referer = exchange.request.referer
            record.userAgent = exchange.request.userAgent
            record.clientAddress = clientAddress
            record.backendAddress = endpoint?.address
            record.forwardedFor = exchange.request.forwardedFor
            record.forwardedProto = exchange.request.forwardedProto
            record.vcapRequestID = exchange.requestID
            let total = Double(duration.nanoseconds) / 1e9
            record.responseTime = total
            if let started = exchange.attemptStartedAt, let head = exchange.responseHeadAt {
                record.gorouterTime = max(total - Double((head - started).nanoseconds) / 1e9, 0)
            }
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
            let path = exchange.uri.prefix { $0 != "?" }
            core.feed.publish(
                RoutingEvent(
                    time: exchange.startedAtWall.rfc3339,
                    vcapRequestID: exchange.requestID,
                    method: exchange.method.rawValue,
                    host: exchange.request.host,
                    path: String(path),
                    decision: exchange.decision ?? .balanced,
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

    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError {
            return "connect: \(String(cString: strerror(error.errnoCode)).lowercased())"
        }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout(let amount): return "i/o timeout after \(DurationText.format(amount))"
            case .eof: return "EOF"
            default: return "\(error)"
            }
        }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return describe(first.error) }
            return "connection failed"
        }
        return "\(error)"
    }
}
