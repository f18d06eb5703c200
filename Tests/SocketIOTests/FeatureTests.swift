import NIOCore
import NIOWebSocket
import RedisClient
import Synchronization
import TestSupport
import Testing

@testable import SocketIO

/// Connects a WebSocket session to namespace `/` with `auth`; returns the socket and the CONNECT reply.
func connectWithAuth(port: Int, auth: String) async throws -> (TestWebSocket, JSONValue) {
    let (socket, _) = try await TestWebSocket.openSession(port: port)
    socket.send("40" + auth)
    let reply = try await socket.nextText(skippingPings: true)
    guard reply.hasPrefix("40") else { throw TestFailure("expected CONNECT, got \(reply)") }
    let value = try JSONValue(parsing: String(reply.dropFirst(2)))
    #expect(try await socket.nextText(skippingPings: true).hasPrefix(#"42["auth""#))
    return (socket, value)
}

/// The event name and arguments of an EVENT text packet on `/`.
func event(_ text: String) throws -> [JSONValue] {
    guard text.hasPrefix("42") else { throw TestFailure("expected an EVENT, got \(text)") }
    return try JSONValue(parsing: String(text.dropFirst(2))).arrayValue ?? []
}

@Suite("Connection state recovery")
struct RecoveryTests {
    @Test("a client that comes back with pid and offset gets its id, rooms and missed broadcasts, in order")
    func recovers() async throws {
        try await withServer(configure: { $0.recovery = .init(maxDisconnectionDuration: .seconds(60)) }) { server in
            // A broadcast carries an offset as its last argument.
            let (a, b, sid, pid, offset) = try await Self.aInRoom1AndAnOffset(port: server.port)

            // A's transport goes away; what is broadcast meanwhile waits for it.
            a.close()
            _ = try await a.waitForClose()
            let store = try #require(server.io.recoveryStore as? InMemoryRecoveryStore)
            try await waitUntil("A's session to be saved") { store.savedSessions == 1 }
            b.send(#"42["broadcast","second"]"#)
            b.send(#"42["to-room","room1","for the room"]"#)
            b.send(#"42["broadcast","third"]"#)
            for _ in 0..<2 { _ = try await b.nextText(skippingPings: true) }

            let (back, _) = try await TestWebSocket.openSession(port: server.port)
            back.send(#"40{"pid":"\#(pid)","offset":"\#(offset)"}"#)
            let recovered = try JSONValue(parsing: String(try await back.nextText(skippingPings: true).dropFirst(2)))
            #expect(recovered["sid"]?.stringValue == sid)
            #expect(recovered["pid"]?.stringValue == pid)
            var replayed: [[JSONValue]] = []
            while replayed.count < 3 {
                let packet = try event(try await back.nextText(skippingPings: true))
                if packet.first == "auth" { continue }
                replayed.append(packet)
            }
            #expect(replayed.map { Array($0.prefix(2)) } == [["broadcast", "second"], ["room-message", "for the room"], ["broadcast", "third"]])
            let socket = try #require(server.io.sockets.sockets().first { $0.id == sid })
            #expect(socket.recovered)
            #expect(socket.rooms == [sid, "room1"])
        }
    }

    @Test("a client that recovers while its old connection is still open takes the session over; the old one's close saves nothing")
    func recoversOverAConnectionStillOpen() async throws {
        let store = CountingRecoveryStore()
        try await withServer(recoveryStore: store, configure: { $0.recovery = .init(maxDisconnectionDuration: .seconds(60)) }) { server in
            let (a, b, sid, pid, offset) = try await Self.aInRoom1AndAnOffset(port: server.port)
            // As chat-node does, the app keeps the live socket recoverable (an instance killed with -9
            // saves nothing when it dies).
            let snapshot = SessionSnapshot(sid: sid, pid: pid, namespace: "/", rooms: [sid, "room1"], data: .null)
            try await store.save(snapshot, ttl: .seconds(60))
            let old = try #require(server.io.sockets.sockets().first { $0.id == sid })
            let oldGone = Inbox<String>()
            old.onDisconnect { reason in oldGone.append(reason) }

            // The client has given up on its connection and comes back; the server still holds the
            // old one (a half-open transport, or a long-poll error the server has not seen).
            let (c, _) = try await TestWebSocket.openSession(port: server.port)
            c.send(#"40{"pid":"\#(pid)","offset":"\#(offset)"}"#)
            let recovered = try JSONValue(parsing: String(try await c.nextText(skippingPings: true).dropFirst(2)))
            #expect(recovered["sid"]?.stringValue == sid)
            let saves = store.saves
            a.close()
            _ = try await oldGone.next(timeout: .seconds(10))
            // Its close used to save it with no rooms, over the app's snapshot of the recovered socket.
            #expect(store.saves == saves, "the superseded socket's close saved a session")
            let current = try #require(server.io.sockets.sockets().first { $0.id == sid })
            #expect(current !== old && current.recovered && current.rooms == [sid, "room1"])
            b.send(#"42["to-room","room1","after"]"#)
            var received: [JSONValue] = []
            while received.first != "room-message" { received = try event(try await c.nextText(skippingPings: true)) }
            #expect(received.prefix(2) == ["room-message", "after"])
        }
    }

    /// Client A (its sid and pid) in room1, client B, and the offset of a broadcast B sent that A got.
    static func aInRoom1AndAnOffset(
        port: Int
    ) async throws -> (
        a: TestWebSocket, b: TestWebSocket, sid: String, pid: String, offset: String
    ) {
        let (a, reply) = try await connectWithAuth(port: port, auth: "")
        let sid = try #require(reply["sid"]?.stringValue)
        let pid = try #require(reply["pid"]?.stringValue)
        a.send(#"42["join","room1"]"#)
        let (b, _) = try await connectWithAuth(port: port, auth: "")
        b.send(#"42["broadcast","first"]"#)
        let first = try event(try await a.nextText(skippingPings: true))
        #expect(first.prefix(2) == ["broadcast", "first"])
        let offset = try #require(first.last?.stringValue)
        _ = try await b.nextText(skippingPings: true)
        return (a, b, sid, pid, offset)
    }

    @Test("an unknown pid or offset connects a new socket")
    func unknownSession() async throws {
        try await withServer(configure: { $0.recovery = .init() }) { server in
            let (_, reply) = try await connectWithAuth(port: server.port, auth: #"{"pid":"nope","offset":"1"}"#)
            #expect(reply["pid"]?.stringValue != "nope")
            #expect(server.io.sockets.sockets().allSatisfy { !$0.recovered })
        }
    }

    @Test("without recovery, the CONNECT reply has no pid and broadcasts no offset")
    func disabled() async throws {
        try await withServer { server in
            let (a, reply) = try await connectWithAuth(port: server.port, auth: "")
            #expect(reply["pid"] == nil)
            a.send(#"42["broadcast","x"]"#)
            #expect(try event(try await a.nextText(skippingPings: true)) == ["broadcast", "x"])
        }
    }
}

@Suite("Redis adapter")
struct RedisAdapterTests {
    @Test("broadcasts reach the sockets of every instance through one subscription per instance")
    func crossInstance() async throws {
        let redis = try await RedisServer()
        let clients = try await (RedisClient.connect(redis.configuration), RedisClient.connect(redis.configuration))
        let probe = try await RedisClient.connect(redis.configuration)
        var servers: [InProcessServer] = []
        do {
            servers.append(try await InProcessServer.start(adapter: RedisAdapter(client: clients.0)))
            servers.append(try await InProcessServer.start(adapter: RedisAdapter(client: clients.1)))
            try await crossInstanceChecks(first: servers[0], second: servers[1], probe: probe)
        } catch {
            Issue.record(error)
        }
        for server in servers { try? await server.stop() }
        await probe.close()
        await clients.0.close()
        await clients.1.close()
        try await redis.kill()
    }

    func crossInstanceChecks(first: InProcessServer, second: InProcessServer, probe: RedisClient) async throws {
        try await waitUntil("both instances to subscribe") {
            let reply = try await probe.send("PUBSUB", "NUMSUB", "socket.io#broadcast")
            return reply.array?.last?.int == 2
        }
        var onFirst: [TestWebSocket] = []
        for _ in 0..<3 { onFirst.append(try await TestWebSocket.connectSocketIO(port: first.port)) }
        let onSecond = try await TestWebSocket.connectSocketIO(port: second.port)
        onFirst[0].send(#"42["join","lobby"]"#)
        try await waitUntil("the room join") { !first.io.sockets.sockets(in: "lobby").isEmpty }

        onSecond.send(#"42["broadcast","from the second instance"]"#)
        for socket in onFirst + [onSecond] {
            #expect(try event(try await socket.nextText(skippingPings: true)) == ["broadcast", "from the second instance"])
        }
        // A room on another instance, the sender excluded.
        onSecond.send(#"42["to-room","lobby","hello lobby"]"#)
        #expect(try event(try await onFirst[0].nextText(skippingPings: true)) == ["room-message", "hello lobby"])
        // Still one subscription per instance, whatever the number of sockets.
        let reply = try await probe.send("PUBSUB", "NUMSUB", "socket.io#broadcast")
        #expect(reply.array?.last?.int == 2)
    }

    @Test("the wire form keeps rooms, exceptions, offsets and binary arguments")
    func wireForm() throws {
        let message = BroadcastMessage(
            namespace: "/chat", rooms: ["a", "b"], except: ["c"], event: "file", arguments: ["x", .binary(ByteBuffer(bytes: [1, 2]))], offset: "5-0")
        let encoded = RedisAdapter.encode(message, instance: "me")
        let decoded = try #require(RedisAdapter.decode(ByteBuffer(string: encoded)))
        #expect(decoded.instance == "me")
        #expect(decoded.message == message)
        #expect(RedisAdapter.decode(ByteBuffer(string: "not json")) == nil)
    }
}

@Suite("Graceful shutdown")
struct ShutdownTests {
    @Test("drain: held GETs get the close packet, WebSockets close with 1001, new handshakes get 503")
    func drains() async throws {
        let server = try await InProcessServer.start()
        do {
            let sid = try await openPollingSession(port: server.port)
            async let held = http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)")
            try await waitUntil("the GET to be held") { server.io.connection(sid)?.engine.withLock { $0.session.pollParked } ?? false }
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)

            await server.io.shutdown()
            #expect(try await held.body == "1")
            #expect(try await socket.waitForClose() == .goingAway)
            let refused = try await http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling")
            #expect(refused.status == 503)
            #expect(refused.body == #"{"code":3,"message":"Server is shutting down"}"#)
            #expect(server.io.sessionCount == 0)
        } catch {
            try? await server.stop()
            throw error
        }
        try await server.stop()
    }

    @Test("a handler that does not finish does not hold shutdown past the drain timeout")
    func drainTimeout() async throws {
        let server = try await InProcessServer.start(configure: { $0.drainTimeout = .milliseconds(500) })
        let stuck = server.io.of("/stuck")
        let entered = Inbox<Bool>()
        stuck.onConnection { socket in
            socket.on("hang") { _, _ in
                entered.append(true)
                let (never, continuation) = AsyncStream<Never>.makeStream()
                for await _ in never {}
                continuation.finish()
            }
        }
        let (socket, _) = try await TestWebSocket.openSession(port: server.port)
        socket.send("40/stuck,")
        _ = try await socket.nextText(skippingPings: true)
        socket.send(#"42/stuck,["hang"]"#)
        _ = try await entered.next(timeout: .seconds(10))
        // Returns although the handler never finishes.
        await server.io.shutdown()
        #expect(server.io.isDraining)
        try await server.stop()
    }

    @Test("a long-polling GET held at graceful shutdown does not hold the HTTP server")
    func serviceGroupShutdown() async throws {
        let server = try await InProcessServer.start()
        let sid = try await openPollingSession(port: server.port)
        async let held = http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)")
        try await waitUntil("the GET to be held") { server.io.connection(sid)?.engine.withLock { $0.session.pollParked } ?? false }
        try await server.stop()
        #expect(try await held.body == "1")
    }
}

@Suite("Server API")
struct ServerAPITests {
    @Test("a server emit with ack times out when the client does not answer, and fails on disconnect")
    func ackTimeout() async throws {
        try await withServer { server in
            let (socket, _) = try await connectWithAuth(port: server.port, auth: "")
            let serverSocket = try #require(server.io.sockets.sockets().first)
            await #expect(throws: SocketIOError.self) {
                try await serverSocket.emitWithAck("question", "?", timeout: .milliseconds(100))
            }
            let pending = Task { try await serverSocket.emitWithAck("question", "?", timeout: .seconds(60)) }
            _ = try await socket.nextText(skippingPings: true)
            socket.close()
            await #expect(throws: SocketIOError.disconnected(socket: serverSocket.id)) { try await pending.value }
        }
    }

    @Test("namespace emit reaches rooms and skips exceptions; socket.disconnect sends DISCONNECT")
    func roomsAndDisconnect() async throws {
        try await withServer { server in
            let (a, replyA) = try await connectWithAuth(port: server.port, auth: "")
            let (b, _) = try await connectWithAuth(port: server.port, auth: "")
            let socketA = try #require(server.io.sockets.sockets().first { $0.id == replyA["sid"]?.stringValue })
            socketA.join(["red", "blue"])
            try await server.io.sockets.to("red").except("blue").emit("x", "nobody")
            try await server.io.sockets.to("red").emit("x", "red")
            #expect(try event(try await a.nextText(skippingPings: true)) == ["x", "red"])
            socketA.leave("red")
            #expect(socketA.rooms == [socketA.id, "blue"])
            try await server.io.sockets.emit("x", "all")
            #expect(try event(try await b.nextText(skippingPings: true)) == ["x", "all"])
            #expect(try event(try await a.nextText(skippingPings: true)) == ["x", "all"])
            socketA.disconnect()
            #expect(try await a.nextText(skippingPings: true) == "41")
            await #expect(throws: SocketIOError.reservedEventName("connect")) { try await server.io.sockets.emit("connect") }
        }
    }
}

/// The in-memory store, counting the sessions saved.
final class CountingRecoveryStore: RecoveryStore {
    private let store = InMemoryRecoveryStore(retention: .seconds(60))
    private let count = Mutex(0)

    var saves: Int { count.withLock { $0 } }

    func save(_ session: SessionSnapshot, ttl: Duration) async throws {
        count.withLock { $0 += 1 }
        try await store.save(session, ttl: ttl)
    }

    func restore(pid: String, offset: String) async throws -> RestoredSession? {
        try await store.restore(pid: pid, offset: offset)
    }

    func record(_ broadcast: BroadcastMessage) async throws -> String? {
        try await store.record(broadcast)
    }
}
