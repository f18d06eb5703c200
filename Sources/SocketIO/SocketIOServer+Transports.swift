import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket

extension SocketIOServer {
    // MARK: Mounting

    /// Adds the long-polling routes (`GET`/`POST` on `configuration.path`, plus `OPTIONS` for
    /// allowed cross-origin browsers) to `router`.
    public func mount<Context: RequestContext>(on router: Router<Context>) {
        let path = RouterPath(configuration.path)
        for method: HTTPRequest.Method in [.get, .post, .options, .put, .delete, .patch] {
            router.on(path, method: method) { request, context -> Response in
                let remote = (context as? any RemoteAddressRequestContext)?.remoteAddress.map { "\($0)" }
                return await self.respond(to: request, remoteAddress: remote)
            }
        }
    }

    /// The WebSocket settings for Hummingbird's `.http1WebSocketUpgrade` (see
    /// `webSocketUpgrade(for:channel:logger:)`): frames up to `maxPayload`, no WebSocket-level pings
    /// (Engine.IO has its own heartbeat).
    public var webSocketConfiguration: WebSocketServerConfiguration {
        WebSocketServerConfiguration(maxFrameSize: configuration.maxPayload, autoPing: .disabled)
    }

    /// The HTTP server channel configuration for `.http1WebSocketUpgrade(configuration:shouldUpgrade:)`.
    public var upgradeChannelConfiguration: HTTP1WebSocketUpgradeChannel.Configuration {
        HTTP1WebSocketUpgradeChannel.Configuration(http1: .init(), ws: webSocketConfiguration)
    }

    /// Whether an upgrade request is for this server (its path); route others to your own handlers.
    public func handlesUpgrade(_ request: HTTPRequest) -> Bool {
        guard let target = request.path else { return false }
        return Self.pathMatches(Self.split(target).path, configuration.path)
    }

    /// Decides a WebSocket upgrade request for an app that serves WebSocket routes of its own through
    /// Hummingbird's `.http1WebSocketUpgrade` (check `handlesUpgrade(_:)` first). Each such WebSocket
    /// costs a task and Hummingbird's per-connection WebSocket machinery; without other WebSocket
    /// routes, serve the app with `.socketIO(io)` instead, which handles Engine.IO WebSockets on the
    /// event loop. Requests for other paths, bad queries, refused origins, unknown or already
    /// upgraded sids, and handshakes while draining are not upgraded (the client gets 400).
    public func webSocketUpgrade(
        for request: HTTPRequest, channel: any Channel, logger: Logger
    ) -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        guard let admission = admitWebSocket(request, channel: channel) else { return .dontUpgrade }
        return .upgrade([:]) { inbound, _, _ in
            let socket = EngineWebSocket(server: self, admission: admission, channel: channel)
            guard socket.open() else { return }
            defer { socket.ended() }
            do {
                for try await frame in inbound {
                    let opcode: WebSocketOpcode
                    switch frame.opcode {
                    case .text: opcode = .text
                    case .binary: opcode = .binary
                    case .continuation: opcode = .continuation
                    }
                    switch socket.receive(opcode: opcode, fin: frame.fin, data: frame.data) {
                    case .proceed: continue
                    case .pause: await socket.connection?.waitForHandlers()
                    case .stop: return
                    }
                }
            } catch {
                self.logger.debug("WebSocket ended: \(error)")
            }
        }
    }

    /// Decides a WebSocket upgrade request (nil: refuse it with 400). On the channel's event loop.
    func admitWebSocket(_ request: HTTPRequest, channel: any Channel) -> WebSocketAdmission? {
        guard let target = request.path else { return nil }
        let (path, queryString) = Self.split(target)
        guard Self.pathMatches(path, configuration.path) else { return nil }
        let query = Self.parseQuery(queryString)
        guard query["transport"] == "websocket", configuration.transports.contains(.websocket) else {
            logger.debug("Refused a WebSocket upgrade: transport \(query["transport"].map { LogText.quoted($0) } ?? "missing")")
            return nil
        }
        guard case .allowed = checkOrigin(request.headerFields, authority: request.authority) else {
            logger.notice("Refused a WebSocket upgrade from origin \(request.headerFields[.origin].map { LogText.quoted($0) } ?? "?"): not allowed")
            return nil
        }
        let sid = query["sid"]
        if let sid {
            guard let connection = connection(sid) else {
                noteUnknownSession(sid, transport: "WebSocket upgrade")
                return nil
            }
            guard configuration.allowUpgrades, connection.engine.withLock({ $0.session.canProbe }) else {
                logger.debug("Refused a WebSocket upgrade for session \(LogText.quoted(sid)): upgrades off, closed, or already upgraded")
                return nil
            }
        } else {
            guard query["EIO"] == "4" else { return nil }
            guard !isDraining, sessionCount < configuration.limits.maxSessions else {
                logger.notice("Refused a WebSocket handshake: \(isDraining ? "shutting down" : "too many sessions")")
                return nil
            }
        }
        let high = max(configuration.limits.maxOutboundBufferBytes, 1024)
        channel.setOption(ChannelOptions.writeBufferWaterMark, value: ChannelOptions.Types.WriteBufferWaterMark(low: high / 2, high: high))
            .whenFailure { _ in }
        let handshake = Handshake(
            headers: Handshake.keptHeaders(request.headerFields), query: query, remoteAddress: channel.remoteAddress.map { "\($0)" },
            url: target, transport: .websocket)
        return WebSocketAdmission(sid: sid, handshake: handshake)
    }

    // MARK: Long-polling

    func respond(to request: Request, remoteAddress: String?) async -> Response {
        let query = Self.parseQuery(request.uri.query)
        guard let transport = query["transport"].flatMap(SocketIOConfiguration.Transport.init(rawValue:)),
            configuration.transports.contains(transport)
        else { return errorResponse(.transportUnknown, cors: nil) }
        let cors: String?
        switch checkOrigin(request.headers, authority: request.head.authority) {
        case .refused:
            logger.notice("Refused a request from origin \(request.headers[.origin].map { LogText.quoted($0) } ?? "?"): not allowed")
            return errorResponse(.forbidden, cors: nil)
        case .allowed(let origin):
            cors = origin
        }
        if request.method == .options {
            var headers = corsHeaders(cors)
            headers[.accessControlAllowMethods] = "GET, POST"
            headers[.accessControlAllowHeaders] = request.headers[.accessControlRequestHeaders] ?? "content-type"
            return Response(status: .noContent, headers: headers)
        }
        // A WebSocket handshake sent as a plain request (no upgrade).
        guard transport == .polling else { return errorResponse(.badRequest, cors: cors) }
        if let sid = query["sid"] {
            guard let connection = connection(sid) else {
                noteUnknownSession(sid, transport: "long-polling")
                return errorResponse(.unknownSessionID, cors: cors)
            }
            switch request.method {
            case .get:
                switch await connection.poll() {
                case .payload(let packets): return payloadResponse(EngineCodec.encodePayload(packets), cors: cors)
                case .error(let code): return errorResponse(code, cors: cors)
                }
            case .post:
                return await post(request, to: connection, cors: cors)
            default:
                return errorResponse(.badRequest, cors: cors)
            }
        }
        guard request.method == .get else { return errorResponse(.badHandshakeMethod, cors: cors) }
        guard query["EIO"] == "4" else { return errorResponse(.unsupportedProtocolVersion, cors: cors) }
        let handshake = Handshake(
            headers: Handshake.keptHeaders(request.headers), query: query, remoteAddress: remoteAddress, url: request.uri.description,
            transport: .polling)
        let connection = Connection(
            id: Self.generateID(), server: self, transport: .polling, webSocket: nil, handshake: handshake,
            eventLoop: eventLoopGroup.any(), now: .now())
        if case .refused(let reason) = register(connection) {
            logger.notice("Refused a long-polling handshake: \(reason)")
            var headers = corsHeaders(cors)
            headers[.contentType] = "application/json"
            return Response(
                status: .serviceUnavailable, headers: headers,
                body: .init(byteBuffer: ByteBuffer(string: #"{"code":3,"message":"\#(reason)"}"#)))
        }
        metrics.sessionsOpenedPolling.increment()
        return payloadResponse(EngineCodec.encodePayload([openPacket(sid: connection.id, transport: .polling)]), cors: cors)
    }

    private func post(_ request: Request, to connection: Connection, cors: String?) async -> Response {
        let limit = configuration.maxPayload
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            return tooLarge(cors: cors)
        }
        var body = ByteBuffer()
        do {
            for try await chunk in request.body {
                guard body.readableBytes + chunk.readableBytes <= limit else { return tooLarge(cors: cors) }
                var chunk = chunk
                body.writeBuffer(&chunk)
            }
        } catch {
            logger.debug("A long-polling POST body could not be read: \(error)")
            return errorResponse(.badRequest, cors: cors)
        }
        if let refusal = await connection.post(body) { return errorResponse(refusal, cors: cors) }
        var headers = corsHeaders(cors)
        headers[.contentType] = "text/plain; charset=UTF-8"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "ok")))
    }

    private func tooLarge(cors: String?) -> Response {
        logger.info("Refused a long-polling POST over maxPayload (\(configuration.maxPayload) bytes)")
        var headers = corsHeaders(cors)
        headers[.contentType] = "application/json"
        headers[.connection] = "close"
        return Response(
            status: .contentTooLarge, headers: headers,
            body: .init(byteBuffer: ByteBuffer(string: #"{"code":3,"message":"Payload too large"}"#)))
    }

    private func payloadResponse(_ body: ByteBuffer, cors: String?) -> Response {
        var headers = corsHeaders(cors)
        headers[.contentType] = "text/plain; charset=UTF-8"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
    }

    private func errorResponse(_ code: EngineErrorCode, cors: String?) -> Response {
        var headers = corsHeaders(cors)
        headers[.contentType] = "application/json"
        return Response(status: .init(code: code.httpStatus), headers: headers, body: .init(byteBuffer: ByteBuffer(string: code.body)))
    }

    private func corsHeaders(_ origin: String?) -> HTTPFields {
        var headers = HTTPFields()
        if let origin {
            headers[.accessControlAllowOrigin] = origin
            headers[.accessControlAllowCredentials] = "true"
            headers[.vary] = "Origin"
        }
        return headers
    }

    // MARK: Origin policy

    enum OriginVerdict: Equatable {
        /// Allowed; for a cross-origin browser request, the origin to echo in CORS headers.
        case allowed(String?)
        case refused
    }

    func checkOrigin(_ headers: HTTPFields, authority: String?) -> OriginVerdict {
        guard let origin = headers[.origin] else { return .allowed(nil) }
        if case .any = configuration.origins { return .allowed(origin) }
        let hosts = [authority, HTTPField.Name("X-Forwarded-Host").flatMap { headers[$0] }].compactMap { $0 }
        if hosts.contains(where: { Self.isSameOrigin(origin, host: $0) }) { return .allowed(nil) }
        if case .allowList(let allowed) = configuration.origins, allowed.contains(origin) { return .allowed(origin) }
        return .refused
    }

    /// `http://example.com:8080` against a Host header `example.com:8080` (default ports ignored).
    static func isSameOrigin(_ origin: String, host: String) -> Bool {
        guard let schemeEnd = origin.range(of: "://") else { return false }
        let scheme = origin[..<schemeEnd.lowerBound].lowercased()
        let authority = origin[schemeEnd.upperBound...].lowercased()
        let defaultPort = scheme == "https" || scheme == "wss" ? "443" : "80"
        func normalized(_ value: String) -> String {
            if value.hasSuffix(":" + defaultPort) { return String(value.dropLast(defaultPort.count + 1)) }
            return value
        }
        return normalized(String(authority)) == normalized(host.lowercased())
    }

    // MARK: URL helpers

    static func split(_ target: String) -> (path: String, query: String?) {
        guard let mark = target.firstIndex(of: "?") else { return (target, nil) }
        return (String(target[..<mark]), String(target[target.index(after: mark)...]))
    }

    static func pathMatches(_ path: String, _ mount: String) -> Bool {
        func trimmed(_ value: String) -> Substring {
            var view = Substring(value)
            while view.hasSuffix("/") { view = view.dropLast() }
            return view
        }
        return trimmed(path) == trimmed(mount)
    }

    static func parseQuery(_ query: String?) -> [String: String] {
        guard let query, !query.isEmpty else { return [:] }
        var result: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = percentDecode(parts[0])
            let value = parts.count > 1 ? percentDecode(parts[1]) : ""
            if result[name] == nil { result[name] = value }
        }
        return result
    }

    static func percentDecode(_ text: Substring) -> String {
        guard text.contains("%") || text.contains("+") else { return String(text) }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "+") {
                bytes.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
