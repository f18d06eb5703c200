import ArgumentParser
import ChatLoad

/// Socket.IO chat clients for bench/bench_chat.py, driven over stdin/stdout (ChatLoadCommand).
struct ChatLoadBench: AsyncParsableCommand {
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
    @Flag(help: "Give the sampled clients (those that record latency) an event loop thread of their own.") var samplerThread = false
    @Option(help: "The Socket.IO event whose deliveries are counted (e.g. broadcast, for socketio-testserver).") var event = "chat"
    @Option(
        name: .customLong("read-every-ms"),
        help: "Read the clients that are not sampled every N ms, in batches, instead of as data arrives (0: as it arrives).")
    var readEveryMilliseconds = 0

    func validate() throws {
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be between 1 and 64") }
        guard (0...10_000).contains(readEveryMilliseconds) else { throw ValidationError("--read-every-ms must be between 0 and 10000") }
        guard ChatLoadGenerator.isEventName(event) else { throw ValidationError("--event must be letters, digits, - or _ (not \(event))") }
    }

    func run() async throws {
        try await ChatLoadGenerator.run(
            threads: threads, samplerThread: samplerThread, event: event,
            readEvery: readEveryMilliseconds > 0 ? .milliseconds(readEveryMilliseconds) : nil)
    }
}
