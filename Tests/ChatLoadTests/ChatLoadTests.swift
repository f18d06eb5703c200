import NIOCore
import NIOEmbedded
import NIOWebSocket
import Testing

@testable import ChatLoad

@Suite("chat-load: Engine.IO frames and the client handshake")
struct EngineIOClientTests {
    private func classify(_ text: String) -> EngineIOFrame {
        Array(text.utf8).withUnsafeBytes { EngineIOFrame($0) }
    }

    @Test func framesAreClassifiedByTheirFirstBytes() {
        #expect(classify(#"42["chat","{\"msg\":\"hi\"}"]"#) == .delivery)
        #expect(classify("2") == .ping)
        #expect(classify(#"0{"sid":"x","pingInterval":25000}"#) == .open)
        #expect(classify(#"40{"sid":"y"}"#) == .connected)
        #expect(classify(#"44{"message":"not logged in"}"#) == .refused)
        #expect(classify(#"42["presence",{}]"#) == .other)
        #expect(classify("3") == .other)
        #expect(classify("23") == .other)
        #expect(classify("") == .other)
    }

    @Test func anotherEventCanBeTheCountedOne() {
        let broadcast = EngineIOFrame.deliveryPrefix(event: "broadcast")
        func classify(_ text: String) -> EngineIOFrame { Array(text.utf8).withUnsafeBytes { EngineIOFrame($0, deliveryPrefix: broadcast) } }
        #expect(classify(#"42["broadcast",7]"#) == .delivery)
        #expect(classify(#"42["broadcasts",7]"#) == .other)  // the closing quote is part of the prefix
        #expect(classify(#"42["chat","{}"]"#) == .other)
        #expect(classify("2") == .ping)
        #expect(ChatLoadGenerator.isEventName("broadcast") && ChatLoadGenerator.isEventName("a-b_1"))
        #expect(!ChatLoadGenerator.isEventName("") && !ChatLoadGenerator.isEventName("a\"b") && !ChatLoadGenerator.isEventName("é"))
    }

    @Test func handshakeSendsConnectAfterOpenAndCompletesOnConnected() {
        var state = EngineIOClientState()
        #expect(state.received(.connected) == .none)  // before the open packet: not ours
        #expect(state.received(.open) == .send("40"))
        #expect(state.phase == .awaitingConnect)
        #expect(state.received(.open) == .none)  // a second open packet sends nothing more
        #expect(state.received(.connected) == .becameConnected)
        #expect(state.phase == .connected)
        #expect(state.received(.connected) == .none)
        #expect(state.received(.refused) == .none)
    }

    @Test func refusalIsReportedOnlyWhileConnecting() {
        var state = EngineIOClientState()
        #expect(state.received(.refused) == .none)
        _ = state.received(.open)
        #expect(state.received(.refused) == .becameRefused)
        #expect(state.phase == .refused)
    }

    @Test func pingsAreAnsweredAndChatIsCountedInEveryPhase() {
        var state = EngineIOClientState()
        #expect(state.received(.ping) == .send("3"))
        #expect(state.received(.delivery) == .count)
        _ = state.received(.open)
        _ = state.received(.connected)
        #expect(state.received(.ping) == .send("3"))
        #expect(state.received(.delivery) == .count)
        #expect(state.received(.other) == .none)
    }

    @Test func stampIsReadBetweenTildeTAndTildeE() {
        func stamp(_ text: String) -> Int64? { Array(text.utf8).withUnsafeBytes { ChatLoadClientHandler.stamp(in: $0) } }
        #expect(stamp(#"42["chat","{\"msg\":\"~T123456789~E\",\"id\":\"r5-0-1\"}"]"#) == 123_456_789)
        #expect(stamp("~T~T42~E") == 42)
        #expect(stamp("~T42") == nil)
        #expect(stamp("~T42~X") == nil)
        #expect(stamp("~Tabc~E") == nil)
        #expect(stamp("") == nil)
        #expect(stamp("~T1234567890123456789012~E") == nil)  // too many digits for a stamp
    }
}

@Suite("chat-load: control protocol")
struct ChatLoadProtocolTests {
    @Test func openTakesDefaultsForPathCookieSampleAndTimeout() throws {
        let command = try ChatLoadCommand.parse(#"{"cmd":"open","clients":[{"host":"127.0.0.1","port":8080}]}"#)
        let client = ChatLoadClientSpec(host: "127.0.0.1", port: 8080, path: "/socket.io/?EIO=4&transport=websocket")
        #expect(command == .open(clients: [client], timeoutSeconds: 120))
    }

    @Test func sendStatsLatenciesAndCloseParse() throws {
        #expect(
            try ChatLoadCommand.parse(#"{"cmd":"send","rate":12.5,"seconds":4,"tag":"r12","senders":3}"#)
                == .send(rate: 12.5, seconds: 4, tag: "r12", senders: 3)
        )
        #expect(try ChatLoadCommand.parse(#"{"cmd":"send","rate":5,"seconds":1}"#) == .send(rate: 5, seconds: 1, tag: "m", senders: 20))
        #expect(try ChatLoadCommand.parse(#"{"cmd":"stats"}"#) == .stats)
        #expect(try ChatLoadCommand.parse(#"{"cmd":"latencies","record":false}"#) == .latencies(record: false))
        #expect(try ChatLoadCommand.parse(#"{"cmd":"close"}"#) == .close)
    }

    @Test(arguments: [
        ("not json", "not a JSON command object"),
        (#"{"nope":1}"#, "not a JSON command object"),
        (#"{"cmd":"fly"}"#, "unknown command fly"),
        (#"{"cmd":"open"}"#, "open needs \"clients\""),
        (#"{"cmd":"open","clients":[{"host":"h","port":0}]}"#, "is not a TCP port"),
        (#"{"cmd":"open","clients":[{"host":"h","port":1,"path":"x"}]}"#, "must start with /"),
        (#"{"cmd":"open","clients":[{"host":"h","port":1,"cookie":"a\r\nX: y"}]}"#, "line break"),
        (#"{"cmd":"open","clients":[],"timeout":0}"#, "timeout must be positive"),
        (#"{"cmd":"send","seconds":1}"#, "send needs \"rate\""),
        (#"{"cmd":"send","rate":-1,"seconds":1}"#, "send needs \"rate\""),
        (#"{"cmd":"send","rate":1}"#, "send needs \"seconds\""),
        (#"{"cmd":"send","rate":1,"seconds":1,"tag":"a\"b"}"#, "must be letters, digits"),
        (#"{"cmd":"send","rate":1,"seconds":1,"senders":0}"#, "senders must be positive"),
        (#"{"cmd":"latencies"}"#, "latencies needs \"record\""),
    ])
    func badCommandsSayWhatIsWrong(line: String, message: String) {
        #expect {
            _ = try ChatLoadCommand.parse(line)
        } throws: { error in
            String(describing: error).contains(message)
        }
    }

    @Test func repliesAreOneJSONLineWithoutAbsentFields() {
        #expect(ChatLoadReply(sent: 3).line() == #"{"ok":true,"sent":3}"#)
        #expect(ChatLoadReply.failure("open: no").line() == #"{"error":"open: no","ok":false}"#)
        #expect(ChatLoadReply(received: 1, lastReceiveAge: 0.5, closed: 0).line() == #"{"closed":0,"last_receive_age":0.5,"ok":true,"received":1}"#)
    }

    @Test func percentilesAreTheSortedSamplesAtHalfAndNinetyNinePercent() throws {
        let percentiles = try #require(LatencyPercentiles(samples: (1...100).reversed().map(Int64.init)))
        #expect(percentiles.count == 100 && percentiles.p50Nanoseconds == 51 && percentiles.p99Nanoseconds == 100)
        let single = try #require(LatencyPercentiles(samples: [7]))
        #expect(single.count == 1 && single.p50Nanoseconds == 7 && single.p99Nanoseconds == 7)
        #expect(LatencyPercentiles(samples: []) == nil)
    }

    @Test func theFanOutIsEachMessagesFirstDeliveryAndItsSpreadToTheLast() throws {
        // Message 1 reached three sampled clients after 3, 10 and 5 ms; message 2 two after 4 and 24 ms;
        // message 3 only one (left out).
        let ms: Int64 = 1_000_000
        let samples = [(1, 3), (2, 4), (1, 10), (3, 7), (2, 24), (1, 5)].map { LatencySample(stamp: Int64($0.0), latency: Int64($0.1) * ms) }
        let breakdown = try #require(FanOutBreakdown(samples: samples))
        #expect(breakdown.messages == 2)
        #expect(breakdown.first.p50Nanoseconds == 4 * ms)  // of [3, 4]
        #expect(breakdown.first.p99Nanoseconds == 4 * ms)
        #expect(breakdown.spread.p50Nanoseconds == 20 * ms)  // of [7, 20]
        #expect(breakdown.spread.p99Nanoseconds == 20 * ms)
        #expect(FanOutBreakdown(samples: [LatencySample(stamp: 1, latency: ms)]) == nil)
        #expect(FanOutBreakdown(samples: []) == nil)
    }
}

@Suite("chat-load: the client's channel handler")
struct ChatLoadClientHandlerTests {
    private func text(_ string: String) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: string))
    }

    private func sentText(_ channel: EmbeddedChannel) throws -> String? {
        guard let frame = try channel.readOutbound(as: WebSocketFrame.self) else { return nil }
        #expect(frame.maskKey != nil)  // client frames are masked (by the encoder: `data` is the plain text)
        return String(buffer: frame.data)
    }

    @Test func connectsCountsAndMeasuresLatency() throws {
        let loop = EmbeddedEventLoop()
        let counters = ChatLoadCounters()
        let ready = loop.makePromise(of: Void.self)
        let channel = EmbeddedChannel(
            handler: ChatLoadClientHandler(counters: counters, sample: true, ready: ready, name: "client 0"),
            loop: loop
        )
        var connected = false
        ready.futureResult.assumeIsolated().whenSuccess { connected = true }

        try channel.writeInbound(text(#"0{"sid":"abc","pingInterval":25000,"pingTimeout":20000}"#))
        #expect(try sentText(channel) == "40")
        try channel.writeInbound(text(#"40{"sid":"def"}"#))
        #expect(connected)

        try channel.writeInbound(text("2"))
        #expect(try sentText(channel) == "3")

        let stamp = Int64(NIODeadline.now().uptimeNanoseconds)
        let chat = #"42["chat","{\"msg\":\"~T\#(stamp)~E\",\"id\":\"t-0-0\"}"]"#
        try channel.writeInbound(text(chat))  // not recording: counted, no sample
        counters.recording = true
        try channel.writeInbound(text(chat))
        #expect(counters.received == 2)
        #expect(counters.latencies.count == 1)
        #expect((counters.latencies.first?.latency ?? -1) >= 0)
        #expect(counters.latencies.first?.stamp == stamp)

        try channel.writeInbound(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer(string: "p")))
        let pong = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(pong.opcode == .pong && String(buffer: pong.data) == "p")
        #expect(try channel.finish().isClean)
        #expect(counters.closed == 1)
    }

    @Test func aRefusedConnectFailsReadyWithTheServersMessage() throws {
        let loop = EmbeddedEventLoop()
        let counters = ChatLoadCounters()
        let ready = loop.makePromise(of: Void.self)
        let channel = EmbeddedChannel(
            handler: ChatLoadClientHandler(counters: counters, sample: false, ready: ready, name: "client 7 (h:1)"),
            loop: loop
        )
        var failure: String?
        ready.futureResult.assumeIsolated().whenFailure { failure = String(describing: $0) }
        try channel.writeInbound(text("0{}"))
        _ = try sentText(channel)
        try channel.writeInbound(text(#"44{"message":"not logged in"}"#))
        #expect(failure == #"client 7 (h:1): the server refused the Socket.IO connection: 44{"message":"not logged in"}"#)
        #expect(!channel.isActive)
    }

    @Test func aConnectionLostDuringTheHandshakeFailsReady() throws {
        let loop = EmbeddedEventLoop()
        let ready = loop.makePromise(of: Void.self)
        let channel = EmbeddedChannel(
            handler: ChatLoadClientHandler(counters: ChatLoadCounters(), sample: false, ready: ready, name: "client 1"),
            loop: loop
        )
        var failed = false
        ready.futureResult.assumeIsolated().whenFailure { _ in failed = true }
        _ = try channel.finish()
        #expect(failed)
    }
}

@Suite("chat-load: batched reads of the clients that are not sampled")
struct BatchedReadsTests {
    /// Counts the `read()` calls that reach the front of the pipeline (what the socket would do).
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    @Test func everyChannelIsInExactlyOneTenthOfTheInterval() {
        for count in 0...35 {
            let shares = (0..<BatchedReads.slices).map { BatchedReads.share($0, of: count) }
            #expect(shares.flatMap { Array($0) } == Array(0..<count), "count \(count)")
            #expect(shares.allSatisfy { $0.count <= (count + BatchedReads.slices - 1) / BatchedReads.slices })
        }
    }

    private func connectedClient(sample: Bool, counters: ChatLoadCounters, loop: EmbeddedEventLoop) throws -> (EmbeddedChannel, ReadCounter) {
        let reads = ReadCounter()
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(reads)
        try channel.pipeline.syncOperations.addHandler(
            ChatLoadClientHandler(counters: counters, sample: sample, ready: loop.makePromise(), name: "client"))
        try channel.writeInbound(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: #"0{"sid":"a"}"#)))
        _ = try channel.readOutbound(as: WebSocketFrame.self)  // 40
        try channel.writeInbound(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: "40")))
        return (channel, reads)
    }

    @Test func anUnsampledClientIsReadOncePerIntervalAfterItsHandshakeAndASampledOneIsNotBatched() throws {
        let loop = EmbeddedEventLoop()
        let batched = BatchedReads(interval: .milliseconds(100), loop: loop)
        let counters = ChatLoadCounters(batchedReads: batched)
        let (bulk, bulkReads) = try connectedClient(sample: false, counters: counters, loop: loop)
        let (sampled, sampledReads) = try connectedClient(sample: true, counters: counters, loop: loop)
        #expect(batched.count == 1)

        loop.advanceTime(by: .milliseconds(100))
        #expect(bulkReads.reads == 1)
        loop.advanceTime(by: .milliseconds(300))
        #expect(bulkReads.reads == 4)
        #expect(sampledReads.reads == 0)

        // Deliveries read on a tick are counted like any other.
        try bulk.writeInbound(WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: #"42["chat","{}"]"#)))
        #expect(counters.received == 1)

        // A closed client is no longer read; with none left the ticks stop.
        _ = try bulk.finish()
        #expect(batched.count == 0)
        loop.advanceTime(by: .milliseconds(300))
        #expect(bulkReads.reads == 4)
        _ = try sampled.finish()
    }
}
