import NIOCore
import NIOEmbedded
import NIOWebSocket

/// The place in a WebSocket's pipeline right below its frame encoder, where frames that are already
/// encoded can be written. A broadcast's frames are the same bytes for every recipient (a server
/// does not mask), so they are encoded once, by NIO's own `WebSocketFrameEncoder`, and each recipient
/// gets one write of that shared buffer instead of a trip through its pipeline and encoder (a header
/// buffer and two writes per frame). Only for pipelines the library built (`.socketIO(io)`), where
/// nothing between the encoder and the socket transforms frames.
struct EncodedFrameSink: Sendable {
    private let context: NIOLoopBound<ChannelHandlerContext>

    /// The sink of `pipeline`'s frame encoder, or nil when it has none. On the channel's event loop.
    init?(pipeline: ChannelPipeline) {
        guard let context = try? pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self) else { return nil }
        self.context = NIOLoopBound(context, eventLoop: context.eventLoop)
    }

    /// Writes encoded frames (not flushed). On the channel's event loop.
    func write(_ bytes: ByteBuffer) {
        let context = self.context.value
        context.write(NIOAny(bytes), promise: nil)
    }

    /// `frames` as they go on the wire from a server, encoded by NIO's encoder, in one buffer.
    static func encode(_ frames: [WebSocketFrame], allocator: ByteBufferAllocator) -> ByteBuffer {
        let encoder = EmbeddedChannel(handler: WebSocketFrameEncoder())
        defer { _ = try? encoder.finish() }
        var bytes = allocator.buffer(capacity: frames.reduce(0) { $0 + $1.length + 10 })
        for frame in frames { encoder.write(frame, promise: nil) }
        encoder.flush()
        while var part = try? encoder.readOutbound(as: ByteBuffer.self) {
            bytes.writeBuffer(&part)
        }
        return bytes
    }
}
