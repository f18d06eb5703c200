import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves the admin API on loopback: collects each request (body up to 1 MiB), asks `AdminAPI` what
/// to answer and writes it; `GET /events` turns the connection into a Server-Sent Events stream.
final class AdminHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let api: AdminAPI
    private let registry: RouteRegistry
    private let metrics: ProxyMetrics
    private let feed: DecisionFeed
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var tooLarge = false
    private var subscription: Int?

    init(api: AdminAPI, registry: RouteRegistry, metrics: ProxyMetrics, feed: DecisionFeed) {
        self.api = api
        self.registry = registry
        self.metrics = metrics
        self.feed = feed
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.body = nil
            self.tooLarge = false
            let announced = head.headers.first(name: "content-length").flatMap { Int($0) } ?? 0
            if head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                if announced > AdminAPI.maxBodyBytes {
                    // Answered before the body is sent (curl would wait a second for a 100 first); the
                    // connection closes after it, with the body unread.
                    self.head = nil
                    var closing = head
                    closing.headers.replaceOrAdd(name: "connection", value: "close")
                    respond(outcome(for: head, bodyTooLarge: true), head: closing, context: context)
                    return
                }
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
        case .body(var buffer):
            guard !tooLarge, head != nil else { return }
            if (body?.readableBytes ?? 0) + buffer.readableBytes > AdminAPI.maxBodyBytes {
                tooLarge = true
                body = nil
                return
            }
            if body == nil {
                body = buffer
            } else {
                body!.writeBuffer(&buffer)
            }
        case .end:
            guard let head else { return }
            self.head = nil
            let outcome = outcome(for: head, bodyTooLarge: tooLarge)
            body = nil
            respond(outcome, head: head, context: context)
        }
    }

    private func outcome(for head: HTTPRequestHead, bodyTooLarge: Bool) -> AdminAPI.Outcome {
        api.route(
            method: head.method,
            uri: head.uri,
            authorization: head.headers.first(name: "authorization"),
            body: bodyTooLarge ? nil : body,
            bodyTooLarge: bodyTooLarge,
            routes: { registry.snapshot() }
        )
    }

    private func respond(_ outcome: AdminAPI.Outcome, head: HTTPRequestHead, context: ChannelHandlerContext) {
        switch outcome {
        case .json(let status, let data):
            var buffer = context.channel.allocator.buffer(capacity: data.count + 1)
            buffer.writeBytes(data)
            buffer.writeStaticString("\n")
            write(status: status, contentType: "application/json", body: buffer, head: head, context: context)
        case .noContent:
            write(status: .noContent, contentType: nil, body: nil, head: head, context: context)
        case .metrics:
            let bytes = metrics.scrape(table: registry.snapshot(), feed: feed)
            var buffer = context.channel.allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            write(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: buffer, head: head, context: context)
        case .events:
            startEvents(head: head, context: context)
        case .register(let registration), .unregister(let registration):
            let isRegister: Bool
            if case .register = outcome { isRegister = true } else { isRegister = false }
            let registry = self.registry
            // Registering may resolve a host name: never on an event loop.
            NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) {
                if isRegister {
                    registry.register(registration)
                } else {
                    registry.unregister(registration)
                }
            }.assumeIsolated().whenComplete { result in
                switch result {
                case .success:
                    self.write(status: .noContent, contentType: nil, body: nil, head: head, context: context)
                case .failure(let error):
                    self.respond(AdminAPI.error(.internalServerError, "could not apply the registration: \(error)"), head: head, context: context)
                }
            }
        }
    }

    private func write(status: HTTPResponseStatus, contentType: String?, body: ByteBuffer?, head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        if let contentType { headers.add(name: "Content-Type", value: contentType) }
        headers.add(name: "Content-Length", value: String(body?.readableBytes ?? 0))
        if status == .unauthorized { headers.add(name: "WWW-Authenticate", value: "Bearer") }
        if status == .methodNotAllowed, let allowed = AdminAPI.allowedMethods(path: String(head.uri.prefix { $0 != "?" })) {
            headers.add(name: "Allow", value: allowed)
        }
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if let body, head.method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    private func startEvents(head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/event-stream")
        headers.add(name: "Cache-Control", value: "no-cache")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
        // Subscribed before the greeting: a client that read the greeting gets every later decision.
        subscription = feed.subscribe(channel: context.channel)
        var hello = context.channel.allocator.buffer(capacity: 32)
        hello.writeStaticString(": sticky-proxy routing decisions\n\n")
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(hello))), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let subscription { feed.remove(subscription) }
        subscription = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
