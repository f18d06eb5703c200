import NIOCore
import NIOExtras
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

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
        // NIO polls both descriptors and stops the process on one it cannot poll (a file, /dev/null):
        // refuse those with a message first.
        for (descriptor, name) in [(STDIN_FILENO, "stdin"), (STDOUT_FILENO, "stdout")] {
            if let problem = unpollable(descriptor) {
                throw ChatLoadProtocolError("chat-load needs \(name) to be a pipe, a socket or a terminal, not \(problem)")
            }
        }
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

    /// What `descriptor` is when NIO cannot poll it (nil: a pipe, a socket or a terminal).
    static func unpollable(_ descriptor: Int32) -> String? {
        if isatty(descriptor) == 1 { return nil }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { return "a closed descriptor" }
        switch status.st_mode & S_IFMT {
        case S_IFIFO, S_IFSOCK: return nil
        case S_IFREG: return "a regular file"
        case S_IFCHR: return "a device such as /dev/null"
        case S_IFDIR: return "a directory"
        default: return "this kind of file"
        }
    }
}
