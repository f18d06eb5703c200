import NIOCore
import TestSupport
import Testing

@testable import SocketIO

/// The Socket.IO assertions of socketio/socket.io-protocol `test-suite/test-suite.js` (v5), against a
/// live server with the suite's behaviours (the test server's: `auth`, `message-back`,
/// `message-with-ack`, `emit-with-ack`, namespace `/custom`).
@Suite("Socket.IO protocol test suite")
struct SocketIOProtocolTests {
    func expectSid(_ data: String, prefix: String) throws {
        #expect(data.hasPrefix(prefix))
        let handshake = try JSONValue(parsing: String(data.dropFirst(prefix.count)))
        #expect(handshake.objectValue?.keys == ["sid"])
        #expect(handshake["sid"]?.stringValue != nil)
    }

    // MARK: connect

    @Test("should allow connection to the main namespace")
    func connectMain() async throws {
        try await withServer { server in
            let (socket, _) = try await TestWebSocket.openSession(port: server.port)
            socket.send("40")
            try expectSid(try await socket.nextText(), prefix: "40")
            #expect(try await socket.nextText() == #"42["auth",{}]"#)
        }
    }

    @Test("should allow connection to the main namespace with a payload")
    func connectMainWithPayload() async throws {
        try await withServer { server in
            let (socket, _) = try await TestWebSocket.openSession(port: server.port)
            socket.send(#"40{"token":"123"}"#)
            try expectSid(try await socket.nextText(), prefix: "40")
            #expect(try await socket.nextText() == #"42["auth",{"token":"123"}]"#)
        }
    }

    @Test("should allow connection to a custom namespace")
    func connectCustom() async throws {
        try await withServer { server in
            let (socket, _) = try await TestWebSocket.openSession(port: server.port)
            socket.send("40/custom,")
            try expectSid(try await socket.nextText(), prefix: "40/custom,")
            #expect(try await socket.nextText() == #"42/custom,["auth",{}]"#)
        }
    }

    @Test("should allow connection to a custom namespace with a payload")
    func connectCustomWithPayload() async throws {
        try await withServer { server in
            let (socket, _) = try await TestWebSocket.openSession(port: server.port)
            socket.send(#"40/custom,{"token":"abc"}"#)
            try expectSid(try await socket.nextText(), prefix: "40/custom,")
            #expect(try await socket.nextText() == #"42/custom,["auth",{"token":"abc"}]"#)
        }
    }

    @Test("should disallow connection to an unknown namespace")
    func connectUnknown() async throws {
        try await withServer { server in
            let (socket, _) = try await TestWebSocket.openSession(port: server.port)
            socket.send("40/random")
            #expect(try await socket.nextText() == #"44/random,{"message":"Invalid namespace"}"#)
        }
    }

    @Test("should disallow connection with an invalid handshake")
    func connectInvalid() async throws {
        try await withServer { server in
            let (socket, _) = try await TestWebSocket.openSession(port: server.port)
            socket.send("4abc")
            _ = try await socket.waitForClose()
        }
    }

    @Test("a connect hook refuses with CONNECT_ERROR and a readable message")
    func connectRefused() async throws {
        try await withServer { server in
            let (socket, _) = try await TestWebSocket.openSession(port: server.port)
            socket.send(#"40{"token":"bad"}"#)
            #expect(try await socket.nextText() == #"44{"message":"not authorized"}"#)
        }
    }

    // MARK: disconnect

    @Test("should disconnect from the main namespace (the Engine.IO session stays)")
    func disconnectMain() async throws {
        try await withServer(configure: {
            $0.pingInterval = .milliseconds(300)
            $0.pingTimeout = .seconds(10)
        }) { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send("41")
            #expect(try await socket.nextText() == "2")
        }
    }

    @Test("should connect then disconnect from a custom namespace")
    func disconnectCustom() async throws {
        try await withServer { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send("40/custom")
            _ = try await socket.nextText(skippingPings: true)
            _ = try await socket.nextText(skippingPings: true)
            socket.send("41/custom")
            socket.send(#"42["message","message to main namespace",1,2]"#)
            #expect(try await socket.nextText(skippingPings: true) == #"42["message-back","message to main namespace",1,2]"#)
        }
    }

    // MARK: acknowledgements

    @Test("should emit with an ack expectation")
    func emitWithAck() async throws {
        try await withServer { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(#"42["emit-with-ack",1,"2",{"3":[true]}]"#)
            #expect(try await socket.nextText(skippingPings: true) == #"421["emit-with-ack",1,"2",{"3":[true]}]"#)
            socket.send(#"431[1,"2",{"3":[true]}]"#)
            #expect(try await socket.nextText(skippingPings: true) == #"42["emit-with-ack",1,"2",{"3":[true]}]"#)
        }
    }

    @Test("should emit with a binary ack expectation")
    func emitWithBinaryAck() async throws {
        try await withServer { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            let data = #"{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},"test""#
            socket.send(#"452-["emit-with-ack",\#(data)]"#)
            socket.send(binary: [1, 2, 3])
            socket.send(binary: [4, 5, 6])
            #expect(try await socket.nextText(skippingPings: true) == #"452-1["emit-with-ack",\#(data)]"#)
            #expect(try await socket.nextMessage() == .binary(ByteBuffer(bytes: [1, 2, 3])))
            #expect(try await socket.nextMessage() == .binary(ByteBuffer(bytes: [4, 5, 6])))
            socket.send(#"462-1[\#(data)]"#)
            socket.send(binary: [1, 2, 3])
            socket.send(binary: [4, 5, 6])
            #expect(try await socket.nextText(skippingPings: true) == #"452-["emit-with-ack",\#(data)]"#)
            #expect(try await socket.nextMessage() == .binary(ByteBuffer(bytes: [1, 2, 3])))
            #expect(try await socket.nextMessage() == .binary(ByteBuffer(bytes: [4, 5, 6])))
        }
    }

    // MARK: message

    @Test("should send a plain-text packet")
    func plainText() async throws {
        try await withServer { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(#"42["message",1,"2",{"3":[true]}]"#)
            #expect(try await socket.nextText(skippingPings: true) == #"42["message-back",1,"2",{"3":[true]}]"#)
        }
    }

    @Test("should send a packet with binary attachments")
    func binaryAttachments() async throws {
        try await withServer { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(#"452-["message",1,{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
            socket.send(binary: [1, 2, 3])
            socket.send(binary: [4, 5, 6])
            #expect(
                try await socket.nextText(skippingPings: true)
                    == #"452-["message-back",1,{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
            #expect(try await socket.nextMessage() == .binary(ByteBuffer(bytes: [1, 2, 3])))
            #expect(try await socket.nextMessage() == .binary(ByteBuffer(bytes: [4, 5, 6])))
        }
    }

    @Test("should send a plain-text packet with an ack")
    func plainTextWithAck() async throws {
        try await withServer { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(#"42456["message-with-ack",1,"2",{"3":[false]}]"#)
            #expect(try await socket.nextText(skippingPings: true) == #"43456[1,"2",{"3":[false]}]"#)
        }
    }

    @Test("should send a packet with binary attachments and an ack")
    func binaryWithAck() async throws {
        try await withServer { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(#"452-789["message-with-ack",1,{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
            socket.send(binary: [1, 2, 3])
            socket.send(binary: [4, 5, 6])
            #expect(
                try await socket.nextText(skippingPings: true) == #"462-789[1,{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
            #expect(try await socket.nextMessage() == .binary(ByteBuffer(bytes: [1, 2, 3])))
            #expect(try await socket.nextMessage() == .binary(ByteBuffer(bytes: [4, 5, 6])))
        }
    }

    @Test(
        "should close the connection upon invalid format",
        arguments: ["4abc", "42{}", #"42abc["message-with-ack",1,"2",{"3":[false]}]"#])
    func invalidFormat(packet: String) async throws {
        try await withServer { server in
            let socket = try await TestWebSocket.connectSocketIO(port: server.port)
            socket.send(packet)
            _ = try await socket.waitForClose()
        }
    }
}
