import NIOCore

/// Engine.IO v4 packet types: one ASCII digit on the wire.
public enum EnginePacketType: UInt8, Sendable, Hashable, CaseIterable {
    case open = 0
    case close = 1
    case ping = 2
    case pong = 3
    case message = 4
    case upgrade = 5
    case noop = 6

    var digit: UInt8 { UInt8(ascii: "0") + rawValue }
}

/// One Engine.IO packet. `wire` is what a WebSocket frame carries: for a text packet the type digit
/// followed by the UTF-8 data, for a binary message the raw bytes. Keeping the encoded form lets a
/// broadcast encode once and hand the same buffer to every recipient.
public struct EnginePacket: Sendable, Hashable {
    public let type: EnginePacketType
    public let isBinary: Bool
    public let wire: ByteBuffer

    /// A text packet: `type` followed by `text`.
    public init(_ type: EnginePacketType, _ text: String = "") {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(1 + text.utf8.count)
        buffer.writeInteger(type.digit)
        buffer.writeString(text)
        self.type = type
        self.isBinary = false
        self.wire = buffer
    }

    /// A text packet whose data is in `bytes`.
    init(_ type: EnginePacketType, bytes: some Collection<UInt8>) {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(1 + bytes.count)
        buffer.writeInteger(type.digit)
        buffer.writeBytes(bytes)
        self.type = type
        self.isBinary = false
        self.wire = buffer
    }

    /// A binary message.
    public static func binary(_ bytes: ByteBuffer) -> EnginePacket {
        EnginePacket(type: .message, isBinary: true, wire: bytes)
    }

    init(type: EnginePacketType, isBinary: Bool, wire: ByteBuffer) {
        self.type = type
        self.isBinary = isBinary
        self.wire = wire
    }

    /// The data after the type digit (text packets) or the bytes (binary messages).
    public var data: ByteBuffer {
        if isBinary { return wire }
        return wire.getSlice(at: wire.readerIndex + 1, length: wire.readableBytes - 1) ?? ByteBuffer()
    }

    /// The data as text (binary data is decoded leniently).
    public var text: String { String(buffer: data) }

    /// Bytes this packet takes in a long-polling payload (without the separator).
    var pollingSize: Int { isBinary ? 1 + (wire.readableBytes + 2) / 3 * 4 : wire.readableBytes }
}

/// Why an Engine.IO packet or payload was refused.
public enum EngineDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    case emptyPacket
    case unknownType(UInt8)
    case invalidBase64

    public var description: String {
        switch self {
        case .emptyPacket: return "empty Engine.IO packet"
        case .unknownType(let byte):
            // Printable ASCII as itself, anything else in hex: a client's byte must not break a log line.
            let shown = (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "0x\(String(byte, radix: 16))"
            return "unknown Engine.IO packet type \(shown)"
        case .invalidBase64: return "invalid base64 in a binary packet"
        }
    }
}

/// Engine.IO v4 encoding: packets on a WebSocket (one per frame) and long-polling payloads (packets
/// joined by the record separator 0x1E, binary as `b` + base64). Pure functions.
public enum EngineCodec {
    public static let recordSeparator: UInt8 = 0x1E

    /// A text WebSocket frame's data: `<digit><data>`.
    public static func decodeText(_ frame: ByteBuffer) throws(EngineDecodingError) -> EnginePacket {
        guard let first = frame.getInteger(at: frame.readerIndex, as: UInt8.self) else { throw .emptyPacket }
        guard first >= UInt8(ascii: "0"), let type = EnginePacketType(rawValue: first &- UInt8(ascii: "0")) else {
            throw .unknownType(first)
        }
        return EnginePacket(type: type, isBinary: false, wire: frame)
    }

    /// A long-polling payload (a POST body).
    public static func decodePayload(_ body: ByteBuffer) throws(EngineDecodingError) -> [EnginePacket] {
        var packets: [EnginePacket] = []
        let view = body.readableBytesView
        var start = view.startIndex
        while true {
            let end = view[start...].firstIndex(of: recordSeparator) ?? view.endIndex
            let segment = body.getSlice(at: body.readerIndex + (start - view.startIndex), length: end - start) ?? ByteBuffer()
            packets.append(try decodeSegment(segment))
            if end == view.endIndex { break }
            start = view.index(after: end)
        }
        return packets
    }

    static func decodeSegment(_ segment: ByteBuffer) throws(EngineDecodingError) -> EnginePacket {
        guard let first = segment.getInteger(at: segment.readerIndex, as: UInt8.self) else { throw .emptyPacket }
        if first == UInt8(ascii: "b") {
            let encoded = segment.readableBytesView.dropFirst()
            guard let bytes = Base64.decode(encoded) else { throw .invalidBase64 }
            return .binary(ByteBuffer(bytes: bytes))
        }
        return try decodeText(segment)
    }

    /// A long-polling payload (a GET response body).
    public static func encodePayload(_ packets: [EnginePacket]) -> ByteBuffer {
        var size = 0
        for packet in packets { size += packet.pollingSize + 1 }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(size)
        for (index, packet) in packets.enumerated() {
            if index > 0 { buffer.writeInteger(recordSeparator) }
            if packet.isBinary {
                var bytes: [UInt8] = [UInt8(ascii: "b")]
                Base64.encode(packet.wire.readableBytesView, into: &bytes)
                buffer.writeBytes(bytes)
            } else {
                buffer.writeImmutableBuffer(packet.wire)
            }
        }
        return buffer
    }
}
