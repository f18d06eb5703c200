import NIOCore

/// Socket.IO v5 packet types.
public enum SocketPacketType: UInt8, Sendable, Hashable, CaseIterable {
    case connect = 0
    case disconnect = 1
    case event = 2
    case ack = 3
    case connectError = 4
    case binaryEvent = 5
    case binaryAck = 6
}

/// One Socket.IO packet (binary attachments already put back in place as `.binary` values).
public struct SocketPacket: Sendable, Hashable {
    public var type: SocketPacketType
    public var namespace: String
    public var id: Int?
    public var data: JSONValue?

    public init(_ type: SocketPacketType, namespace: String = "/", id: Int? = nil, data: JSONValue? = nil) {
        self.type = type
        self.namespace = namespace
        self.id = id
        self.data = data
    }
}

/// Why a Socket.IO packet was refused. Any of these closes the connection that sent it.
public enum SocketDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    case emptyPacket
    case unknownType
    case illegalAttachments
    case tooManyAttachments(Int, limit: Int)
    case invalidAckID
    case invalidPayload(String)
    case unexpectedBinary
    case unexpectedText

    public var description: String {
        switch self {
        case .emptyPacket: return "empty Socket.IO packet"
        case .unknownType: return "unknown Socket.IO packet type"
        case .illegalAttachments: return "illegal binary attachments"
        case .tooManyAttachments(let count, let limit): return "\(count) binary attachments, more than the limit of \(limit)"
        case .invalidAckID: return "invalid ack id"
        case .invalidPayload(let reason): return "invalid payload: \(reason)"
        case .unexpectedBinary: return "a binary message without a packet announcing it"
        case .unexpectedText: return "a text packet while binary attachments were expected"
        }
    }
}

/// Event names the protocol reserves; an EVENT using one is invalid.
let reservedEventNames: Set<String> = ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"]

/// Socket.IO v5 encoding (`<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`), pure functions.
public enum SocketCodec {
    /// Engine.IO messages for one packet: the text packet (prefixed with the Engine.IO message digit)
    /// then one binary message per attachment. EVENT and ACK become BINARY_EVENT / BINARY_ACK when the
    /// data holds binary values.
    public static func encode(_ packet: SocketPacket) -> [EnginePacket] {
        var writer = JSONWriter(binary: .placeholders, capacity: 64)
        writer.bytes.append(EnginePacketType.message.digit)
        let headerIndex = writer.bytes.count
        var type = packet.type
        if let data = packet.data, data.containsBinary {
            if type == .event { type = .binaryEvent }
            if type == .ack { type = .binaryAck }
        }
        writer.bytes.append(UInt8(ascii: "0") + type.rawValue)
        if packet.namespace != "/" {
            writer.bytes.append(contentsOf: packet.namespace.utf8)
            writer.bytes.append(UInt8(ascii: ","))
        }
        if let id = packet.id { writer.bytes.append(contentsOf: String(id).utf8) }
        if let data = packet.data { writer.write(data) }
        if type == .binaryEvent || type == .binaryAck {
            let count = Array("\(writer.attachments.count)-".utf8)
            writer.bytes.insert(contentsOf: count, at: headerIndex + 1)
        }
        var result = [EnginePacket(type: .message, isBinary: false, wire: ByteBuffer(bytes: writer.bytes))]
        for attachment in writer.attachments { result.append(.binary(attachment)) }
        return result
    }

    /// Decodes the header and JSON of a text packet (the Engine.IO message data). Returns the packet
    /// with placeholders still in place and how many attachments follow.
    static func decodeText(
        _ data: ByteBuffer, maxAttachments: Int, maxDepth: Int = 32
    ) throws(SocketDecodingError) -> (SocketPacket, attachments: Int) {
        let bytes = Array(data.readableBytesView)
        guard let first = bytes.first else { throw .emptyPacket }
        guard first >= UInt8(ascii: "0"), let type = SocketPacketType(rawValue: first &- UInt8(ascii: "0")) else { throw .unknownType }
        var index = 1
        var attachments = 0
        if type == .binaryEvent || type == .binaryAck {
            let start = index
            while index < bytes.count, isDigit(bytes[index]) {
                index += 1
                guard index - start <= 6 else { throw .illegalAttachments }
            }
            guard index > start, index < bytes.count, bytes[index] == UInt8(ascii: "-") else { throw .illegalAttachments }
            attachments = Int(String(decoding: bytes[start..<index], as: UTF8.self)) ?? 0
            index += 1
            guard attachments <= maxAttachments else { throw .tooManyAttachments(attachments, limit: maxAttachments) }
        }
        var namespace = "/"
        if index < bytes.count, bytes[index] == UInt8(ascii: "/") {
            let start = index
            while index < bytes.count, bytes[index] != UInt8(ascii: ",") { index += 1 }
            namespace = String(decoding: bytes[start..<index], as: UTF8.self)
            if index < bytes.count { index += 1 }
        }
        var id: Int?
        if index < bytes.count, isDigit(bytes[index]) {
            let start = index
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            guard index - start <= 15, let value = Int(String(decoding: bytes[start..<index], as: UTF8.self)) else { throw .invalidAckID }
            id = value
        }
        var payload: JSONValue?
        if index < bytes.count {
            do {
                payload = try JSONValue(parsing: bytes[index...], maxDepth: maxDepth)
            } catch {
                throw .invalidPayload(error.description)
            }
        }
        let packet = SocketPacket(type, namespace: namespace, id: id, data: payload)
        try validate(packet)
        return (packet, attachments)
    }

    /// The payload rules of the reference parser (`isPayloadValid`).
    static func validate(_ packet: SocketPacket) throws(SocketDecodingError) {
        switch packet.type {
        case .connect:
            if let data = packet.data, data.objectValue == nil { throw .invalidPayload("CONNECT data must be an object") }
        case .disconnect:
            if packet.data != nil { throw .invalidPayload("DISCONNECT carries no data") }
        case .connectError:
            if let data = packet.data, data.objectValue == nil, data.stringValue == nil {
                throw .invalidPayload("CONNECT_ERROR data must be an object or a string")
            }
        case .event, .binaryEvent:
            guard case .array(let elements)? = packet.data, let name = elements.first?.stringValue else {
                throw .invalidPayload("an EVENT is a non-empty array starting with the event name")
            }
            if reservedEventNames.contains(name) { throw .invalidPayload("'\(name)' is a reserved event name") }
        case .ack, .binaryAck:
            if let data = packet.data, data.arrayValue == nil { throw .invalidPayload("ACK data must be an array") }
            if packet.id == nil { throw .invalidPayload("an ACK needs an id") }
        }
    }

    /// Replaces `{"_placeholder":true,"num":N}` objects by the attachments.
    static func reconstruct(_ value: JSONValue, attachments: [ByteBuffer]) throws(SocketDecodingError) -> JSONValue {
        switch value {
        case .array(let elements):
            var result: [JSONValue] = []
            result.reserveCapacity(elements.count)
            for element in elements { result.append(try reconstruct(element, attachments: attachments)) }
            return .array(result)
        case .object(let object):
            if object["_placeholder"] == .bool(true) {
                guard let num = object["num"]?.intValue, num >= 0, num < attachments.count else { throw .illegalAttachments }
                return .binary(attachments[num])
            }
            var result = JSONObject()
            for (key, member) in object { result[key] = try reconstruct(member, attachments: attachments) }
            return .object(result)
        default:
            return value
        }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
}

/// Turns the Engine.IO messages of one connection back into Socket.IO packets, collecting the binary
/// attachments that follow a BINARY_EVENT or BINARY_ACK. A value type: one per connection.
public struct SocketDecoder: Sendable {
    public let maxAttachments: Int
    public let maxDepth: Int
    private var pending: (packet: SocketPacket, expected: Int, buffers: [ByteBuffer])?

    public init(maxAttachments: Int, maxDepth: Int = 32) {
        self.maxAttachments = maxAttachments
        self.maxDepth = maxDepth
    }

    /// Whether attachments are still awaited.
    public var isReconstructing: Bool { pending != nil }

    /// A text message. Returns the packet, or nil when binary attachments must follow first.
    public mutating func receive(text data: ByteBuffer) throws(SocketDecodingError) -> SocketPacket? {
        guard pending == nil else { throw .unexpectedText }
        let (packet, attachments) = try SocketCodec.decodeText(data, maxAttachments: maxAttachments, maxDepth: maxDepth)
        if attachments == 0 {
            guard packet.type == .binaryEvent || packet.type == .binaryAck, let data = packet.data else { return packet }
            var complete = packet
            complete.data = try SocketCodec.reconstruct(data, attachments: [])
            return complete
        }
        pending = (packet, attachments, [])
        pending?.buffers.reserveCapacity(attachments)
        return nil
    }

    /// A binary message: the next attachment of the packet being reconstructed.
    public mutating func receive(binary data: ByteBuffer) throws(SocketDecodingError) -> SocketPacket? {
        guard var current = pending else { throw .unexpectedBinary }
        current.buffers.append(data)
        if current.buffers.count < current.expected {
            pending = current
            return nil
        }
        pending = nil
        var packet = current.packet
        if let data = packet.data { packet.data = try SocketCodec.reconstruct(data, attachments: current.buffers) }
        return packet
    }
}
