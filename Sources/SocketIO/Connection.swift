import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// How a held long-polling GET ends.
enum PollOutcome: Sendable {
    case payload([EnginePacket])
    case error(EngineErrorCode)
}

/// One client connection: the Engine.IO session (its state machine plus the transports it runs on)
/// and the Socket.IO layer on top (the decoder, the namespaces joined, the handler queue). The
/// decisions are in `EngineSession`; this class carries them out.
final class Connection: Sendable {
    let id: String
    let server: SocketIOServer
    let eventLoop: any EventLoop
    let handshake: Handshake
    let logger: Logger
    let engine: Mutex<EngineIO>
    let socketIO: Mutex<SocketIOState>

    struct EngineIO: ~Copyable {
        var session: EngineSession
        var webSocket: (any Channel)?
        var probe: (any Channel)?
        var poll: CheckedContinuation<PollOutcome, Never>?
        var timer: Scheduled<Void>?
        var timerDeadline: NIODeadline?
    }

    /// What must happen outside the lock after an Engine.IO event.
    struct Aftermath: Sendable {
        var closed: EngineCloseReason?
        var received: [EnginePacket] = []
    }

    init(
        id: String, server: SocketIOServer, transport: EngineSession.Transport, webSocket: (any Channel)?, handshake: Handshake,
        eventLoop: any EventLoop, now: NIODeadline
    ) {
        self.id = id
        self.server = server
        self.eventLoop = eventLoop
        self.handshake = handshake
        var logger = server.logger
        logger[metadataKey: "sio.session"] = "\(id)"
        self.logger = logger
        var session = EngineSession(transport: transport, now: now, configuration: server.engineConfiguration)
        session.setAttachDeadline(now + TimeAmount(server.configuration.connectTimeout))
        self.engine = Mutex(EngineIO(session: session, webSocket: webSocket))
        self.socketIO = Mutex(
            SocketIOState(
                decoder: SocketDecoder(
                    maxAttachments: server.configuration.limits.maxBinaryAttachments, maxDepth: server.configuration.limits.maxJSONDepth)))
    }

    /// Starts the timers (call once the connection is registered).
    func start() {
        let aftermath = engine.withLock { io in apply(EngineEffects(), to: &io) }
        handle(aftermath)
    }

    // MARK: Engine.IO events

    /// Runs a state machine transition under the lock, carries out its writes, and handles the rest.
    @discardableResult
    func transition(_ body: (inout EngineSession) -> EngineEffects) -> [EnginePacket] {
        let aftermath = engine.withLock { io in
            let effects = body(&io.session)
            return apply(effects, to: &io)
        }
        handle(aftermath)
        return aftermath.received
    }

    /// Sends packets to the client (queued for long-polling, written on a WebSocket).
    func send(_ packets: [EnginePacket]) {
        transition { $0.send(packets) }
    }

    func close(_ reason: EngineCloseReason) {
        transition { $0.close(reason) }
    }

    func timerFired() {
        transition { $0.timerFired(now: .now()) }
    }

    func clearAttachDeadline() {
        engine.withLock { io in
            io.session.setAttachDeadline(nil)
        }
    }

    var isClosed: Bool { engine.withLock { $0.session.isClosed } }

    /// A long-polling GET: the payload to answer with, now or once something is queued.
    func poll() async -> PollOutcome {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<PollOutcome, Never>) in
                let aftermath = engine.withLock { io -> Aftermath in
                    let (decision, effects) = io.session.poll()
                    let aftermath = apply(effects, to: &io)
                    switch decision {
                    case .respond(let packets): continuation.resume(returning: .payload(packets))
                    case .fail(let code): continuation.resume(returning: .error(code))
                    case .park: io.poll = continuation
                    }
                    return aftermath
                }
                handle(aftermath)
            }
        } onCancel: {
            engine.withLock { io in
                guard let continuation = io.poll else { return }
                io.poll = nil
                io.session.pollCancelled()
                continuation.resume(returning: .payload([EnginePacket(.noop)]))
            }
        }
    }

    /// A long-polling POST body: nil when accepted, else the error to answer with.
    func post(_ body: ByteBuffer) async -> EngineErrorCode? {
        let (refusal, effects) = engine.withLock { io -> (EngineErrorCode?, Aftermath) in
            let (refusal, effects) = io.session.postStarted()
            return (refusal, apply(effects, to: &io))
        }
        handle(effects)
        if let refusal { return refusal }
        defer { engine.withLock { $0.session.postEnded() } }
        let packets: [EnginePacket]
        do {
            packets = try EngineCodec.decodePayload(body)
        } catch {
            logger.info("Closing a session: its long-polling POST did not decode (\(error))")
            transition { $0.receiveFailed() }
            return .badRequest
        }
        let received = transition { $0.receive(packets, now: .now()) }
        await deliver(received)
        return nil
    }

    /// A frame on the session's WebSocket (the active transport or the probe).
    func receiveWebSocket(_ packet: Result<EnginePacket, EngineDecodingError>, on channel: any Channel) async {
        let isProbe = engine.withLock { io in io.probe.map { $0 === channel } ?? false }
        switch packet {
        case .success(let packet):
            if isProbe {
                transition { $0.probeReceived(packet) }
            } else {
                let received = transition { $0.receive([packet], now: .now()) }
                await deliver(received)
            }
        case .failure(let error):
            if isProbe {
                transition { session in session.probeReceived(EnginePacket(.noop)) }
            } else {
                logger.info("Closing a session: a WebSocket frame did not decode (\(error))")
                transition { $0.receiveFailed() }
            }
        }
    }

    /// A WebSocket with this session's sid opened to probe an upgrade; false: refuse it.
    func attachProbe(_ channel: any Channel) -> Bool {
        let attached = engine.withLock { io -> Bool in
            guard io.session.probeOpened(now: .now()) else { return false }
            io.probe = channel
            _ = apply(EngineEffects(), to: &io)
            return true
        }
        return attached
    }

    /// A WebSocket of this session ended (the peer closed it or the connection broke).
    func webSocketEnded(_ channel: any Channel) {
        let aftermath = engine.withLock { io -> Aftermath in
            if let probe = io.probe, probe === channel {
                io.probe = nil
                io.session.probeClosed()
                return Aftermath()
            }
            guard let webSocket = io.webSocket, webSocket === channel else { return Aftermath() }
            return apply(io.session.webSocketClosed(), to: &io)
        }
        handle(aftermath)
    }

    // MARK: Carrying out effects (under the lock, so writes keep their order)

    private func apply(_ effects: EngineEffects, to io: inout EngineIO) -> Aftermath {
        var effects = effects
        if effects.upgraded {
            io.webSocket = io.probe
            io.probe = nil
            logger.debug("Session upgraded to WebSocket")
        }
        if !effects.probeWrites.isEmpty, let probe = io.probe {
            Self.write(effects.probeWrites, to: probe)
        }
        if !effects.webSocketWrites.isEmpty, let webSocket = io.webSocket {
            if webSocket.isWritable || effects.upgraded {
                Self.write(effects.webSocketWrites, to: webSocket)
            } else {
                server.metrics.slowClientsClosed.increment()
                logger.notice(
                    "Closing a slow client: more than \(server.configuration.limits.maxOutboundBufferBytes) bytes wait in its WebSocket send buffer"
                )
                let closing = io.session.close(.slowClient)
                effects.closed = closing.closed
                effects.pollResponse = closing.pollResponse
            }
        }
        if let response = effects.pollResponse, let continuation = io.poll {
            io.poll = nil
            continuation.resume(returning: .payload(response))
        }
        if effects.closeProbe, let probe = io.probe {
            io.probe = nil
            Self.closeWebSocket(probe, code: .normalClosure)
        }
        if let reason = effects.closed {
            if let continuation = io.poll {
                io.poll = nil
                continuation.resume(returning: .payload([EnginePacket(.close)]))
            }
            if let webSocket = io.webSocket {
                io.webSocket = nil
                Self.closeWebSocket(
                    webSocket, code: reason == .serverShuttingDown ? .goingAway : .normalClosure, immediately: reason == .slowClient)
            }
            if let probe = io.probe {
                io.probe = nil
                Self.closeWebSocket(probe, code: .normalClosure)
            }
            io.timer?.cancel()
            io.timer = nil
            io.timerDeadline = nil
            if reason == .slowClient, io.session.transport == .polling {
                server.metrics.slowClientsClosed.increment()
                logger.notice("Closing a slow long-polling client: more than \(server.configuration.limits.maxOutboundBufferBytes) bytes queued")
            }
        } else {
            schedule(&io)
        }
        return Aftermath(closed: effects.closed, received: effects.received)
    }

    private func schedule(_ io: inout EngineIO) {
        let next = io.session.nextDeadline
        guard next != io.timerDeadline else { return }
        io.timer?.cancel()
        io.timerDeadline = next
        if let next {
            io.timer = eventLoop.scheduleTask(deadline: next) { [self] in timerFired() }
        } else {
            io.timer = nil
        }
    }

    private func handle(_ aftermath: Aftermath) {
        if let reason = aftermath.closed {
            logger.debug("Session closed: \(reason.rawValue)")
            server.connectionClosed(self)
            engineClosed(reason)
        }
    }

    private static func write(_ packets: [EnginePacket], to channel: any Channel) {
        let frames = packets.map { WebSocketFrame(fin: true, opcode: $0.isBinary ? .binary : .text, data: $0.wire) }
        // Always through the event loop's queue, so writes keep the order they were issued in.
        channel.eventLoop.execute {
            for frame in frames { channel.write(frame, promise: nil) }
            channel.flush()
        }
    }

    /// Sends a close frame then closes the connection; a peer that does not read (the close frame
    /// cannot go out) is cut off after a short grace period, and a slow client at once.
    static func closeWebSocket(_ channel: any Channel, code: WebSocketErrorCode, immediately: Bool = false) {
        var data = ByteBuffer()
        data.write(webSocketErrorCode: code)
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
        channel.eventLoop.execute {
            if immediately || !channel.isWritable {
                channel.close(promise: nil)
                return
            }
            channel.writeAndFlush(frame).whenComplete { _ in channel.close(promise: nil) }
            channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
        }
    }
}
