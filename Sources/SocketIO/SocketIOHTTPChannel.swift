import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

extension HTTPServerBuilder {
    /// HTTP/1.1 with the Socket.IO server's WebSocket upgrade: the app's routes (with `io.mount(on:)`
    /// for long-polling) as with `.http1()`, and Engine.IO WebSockets served on the event loop by a
    /// channel handler (no task, async channel or actor per connection: an idle session costs a few
    /// KB). Upgrade requests for other paths get 400.
    ///
    /// ```swift
    /// let app = Application(router: router, server: .socketIO(io), configuration: ...)
    /// ```
    public static func socketIO(_ io: SocketIOServer, configuration: HTTP1Channel.Configuration = .init()) -> HTTPServerBuilder {
        .init { responder in
            SocketIOHTTPChannel(responder: responder, server: io, configuration: configuration)
        }
    }
}

/// The HTTP server's child channel behind `HTTPServerBuilder.socketIO(_:)`: HTTP/1.1 as Hummingbird's
/// `HTTP1Channel`, plus the WebSocket upgrade of the Socket.IO path to an `EngineWebSocketHandler`.
public struct SocketIOHTTPChannel: ServerChildChannel, HTTPChannelHandler {
    public enum UpgradeResult: Sendable {
        /// Upgraded: the channel handler serves the WebSocket; nothing for a task to do.
        case webSocket
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        case failedUpgrade(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
    }

    public struct Value: ServerChildChannelValue {
        let upgradeResult: EventLoopFuture<UpgradeResult>
        public let channel: any Channel
    }

    public let responder: HTTPChannelHandler.Responder
    let server: SocketIOServer
    let configuration: HTTP1Channel.Configuration

    init(responder: @escaping HTTPChannelHandler.Responder, server: SocketIOServer, configuration: HTTP1Channel.Configuration) {
        self.responder = Self.upgradeAwareResponder(responder)
        self.server = server
        self.configuration = configuration
    }

    /// Receive buffers start small and adapt: each connection keeps its receive buffer for as long as
    /// it lives, and an idle Engine.IO session only ever reads a handshake and pongs.
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536)

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let server = self.server
        let configuration = self.configuration
        return channel.eventLoop.makeCompletedFuture {
            try channel.syncOptions?.setOption(ChannelOptions.recvAllocator, value: Self.receiveAllocator)
            let upgradeAttempted = NIOLoopBoundBox(false, eventLoop: channel.eventLoop)
            let admitted = NIOLoopBoundBox<WebSocketAdmission?>(nil, eventLoop: channel.eventLoop)
            let upgrader = NIOTypedWebSocketServerUpgrader<UpgradeResult>(
                maxFrameSize: server.configuration.maxPayload,
                shouldUpgrade: { channel, head in
                    upgradeAttempted.value = true
                    guard let request = try? HTTPRequest(head, secure: false, splitCookie: false),
                        let admission = server.admitWebSocket(request, channel: channel)
                    else { return channel.eventLoop.makeSucceededFuture(nil) }
                    admitted.value = admission
                    return channel.eventLoop.makeSucceededFuture(HTTPHeaders())
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard let admission = admitted.value else { throw NIOWebSocketUpgradeError.unsupportedWebSocketTarget }
                        admitted.value = nil
                        let socket = EngineWebSocket(server: server, admission: admission, channel: channel)
                        try channel.pipeline.syncOperations.addHandler(EngineWebSocketHandler(socket: socket))
                        return UpgradeResult.webSocket
                    }
                }
            )
            let upgradeConfiguration = NIOTypedHTTPServerUpgradeConfiguration<UpgradeResult>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(KeepAliveNormalizer())
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandlers(configuration.additionalChannelHandlers())
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: configuration.idleTimeout.map { .init($0) }, logger: logger))
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        return upgradeAttempted.value ? .failedUpgrade(asyncChannel) : .notUpgraded(asyncChannel)
                    }
                }
            )
            var pipeline = NIOUpgradableHTTPServerPipelineConfiguration<UpgradeResult>(upgradeConfiguration: upgradeConfiguration)
            pipeline.enablePipelining = false  // HTTP is pipelined by NIOAsyncChannel
            pipeline.enableErrorHandling = false  // Hummingbird answers errors
            pipeline.enableResponseHeaderValidation = false  // HTTPTypes validates
            pipeline.decoderConfiguration.maxHeaderFieldSize = configuration.httpDecoder.maxHeaderFieldSize
            pipeline.decoderConfiguration.maxHeaderListSize = configuration.httpDecoder.maxHeaderListSize
            pipeline.decoderConfiguration.maxHeaderFieldCount = configuration.httpDecoder.maxHeaderFieldCount
            let result = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: pipeline)
            let upgradeHandler = try channel.pipeline.syncOperations.handler(type: NIOTypedHTTPServerUpgradeHandler<UpgradeResult>.self)
            try channel.pipeline.syncOperations.addHandler(
                UpgradeRequestFilter(refusedWebSocket: { upgradeAttempted.value = true }), position: .before(upgradeHandler))
            return Value(upgradeResult: result, channel: channel)
        }
    }

    public func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.upgradeResult.get() {
            case .webSocket:
                return
            case .notUpgraded(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .failedUpgrade(let http):
                logger.debug("WebSocket upgrade refused")
                await Self.refuseUpgrade(http, logger: logger)
            }
        } catch let error as ChannelError where error == .inputClosed {
            logger.trace("Upgrade failed as input was closed")
        } catch {
            logger.debug("Upgrade failed: \(error)")
        }
    }

    /// 400 with no body (what Hummingbird answers to a refused upgrade).
    private static func refuseUpgrade(_ channel: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, logger: Logger) async {
        do {
            try await channel.executeThenClose { _, outbound in
                let head = HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"])
                try await outbound.write(contentsOf: [.head(head), .end(nil)])
            }
        } catch {
            logger.trace("Could not answer a refused upgrade: \(error)")
        }
    }

    /// NIO only upgrades a connection's first request; a later `Upgrade: websocket` request on a
    /// kept-alive connection gets a redirect to itself and the connection closed, so that the client
    /// retries on a new connection (Hummingbird's behaviour).
    static func upgradeAwareResponder(_ responder: @escaping HTTPChannelHandler.Responder) -> HTTPChannelHandler.Responder {
        struct RedirectThenClose: Error {}
        return { request, writer, channel in
            guard request.headers[.upgrade]?.lowercased() == "websocket" else {
                try await responder(request, writer, channel)
                return
            }
            var target = request.uri.path
            if let query = request.uri.query { target += "?\(query)" }
            try await writer.writeResponse(HTTPResponse(status: .temporaryRedirect, headerFields: [.connection: "close", .location: target]))
            throw RedirectThenClose()
        }
    }
}
