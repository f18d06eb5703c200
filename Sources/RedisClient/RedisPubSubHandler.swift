import NIOCore

/// A SUBSCRIBE-family command waiting for its per-name confirmations, or a PING waiting for its pong.
struct PubSubRequest: Sendable {
    enum Kind: String, Sendable {
        case subscribe, psubscribe, unsubscribe, punsubscribe, pong
    }

    var payload: ByteBuffer
    var kind: Kind
    var confirmations: Int
    var promise: EventLoopPromise<Void>
}

/// Handles a connection in pub/sub mode: delivers `message` and `pmessage` pushes to the subscriber's
/// stream, matches confirmations to the commands that asked for them, and pings the server when idle so
/// that a dead peer is noticed within two ping intervals.
final class RedisPubSubHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = PubSubRequest
    typealias OutboundOut = ByteBuffer

    private let parser: RESPParser
    private let endpoint: String
    private let pingInterval: TimeAmount
    private let deliver: @Sendable (RedisSubscriberEvent) -> Void
    private var pending = CircularBuffer<PubSubRequest>()
    private var failure: RedisError?
    private var pingTask: RepeatedTask?
    private var heardSinceLastPing = true
    private var awaitingPong = false

    init(
        endpoint: String, pingInterval: Duration, maxReplyBytes: Int,
        deliver: @escaping @Sendable (RedisSubscriberEvent) -> Void
    ) throws {
        self.parser = try RESPParser(maxPendingBytes: maxReplyBytes)
        self.endpoint = endpoint
        self.pingInterval = TimeAmount(pingInterval)
        self.deliver = deliver
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        pingTask = context.eventLoop.scheduleRepeatedTask(initialDelay: pingInterval, delay: pingInterval) { _ in
            let (handler, context) = loopBound.value
            handler.pingTick(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        pingTask?.cancel()
        failAll(.connectionLost(endpoint: endpoint, reason: "the subscriber was closed"))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let failure {
            request.promise.fail(failure)
            promise?.fail(failure)
            return
        }
        pending.append(request)
        context.write(wrapOutboundOut(request.payload), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        heardSinceLastPing = true
        do {
            try parser.feed(unwrapInboundIn(data))
            while let reply = try parser.next() {
                try handle(reply)
            }
        } catch let error as RedisError {
            fail(error, context: context)
        } catch {
            fail(.protocolError(endpoint: endpoint, reason: "\(error)"), context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(.connectionLost(endpoint: endpoint, reason: "the server closed the connection"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(.connectionLost(endpoint: endpoint, reason: RedisConnectionFactory.describe(error)), context: context)
    }

    private func handle(_ reply: RESPValue) throws {
        switch reply {
        case .array(let parts) where !parts.isEmpty:
            let kind = parts[0].string?.lowercased() ?? ""
            switch kind {
            case "message" where parts.count == 3:
                deliver(.message(RedisPubSubMessage(channel: parts[1].string ?? "", pattern: nil, payload: parts[2].buffer ?? ByteBuffer())))
            case "pmessage" where parts.count == 4:
                deliver(
                    .message(
                        RedisPubSubMessage(channel: parts[2].string ?? "", pattern: parts[1].string, payload: parts[3].buffer ?? ByteBuffer())
                    )
                )
            case "subscribe", "psubscribe", "unsubscribe", "punsubscribe", "pong":
                try confirm(kind)
            default:
                throw RedisError.protocolError(endpoint: endpoint, reason: "unexpected push in pub/sub mode: \(reply)")
            }
        case .simpleString(let text) where text.lowercased() == "pong":
            try confirm("pong")
        case .error(let message):
            guard let head = pending.popFirst() else {
                throw RedisError.protocolError(endpoint: endpoint, reason: "an error arrived that no command asked for: \(message)")
            }
            if head.kind == .pong { awaitingPong = false }
            head.promise.fail(RedisError.server(message: message))
        default:
            throw RedisError.protocolError(endpoint: endpoint, reason: "unexpected reply in pub/sub mode: \(reply)")
        }
    }

    private func confirm(_ kind: String) throws {
        guard var head = pending.first, head.kind.rawValue == kind else {
            throw RedisError.protocolError(endpoint: endpoint, reason: "a '\(kind)' confirmation arrived that no command asked for")
        }
        head.confirmations -= 1
        if head.confirmations <= 0 {
            pending.removeFirst()
            if head.kind == .pong { awaitingPong = false }
            head.promise.succeed()
        } else {
            pending[pending.startIndex] = head
        }
    }

    private func pingTick(context: ChannelHandlerContext) {
        if awaitingPong && !heardSinceLastPing {
            fail(
                .timeout(endpoint: endpoint, after: .nanoseconds(pingInterval.nanoseconds)),
                context: context
            )
            return
        }
        heardSinceLastPing = false
        guard !awaitingPong else { return }
        awaitingPong = true
        var payload = context.channel.allocator.buffer(capacity: 16)
        do { try RESPEncoder.encode(["PING"], into: &payload) } catch { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenFailure { _ in }
        pending.append(PubSubRequest(payload: payload, kind: .pong, confirmations: 1, promise: promise))
        context.writeAndFlush(wrapOutboundOut(payload), promise: nil)
    }

    private func fail(_ error: RedisError, context: ChannelHandlerContext) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        if failure == nil { failure = error }
        while let next = pending.popFirst() { next.promise.fail(error) }
    }
}
