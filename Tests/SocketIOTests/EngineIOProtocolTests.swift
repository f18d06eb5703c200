import HTTPTypes
import NIOCore
import TestSupport
import Testing

@testable import SocketIO

/// The assertions of socketio/engine.io-protocol `test-suite/test-suite.js` (v4) and of the Engine.IO
/// part of socketio/socket.io-protocol's, against a live server. Where the engine.io suite echoes raw
/// Engine.IO messages, a Socket.IO server echoes Socket.IO events, so those tests carry Socket.IO
/// packets (`42["message",...]` -> `42["message-back",...]`) through the same Engine.IO paths. Waits
/// are on events (a response, a message, a close), never on time.
@Suite("Engine.IO protocol test suite")
struct EngineIOProtocolTests {
    /// The suites' server: pingInterval 300 ms, pingTimeout 200 ms.
    func withSuiteServer(_ body: (InProcessServer) async throws -> Void) async throws {
        try await withServer(
            configure: {
                $0.pingInterval = .milliseconds(300)
                $0.pingTimeout = .milliseconds(200)
            }, body)
    }

    /// The suites' ping interval with a pong deadline that a busy machine meets (tests that answer pings).
    func withHeartbeatServer(_ body: (InProcessServer) async throws -> Void) async throws {
        try await withServer(
            configure: {
                $0.pingInterval = .milliseconds(300)
                $0.pingTimeout = .seconds(10)
            }, body)
    }

    /// A server with a heartbeat slow enough not to interfere.
    func withQuietServer(_ body: (InProcessServer) async throws -> Void) async throws {
        try await withServer(body)
    }

    // MARK: handshake

    @Test("HTTP long-polling: successfully opens a session")
    func pollingHandshake() async throws {
        try await withSuiteServer { server in
            let response = try await http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling")
            #expect(response.status == 200)
            #expect(response.body.first == "0")
            let value = try JSONValue(parsing: String(response.body.dropFirst()))
            #expect(Set(value.objectValue?.keys ?? []) == ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"])
            #expect(value["sid"]?.stringValue?.count == 20)
            #expect(value["upgrades"] == ["websocket"])
            #expect(value["pingInterval"] == 300)
            #expect(value["pingTimeout"] == 200)
            #expect(value["maxPayload"] == 1_000_000)
            #expect(response.headers[.contentType] == "text/plain; charset=UTF-8")
            #expect(response.headers[.cacheControl] == "no-store")
        }
    }

    @Test("HTTP long-polling: fails with an invalid 'EIO', 'transport' or request method, with Node's error bodies")
    func pollingHandshakeErrors() async throws {
        try await withQuietServer { server in
            let cases: [(HTTPRequest.Method, String, Int, String)] = [
                (.get, "/socket.io/?transport=polling", 400, #"{"code":5,"message":"Unsupported protocol version"}"#),
                (.get, "/socket.io/?EIO=abc&transport=polling", 400, #"{"code":5,"message":"Unsupported protocol version"}"#),
                (.get, "/socket.io/?EIO=4", 400, #"{"code":0,"message":"Transport unknown"}"#),
                (.get, "/socket.io/?EIO=4&transport=abc", 400, #"{"code":0,"message":"Transport unknown"}"#),
                (.post, "/socket.io/?EIO=4&transport=polling", 400, #"{"code":2,"message":"Bad handshake method"}"#),
                (.put, "/socket.io/?EIO=4&transport=polling", 400, #"{"code":2,"message":"Bad handshake method"}"#),
                (.get, "/socket.io/?EIO=4&transport=polling&sid=unknown", 400, #"{"code":1,"message":"Session ID unknown"}"#),
                (.get, "/socket.io/?EIO=4&transport=websocket", 400, #"{"code":3,"message":"Bad request"}"#),
            ]
            for (method, path, status, body) in cases {
                let response = try await http(method, port: server.port, path)
                #expect(response.status == status, "\(path)")
                #expect(response.body == body, "\(path)")
                #expect(response.headers[.contentType] == "application/json")
            }
        }
    }

    @Test("WebSocket: successfully opens a session")
    func webSocketHandshake() async throws {
        try await withSuiteServer { server in
            let socket = TestWebSocket(url: "ws://127.0.0.1:\(server.port)/socket.io/?EIO=4&transport=websocket")
            let data = try await socket.nextText()
            #expect(data.first == "0")
            let value = try JSONValue(parsing: String(data.dropFirst()))
            #expect(Set(value.objectValue?.keys ?? []) == ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"])
            #expect(value["upgrades"] == [])
            #expect(value["pingInterval"] == 300)
            #expect(value["pingTimeout"] == 200)
            #expect(value["maxPayload"] == 1_000_000)
            socket.close()
        }
    }

    @Test(
        "WebSocket: fails with an invalid 'EIO' or 'transport' query parameter",
        arguments: ["?transport=websocket", "?EIO=abc&transport=websocket", "?EIO=4", "?EIO=4&transport=abc", "?EIO=4&transport=websocket&sid=nope"])
    func webSocketHandshakeErrors(query: String) async throws {
        try await withQuietServer { server in
            let socket = TestWebSocket(url: "ws://127.0.0.1:\(server.port)/socket.io/\(query)")
            let code = try await socket.waitForClose()
            #expect(code == nil, "the upgrade was refused")
        }
    }

    // MARK: message

    /// Polls until `count` packets (pings answered and skipped) have arrived.
    func pollPackets(_ port: Int, _ sid: String, count: Int) async throws -> [String] {
        var packets: [String] = []
        while packets.count < count {
            let response = try await http(.get, port: port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)")
            guard response.status == 200 else { throw TestFailure("poll answered \(response.status): \(response.body)") }
            for packet in response.body.split(separator: "\u{1e}").map(String.init) {
                if packet == "2" {
                    _ = try await http(.post, port: port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)", body: "3")
                } else {
                    packets.append(packet)
                }
            }
        }
        return packets
    }

    func post(_ port: Int, _ sid: String, _ body: String) async throws -> HTTPResult {
        try await http(.post, port: port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)", body: body)
    }

    /// A long-polling session connected to namespace `/` (CONNECT reply and `auth` event consumed).
    func connectedPollingSession(_ port: Int) async throws -> String {
        let sid = try await openPollingSession(port: port)
        #expect(try await post(port, sid, "40").body == "ok")
        let packets = try await pollPackets(port, sid, count: 2)
        #expect(packets[0].hasPrefix("40{\"sid\":"))
        #expect(packets[1] == #"42["auth",{}]"#)
        return sid
    }

    @Test("HTTP long-polling: sends and receives a payload containing one plain text packet")
    func pollingOnePacket() async throws {
        try await withQuietServer { server in
            let sid = try await connectedPollingSession(server.port)
            let push = try await post(server.port, sid, #"42["message","hello"]"#)
            #expect(push.status == 200)
            #expect(push.body == "ok")
            #expect(try await pollPackets(server.port, sid, count: 1) == [#"42["message-back","hello"]"#])
        }
    }

    @Test("HTTP long-polling: sends and receives a payload containing several plain text packets")
    func pollingSeveralPackets() async throws {
        try await withQuietServer { server in
            let sid = try await connectedPollingSession(server.port)
            let push = try await post(server.port, sid, "42[\"message\",\"test1\"]\u{1e}42[\"message\",\"test2\"]\u{1e}42[\"message\",\"test3\"]")
            #expect(push.body == "ok")
            #expect(
                try await pollPackets(server.port, sid, count: 3) == [
                    #"42["message-back","test1"]"#, #"42["message-back","test2"]"#, #"42["message-back","test3"]"#,
                ])
        }
    }

    @Test("HTTP long-polling: sends and receives a payload containing plain text and binary packets")
    func pollingBinary() async throws {
        try await withQuietServer { server in
            let sid = try await connectedPollingSession(server.port)
            let push = try await post(server.port, sid, "451-[\"message\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQIDBA==")
            #expect(push.body == "ok")
            #expect(try await pollPackets(server.port, sid, count: 2) == [#"451-["message-back",{"_placeholder":true,"num":0}]"#, "bAQIDBA=="])
        }
    }

    @Test("HTTP long-polling: closes the session upon invalid packet format")
    func pollingInvalidPacket() async throws {
        try await withQuietServer { server in
            let sid = try await openPollingSession(port: server.port)
            #expect(try await post(server.port, sid, "abc").status == 400)
            #expect(try await http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)").status == 400)
        }
    }

    @Test("HTTP long-polling: closes the session upon duplicate poll requests")
    func pollingDuplicate() async throws {
        try await withQuietServer { server in
            let sid = try await openPollingSession(port: server.port)
            let path = "/socket.io/?EIO=4&transport=polling&sid=\(sid)"
            async let first = http(.get, port: server.port, path)
            try await waitUntil("the first GET to be held") { server.io.connection(sid)?.engine.withLock { $0.session.pollParked } ?? false }
            let second = try await http(.get, port: server.port, path + "&t=burst")
            let held = try await first
            #expect(held.status == 200)
            #expect(held.body == "1")
            #expect(second.status == 400)
            #expect(try await http(.get, port: server.port, path).status == 400)
        }
    }

    @Test("WebSocket: sends and receives a plain text packet")
    func webSocketText() async throws {
        try await withQuietServer { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(#"42["message","hello"]"#)
            #expect(try await socket.nextText(skippingPings: true) == #"42["message-back","hello"]"#)
            socket.close()
        }
    }

    @Test("WebSocket: sends and receives a binary packet")
    func webSocketBinary() async throws {
        try await withQuietServer { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(#"451-["message",{"_placeholder":true,"num":0}]"#)
            socket.send(binary: [1, 2, 3, 4])
            #expect(try await socket.nextText(skippingPings: true) == #"451-["message-back",{"_placeholder":true,"num":0}]"#)
            #expect(try await socket.nextMessage() == .binary(ByteBuffer(bytes: [1, 2, 3, 4])))
            socket.close()
        }
    }

    @Test("WebSocket: closes the session upon invalid packet format")
    func webSocketInvalidPacket() async throws {
        try await withQuietServer { server in
            let (socket, _) = try await TestWebSocket.openSession(port: server.port)
            socket.send("abc")
            _ = try await socket.waitForClose()
        }
    }

    // MARK: heartbeat

    @Test("HTTP long-polling: sends ping/pong packets")
    func pollingHeartbeat() async throws {
        try await withHeartbeatServer { server in
            let sid = try await openPollingSession(port: server.port)
            for _ in 0..<3 {
                let poll = try await http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)")
                #expect(poll.status == 200)
                #expect(poll.body == "2")
                #expect(try await post(server.port, sid, "3").status == 200)
            }
        }
    }

    @Test("HTTP long-polling: closes the session upon ping timeout")
    func pollingPingTimeout() async throws {
        try await withSuiteServer { server in
            let sid = try await openPollingSession(port: server.port)
            // Never answer the ping: poll until the server says the session is gone (close packet, then 400).
            var answers: [String] = []
            while true {
                let poll = try await http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)")
                if poll.status == 400 { break }
                answers.append(poll.body)
                if answers.count > 10 { throw TestFailure("the session did not time out: \(answers)") }
            }
            #expect(answers.first == "2")
        }
    }

    @Test("WebSocket: sends ping/pong packets")
    func webSocketHeartbeat() async throws {
        try await withHeartbeatServer { server in
            let (socket, _) = try await TestWebSocket.openSession(port: server.port)
            for _ in 0..<3 {
                #expect(try await socket.nextText() == "2")
                socket.send("3")
            }
            socket.close()
        }
    }

    @Test("WebSocket: closes the session upon ping timeout")
    func webSocketPingTimeout() async throws {
        try await withSuiteServer { server in
            let (socket, sid) = try await TestWebSocket.openSession(port: server.port)
            _ = try await socket.waitForClose()
            #expect(server.io.connection(sid) == nil)
        }
    }

    // MARK: close

    @Test("HTTP long-polling: forcefully closes the session")
    func pollingClose() async throws {
        try await withQuietServer { server in
            let sid = try await openPollingSession(port: server.port)
            let path = "/socket.io/?EIO=4&transport=polling&sid=\(sid)"
            async let poll = http(.get, port: server.port, path)
            try await waitUntil("the GET to be held") { server.io.connection(sid)?.engine.withLock { $0.session.pollParked } ?? false }
            #expect(try await post(server.port, sid, "1").status == 200)
            let held = try await poll
            #expect(held.status == 200)
            #expect(held.body == "6")
            #expect(try await http(.get, port: server.port, path).status == 400)
        }
    }

    @Test("WebSocket: forcefully closes the session")
    func webSocketClose() async throws {
        try await withQuietServer { server in
            let (socket, _) = try await TestWebSocket.openSession(port: server.port)
            socket.send("1")
            _ = try await socket.waitForClose()
        }
    }

    // MARK: upgrade

    @Test("successfully upgrades from HTTP long-polling to WebSocket")
    func upgrade() async throws {
        try await withQuietServer { server in
            let sid = try await connectedPollingSession(server.port)
            let path = "/socket.io/?EIO=4&transport=polling&sid=\(sid)"
            async let held = http(.get, port: server.port, path)
            try await waitUntil("the GET to be held") { server.io.connection(sid)?.engine.withLock { $0.session.pollParked } ?? false }
            let socket = TestWebSocket(url: "ws://127.0.0.1:\(server.port)/socket.io/?EIO=4&transport=websocket&sid=\(sid)")
            socket.send("2probe")
            #expect(try await socket.nextText() == "3probe")
            // The held GET is released with a noop so the client can pause polling.
            #expect(try await held.body == "6")
            let poll = try await http(.get, port: server.port, path)
            #expect(poll.status == 200)
            #expect(poll.body == "6")
            socket.send("5")
            socket.send(#"42["message","hello"]"#)
            #expect(try await socket.nextText(skippingPings: true) == #"42["message-back","hello"]"#)
            socket.close()
        }
    }

    @Test("ignores HTTP requests with same sid after upgrade")
    func httpAfterUpgrade() async throws {
        try await withQuietServer { server in
            let sid = try await connectedPollingSession(server.port)
            let socket = TestWebSocket(url: "ws://127.0.0.1:\(server.port)/socket.io/?EIO=4&transport=websocket&sid=\(sid)")
            socket.send("2probe")
            socket.send("5")
            #expect(try await socket.nextText() == "3probe")
            try await waitUntil("the upgrade") { server.io.connection(sid)?.engine.withLock { $0.session.transport == .websocket } ?? false }
            let poll = try await http(.get, port: server.port, "/socket.io/?EIO=4&transport=polling&sid=\(sid)")
            #expect(poll.status == 400)
            #expect(poll.body == #"{"code":3,"message":"Bad request"}"#)
            socket.send(#"42["message","hello"]"#)
            #expect(try await socket.nextText(skippingPings: true) == #"42["message-back","hello"]"#)
            socket.close()
        }
    }

    @Test("ignores WebSocket connection with same sid after upgrade")
    func webSocketAfterUpgrade() async throws {
        try await withQuietServer { server in
            let sid = try await connectedPollingSession(server.port)
            let socket = TestWebSocket(url: "ws://127.0.0.1:\(server.port)/socket.io/?EIO=4&transport=websocket&sid=\(sid)")
            socket.send("2probe")
            socket.send("5")
            #expect(try await socket.nextText() == "3probe")
            try await waitUntil("the upgrade") { server.io.connection(sid)?.engine.withLock { $0.session.transport == .websocket } ?? false }
            let second = TestWebSocket(url: "ws://127.0.0.1:\(server.port)/socket.io/?EIO=4&transport=websocket&sid=\(sid)")
            #expect(try await second.waitForClose() == nil)
            socket.send(#"42["message","hello"]"#)
            #expect(try await socket.nextText(skippingPings: true) == #"42["message-back","hello"]"#)
            socket.close()
        }
    }
}
