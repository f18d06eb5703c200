import NIOCore
import Testing

@testable import SocketIO

@Suite("JSON values")
struct JSONValueTests {
    @Test("writes compact JSON like JSON.stringify, members in order")
    func writesLikeJavaScript() throws {
        let value: JSONValue = ["b": 1, "a": [true, false, nil, 1.5, -3, "x\"y\\z\n\u{1}"], "c": ["3": [true]]]
        #expect(value.jsonText == #"{"b":1,"a":[true,false,null,1.5,-3,"x\"y\\z\n\u0001"],"c":{"3":[true]}}"#)
        #expect(JSONValue.number(.nan).jsonText == "null")
        #expect(JSONValue.number(1e300).jsonText == "1e+300")
        #expect(JSONValue.string("é😀").jsonText == "\"é😀\"")
    }

    @Test("parses what it writes, unicode escapes and surrogate pairs included")
    func parses() throws {
        let text = #" { "a" : [1, 2.5e3, -0, "\u00e9\ud83d\ude00\/"], "b": {"c": null}, "a2": true } "#
        let value = try JSONValue(parsing: text)
        #expect(value["a"] == [1, 2500, 0, "é😀/"])
        #expect(value["b"]?["c"] == .null)
        #expect(value["a2"] == true)
        #expect(try JSONValue(parsing: value.jsonText) == value)
        #expect(try JSONValue(parsing: #""\ud800x""#) == "\u{FFFD}x")
    }

    @Test(
        "refuses invalid JSON with where and why",
        arguments: ["", "[", "[1,]", "{\"a\"}", "01", "1.", "tru", "\"\u{1}\"", "[1] x", "{1:2}", "\"\\q\""])
    func refusesInvalid(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: text) }
    }

    @Test("refuses nesting deeper than the limit")
    func depthLimit() throws {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: Array(deep.utf8), maxDepth: 64) }
        #expect(try JSONValue(parsing: Array(deep.utf8), maxDepth: 128).arrayValue != nil)
    }

    @Test("binary values survive a round trip through jsonText with preservingBinary")
    func binaryRoundTrip() throws {
        let value: JSONValue = ["file": .binary(ByteBuffer(bytes: [0, 1, 254, 255])), "n": 1]
        let parsed = try JSONValue(parsing: value.jsonText, preservingBinary: true)
        #expect(parsed == value)
    }

    @Test("object equality ignores member order; later duplicate keys win")
    func objectSemantics() throws {
        #expect(try JSONValue(parsing: #"{"a":1,"b":2}"#) == JSONValue(parsing: #"{"b":2,"a":1}"#))
        #expect(try JSONValue(parsing: #"{"a":1,"a":2}"#) == ["a": 2])
    }

    @Test("a large object keeps JavaScript's semantics: order, later duplicates win, removal")
    func largeObjects() throws {
        // 100,000 members, as one WebSocket frame of about 1 MB can carry before any login. Member
        // lookups were a linear search: about 5 billion comparisons, a minute of an event loop.
        let count = 100_000
        let text = "{" + (0..<count).map { "\"k\($0)\":\($0)" }.joined(separator: ",") + #","k7":"again"}"#
        guard case .object(var object) = try JSONValue(parsing: text) else {
            Issue.record("not an object")
            return
        }
        #expect(object.count == count)
        #expect(object["k7"] == "again" && object["k99999"] == .number(99_999) && object["k100000"] == nil)
        #expect(object.keys.prefix(3) == ["k0", "k1", "k2"], "members keep their order")
        object["k1"] = nil
        #expect(object.count == count - 1 && object["k1"] == nil && object["k2"] == .number(2) && object.keys[1] == "k2")
        object["new"] = true
        #expect(object.keys.last == "new" && object["new"] == true)
        // Across the size where lookups change method: every member is found, removed and added back.
        var small = JSONObject()
        for index in 0..<(JSONObject.linearLimit + 4) { small["m\(index)"] = .number(Double(index)) }
        for index in stride(from: 0, to: JSONObject.linearLimit + 4, by: 3) { small["m\(index)"] = nil }
        for index in 0..<(JSONObject.linearLimit + 4) {
            #expect(small["m\(index)"] == (index % 3 == 0 ? nil : .number(Double(index))))
        }
        #expect(small == JSONObject(small.keys.reversed().map { ($0, small[$0]!) }), "equality ignores order")
    }

    @Test("base64 as Engine.IO writes it")
    func base64() {
        #expect(Base64.encode([1, 2, 3, 4]) == "AQIDBA==")
        #expect(Base64.decode(Array("AQIDBA==".utf8)) == [1, 2, 3, 4])
        #expect(Base64.decode(Array("AQID".utf8)) == [1, 2, 3])
        #expect(Base64.decode(Array("A?ID".utf8)) == nil)
        #expect(Base64.decode(Array("AQ=D".utf8)) == nil)
    }
}

@Suite("Engine.IO codec")
struct EngineCodecTests {
    @Test("a payload joins packets with the record separator; binary as b + base64")
    func encodesPayload() {
        let payload = EngineCodec.encodePayload([EnginePacket(.message, "hello"), .binary(ByteBuffer(bytes: [1, 2, 3, 4])), EnginePacket(.ping)])
        #expect(String(buffer: payload) == "4hello\u{1e}bAQIDBA==\u{1e}2")
    }

    @Test("decodes a payload of text and binary packets")
    func decodesPayload() throws {
        let packets = try EngineCodec.decodePayload(ByteBuffer(string: "4test1\u{1e}4test2\u{1e}bAQIDBA==\u{1e}3"))
        #expect(packets.map(\.type) == [.message, .message, .message, .pong])
        #expect(packets[0].text == "test1")
        #expect(packets[2].isBinary && Array(packets[2].data.readableBytesView) == [1, 2, 3, 4])
    }

    @Test("refuses a packet that does not start with a type digit or b", arguments: ["abc", "4hi\u{1e}", "7", "bAQ?", "4a\u{1e}x"])
    func refusesInvalid(payload: String) {
        #expect(throws: EngineDecodingError.self) { try EngineCodec.decodePayload(ByteBuffer(string: payload)) }
    }

    @Test("a WebSocket text frame is one packet")
    func textFrame() throws {
        let packet = try EngineCodec.decodeText(ByteBuffer(string: "2probe"))
        #expect(packet.type == .ping && packet.text == "probe")
        #expect(throws: EngineDecodingError.emptyPacket) { try EngineCodec.decodeText(ByteBuffer()) }
    }
}

@Suite("Socket.IO codec")
struct SocketCodecTests {
    func wire(_ packet: SocketPacket) -> [String] {
        SocketCodec.encode(packet).map { $0.isBinary ? "<\(Array($0.wire.readableBytesView))>" : String(buffer: $0.wire) }
    }

    @Test("encodes the packets of the protocol table")
    func encodesTable() {
        #expect(wire(SocketPacket(.connect, data: ["sid": "abc"])) == [#"40{"sid":"abc"}"#])
        #expect(
            wire(SocketPacket(.connectError, namespace: "/admin", data: ["message": "not authorized"])) == [#"44/admin,{"message":"not authorized"}"#]
        )
        #expect(wire(SocketPacket(.event, data: ["chat", "hi"])) == [#"42["chat","hi"]"#])
        #expect(wire(SocketPacket(.event, id: 12, data: ["chat", "hi"])) == [#"4212["chat","hi"]"#])
        #expect(wire(SocketPacket(.ack, namespace: "/custom", id: 12, data: [1])) == [#"43/custom,12[1]"#])
        #expect(wire(SocketPacket(.disconnect, namespace: "/custom")) == ["41/custom,"])
        #expect(wire(SocketPacket(.disconnect)) == ["41"])
    }

    @Test("binary values become attachments and the type becomes BINARY_EVENT / BINARY_ACK")
    func encodesBinary() {
        let data: JSONValue = ["file", .binary(ByteBuffer(bytes: [1, 2])), ["x": .binary(ByteBuffer(bytes: [3]))]]
        #expect(
            wire(SocketPacket(.event, data: data)) == [
                #"452-["file",{"_placeholder":true,"num":0},{"x":{"_placeholder":true,"num":1}}]"#, "<[1, 2]>", "<[3]>",
            ])
        #expect(wire(SocketPacket(.ack, id: 789, data: [.binary(ByteBuffer(bytes: [9]))])) == [#"461-789[{"_placeholder":true,"num":0}]"#, "<[9]>"])
    }

    @Test("decodes namespaces, ack ids and payloads")
    func decodes() throws {
        var decoder = SocketDecoder(maxAttachments: 10)
        #expect(try decoder.receive(text: ByteBuffer(string: "0")) == SocketPacket(.connect))
        #expect(try decoder.receive(text: ByteBuffer(string: "0/random")) == SocketPacket(.connect, namespace: "/random"))
        #expect(
            try decoder.receive(text: ByteBuffer(string: #"0/admin,{"token":"x"}"#))
                == SocketPacket(.connect, namespace: "/admin", data: ["token": "x"]))
        #expect(try decoder.receive(text: ByteBuffer(string: #"2456["m",1]"#)) == SocketPacket(.event, id: 456, data: ["m", 1]))
        #expect(try decoder.receive(text: ByteBuffer(string: #"3/c,7[]"#)) == SocketPacket(.ack, namespace: "/c", id: 7, data: []))
        #expect(try decoder.receive(text: ByteBuffer(string: "1/c,")) == SocketPacket(.disconnect, namespace: "/c"))
    }

    @Test("puts binary attachments back in place, in order")
    func reconstructs() throws {
        var decoder = SocketDecoder(maxAttachments: 10)
        let header = #"52-789["m",1,{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
        #expect(try decoder.receive(text: ByteBuffer(string: header)) == nil)
        #expect(decoder.isReconstructing)
        #expect(try decoder.receive(binary: ByteBuffer(bytes: [1, 2, 3])) == nil)
        let packet = try decoder.receive(binary: ByteBuffer(bytes: [4, 5, 6]))
        #expect(packet?.type == .binaryEvent && packet?.id == 789)
        #expect(packet?.data == ["m", 1, .binary(ByteBuffer(bytes: [1, 2, 3])), .binary(ByteBuffer(bytes: [4, 5, 6]))])
        #expect(!decoder.isReconstructing)
    }

    @Test(
        "refuses every malformed packet class",
        arguments: [
            ("", SocketDecodingError.emptyPacket), ("abc", .unknownType), ("9", .unknownType),
            ("{}", .unknownType), ("2{}", .invalidPayload("")), ("2abc[\"m\"]", .invalidPayload("")),
            ("2[]", .invalidPayload("")), ("2[1]", .invalidPayload("")), ("2[\"disconnect\"]", .invalidPayload("")),
            ("2", .invalidPayload("")), ("0[1]", .invalidPayload("")), ("0\"x\"", .invalidPayload("")),
            ("1{}", .invalidPayload("")), ("3[1]", .invalidPayload("")), ("31{}", .invalidPayload("")),
            ("5[\"m\"]", .illegalAttachments), ("5x-[\"m\"]", .illegalAttachments), ("511-[\"m\"]", .tooManyAttachments(11, limit: 10)),
            ("50-[\"m\",{\"_placeholder\":true,\"num\":0}]", .illegalAttachments), ("21234567890123456[\"m\"]", .invalidAckID),
            ("2[" + String(repeating: "[", count: 40) + String(repeating: "]", count: 40) + "]", .invalidPayload("")),
        ])
    func refusesMalformed(text: String, expected: SocketDecodingError) {
        var decoder = SocketDecoder(maxAttachments: 10)
        do {
            _ = try decoder.receive(text: ByteBuffer(string: text))
            Issue.record("\(text) was accepted")
        } catch {
            switch (error, expected) {
            case (.invalidPayload, .invalidPayload): break
            default: #expect(error == expected, "\(text)")
            }
        }
    }

    @Test("a binary message without an announcing packet, or text while attachments are due, is refused")
    func refusesOutOfOrder() throws {
        var decoder = SocketDecoder(maxAttachments: 10)
        #expect(throws: SocketDecodingError.unexpectedBinary) { try decoder.receive(binary: ByteBuffer(bytes: [1])) }
        _ = try decoder.receive(text: ByteBuffer(string: #"51-["m",{"_placeholder":true,"num":0}]"#))
        #expect(throws: SocketDecodingError.unexpectedText) { try decoder.receive(text: ByteBuffer(string: "2[\"m\"]")) }
        var other = SocketDecoder(maxAttachments: 10)
        _ = try other.receive(text: ByteBuffer(string: #"51-["m",{"_placeholder":true,"num":3}]"#))
        #expect(throws: SocketDecodingError.illegalAttachments) { try other.receive(binary: ByteBuffer(bytes: [1])) }
    }
}
