/// Finds where an HTTP/1.1 message body ends in a byte stream: a Content-Length count, chunked
/// transfer coding (validated: hex sizes, CRLFs, trailer section), or the connection's end. A value
/// fed with bytes as they arrive; bytes past the end belong to the next message.
struct BodyFramer: Sendable, Equatable {
    enum Framing: Sendable, Equatable {
        case none
        case length(Int)
        case chunked
        case untilClose
    }

    enum Failure: Error, Equatable {
        case malformedChunk(String)
    }

    private enum ChunkState: Sendable, Equatable {
        case size(value: Int, digits: Int)
        case sizeTail
        case sizeLF(Int)
        case data(remaining: Int)
        case dataCR
        case dataLF
        case trailerLineStart
        case trailerLine
        case trailerLineLF
        case finalLF
    }

    private enum State: Sendable, Equatable {
        case length(remaining: Int)
        case chunked(ChunkState)
        case untilClose
        case complete
    }

    private var state: State
    /// Bytes of chunk-size lines and trailers, bounded.
    private var overheadLine = 0
    private static let maxLineBytes = 16 * 1024

    init(_ framing: Framing) {
        switch framing {
        case .none: state = .complete
        case .length(let length): state = length == 0 ? .complete : .length(remaining: length)
        case .chunked: state = .chunked(.size(value: 0, digits: 0))
        case .untilClose: state = .untilClose
        }
    }

    var isComplete: Bool { state == .complete }
    var endsAtClose: Bool { state == .untilClose }

    /// Consumes the body bytes at the start of `bytes`; returns how many belong to this message.
    /// `onData` gets the ranges that are payload (without chunk framing).
    mutating func consume(_ bytes: UnsafeRawBufferPointer, onData: (Range<Int>) -> Void = { _ in }) throws(Failure) -> Int {
        var index = 0
        let count = bytes.count
        while index < count {
            switch state {
            case .complete:
                return index
            case .untilClose:
                onData(index..<count)
                return count
            case .length(let remaining):
                let take = min(remaining, count - index)
                onData(index..<(index + take))
                index += take
                state = remaining == take ? .complete : .length(remaining: remaining - take)
            case .chunked(let chunk):
                switch chunk {
                case .data(let remaining):
                    let take = min(remaining, count - index)
                    onData(index..<(index + take))
                    index += take
                    state = .chunked(remaining == take ? .dataCR : .data(remaining: remaining - take))
                    continue
                default:
                    break
                }
                let byte = bytes[index]
                index += 1
                try step(chunk, byte)
            }
        }
        return index
    }

    private mutating func step(_ chunk: ChunkState, _ byte: UInt8) throws(Failure) {
        switch chunk {
        case .size(let value, let digits):
            if let digit = Self.hexValue(byte) {
                guard digits < 15 else { throw .malformedChunk("chunk size too large") }
                state = .chunked(.size(value: value << 4 | digit, digits: digits + 1))
            } else if digits > 0 && (byte == UInt8(ascii: ";") || byte == 0x20 || byte == 0x09) {
                overheadLine = 0
                state = .chunked(.sizeTail)
                pendingSize = value
            } else if digits > 0 && byte == 0x0D {
                state = .chunked(.sizeLF(value))
            } else {
                throw .malformedChunk("invalid chunk size")
            }
        case .sizeTail:
            overheadLine += 1
            guard overheadLine <= Self.maxLineBytes else { throw .malformedChunk("chunk extension too long") }
            if byte == 0x0D {
                state = .chunked(.sizeLF(pendingSize))
            } else if byte == 0x0A {
                throw .malformedChunk("bare LF in a chunk size line")
            }
        case .sizeLF(let size):
            guard byte == 0x0A else { throw .malformedChunk("chunk size line without CRLF") }
            overheadLine = 0
            state = .chunked(size == 0 ? .trailerLineStart : .data(remaining: size))
        case .data:
            break
        case .dataCR:
            guard byte == 0x0D else { throw .malformedChunk("chunk data not followed by CRLF") }
            state = .chunked(.dataLF)
        case .dataLF:
            guard byte == 0x0A else { throw .malformedChunk("chunk data not followed by CRLF") }
            state = .chunked(.size(value: 0, digits: 0))
        case .trailerLineStart:
            if byte == 0x0D {
                state = .chunked(.finalLF)
            } else {
                guard byte != 0x0A else { throw .malformedChunk("bare LF in the trailer section") }
                overheadLine += 1
                state = .chunked(.trailerLine)
            }
        case .trailerLine:
            overheadLine += 1
            guard overheadLine <= Self.maxLineBytes else { throw .malformedChunk("trailer section too long") }
            if byte == 0x0D {
                state = .chunked(.trailerLineLF)
            } else if byte == 0x0A {
                throw .malformedChunk("bare LF in the trailer section")
            }
        case .trailerLineLF:
            guard byte == 0x0A else { throw .malformedChunk("trailer line without CRLF") }
            state = .chunked(.trailerLineStart)
        case .finalLF:
            guard byte == 0x0A else { throw .malformedChunk("chunked body not ended by CRLF") }
            state = .complete
        }
    }

    private var pendingSize = 0

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }
}
