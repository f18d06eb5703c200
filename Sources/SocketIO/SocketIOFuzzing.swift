import NIOCore

/// Entry points for coverage-guided fuzzing (`make fuzz`, docs/fuzzing.md) and for replaying its
/// corpus in the tests (FuzzCorpusTests): arbitrary bytes as a client could send them. Each must
/// return without crashing; where a property must hold (what is decoded, encoded again, decodes to
/// the same), a violation stops the process with `preconditionFailure`, which the fuzzer reports.
package enum SocketIOFuzzing {
    /// A JSON document (event arguments, CONNECT auth, stored sessions): parsed, written and parsed
    /// again to the same value, with both binary modes.
    package static func json(_ data: UnsafeRawBufferPointer) {
        for preservingBinary in [false, true] {
            var parser = JSONParser(bytes: Array(data), maxDepth: 64, preservingBinary: preservingBinary)
            guard let value = try? parser.parseDocument() else { continue }
            let text = value.jsonText
            guard let again = try? JSONValue(parsing: text, preservingBinary: preservingBinary) else {
                preconditionFailure("JSON written from a parsed document does not parse: \(text)")
            }
            precondition(again == finite(value), "JSON written from a parsed document parses to another value: \(text)")
        }
    }

    /// `value` as JSON can carry it: a number too large for a Double (`1e999`) parses to infinity and is
    /// written as `null`, as JavaScript's JSON.parse and JSON.stringify do.
    static func finite(_ value: JSONValue) -> JSONValue {
        switch value {
        case .number(let number) where !number.isFinite: .null
        case .array(let values): .array(values.map(finite))
        case .object(let object): .object(JSONObject(object.map { ($0.key, finite($0.value)) }))
        default: value
        }
    }

    /// A long-polling POST body and a WebSocket text frame, at the Engine.IO level: decoded, encoded
    /// again (polling) and decoded to the same packets.
    package static func engine(_ data: UnsafeRawBufferPointer) {
        let buffer = ByteBuffer(bytes: data)
        if let packet = try? EngineCodec.decodeText(buffer) { _ = (packet.data, packet.text) }
        guard let packets = try? EngineCodec.decodePayload(buffer) else { return }
        let encoded = EngineCodec.encodePayload(packets)
        guard let again = try? EngineCodec.decodePayload(encoded) else {
            preconditionFailure("a polling payload encoded from decoded packets does not decode")
        }
        precondition(again == packets, "a polling payload decodes to other packets once encoded again")
    }

    /// A Socket.IO packet (the Engine.IO message's data), then binary attachments cut from the same
    /// bytes when it announces some: decoded, encoded again and decoded to the same packet.
    package static func socket(_ data: UnsafeRawBufferPointer) {
        // The text packet, then each attachment, separated by zero bytes.
        let pieces = data.split(separator: 0, omittingEmptySubsequences: false)
        var decoder = SocketDecoder(maxAttachments: 10)
        var packet: SocketPacket?
        do throws(SocketDecodingError) {
            packet = try decoder.receive(text: ByteBuffer(bytes: pieces[0]))
            for piece in pieces.dropFirst() where packet == nil && decoder.isReconstructing {
                packet = try decoder.receive(binary: ByteBuffer(bytes: piece))
            }
        } catch {
            return
        }
        guard let packet else { return }
        let messages = SocketCodec.encode(packet)
        var again = SocketDecoder(maxAttachments: 10)
        var decoded: SocketPacket?
        do throws(SocketDecodingError) {
            decoded = try again.receive(text: messages[0].data)
            for message in messages.dropFirst() { decoded = try again.receive(binary: message.data) }
        } catch {
            preconditionFailure("a packet encoded from a decoded one does not decode (\(error))")
        }
        var expected = packet
        expected.data = packet.data.map(finite)
        precondition(decoded == expected, "a packet decodes to another once encoded again: \(messages[0].text)")
    }

    /// Base64 from polling payloads (`b...`) and stored binary values: what decodes encodes back to
    /// text that decodes to the same bytes.
    package static func base64(_ data: UnsafeRawBufferPointer) {
        guard let bytes = Base64.decode(data) else { return }
        precondition(Base64.decode(Array(Base64.encode(bytes).utf8)) == bytes, "base64 does not survive a round trip")
    }

    /// A CONNECT auth's recovery record as stored (connection state recovery).
    package static func recovery(_ data: UnsafeRawBufferPointer) {
        guard let snapshot = SessionSnapshot(jsonText: String(decoding: data, as: UTF8.self)) else { return }
        precondition(SessionSnapshot(jsonText: snapshot.jsonText) == snapshot, "a stored session does not read back the same")
    }
}
