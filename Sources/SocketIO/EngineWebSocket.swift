import Logging
import NIOCore
import NIOWebSocket

/// An accepted Engine.IO WebSocket request: what `SocketIOServer.admitWebSocket` decided.
struct WebSocketAdmission: Sendable {
    /// The session this WebSocket probes an upgrade for; nil opens a new session over WebSocket.
    let sid: String?
    let handshake: Handshake
}

/// The Engine.IO side of one WebSocket connection, whoever reads its frames: opens the session (or
/// joins an existing one as its upgrade probe), reassembles messages, and hands their packets to the
/// session. Writes and closes go through the event loop's `WebSocketOutbox`. Used by one reader at a
/// time (the channel handler on the event loop, or the task of the Hummingbird WebSocket path).
final class EngineWebSocket {
    /// What the reader does after a frame.
    enum Verdict: Equatable {
        /// Read on.
        case proceed
        /// The client's handlers are behind: stop reading until `connection.whenHandlersCatchUp` calls back.
        case pause
        /// The connection is being closed.
        case stop
    }

    let server: SocketIOServer
    let channel: any Channel
    let admission: WebSocketAdmission
    private(set) var connection: Connection?
    private var assembler: WebSocketMessageAssembler
    /// Set by the event-loop handler before `open()`: broadcasts go below its frame encoder.
    var encodedSink: EncodedFrameSink?

    init(server: SocketIOServer, admission: WebSocketAdmission, channel: any Channel) {
        self.server = server
        self.admission = admission
        self.channel = channel
        self.assembler = WebSocketMessageAssembler(maxPayload: server.configuration.maxPayload)
    }

    /// Opens a new session over this WebSocket, or attaches it as the probe of the session it names.
    /// False: refused (a close is on its way, or the caller closes).
    func open() -> Bool {
        if let sid = admission.sid {
            // Admission checked the session; it may have closed or upgraded since.
            guard let existing = server.connection(sid), existing.attachProbe(channel, encoded: encodedSink) else {
                server.logger.debug("Refused a WebSocket upgrade for session \(LogText.quoted(sid)): closed or already upgraded meanwhile")
                return false
            }
            connection = existing
            return true
        }
        let created = Connection(
            id: SocketIOServer.generateID(), server: server, transport: .websocket, webSocket: channel, handshake: admission.handshake,
            eventLoop: channel.eventLoop, now: .now(), encoded: encodedSink)
        if case .refused(let reason) = server.register(created) {
            server.logger.notice("Refused a WebSocket session: \(reason)")
            WebSocketLink(channel).close(code: .init(codeNumber: 1013))
            return false
        }
        server.metrics.sessionsOpenedWebSocket.increment()
        created.send([server.openPacket(sid: created.id, transport: .websocket)])
        connection = created
        return true
    }

    /// A data frame (text, binary or continuation; unmasked).
    func receive(opcode: WebSocketOpcode, fin: Bool, data: ByteBuffer) -> Verdict {
        guard let connection else { return .stop }
        switch assembler.receive(opcode: opcode, fin: fin, data: data) {
        case .incomplete:
            return .proceed
        case .tooLarge:
            connection.logger.info("Closing a session: a WebSocket message over maxPayload (\(assembler.maxPayload) bytes)")
            WebSocketLink(channel).close(code: .messageTooLarge)
            return .stop
        case .protocolError(let problem):
            connection.logger.info("Closing a session: WebSocket protocol error (\(problem))")
            WebSocketLink(channel).close(code: .protocolError)
            return .stop
        case .message(let binary, let data):
            let packet: Result<EnginePacket, EngineDecodingError>
            if binary {
                packet = .success(.binary(data))
            } else {
                do {
                    packet = .success(try EngineCodec.decodeText(data))
                } catch {
                    packet = .failure(error)
                }
            }
            return connection.receiveWebSocket(packet, on: channel) ? .proceed : .pause
        }
    }

    /// The connection closed (by either side, or broke).
    func ended() {
        connection?.webSocketEnded(channel)
    }
}

/// Serves one Engine.IO WebSocket from the event loop: NIO's frame decoder and encoder below it, no
/// task, no async channel. Answers WebSocket pings and closes; stops reading while the client's
/// handlers are behind (TCP backpressure); closes the session with 1001 when the HTTP server quiesces.
final class EngineWebSocketHandler: ChannelDuplexHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let socket: EngineWebSocket
    private var paused = false
    private var readRequested = false
    private var closeSent = false

    init(socket: EngineWebSocket) {
        self.socket = socket
    }

    func handlerAdded(context: ChannelHandlerContext) {
        socket.encodedSink = EncodedFrameSink(pipeline: context.pipeline)
        if !socket.open(), socket.admission.sid != nil {
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        // RFC 6455 5.1: a client masks every frame it sends, and a server closes the connection on a
        // frame that is not masked (NIO's decoder accepts both).
        guard frame.maskKey != nil else {
            guard !closeSent else { return }
            closeSent = true
            socket.connection?.logger.info("Closing a session: the client sent an unmasked WebSocket frame (RFC 6455 5.1: clients mask every frame)")
            WebSocketLink(context.channel).close(code: .protocolError)
            return
        }
        switch frame.opcode {
        case .text, .binary, .continuation:
            guard !closeSent else { return }
            switch socket.receive(opcode: frame.opcode, fin: frame.fin, data: frame.unmaskedData) {
            case .proceed:
                break
            case .stop:
                closeSent = true
            case .pause:
                pause(context: context)
            }
        case .ping:
            guard !closeSent else { return }
            let pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            WebSocketLink(context.channel).outbox.submit(.write([pong], to: .init(channel: context.channel, connection: socket.connection)))
        case .pong:
            break
        case .connectionClose:
            // Answer with the client's code (1000 when it sent none), then close.
            guard !closeSent else {
                context.close(promise: nil)
                return
            }
            closeSent = true
            var payload = frame.unmaskedData
            let code = payload.readWebSocketErrorCode() ?? .normalClosure
            WebSocketLink(context.channel).close(code: code)
        default:
            socket.connection?.logger.info("Closing a session: WebSocket frame with reserved opcode \(frame.opcode)")
            closeSent = true
            WebSocketLink(context.channel).close(code: .protocolError)
        }
    }

    private func pause(context: ChannelHandlerContext) {
        guard !paused, let connection = socket.connection else { return }
        paused = true
        let resume = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        connection.whenHandlersCatchUp {
            resume.eventLoop.execute {
                let (handler, context) = resume.value
                handler.resume(context: context)
            }
        }
    }

    private func resume(context: ChannelHandlerContext) {
        guard paused else { return }
        paused = false
        if readRequested {
            readRequested = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if paused {
            readRequested = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        socket.ended()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            if let connection = socket.connection {
                connection.close(.serverShuttingDown)
            } else {
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // NIO's WebSocketProtocolErrorHandler (before this handler) already answered protocol errors
        // with a close frame (1009 for a frame over maxPayload).
        if let error = error as? NIOWebSocketError {
            socket.connection?.logger.info("Closing a session: \(error.explanation)")
        } else {
            socket.connection?.logger.debug("WebSocket ended: \(error)")
            context.close(promise: nil)
        }
    }
}

extension NIOWebSocketError {
    /// What the client did, in the words of the other "Closing a session" lines.
    var explanation: String {
        switch self {
        case .invalidFrameLength: "a WebSocket frame over maxPayload (closed with 1009)"
        case .fragmentedControlFrame: "WebSocket protocol error (a fragmented control frame; closed with 1002)"
        case .multiByteControlFrameLength: "WebSocket protocol error (a control frame over 125 bytes; closed with 1002)"
        }
    }
}
