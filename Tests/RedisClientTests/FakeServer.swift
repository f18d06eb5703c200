import NIOCore
import NIOPosix

/// A TCP server on loopback that answers whatever it receives with fixed bytes, or never answers:
/// for testing what the client does with garbage and silence.
final class FakeServer: Sendable {
    let channel: any Channel
    var port: Int { channel.localAddress?.port ?? 0 }

    private init(channel: any Channel) { self.channel = channel }

    /// `reply` nil: read and never answer.
    static func start(reply: [UInt8]?) async throws -> FakeServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Responder(reply: reply))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return FakeServer(channel: channel)
    }

    func stop() async {
        try? await channel.close()
    }

    private final class Responder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let reply: [UInt8]?

        init(reply: [UInt8]?) { self.reply = reply }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let reply else { return }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: reply)), promise: nil)
        }
    }
}
