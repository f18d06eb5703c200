import NIOCore
import NIOPosix

/// A TCP server on loopback that answers a connection's PING, then whatever it receives with fixed
/// bytes, or never: for testing what the client does with garbage and silence.
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

        /// The client's first command is its connection's PING: answered as Redis would, so that
        /// the connection is made and the test's own command meets `reply`.
        private var greeted = false

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if !greeted {
                greeted = true
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "+PONG\r\n")), promise: nil)
                return
            }
            guard let reply else { return }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: reply)), promise: nil)
        }
    }
}
