import CHiredis
import NIOCore

/// Parses RESP2 replies with hiredis's reader. One parser per connection; after a protocol error the
/// reader is broken for good, so the connection must be dropped.
final class RESPParser {
    private let reader: UnsafeMutablePointer<redisReader>
    private let maxPendingBytes: Int
    /// The bytes of the reply in progress: fed since the last complete reply was taken, with what was
    /// left of the read that one came in. hiredis parses an array's elements as they come and keeps
    /// them as reply objects, so the bytes it still holds do not grow with an array that never ends;
    /// these do.
    private var replyBytes = 0

    /// `maxPendingBytes`: the most bytes a reply that is not complete yet may have taken (a bulk
    /// string's bytes, which hiredis keeps until the last one has come, or the elements of an array
    /// so far, which it keeps as objects).
    init(maxPendingBytes: Int = RedisConfiguration.defaultMaxReplyBytes) throws(RESPCodecError) {
        guard let reader = redisReaderCreate() else { throw .outOfMemory }
        self.reader = reader
        self.maxPendingBytes = maxPendingBytes
    }

    deinit { redisReaderFree(reader) }

    func feed(_ buffer: ByteBuffer) throws(RESPCodecError) {
        let status = buffer.withUnsafeReadableBytes { bytes -> Int32 in
            guard let base = bytes.baseAddress, bytes.count > 0 else { return REDIS_OK }
            return redisReaderFeed(reader, base.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        if status != REDIS_OK { throw .protocolError(errorString) }
        replyBytes += buffer.readableBytes
    }

    /// The next complete reply, or nil when more bytes are needed.
    func next() throws(RESPCodecError) -> RESPValue? {
        var reply: UnsafeMutableRawPointer?
        if redisReaderGetReply(reader, &reply) != REDIS_OK { throw .protocolError(errorString) }
        guard let reply else {
            // A reply still coming. Complete replies are taken after every feed, so only one that
            // keeps growing gets past the limit.
            if replyBytes > maxPendingBytes {
                throw .protocolError(
                    "a reply of more than \(maxPendingBytes) bytes (\(replyBytes) so far and not complete): more than Redis itself "
                        + "sends, so this is not a Redis server, or a broken one")
            }
            return nil
        }
        replyBytes = reader.pointee.len - reader.pointee.pos
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

/// Encodes commands as RESP with hiredis (binary safe). `redisFormatSdsCommandArgv` rather than
/// `redisFormatCommandArgv`: the same bytes, but its length prefixes come from hiredis's own formatter
/// instead of `sprintf` (which cost about a tenth of the client's CPU per PUBLISH).
enum RESPEncoder {
    static func encode(_ arguments: [RESPArgument], into output: inout ByteBuffer) throws(RESPCodecError) {
        guard !arguments.isEmpty else { throw .emptyCommand }
        var total = 1  // a spare byte keeps every pointer inside the allocation, even for empty arguments
        for argument in arguments { total += argument.bytes.count }
        var target: sds?
        // Scratch space on the stack for small commands: the bytes side by side, their pointers and lengths.
        let length = withUnsafeTemporaryAllocation(of: CChar.self, capacity: total) { flat -> Int32 in
            withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: arguments.count) { argv in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: arguments.count) { lengths in
                    guard let base = flat.baseAddress else { return -1 }
                    var offset = 0
                    for (index, argument) in arguments.enumerated() {
                        argument.bytes.withUnsafeBytes { bytes in
                            if let source = bytes.baseAddress, bytes.count > 0 {
                                UnsafeMutableRawPointer(base + offset).copyMemory(from: source, byteCount: bytes.count)
                            }
                        }
                        argv[index] = UnsafePointer(base + offset)
                        lengths[index] = argument.bytes.count
                        offset += argument.bytes.count
                    }
                    return redisFormatSdsCommandArgv(&target, Int32(arguments.count), argv.baseAddress, lengths.baseAddress)
                }
            }
        }
        guard length >= 0, let target else { throw .outOfMemory }
        defer { redisFreeSdsCommand(target) }
        output.writeBytes(UnsafeRawBufferPointer(start: target, count: Int(length)))
    }
}

enum RESPCodecError: Error, Sendable, Equatable {
    case protocolError(String)
    case outOfMemory
    case emptyCommand
}
