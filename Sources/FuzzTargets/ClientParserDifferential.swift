import NIOCore
import NIOEmbedded
import NIOHTTP1
import StickyProxy

/// Response splitting and desync are a proxy and a client reading the same bytes as different
/// responses. This target sends what sticky-proxy relays for an app's response to SwiftNIO's
/// HTTPResponseDecoder (llhttp, the parser Node.js uses): when it takes the response, it must read one
/// response with the same status and body, ending where the proxy thinks it ends. A response the
/// client's parser refuses is not a finding here (the app sent something no client would take).
enum ClientParserDifferential {
    static func check(_ data: UnsafeRawBufferPointer) {
        guard let relayed = StickyProxyFuzzing.forwardedResponse(data) else { return }
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        do {
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
            try channel.writeOutbound(HTTPClientRequestPart.end(nil))
            try channel.writeInbound(relayed.bytes)
        } catch {
            return  // refused by the client's parser
        }
        var parsed = ParsedMessages<HTTPResponseHead>()
        parsed.read(channel)
        guard !parsed.heads.isEmpty else { return }  // the head is not complete for the client either
        if relayed.closeDelimited && parsed.ends == 0 {
            // The proxy closes the connection after a close-delimited body: that ends it for the client.
            channel.pipeline.fireChannelInactive()
            parsed.read(channel)
        }
        let splitting = "a client reads two responses where sticky-proxy relayed one: \(String(buffer: relayed.bytes))"
        precondition(parsed.heads.count == 1 && parsed.ends <= 1, splitting)
        let head = parsed.heads[0]
        precondition(Int(head.status.code) == relayed.status, "a client reads status \(head.status.code), the proxy relayed \(relayed.status)")
        precondition(parsed.payload == relayed.payload, "a client reads another body than the proxy relayed: \(String(buffer: relayed.bytes))")
        let proxyEnded = relayed.complete || relayed.closeDelimited
        precondition((parsed.ends == 1) == proxyEnded, "a client and the proxy disagree on where the response ends: \(String(buffer: relayed.bytes))")
    }
}
