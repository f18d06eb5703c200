import NIOCore
import NIOHTTP1

/// Sits in front of NIO's typed upgrade handler for a connection's first request, which that handler
/// loses when the request asks for an upgrade that does not happen: a protocol nobody offers
/// (`Upgrade: h2c`, which `curl --http2` sends to every http:// URL) or a WebSocket handshake that
/// NIO's upgrader rejects before asking the server (no `Sec-WebSocket-Key`, a version other than
/// 13). The handler then passes the HTTP pipeline a request without its head, and the client got an
/// empty reply (502 behind a proxy). Here such a request loses its `Upgrade` header, so that it takes
/// the handler's not-upgrading path with its head: another protocol is ignored (RFC 9110 7.8 allows
/// it) and the request served as HTTP/1.1, then the connection closed; a broken WebSocket handshake
/// is refused with 400, as RFC 6455 4.2.1 asks.
///
/// It also answers a first request NIO's decoder cannot read (a head over its limits, a malformed
/// request line): the typed upgrade handler neither answers nor closes then, and the client waited
/// forever on a connection the server kept. Such a request gets 431 (head too large) or 400, and the
/// connection is closed.
final class UpgradeRequestFilter: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// What to do with a first request, from its headers.
    enum Verdict: Equatable {
        /// No upgrade asked for, or a WebSocket handshake NIO's upgrader accepts: as it is.
        case pass
        /// An upgrade to another protocol: served as HTTP/1.1.
        case ignoreUpgrade
        /// A WebSocket handshake NIO's upgrader would reject: 400.
        case refuseWebSocket
    }

    static func verdict(_ headers: HTTPHeaders) -> Verdict {
        let protocols = headers[canonicalForm: "upgrade"]
        guard !protocols.isEmpty else { return .pass }
        guard protocols.contains(where: { $0.lowercased() == "websocket" }) else { return .ignoreUpgrade }
        let keys = headers[canonicalForm: "sec-websocket-key"]
        let versions = headers[canonicalForm: "sec-websocket-version"]
        return keys.count == 1 && versions.count == 1 && versions[0] == "13" ? .pass : .refuseWebSocket
    }

    /// Called when this filter refuses a WebSocket handshake (the not-upgrading path then answers 400).
    private let refusedWebSocket: () -> Void
    private var seenHead = false
    /// The response to an ignored upgrade says `Connection: close` (Hummingbird closes after it
    /// without saying so).
    private var closeAfterResponse = false

    init(refusedWebSocket: @escaping () -> Void) {
        self.refusedWebSocket = refusedWebSocket
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !seenHead, case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        seenHead = true
        let verdict = Self.verdict(head.headers)
        if verdict != .pass {
            // NIO's HTTP decoder (llhttp) takes the rest of the connection's bytes as the new
            // protocol's after such a request: the connection closes after the response.
            head.headers.remove(name: "upgrade")
            head.headers.replaceOrAdd(name: "connection", value: "close")
            if verdict == .refuseWebSocket { refusedWebSocket() }
        }
        closeAfterResponse = verdict == .ignoreUpgrade
        context.fireChannelRead(wrapInboundOut(.head(head)))
        if !closeAfterResponse { context.pipeline.syncOperations.removeHandler(self, promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !seenHead, let error = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        seenHead = true
        closeAfterResponse = false
        let status: HTTPResponseStatus = error == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
        let head = HTTPResponseHead(version: .http1_1, status: status, headers: ["Connection": "close", "Content-Length": "0"])
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard closeAfterResponse, case .head(var head) = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        closeAfterResponse = false
        head.headers.replaceOrAdd(name: "connection", value: "close")
        context.write(wrapOutboundOut(.head(head)), promise: promise)
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}
