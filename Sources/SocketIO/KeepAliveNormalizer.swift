import NIOCore
import NIOHTTP1

/// Makes every request that does not keep its connection alive say `Connection: close`, the one form
/// Hummingbird's request loop looks for (an exact, case-sensitive compare, with the HTTP version
/// already gone). Without it an HTTP/1.0 request without `keep-alive` (ApacheBench, scripts) or an
/// HTTP/1.1 `Connection: Close` got its response on a connection the server then kept open, and a
/// client reading to the end of the connection waited until its own timeout. NIO's `isKeepAlive`
/// decides, as RFC 9112 9.3 says.
final class KeepAliveNormalizer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data), !head.isKeepAlive, head.headers["connection"] != ["close"] else {
            context.fireChannelRead(data)
            return
        }
        head.headers.replaceOrAdd(name: "connection", value: "close")
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}
