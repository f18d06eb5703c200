import NIOCore

/// One RESP2 reply from Redis. Bulk strings stay bytes (binary safe); use the accessors to read them.
public enum RESPValue: Sendable, Hashable {
    case simpleString(String)
    /// An error reply. `RedisClient.send` turns it into `RedisError.server`; pipelines return it in place.
    case error(String)
    case integer(Int)
    case bulkString(ByteBuffer)
    case null
    case array([RESPValue])
}

extension RESPValue {
    /// The value as text: simple and bulk strings (invalid UTF-8 repaired), integers in decimal.
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let buffer): String(buffer: buffer)
        case .integer(let value): String(value)
        case .error, .null, .array: nil
        }
    }

    /// The exact bytes of a bulk or simple string.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let buffer): Array(buffer.readableBytesView)
        case .simpleString(let text): Array(text.utf8)
        default: nil
        }
    }

    public var buffer: ByteBuffer? {
        if case .bulkString(let buffer) = self { return buffer }
        return nil
    }

    /// Integers, and strings that hold a decimal integer.
    public var int: Int? {
        switch self {
        case .integer(let value): value
        case .simpleString, .bulkString: string.flatMap { Int($0) }
        default: nil
        }
    }

    public var array: [RESPValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension RESPValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .simpleString(let text): "+\(text)"
        case .error(let message): "-\(message)"
        case .integer(let value): ":\(value)"
        case .bulkString(let buffer): "$\"\(String(buffer: buffer))\""
        case .null: "(nil)"
        case .array(let values): "[" + values.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

/// One argument of a command: bytes, written from text, integers or raw bytes.
public struct RESPArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    public var bytes: [UInt8]

    public init(_ text: String) { bytes = Array(text.utf8) }
    public init(_ text: Substring) { bytes = Array(text.utf8) }
    public init(_ value: Int) { bytes = Array(String(value).utf8) }
    public init(_ value: Double) { bytes = Array(Self.format(value).utf8) }
    public init(_ buffer: ByteBuffer) { bytes = Array(buffer.readableBytesView) }
    public init(bytes: some Sequence<UInt8>) { self.bytes = Array(bytes) }
    public init(stringLiteral value: String) { self.init(value) }
    public init(integerLiteral value: Int) { self.init(value) }

    /// Redis reads scores as C doubles; infinities have names of their own.
    private static func format(_ value: Double) -> String {
        if value == .infinity { return "+inf" }
        if value == -.infinity { return "-inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int(value)) }
        return String(value)
    }
}
