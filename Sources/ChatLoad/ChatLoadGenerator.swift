import NIOCore
import NIOExtras
import NIOPosix

/// The chat benchmark's load generator (`stickylab-bench chat-load`): Socket.IO clients on SwiftNIO,
/// driven over stdin/stdout one JSON command per line (`ChatLoadCommand`). See docs/chat-load.md.
public enum ChatLoadGenerator {
    /// Whether `name` can be the event to count: letters, digits, - and _.
    public static func isEventName(_ name: String) -> Bool { ChatLoadCommand.isName(name) }

    /// Serves commands from stdin until it closes; clients run on `threads` event loops, and the
    /// sampled clients on one more of their own when `samplerThread`. Clients count the deliveries of
    /// `event` (`42["<event>",...`). With `readEvery`, the clients that are not sampled are read in
    /// batches at that interval (`BatchedReads`).
    public static func run(threads: Int, samplerThread: Bool = false, event: String = "chat", readEvery: Duration? = nil) async throws {
        guard isEventName(event) else { throw ChatLoadProtocolError("the event to count must be letters, digits, - or _ (not \(event))") }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads) + (samplerThread ? 1 : 0))
        let loops = Array(group.makeIterator())
        let interval = readEvery.map(TimeAmount.init)
        let shards = try await EventLoopFuture.whenAllSucceed(loops.map { ChatLoadShard.make(on: $0, readEvery: interval) }, on: loops[0]).get()
        let control: any Channel
        do {
            control = try await NIOPipeBootstrap(group: loops[0])
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(
                            ChatLoadController(
                                shards: shards, samplerThread: samplerThread, deliveryPrefix: EngineIOFrame.deliveryPrefix(event: event)))
                    }
                }
                .takingOwnershipOfDescriptors(input: 0, output: 1)
                .get()
        } catch {
            try await group.shutdownGracefully()
            throw ChatLoadProtocolError("chat-load needs stdin and stdout to be pipes or a terminal (\(error))")
        }
        try await control.closeFuture.get()
        try await group.shutdownGracefully()
    }
}
