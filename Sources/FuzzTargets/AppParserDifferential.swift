import NIOCore
import NIOEmbedded
import NIOHTTP1
import StickyProxy

/// Request smuggling is a proxy and an app reading the same bytes as different requests. This target
/// sends what sticky-proxy forwards for a client's request to the parser the apps here use (SwiftNIO's
/// HTTPRequestDecoder, under Hummingbird): when that parser takes the request, it must see the same
/// method, target and body, and the body must end where the proxy thinks it ends. A request the app's
/// parser refuses is safe (the app answers 400 and closes), so that is not a finding.
enum AppParserDifferential {
    static func check(_ data: UnsafeRawBufferPointer) {
        guard let forwarded = StickyProxyFuzzing.forwardedRequest(data) else { return }
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        do {
            try channel.writeInbound(forwarded.bytes)
        } catch {
            return  // refused by the app's parser
        }
        var parsed = ParsedMessages<HTTPRequestHead>()
        parsed.read(channel)
        precondition(parsed.heads.count <= 1, "the app reads two requests where sticky-proxy forwarded one: \(String(buffer: forwarded.bytes))")
        guard let head = parsed.heads.first else { return }  // the head is not complete for the app either
        precondition(head.method.rawValue == forwarded.method, "the app reads method \(head.method.rawValue), the proxy \(forwarded.method)")
        precondition(head.uri == forwarded.target, "the app reads target \(head.uri), the proxy \(forwarded.target)")
        guard !forwarded.isUpgrade else { return }  // after an upgrade request the bytes are the tunnel's
        precondition(parsed.payload == forwarded.payload, "the app reads another body than the proxy forwarded: \(String(buffer: forwarded.bytes))")
        precondition(
            (parsed.ends == 1) == forwarded.complete, "the app and the proxy disagree on where the request ends: \(String(buffer: forwarded.bytes))")
    }
}
