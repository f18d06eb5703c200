import CHiredis
import NIOCore

/// Parses RESP2 replies with hiredis's reader. One parser per connection; after a protocol error the
/// reader is broken for good, so the connection must be dropped.
final class RESPParser {
    private let reader: UnsafeMutablePointer<redisReader>

    init() throws(RESPCodecError) {
        guard let reader = redisReaderCreate() else { throw .outOfMemory }
        self.reader = reader
    }

    deinit { redisReaderFree(reader) }

    func feed(_ buffer: ByteBuffer) throws(RESPCodecError) {
        let status = buffer.withUnsafeReadableBytes { bytes -> Int32 in
            guard let base = bytes.baseAddress, bytes.count > 0 else { return REDIS_OK }
            return redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        if status != REDIS_OK { throw .protocolError(errorString) }
    }

    /// The next complete reply, or nil when more bytes are needed.
    func next() throws(RESPCodecError) -> RESPValue? {
        var reply: UnsafeMutableRawPointer?
        if redisReaderGetReply(reader, &reply) != REDIS_OK { throw .protocolError(errorString) }
        guard let reply else { return nil }
        defer { freeReplyObject(reply) }
        return Self.convert(reply.assumingMemoryBound(to: redisReply.self))
    }

    private var errorString: String {
        withUnsafeBytes(of: reader.pointee.errstr) { raw in
            let bytes = raw.prefix { $0 != 0 }
            let text = String(decoding: bytes, as: UTF8.self)
            return text.isEmpty ? "unreadable reply" : text
        }
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let value = reply.pointee
        switch value.type {
        case REDIS_REPLY_STRING:
            return .bulkString(buffer(value.str, value.len))
        case REDIS_REPLY_STATUS:
            return .simpleString(String(buffer: buffer(value.str, value.len)))
        case REDIS_REPLY_ERROR:
            return .error(String(buffer: buffer(value.str, value.len)))
        case REDIS_REPLY_INTEGER:
            return .integer(Int(value.integer))
        case REDIS_REPLY_ARRAY:
            var elements: [RESPValue] = []
            elements.reserveCapacity(value.elements)
            for index in 0..<value.elements {
                if let element = value.element[index] { elements.append(convert(element)) } else { elements.append(.null) }
            }
            return .array(elements)
        default:
            return .null
        }
    }

    private static func buffer(_ pointer: UnsafeMutablePointer<CChar>?, _ length: Int) -> ByteBuffer {
        guard let pointer, length > 0 else { return ByteBuffer() }
        return ByteBuffer(bytes: UnsafeRawBufferPointer(start: pointer, count: length))
    }
}

/// Encodes commands as RESP with hiredis's `redisFormatCommandArgv` (binary safe).
enum RESPEncoder {
    static func encode(_ arguments: [RESPArgument], into output: inout ByteBuffer) throws(RESPCodecError) {
        guard !arguments.isEmpty else { throw .emptyCommand }
        var flat: [UInt8] = []
        flat.reserveCapacity(arguments.reduce(0) { $0 + $1.bytes.count } + 1)
        var offsets: [Int] = []
        var lengths: [Int] = []
        offsets.reserveCapacity(arguments.count)
        lengths.reserveCapacity(arguments.count)
        for argument in arguments {
            offsets.append(flat.count)
            lengths.append(argument.bytes.count)
            flat.append(contentsOf: argument.bytes)
        }
        flat.append(0)  // never read; keeps every pointer inside the allocation, even for empty arguments
        var target: UnsafeMutablePointer<CChar>?
        let length = flat.withUnsafeBufferPointer { base -> Int32 in
            let start = UnsafeRawPointer(base.baseAddress!).assumingMemoryBound(to: CChar.self)
            var argv: [UnsafePointer<CChar>?] = offsets.map { start + $0 }
            return argv.withUnsafeMutableBufferPointer { argvPointer in
                lengths.withUnsafeBufferPointer { lengthPointer in
                    redisFormatCommandArgv(&target, Int32(arguments.count), argvPointer.baseAddress, lengthPointer.baseAddress)
                }
            }
        }
        guard length >= 0, let target else { throw .outOfMemory }
        defer { redisFreeCommand(target) }
        output.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(length)))
    }
}

enum RESPCodecError: Error, Sendable, Equatable {
    case protocolError(String)
    case outOfMemory
    case emptyCommand
}
