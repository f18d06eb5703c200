import Foundation
import HTTPTypes
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOWebSocket
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing

@testable import SocketIO
@testable import socketio_testserver

@Suite("WebSocket message assembly")
struct WebSocketMessageAssemblerTests {
    @Test("a frame with FIN is a message; text and binary keep their kind")
    func singleFrames() {
        var assembler = WebSocketMessageAssembler(maxPayload: 100)
        #expect(
            assembler.receive(opcode: .text, fin: true, data: ByteBuffer(string: "4hi")) == .message(binary: false, data: ByteBuffer(string: "4hi")))
        #expect(
            assembler.receive(opcode: .binary, fin: true, data: ByteBuffer(bytes: [1, 2])) == .message(binary: true, data: ByteBuffer(bytes: [1, 2])))
        #expect(!assembler.isAssembling)
    }

    @Test("fragments are joined in order, up to the frame with FIN")
    func fragments() {
        var assembler = WebSocketMessageAssembler(maxPayload: 100)
        #expect(assembler.receive(opcode: .binary, fin: false, data: ByteBuffer(bytes: [1])) == .incomplete)
        #expect(assembler.isAssembling)
        #expect(assembler.receive(opcode: .continuation, fin: false, data: ByteBuffer(bytes: [2, 3])) == .incomplete)
        #expect(
            assembler.receive(opcode: .continuation, fin: true, data: ByteBuffer(bytes: [4]))
                == .message(binary: true, data: ByteBuffer(bytes: [1, 2, 3, 4])))
        #expect(!assembler.isAssembling)
        #expect(
            assembler.receive(opcode: .text, fin: true, data: ByteBuffer(string: "4x")) == .message(binary: false, data: ByteBuffer(string: "4x")))
    }

    @Test("a message over maxPayload, in one frame or across fragments, is refused")
    func tooLarge() {
        var assembler = WebSocketMessageAssembler(maxPayload: 4)
        #expect(assembler.receive(opcode: .text, fin: true, data: ByteBuffer(string: "12345")) == .tooLarge)
        #expect(assembler.receive(opcode: .text, fin: false, data: ByteBuffer(string: "123")) == .incomplete)
        #expect(assembler.receive(opcode: .continuation, fin: true, data: ByteBuffer(string: "45")) == .tooLarge)
        #expect(!assembler.isAssembling)
        #expect(
            assembler.receive(opcode: .text, fin: true, data: ByteBuffer(string: "1234")) == .message(binary: false, data: ByteBuffer(string: "1234"))
        )
    }

    @Test("a continuation without a message, or a new message inside a fragmented one, is a protocol error")
    func protocolErrors() {
        var assembler = WebSocketMessageAssembler(maxPayload: 100)
        guard case .protocolError = assembler.receive(opcode: .continuation, fin: true, data: ByteBuffer(string: "x")) else {
            Issue.record("a lone continuation was accepted")
            return
        }
        #expect(assembler.receive(opcode: .text, fin: false, data: ByteBuffer(string: "a")) == .incomplete)
        guard case .protocolError = assembler.receive(opcode: .text, fin: true, data: ByteBuffer(string: "b")) else {
            Issue.record("a new message inside a fragmented one was accepted")
            return
        }
        guard case .protocolError = assembler.receive(opcode: .ping, fin: true, data: ByteBuffer()) else {
            Issue.record("a control frame was taken as data")
            return
        }
    }
}

@Suite("WebSocket frame errors in the log")
struct WebSocketFrameErrorTests {
    @Test("each frame error NIO's decoder throws is said in words, with the close code sent")
    func explained() {
        #expect(NIOWebSocketError.fragmentedControlFrame.explanation == "WebSocket protocol error (a fragmented control frame; closed with 1002)")
        #expect(NIOWebSocketError.multiByteControlFrameLength.explanation.contains("a control frame over 125 bytes"))
        #expect(NIOWebSocketError.invalidFrameLength.explanation.contains("1009"))
    }
}

@Suite("Client text in log lines")
struct LogTextTests {
    @Test("quoted, control characters escaped, cut to the limit")
    func quoted() {
        #expect(LogText.quoted("abc") == #""abc""#)
        #expect(LogText.quoted("\nforged line\r") == #""\nforged line\r""#)
        #expect(!LogText.quoted("a\u{0}b\u{1b}[31m").contains(where: { $0.asciiValue.map { $0 < 0x20 } ?? false }))
        #expect(LogText.quoted(String(repeating: "x", count: 100), limit: 10) == "\"xxxxxxxxxx\"...")
    }
}

@Suite("First requests asking for an upgrade")
struct UpgradeRequestFilterTests {
    @Test("a WebSocket handshake NIO accepts, or no upgrade, passes; another protocol is ignored; a broken handshake is refused")
    func verdicts() {
        let handshake: HTTPHeaders = [
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
        ]
        #expect(UpgradeRequestFilter.verdict(handshake) == .pass)
        #expect(UpgradeRequestFilter.verdict(["Host": "localhost"]) == .pass)
        #expect(UpgradeRequestFilter.verdict(["Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings"]) == .ignoreUpgrade)
        var noKey = handshake
        noKey.remove(name: "Sec-WebSocket-Key")
        #expect(UpgradeRequestFilter.verdict(noKey) == .refuseWebSocket)
        var twoKeys = handshake
        twoKeys.add(name: "Sec-WebSocket-Key", value: "another")
        #expect(UpgradeRequestFilter.verdict(twoKeys) == .refuseWebSocket)
        var version8 = handshake
        version8.replaceOrAdd(name: "Sec-WebSocket-Version", value: "8")
        #expect(UpgradeRequestFilter.verdict(version8) == .refuseWebSocket)
        var mixedCase = handshake
        mixedCase.replaceOrAdd(name: "Upgrade", value: "WebSocket")
        #expect(UpgradeRequestFilter.verdict(mixedCase) == .pass)
    }
}

@Suite("Handshake headers kept by a session")
struct HandshakeHeaderTests {
    @Test("hop-by-hop and WebSocket handshake headers are dropped, the others kept in order")
    func kept() {
        let headers: HTTPFields = [
            .origin: "https://chat.example.com", .connection: "Upgrade", .upgrade: "websocket", .secWebSocketKey: "dGhlIHNhbXBsZSBub25jZQ==",
            .secWebSocketVersion: "13", .cookie: "JSESSIONID=abc", .userAgent: "test", .secWebSocketExtensions: "permessage-deflate",
        ]
        let kept = Handshake.keptHeaders(headers)
        #expect(kept == [.origin: "https://chat.example.com", .cookie: "JSESSIONID=abc", .userAgent: "test"])
        #expect(Handshake.keptHeaders(kept) == kept)
    }
}

/// Opens a session on `namespace` over WebSocket; returns the socket and the Engine.IO sid.
private func joinNamespace(_ namespace: String, port: Int) async throws -> (TestWebSocket, String) {
    let (socket, sid) = try await TestWebSocket.openSession(port: port)
    socket.send("40\(namespace),")
    let reply = try await socket.nextText(skippingPings: true)
    guard reply.hasPrefix("40\(namespace),") else { throw TestFailure("expected CONNECT to \(namespace), got \(reply)") }
    return (socket, sid)
}

/// Counts the reads that reach it (put it in front of the handler under test).
private final class ReadCounter: ChannelOutboundHandler, Sendable {
    typealias OutboundIn = Any
    private let reads = Atomic<Int>(0)

    var count: Int { reads.load(ordering: .relaxed) }

    func read(context: ChannelHandlerContext) {
        reads.add(1, ordering: .relaxed)
        context.read()
    }
}

/// Opens once; everyone waiting (and everyone after) goes on.
private final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let go = state.withLock { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if go { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

@Suite("WebSocket transport")
struct WebSocketTransportTests {
    @Test("a fragmented message is reassembled; one that grows past maxPayload closes with 1009")
    func fragmentedMessages() async throws {
        try await withServer(configure: { $0.maxPayload = 1000 }) { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(fragments: [#"42["message","#, #""frag"#, #"mented"]"#])
            #expect(try await socket.nextText(skippingPings: true) == #"42["message-back","fragmented"]"#)
            socket.send(fragments: [#"42["message",""#, String(repeating: "x", count: 600), String(repeating: "y", count: 600) + #""]"#])
            #expect(try await socket.waitForClose() == .messageTooLarge)
        }
    }

    @Test("a client whose handlers fall behind is not read from until they catch up; nothing is lost or reordered")
    func backpressure() async throws {
        let limit = 4
        let count = 300
        try await withServer(configure: { $0.limits.maxQueuedInboundPackets = limit }) { server in
            let gate = Gate()
            let handled = Inbox<Int>()
            server.io.of("/slow").onConnection { socket in
                socket.on("n") { arguments, _ in
                    await gate.wait()
                    handled.append(arguments.first?.intValue ?? -1)
                }
            }
            let (socket, sid) = try await joinNamespace("/slow", port: server.port)
            for index in 0..<count { socket.send(#"42/slow,["n",\#(index)]"#) }
            let connection = try #require(server.io.connection(sid))
            try await waitUntil("the server to stop reading from the client (its handler queue is full)") {
                connection.socketIO.withLock { !$0.waiters.isEmpty }
            }
            gate.open()
            for index in 0..<count {
                #expect(try await handled.next(timeout: .seconds(30)) == index)
            }
            socket.close()
        }
    }

    @Test("reads are not passed on while the handlers are behind, and are again once they catch up")
    func readsPause() async throws {
        var configuration = SocketIOConfiguration()
        configuration.limits.maxQueuedInboundPackets = 2
        let io = SocketIOServer(configuration: configuration)
        let gate = Gate()
        let handled = Inbox<Int>()
        io.of("/slow").onConnection { socket in
            socket.on("n") { arguments, _ in
                await gate.wait()
                handled.append(arguments.first?.intValue ?? -1)
            }
        }
        let reads = ReadCounter()
        let channel = NIOAsyncTestingChannel()
        try await channel.pipeline.addHandler(reads)
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9))
        let handshake = Handshake(
            headers: [:], query: ["EIO": "4", "transport": "websocket"], remoteAddress: nil, url: "/socket.io/?EIO=4&transport=websocket",
            transport: .websocket)
        try await channel.testingEventLoop.executeInContext {
            let socket = EngineWebSocket(server: io, admission: WebSocketAdmission(sid: nil, handshake: handshake), channel: channel)
            try channel.pipeline.syncOperations.addHandler(EngineWebSocketHandler(socket: socket))
        }
        // Masked, as a client's frames must be (an all-zero key leaves the bytes as they are).
        func text(_ text: String) -> WebSocketFrame {
            WebSocketFrame(fin: true, opcode: .text, maskKey: WebSocketMaskingKey([0, 0, 0, 0]), data: ByteBuffer(string: text))
        }
        /// What NIO does when it wants more bytes (a read going down the pipeline), on the loop.
        func requestRead() async throws { try await channel.testingEventLoop.executeInContext { channel.read() } }

        try await channel.writeInbound(text("40/slow,"))
        try await waitUntil("the socket to join /slow") { io.of("/slow").socketCount == 1 }
        var pausedAt: Int?
        for index in 0..<10 {
            try await channel.writeInbound(text(#"42/slow,["n",\#(index)]"#))
            let before = reads.count
            try await requestRead()
            if reads.count == before {
                pausedAt = index
                break
            }
        }
        let paused = try #require(pausedAt, "reads went on while the handler queue was full")
        #expect(paused <= 3)
        let before = reads.count
        try await requestRead()
        #expect(reads.count == before, "still paused")
        gate.open()
        for index in 0...paused {
            #expect(try await handled.next(timeout: .seconds(10)) == index)
        }
        try await waitUntil("the pending read to be passed on") {
            await channel.testingEventLoop.run()
            return reads.count > before
        }
        _ = try? await channel.close()
    }

    @Test("the HTTP server quiescing closes Socket.IO WebSockets with 1001, even without the Socket.IO service running")
    func quiesce() async throws {
        var logger = Logger(label: "test.socketio")
        logger.logLevel = .warning
        var configuration = SocketIOConfiguration()
        configuration.origins = .any
        let io = SocketIOServer(configuration: configuration, logger: logger)
        TestBehaviour.install(on: io.sockets, logger: logger)
        let bound = Inbox<Int>()
        let app = TestBehaviour.application(io: io, host: "127.0.0.1", port: 0, logger: logger) { bound.append($0) }
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task { try await group.run() }
        let port = try await bound.next(timeout: .seconds(30))
        let socket = try await TestWebSocket.connectSocketIO(port: port)
        await group.triggerGracefulShutdown()
        #expect(try await socket.waitForClose() == .goingAway)
        try await task.value
        #expect(io.sessionCount == 0)
    }

    @Test("Hummingbird's WebSocket upgrade path (io.webSocketUpgrade) serves sessions, upgrades and drains too")
    func hummingbirdPath() async throws {
        let server = try await InProcessServer.start(hummingbirdWebSocket: true)
        do {
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(#"42["message","hello"]"#)
            #expect(try await socket.nextText(skippingPings: true) == #"42["message-back","hello"]"#)
            socket.send(fragments: [#"42["message","#, #""again"]"#])
            #expect(try await socket.nextText(skippingPings: true) == #"42["message-back","again"]"#)

            let sid = try await openPollingSession(port: server.port)
            let probe = TestWebSocket(url: "ws://127.0.0.1:\(server.port)/socket.io/?EIO=4&transport=websocket&sid=\(sid)")
            probe.send("2probe")
            #expect(try await probe.nextText() == "3probe")
            probe.send("5")
            try await waitUntil("the upgrade") { server.io.connection(sid)?.engine.withLock { $0.session.transport == .websocket } ?? false }
            probe.send("40")
            #expect(try await probe.nextText(skippingPings: true).hasPrefix("40{"))

            await server.io.shutdown()
            #expect(try await socket.waitForClose() == .goingAway)
            #expect(try await probe.waitForClose() == .goingAway)
        } catch {
            try? await server.stop()
            throw error
        }
        try await server.stop()
    }
}

@Suite("Write coalescing in the outbox, on virtual time")
struct OutboxCoalescingTests {
    @Test("a lone frame is flushed at once; frames right behind it wait for the window, then leave together in order; a close sends them first")
    func coalescing() throws {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let outbox = WebSocketOutbox.of(loop)
        let target = WebSocketOutbox.Target(channel: channel, connection: nil, window: .milliseconds(10))
        func text(_ string: String) -> WebSocketFrame { WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(string: string)) }
        func sent() throws -> [String] {
            var frames: [String] = []
            while let frame = try channel.readOutbound(as: WebSocketFrame.self) {
                frames.append(frame.opcode == .connectionClose ? "close" : String(buffer: frame.data))
            }
            return frames
        }

        outbox.submit(.write([text("first")], to: target))
        loop.run()
        #expect(try sent() == ["first"])

        // Within the window of that flush: held back, then both in one go, in order.
        loop.advanceTime(by: .milliseconds(3))
        outbox.submit(.write([text("second")], to: target))
        loop.run()
        let third = [text("third")]
        outbox.submit(.broadcast(third, encoded: EncodedFrameSink.encode(third, allocator: channel.allocator), to: [target]))
        loop.run()
        #expect(try sent().isEmpty)
        loop.advanceTime(by: .milliseconds(6))
        #expect(try sent().isEmpty)
        loop.advanceTime(by: .milliseconds(1))
        #expect(try sent() == ["second", "third"])

        // Held back, then closed: what was held goes out before the close frame; the timer finds nothing.
        loop.advanceTime(by: .milliseconds(1))
        outbox.submit(.write([text("fourth")], to: target))
        loop.run()
        #expect(try sent().isEmpty)
        outbox.submit(.close(channel, code: .normalClosure, immediately: false))
        loop.run()
        #expect(try sent() == ["fourth", "close"])
        loop.advanceTime(by: .seconds(3))
        #expect(try sent().isEmpty)
    }
}

@Suite("Write coalescing over a real WebSocket")
struct WriteCoalescingTests {
    @Test("with coalescing, packets reach the client in order, and a close by the server sends the held ones first")
    func orderAndClose() async throws {
        try await withServer(configure: { $0.writeCoalescing = .milliseconds(50) }) { server in
            let client = try await TestWebSocket.connectSocketIO(port: server.port)
            try await server.io.sockets.emit("news", "first")
            try await server.io.sockets.emit("news", "second")
            let socket = try #require(server.io.sockets.sockets().first)
            socket.emit("direct", "third")
            #expect(try await client.nextText(skippingPings: true) == #"42["news","first"]"#)
            #expect(try await client.nextText(skippingPings: true) == #"42["news","second"]"#)
            #expect(try await client.nextText(skippingPings: true) == #"42["direct","third"]"#)

            try await server.io.sockets.emit("news", "fourth")
            socket.disconnect(close: true)
            #expect(try await client.nextText(skippingPings: true) == #"42["news","fourth"]"#)
            #expect(try await client.nextText(skippingPings: true) == "41")
            _ = try await client.waitForClose(timeout: .seconds(5))
        }
    }

    @Test("with coalescing, a burst of broadcasts reaches every client complete and in order")
    func burst() async throws {
        // A 1 ms window: the 300 broadcasts span many windows, held and flushed in turn.
        try await withServer(configure: { $0.writeCoalescing = .milliseconds(1) }) { server in
            var clients: [TestWebSocket] = []
            for _ in 0..<5 { clients.append(try await TestWebSocket.connectSocketIO(port: server.port)) }
            for index in 0..<300 {
                try await server.io.sockets.emit("n", .number(Double(index)))
            }
            for client in clients {
                for index in 0..<300 {
                    #expect(try await client.nextText(skippingPings: true) == #"42["n",\#(index)]"#)
                }
                client.close()
            }
        }
    }
}

@Suite("Broadcasts encoded once")
struct EncodedBroadcastTests {
    @Test("frames encoded once decode to the same frames, whatever the length field's size")
    func encoding() throws {
        var frames = [0, 125, 126, 65_535, 65_536, 200_000].map {
            WebSocketFrame(fin: true, opcode: .text, data: ByteBuffer(repeating: UInt8(ascii: "a"), count: $0))
        }
        frames.append(WebSocketFrame(fin: true, opcode: .binary, data: ByteBuffer(bytes: [0, 1, 2, 255])))
        let bytes = EncodedFrameSink.encode(frames, allocator: ByteBufferAllocator())
        let decoder = EmbeddedChannel(handler: ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 20)))
        try decoder.writeInbound(bytes)
        for frame in frames {
            let decoded = try #require(try decoder.readInbound(as: WebSocketFrame.self))
            #expect(decoded.fin && decoded.maskKey == nil)
            #expect(decoded.opcode == frame.opcode)
            #expect(decoded.data == frame.data)
        }
        #expect(try decoder.readInbound(as: WebSocketFrame.self) == nil)
    }

    @Test("a broadcast reaches event-loop and Hummingbird WebSocket clients alike, small and large, in order")
    func bothPaths() async throws {
        for hummingbird in [false, true] {
            try await withServer(hummingbirdWebSocket: hummingbird) { server in
                let client = try await TestWebSocket.connectSocketIO(port: server.port)
                let connection = try #require(server.io.sockets.sockets().first?.connection)
                // Only the library's own pipeline takes pre-encoded frames.
                #expect(connection.engine.withLock { $0.webSocket?.encoded != nil } == !hummingbird)
                let big = String(repeating: "x", count: 70_000)
                try await server.io.sockets.emit("news", "small")
                try await server.io.sockets.emit("news", .string(big))
                server.io.sockets.sockets().first?.emit("direct", "after")
                #expect(try await client.nextText(skippingPings: true) == #"42["news","small"]"#)
                #expect(try await client.nextText(skippingPings: true) == #"42["news","\#(big)"]"#)
                #expect(try await client.nextText(skippingPings: true) == #"42["direct","after"]"#)
                client.close()
            }
        }
    }
}
