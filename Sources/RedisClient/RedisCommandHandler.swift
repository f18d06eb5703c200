import NIOCore

/// A batch of commands written together; its promise completes with one reply per command, in order.
/// Batches are written whole, so nothing from another caller can land between their commands.
struct RedisRequest: Sendable {
    var payload: ByteBuffer
    var replyCount: Int
    var promise: EventLoopPromise<[RESPValue]>
}

/// Matches replies to requests in order (pipelining), fails everything in flight at once when the
/// connection closes or breaks, and closes the connection when a reply is later than the command
/// timeout (after a missing reply the order can no longer be trusted).
final class RedisCommandHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var remaining: Int
        var replies: [RESPValue]
        let promise: EventLoopPromise<[RESPValue]>
        let deadline: NIODeadline?
    }

    private let parser: RESPParser
    private let endpoint: String
    private let commandTimeout: Duration?
    private var pending = CircularBuffer<Pending>(initialCapacity: 64)
    private var failure: RedisError?
    private var timeoutCheck: Scheduled<Void>?

    init(endpoint: String, commandTimeout: Duration?, maxReplyBytes: Int) throws {
        self.parser = try RESPParser(maxPendingBytes: maxReplyBytes)
        self.endpoint = endpoint
        self.commandTimeout = commandTimeout
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        if let failure {
            request.promise.fail(failure)
            promise?.fail(failure)
            return
        }
        let deadline = commandTimeout.map { NIODeadline.now() + TimeAmount($0) }
        pending.append(Pending(remaining: request.replyCount, replies: [], promise: request.promise, deadline: deadline))
        if request.replyCount > 1 { pending[pending.index(before: pending.endIndex)].replies.reserveCapacity(request.replyCount) }
        context.write(wrapOutboundOut(request.payload), promise: promise)
        scheduleTimeoutCheck(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try parser.feed(unwrapInboundIn(data))
            while let reply = try parser.next() {
                guard !pending.isEmpty else {
                    fail(.protocolError(endpoint: endpoint, reason: "a reply arrived that no command asked for: \(reply)"), context: context)
                    return
                }
                pending[pending.startIndex].replies.append(reply)
                pending[pending.startIndex].remaining -= 1
                if pending[pending.startIndex].remaining == 0 {
                    let done = pending.removeFirst()
                    done.promise.succeed(done.replies)
                }
            }
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

    func handlerRemoved(context: ChannelHandlerContext) {
        timeoutCheck?.cancel()
        failAll(.connectionLost(endpoint: endpoint, reason: "the connection was handed over"))
    }

    /// Whether requests are still waiting for replies (used before handing the connection to a subscriber).
    var isIdle: Bool { pending.isEmpty }

    private func fail(_ error: RedisError, context: ChannelHandlerContext) {
        failAll(error)
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        if failure == nil { failure = error }
        timeoutCheck?.cancel()
        timeoutCheck = nil
        while let next = pending.popFirst() { next.promise.fail(error) }
    }

    private func scheduleTimeoutCheck(context: ChannelHandlerContext) {
        guard timeoutCheck == nil, let deadline = pending.first?.deadline else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timeoutCheck = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = loopBound.value
            handler.timeoutCheck = nil
            handler.checkTimeout(context: context)
        }
    }

    private func checkTimeout(context: ChannelHandlerContext) {
        guard let head = pending.first, let deadline = head.deadline else { return }
        if deadline <= .now(), let commandTimeout {
            fail(.timeout(endpoint: endpoint, after: commandTimeout), context: context)
        } else {
            scheduleTimeoutCheck(context: context)
        }
    }
}
