import Testing

@testable import SocketIO

/// Joins namespace `/` over WebSocket; returns the client and its socket id (from the CONNECT reply).
private func connect(port: Int) async throws -> (TestWebSocket, String) {
    let (socket, _) = try await TestWebSocket.openSession(port: port)
    socket.send("40")
    let reply = try await socket.nextText(skippingPings: true)
    guard reply.hasPrefix("40"), let id = try JSONValue(parsing: String(reply.dropFirst(2)))["sid"]?.stringValue else {
        throw TestFailure("expected CONNECT, got \(reply)")
    }
    #expect(try await socket.nextText(skippingPings: true) == #"42["auth",{}]"#)
    return (socket, id)
}

@Suite("Rooms")
struct RoomTests {
    @Test("rooms reach their members only; a socket id is a room of its own; broadcast skips the sender")
    func rooms() async throws {
        try await withServer { server in
            let (a, idA) = try await connect(port: server.port)
            let (b, idB) = try await connect(port: server.port)
            let (c, _) = try await connect(port: server.port)
            a.send(#"421["join","lobby"]"#)
            #expect(try await a.nextText(skippingPings: true) == #"431["joined"]"#)

            let socketA = try #require(server.io.sockets.sockets(in: idA).first)
            #expect(socketA.id == idA)
            #expect(socketA.rooms == [idA, "lobby"])
            #expect(server.io.sockets.sockets(in: "lobby").map(\.id) == [idA])

            // To a room: its member only (c gets the next broadcast to everyone first).
            b.send(#"42["to-room","lobby","hi"]"#)
            #expect(try await a.nextText(skippingPings: true) == #"42["room-message","hi"]"#)
            // To a socket id.
            c.send(#"42["to-room","\#(idB)","direct"]"#)
            #expect(try await b.nextText(skippingPings: true) == #"42["room-message","direct"]"#)
            // Everyone but the sender.
            try await socketA.broadcast.emit("news", "all but a")
            #expect(try await b.nextText(skippingPings: true) == #"42["news","all but a"]"#)
            #expect(try await c.nextText(skippingPings: true) == #"42["news","all but a"]"#)
            try await server.io.sockets.emit("news", "everyone")
            #expect(try await a.nextText(skippingPings: true) == #"42["news","everyone"]"#)
            #expect(try await b.nextText(skippingPings: true) == #"42["news","everyone"]"#)
            #expect(try await c.nextText(skippingPings: true) == #"42["news","everyone"]"#)

            socketA.leave("lobby")
            #expect(socketA.rooms == [idA])
            #expect(server.io.sockets.sockets(in: "lobby").isEmpty)
            for client in [a, b, c] { client.close() }
        }
    }
}
