import ArgumentParser
import NIOCore
import NIOExtras
import NIOPosix

/// Socket.IO chat clients for bench/bench_chat.py, driven over stdin/stdout (ChatLoadCommand).
struct ChatLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-load",
        abstract: "Engine.IO v4 / Socket.IO v5 WebSocket clients that send and count chat messages.",
        discussion: """
            Reads one JSON command per line on stdin and writes one JSON reply per line on stdout:
              {"cmd":"open","clients":[{"host":"127.0.0.1","port":8080,"path":"/socket.io/?EIO=4&transport=websocket","cookie":"sid=...","sample":true}]}
              {"cmd":"send","rate":100,"seconds":4,"tag":"r100","senders":20}   -> {"ok":true,"sent":400}
              {"cmd":"stats"}   -> {"ok":true,"received":400000,"last_receive_age":0.02,"closed":0}
              {"cmd":"latencies","record":true} ... {"cmd":"latencies","record":false}   -> {"count":..,"p50_ms":..,"p99_ms":..}
              {"cmd":"close"}
            A failed command answers {"ok":false,"error":"..."}. Exits when stdin closes.
            """
    )

    @Option(help: "Event loop threads for the clients (1 keeps it a single-core generator).") var threads = 1

    func validate() throws {
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be between 1 and 64") }
    }

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let loops = Array(group.makeIterator())
        let shards = try await EventLoopFuture.whenAllSucceed(loops.map(ChatLoadShard.make(on:)), on: loops[0]).get()
        let control = try await NIOPipeBootstrap(group: loops[0])
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(ChatLoadController(shards: shards))
                }
            }
            .takingOwnershipOfDescriptors(input: 0, output: 1)
            .get()
        try await control.closeFuture.get()
        try await group.shutdownGracefully()
    }
}
