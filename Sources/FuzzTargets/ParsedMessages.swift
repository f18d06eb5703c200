import NIOCore
import NIOEmbedded
import NIOHTTP1

/// What one of SwiftNIO's HTTP decoders read from the bytes sticky-proxy sent on: the heads, the body
/// bytes, and how many messages ended. The differentials compare it with what the proxy meant to send.
struct ParsedMessages<Head: Equatable> {
    var heads: [Head] = []
    var payload: [UInt8] = []
    var ends = 0

    /// Takes every part the channel's decoder has produced so far.
    mutating func read(_ channel: EmbeddedChannel) {
        while let part = try? channel.readInbound(as: HTTPPart<Head, ByteBuffer>.self) {
            switch part {
            case .head(let head): heads.append(head)
            case .body(let bytes): payload.append(contentsOf: bytes.readableBytesView)
            case .end: ends += 1
            }
        }
    }
}
