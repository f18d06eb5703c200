import NIOCore

/// One side of an upgraded connection (WebSocket or any 101 protocol): raw bytes read here are
/// written to the partner's channel, byte for byte. Reading stops while the partner cannot take more.
/// When one side closes, the other is closed once what it was given has been written.
final class TunnelHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    weak var partner: TunnelHandler?
    private(set) var context: ChannelHandlerContext?
    /// Until both pipelines are switched, bytes are held here.
    private var active = false
    private var held: [ByteBuffer] = []
    private var pendingRead = false
    private var closing = false
    private let onClose: () -> Void
    private var closeReported = false
    /// Bytes received from this side.
    private(set) var bytesRead = 0

    init(onClose: @escaping () -> Void) {
        self.onClose = onClose
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    /// Both pipelines are switched: forward what was held and everything from now on.
    func activate() {
        active = true
        guard let partner, !held.isEmpty else { return }
        for buffer in held { partner.deliver(buffer) }
        held.removeAll()
        partner.flushOutbound()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytesRead += buffer.readableBytes
        guard active, let partner else {
            held.append(buffer)
            return
        }
        partner.deliver(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.flushOutbound()
    }

    /// Bytes from the partner to write on this side.
    func deliver(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    func flushOutbound() {
        context?.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partnerChannel = partner?.context?.channel, !partnerChannel.isWritable {
            pendingRead = true
        } else {
            context.read()
        }
    }

    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        reportClose()
        partner?.partnerClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The other side went away: close this side after what was already written to it.
    func partnerClosed() {
        guard !closing, let context else { return }
        closing = true
        let channel = context.channel
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(capacity: 0)), promise: promise)
        promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
    }

    /// Closes this side now (drain timeout, shutdown).
    func closeNow() {
        context?.close(promise: nil)
    }

    private func reportClose() {
        guard !closeReported else { return }
        closeReported = true
        onClose()
    }
}

/// First handler of a client connection: tells the proxy handler that bytes of a new request
/// arrived (this starts the header read timeout).
final class RequestStartObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    weak var proxy: ProxyHandler?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        proxy?.clientBytesArrived()
        context.fireChannelRead(data)
    }
}
