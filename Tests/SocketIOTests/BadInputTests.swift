import HTTPTypes
import NIOCore
import NIOWebSocket
import TestSupport
import Testing

@testable import SocketIO

/// Every malformed packet class (socketio-protocol.md) closes only the session that sent it, with the
/// right code; the server keeps serving the others.
@Suite("Bad input")
struct BadInputTests {
    struct BadPacket: Sendable, CustomTestStringConvertible {
        let name: String
        /// Join namespace `/` first.
        let connectFirst: Bool
        let frames: [Frame]

        enum Frame: Sendable {
            case text(String)
            case binary([UInt8])
        }

        var testDescription: String { name }

        init(_ name: String, connectFirst: Bool = true, _ frames: Frame...) {
            self.name = name
            self.connectFirst = connectFirst
            self.frames = frames
        }
    }

    static let packets: [BadPacket] = [
        // Engine.IO
        BadPacket("unknown Engine.IO type", connectFirst: false, .text("abc")),
        BadPacket("empty Engine.IO packet", connectFirst: false, .text("")),
        BadPacket("client ping (v3 heartbeat direction)", connectFirst: false, .text("2")),
        BadPacket("open packet from the client", connectFirst: false, .text("0")),
        BadPacket("upgrade packet outside a probe", connectFirst: false, .text("5")),
        // Socket.IO
        BadPacket("EVENT before CONNECT", connectFirst: false, .text(#"42["message","x"]"#)),
        BadPacket("ACK before CONNECT", connectFirst: false, .text("431[]")),
        BadPacket("unknown Socket.IO type", .text("4abc")),
        BadPacket("Socket.IO type 9", .text(#"49["x"]"#)),
        BadPacket("invalid JSON", .text(#"42["message""#)),
        BadPacket("EVENT payload not an array", .text("42{}")),
        BadPacket("EVENT with an empty array", .text("42[]")),
        BadPacket("EVENT name not a string", .text("42[1]")),
        BadPacket("reserved event name", .text(#"42["disconnect"]"#)),
        BadPacket("invalid ack id", .text(#"42abc["message-with-ack",1]"#)),
        BadPacket("CONNECT payload not an object", .text("40[1]")),
        BadPacket("second CONNECT to the same namespace", .text("40")),
        BadPacket("DISCONNECT with a payload", .text("41{}")),
        BadPacket("CONNECT_ERROR from a client", .text(#"44{"message":"x"}"#)),
        BadPacket("attachment count without '-'", .text(#"452["message"]"#)),
        BadPacket("too many attachments", .text(#"4511-["message"]"#)),
        BadPacket("text while attachments are due", .text(#"451-["message",{"_placeholder":true,"num":0}]"#), .text(#"42["message"]"#)),
        BadPacket("binary without an announcing packet", .binary([1, 2, 3])),
        BadPacket("placeholder out of range", .text(#"451-["message",{"_placeholder":true,"num":5}]"#), .binary([1])),
        BadPacket("JSON nested too deep", .text("42[\"message\"," + String(repeating: "[", count: 50) + String(repeating: "]", count: 50) + "]")),
    ]

    @Test("a malformed packet closes its own session only", arguments: packets)
    func closesOnlyItsSession(packet: BadPacket) async throws {
        try await withServer { server in
            let control = try await TestWebSocket.connectSocketIO(port: server.port)
            let (bad, sid) = try await TestWebSocket.openSession(port: server.port)
            if packet.connectFirst {
                bad.send("40")
                _ = try await bad.nextText(skippingPings: true)
                _ = try await bad.nextText(skippingPings: true)
            }
            for frame in packet.frames {
                switch frame {
                case .text(let text): bad.send(text)
                case .binary(let bytes): bad.send(binary: bytes)
                }
            }
            let code = try await bad.waitForClose()
            #expect(code == .normalClosure, "\(packet.name): closed with \(code.map { "\($0)" } ?? "nothing")")
            try await waitUntil("session \(sid) to be forgotten") { server.io.connection(sid) == nil }
            control.send(#"42["message","still here"]"#)
            #expect(try await control.nextText(skippingPings: true) == #"42["message-back","still here"]"#)
        }
    }

    @Test(
        "a malformed long-polling POST gets 400 code 3 and closes its session only",
        arguments: ["abc", "4hi\u{1e}", "bA?==", "2", #"42["message"]"#])
    func pollingBadPayload(body: String) async throws {
        try await withServer { server in
            let control = try await TestWebSocket.connectSocketIO(port: server.port)
            let sid = try await openPollingSession(port: server.port)
            let response = try await http(.post, port: server.port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)", body: body)
            // Engine.IO parse errors answer 400; a Socket.IO error answers ok (the POST itself parsed) then closes.
            #expect(response.status == 400 || response.status == 200)
            try await waitUntil("session \(sid) to close") { server.io.connection(sid) == nil }
            #expect(try await http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)").status == 400)
            control.send(#"42["message","still here"]"#)
            #expect(try await control.nextText(skippingPings: true) == #"42["message-back","still here"]"#)
        }
    }
}

/// Limits against abuse and the origin policy.
@Suite("Limits and origins")
struct LimitTests {
    @Test("a POST over maxPayload gets 413")
    func oversizedPost() async throws {
        try await withServer(configure: { $0.maxPayload = 1000 }) { server in
            let sid = try await openPollingSession(port: server.port)
            let body = "4" + String(repeating: "x", count: 2000)
            let response = try await http(.post, port: server.port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)", body: body)
            #expect(response.status == 413)
        }
    }

    @Test("a first request NIO cannot read gets 431 or 400 and its connection closed, not a hang")
    func unreadableRequests() async throws {
        try await withServer { server in
            let huge = "GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 90_000))\r\n\r\n"
            let tooLarge = try await rawExchange(port: server.port, Array(huge.utf8))
            #expect(tooLarge.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "\(tooLarge.prefix(200))")
            #expect(tooLarge.lowercased().contains("connection: close"))
            let malformed = try await rawExchange(port: server.port, Array("GET / HTTP/1.1\r\nHo st: x\r\n\r\n".utf8))
            #expect(malformed.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(malformed.prefix(200))")
            let garbage = try await rawExchange(port: server.port, Array("\u{16}\u{03}\u{01}\u{02}\u{00}\u{01}\r\n\r\n".utf8))
            #expect(garbage.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(garbage.prefix(200))")
            // The server is fine afterwards.
            #expect(try await http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling").status == 200)
        }
    }

    @Test("a request that does not keep the connection alive gets its response, then the connection closed")
    func connectionClose() async throws {
        try await withServer { server in
            for request in [
                "GET /socket.io/?EIO=4&transport=polling HTTP/1.0\r\n\r\n",
                "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n",
                "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: TE, close\r\n\r\n",
                // The first request of a connection, and a later one.
                "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\nGET /socket.io/?EIO=4&transport=polling HTTP/1.0\r\n\r\n",
            ] {
                let reply = try await rawExchange(port: server.port, Array(request.utf8))
                let answers = reply.components(separatedBy: "HTTP/1.1 200 OK\r\n").count - 1
                #expect(answers == request.components(separatedBy: "GET ").count - 1, "\(request.debugDescription): \(reply.prefix(300))")
            }
        }
    }

    @Test("a WebSocket message over maxPayload closes with 1009; others are not affected")
    func oversizedFrame() async throws {
        try await withServer(configure: { $0.maxPayload = 1000 }) { server in
            let control = try await TestWebSocket.connectSocketIO(port: server.port)
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(#"42["message",""# + String(repeating: "x", count: 2000) + #""]"#)
            #expect(try await socket.waitForClose() == .messageTooLarge)
            control.send(#"42["message","ok"]"#)
            #expect(try await control.nextText(skippingPings: true) == #"42["message-back","ok"]"#)
        }
    }

    @Test("past maxSessions, handshakes are refused with 503 and a readable message")
    func maxSessions() async throws {
        try await withServer(configure: { $0.limits.maxSessions = 2 }) { server in
            _ = try await openPollingSession(port: server.port)
            _ = try await openPollingSession(port: server.port)
            let refused = try await http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling")
            #expect(refused.status == 503)
            #expect(refused.body == #"{"code":3,"message":"Too many sessions"}"#)
            let socket = TestWebSocket(url: "ws://127.0.0.1:\(server.port)/socket.io/?EIO=4&transport=websocket")
            let code = try await socket.waitForClose()
            #expect(code == nil, "the upgrade was refused")
        }
    }

    @Test("same origin by default: a cross-site page gets 403 code 4 and no WebSocket")
    func sameOrigin() async throws {
        #expect(SocketIOConfiguration().origins == .sameOrigin)
        try await withServer(configure: { $0.origins = .sameOrigin }) { server in
            let path = "/socket.io/?EIO=4&transport=polling"
            let foreign = try await http(.get, port: server.port, path, headers: [.origin: "http://evil.example"])
            #expect(foreign.status == 403)
            #expect(foreign.body == #"{"code":4,"message":"Forbidden"}"#)
            let same = try await http(.get, port: server.port, path, headers: [.origin: "http://127.0.0.1:\(server.port)"])
            #expect(same.status == 200)
            #expect(same.headers[.accessControlAllowOrigin] == nil)
            // The test WebSocket client sends `Origin: ws://127.0.0.1`, another origin: refused.
            let socket = TestWebSocket(url: "ws://127.0.0.1:\(server.port)/socket.io/?EIO=4&transport=websocket")
            let code = try await socket.waitForClose()
            #expect(code == nil)
        }
    }

    @Test("an allow-list admits the listed origins with CORS headers, and only them")
    func allowList() async throws {
        try await withServer(configure: { $0.origins = .allowList(["http://chat.example"]) }) { server in
            let path = "/socket.io/?EIO=4&transport=polling"
            let allowed = try await http(.get, port: server.port, path, headers: [.origin: "http://chat.example"])
            #expect(allowed.status == 200)
            #expect(allowed.headers[.accessControlAllowOrigin] == "http://chat.example")
            #expect(allowed.headers[.accessControlAllowCredentials] == "true")
            let preflight = try await http(.options, port: server.port, path, headers: [.origin: "http://chat.example"])
            #expect(preflight.status == 204)
            #expect(try await http(.get, port: server.port, path, headers: [.origin: "http://other.example"]).status == 403)
        }
    }

    @Test("origin comparison ignores default ports and case")
    func originComparison() {
        #expect(SocketIOServer.isSameOrigin("http://Example.com", host: "example.com:80"))
        #expect(SocketIOServer.isSameOrigin("https://example.com:443", host: "example.com"))
        #expect(!SocketIOServer.isSameOrigin("http://example.com:8080", host: "example.com"))
        #expect(!SocketIOServer.isSameOrigin("null", host: "example.com"))
    }
}
