import NIOCore
import NIOWebSocket

/// Reassembles WebSocket messages from data frames (RFC 6455 fragmentation: a text or binary frame
/// without FIN, then continuation frames up to one with FIN), within the `maxPayload` limit. A pure
/// value: frames in, complete messages or a verdict out. Control frames (ping, pong, close) are not
/// its business.
struct WebSocketMessageAssembler {
    enum Outcome: Equatable {
        /// A complete message.
        case message(binary: Bool, data: ByteBuffer)
        /// A fragment was kept; the message continues in later frames.
        case incomplete
        /// The message grew past `maxPayload` (close 1009).
        case tooLarge
        /// A continuation without a message in progress, or a new message before the previous one
        /// ended (close 1002).
        case protocolError(String)
    }

    let maxPayload: Int
    private var pending: (binary: Bool, data: ByteBuffer)?

    init(maxPayload: Int) {
        self.maxPayload = maxPayload
    }

    /// Whether a fragmented message is in progress.
    var isAssembling: Bool { pending != nil }

    mutating func receive(opcode: WebSocketOpcode, fin: Bool, data: ByteBuffer) -> Outcome {
        switch opcode {
        case .text, .binary:
            guard pending == nil else {
                pending = nil
                return .protocolError("a new message began before the fragmented one ended")
            }
            guard data.readableBytes <= maxPayload else { return .tooLarge }
            if fin { return .message(binary: opcode == .binary, data: data) }
            pending = (opcode == .binary, data)
            return .incomplete
        case .continuation:
            guard var partial = pending else { return .protocolError("a continuation frame without a message in progress") }
            pending = nil
            guard partial.data.readableBytes + data.readableBytes <= maxPayload else { return .tooLarge }
            var data = data
            partial.data.writeBuffer(&data)
            if fin { return .message(binary: partial.binary, data: partial.data) }
            pending = partial
            return .incomplete
        default:
            return .protocolError("opcode \(opcode) is not a data frame")
        }
    }
}
