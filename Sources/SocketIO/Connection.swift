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
final class Connection: Sendable, NIOScheduledCallbackHandler {
    let id: String
    let server: SocketIOServer
    let eventLoop: any EventLoop
    let handshake: Handshake
    let engine: Mutex<EngineIO>
    let socketIO: Mutex<SocketIOState>

    struct EngineIO: ~Copyable {
        var session: EngineSession
        var webSocket: WebSocketLink?
        var probe: WebSocketLink?
        var poll: CheckedContinuation<PollOutcome, Never>?
        /// The session's one timer (heartbeat, upgrade and attach deadlines) and when it fires. A later
        /// deadline does not move it: it fires, and the next one is scheduled then.
        var timer: NIOScheduledCallback?
        var timerDeadline: NIODeadline?
    }

    /// What must happen outside the lock after an Engine.IO event.
    struct Aftermath: Sendable {
        var closed: EngineCloseReason?
        var received: [EnginePacket] = []
    }

    init(
        id: String, server: SocketIOServer, transport: EngineSession.Transport, webSocket: (any Channel)?, handshake: Handshake,
        eventLoop: any EventLoop, now: NIODeadline, encoded: EncodedFrameSink? = nil
    ) {
        self.id = id
        self.server = server
        self.eventLoop = eventLoop
        self.handshake = handshake
        var session = EngineSession(transport: transport, now: now, configuration: server.engineConfiguration)
        session.setAttachDeadline(now + TimeAmount(server.configuration.connectTimeout))
        self.engine = Mutex(EngineIO(session: session, webSocket: webSocket.map { WebSocketLink($0, encoded: encoded) }))
        self.socketIO = Mutex(
            SocketIOState(
                decoder: SocketDecoder(
                    maxAttachments: server.configuration.limits.maxBinaryAttachments, maxDepth: server.configuration.limits.maxJSONDepth)))
    }

    /// The server's logger with this session's id (built when something is logged: it costs memory).
    var logger: Logger {
        var logger = server.logger
        logger[metadataKey: "sio.session"] = "\(id)"
        return logger
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
    func send(_ packets: [EnginePacket], burst: Bool = false) {
        transition { $0.send(packets, burst: burst) }
    }

    /// `send` for a broadcast: when the packets would go straight onto the session's WebSocket,
    /// returns it instead so the caller writes to all its recipients with one hop per event loop.
    func sendOrBatch(_ packets: [EnginePacket]) -> WebSocketOutbox.Target? {
        let (target, aftermath) = engine.withLock { io -> (WebSocketOutbox.Target?, Aftermath) in
            if io.session.transport == .websocket, !io.session.isClosed, let webSocket = io.webSocket {
                return (WebSocketOutbox.Target(channel: webSocket.channel, connection: self, encoded: webSocket.encoded), Aftermath())
            }
            return (nil, apply(io.session.send(packets), to: &io))
        }
        handle(aftermath)
        return target
    }

    /// Writes the same packets to many WebSockets: one outbox item per event loop, one flush per channel.
    static func writeBatched(_ packets: [EnginePacket], to targets: [WebSocketOutbox.Target]) {
        guard !targets.isEmpty else { return }
        WebSocketOutbox.broadcast(frames(packets), to: targets)
    }

    /// The client's WebSocket is still over `maxOutboundBufferBytes` when more is to be written: it
    /// does not read. Closes the session (once) without waiting for what is queued.
    func closeAsSlowClient() {
        let aftermath = engine.withLock { io -> Aftermath in
            guard !io.session.isClosed else { return Aftermath() }
            server.metrics.slowClientsClosed.increment()
            logger.notice(
                "Closing a slow client: more than \(server.configuration.limits.maxOutboundBufferBytes) bytes wait in its WebSocket send buffer")
            return apply(io.session.close(.slowClient), to: &io)
        }
        handle(aftermath)
    }

    static func frames(_ packets: [EnginePacket]) -> [WebSocketFrame] {
        packets.map { WebSocketFrame(fin: true, opcode: $0.isBinary ? .binary : .text, data: $0.wire) }
    }

    /// `send` for callers that hold another lock: pass the result to `handle(_:)` once it is released.
    func sendDeferred(_ packets: [EnginePacket], burst: Bool = false) -> Aftermath {
        engine.withLock { io in apply(io.session.send(packets, burst: burst), to: &io) }
    }

    func close(_ reason: EngineCloseReason) {
        transition { $0.close(reason) }
    }

    func handleScheduledCallback(eventLoop: some EventLoop) {
        let aftermath = engine.withLock { io in
            io.timer = nil
            io.timerDeadline = nil
            return apply(io.session.timerFired(now: .now()), to: &io)
        }
        handle(aftermath)
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
        if !deliver(received) { await waitForHandlers() }
        return nil
    }

    /// A message on the session's WebSocket (the active transport or the probe). Returns false when
    /// the client's handlers are `maxQueuedInboundPackets` behind: stop reading from it until
    /// `whenHandlersCatchUp` calls back.
    func receiveWebSocket(_ packet: Result<EnginePacket, EngineDecodingError>, on channel: any Channel) -> Bool {
        let isProbe = engine.withLock { io in io.probe.map { $0.channel === channel } ?? false }
        switch packet {
        case .success(let packet):
            if isProbe {
                transition { $0.probeReceived(packet) }
            } else {
                let received = transition { $0.receive([packet], now: .now()) }
                return deliver(received)
            }
        case .failure(let error):
            if isProbe {
                transition { session in session.probeReceived(EnginePacket(.noop)) }
            } else {
                logger.info("Closing a session: a WebSocket frame did not decode (\(error))")
                transition { $0.receiveFailed() }
            }
        }
        return true
    }

    /// Whether `channel` is this session's active WebSocket or its upgrade probe.
    func isTransport(_ channel: any Channel) -> Bool {
        engine.withLock { io in
            io.webSocket.map { $0.channel === channel } ?? false || io.probe.map { $0.channel === channel } ?? false
        }
    }

    /// A WebSocket with this session's sid opened to probe an upgrade; false: refuse it.
    func attachProbe(_ channel: any Channel, encoded: EncodedFrameSink? = nil) -> Bool {
        let attached = engine.withLock { io -> Bool in
            guard io.session.probeOpened(now: .now()) else { return false }
            io.probe = WebSocketLink(channel, encoded: encoded)
            _ = apply(EngineEffects(), to: &io)
            return true
        }
        return attached
    }

    /// A WebSocket of this session ended (the peer closed it or the connection broke).
    func webSocketEnded(_ channel: any Channel) {
        let aftermath = engine.withLock { io -> Aftermath in
            if let probe = io.probe, probe.channel === channel {
                io.probe = nil
                io.session.probeClosed()
                return Aftermath()
            }
            guard let webSocket = io.webSocket, webSocket.channel === channel else { return Aftermath() }
            return apply(io.session.webSocketClosed(), to: &io)
        }
        handle(aftermath)
    }

    // MARK: Carrying out effects (under the lock, so writes keep their order)

    private func apply(_ effects: EngineEffects, to io: inout EngineIO) -> Aftermath {
        if effects.upgraded {
            io.webSocket = io.probe
            io.probe = nil
            logger.debug("Session upgraded to WebSocket")
        }
        if !effects.probeWrites.isEmpty, let probe = io.probe {
            probe.write(effects.probeWrites, for: self)
        }
        if !effects.webSocketWrites.isEmpty, let webSocket = io.webSocket {
            webSocket.write(effects.webSocketWrites, burst: effects.webSocketBurst, for: self)
        }
        if let response = effects.pollResponse, let continuation = io.poll {
            io.poll = nil
            continuation.resume(returning: .payload(response))
        }
        if effects.closeProbe, let probe = io.probe {
            io.probe = nil
            probe.close(code: .normalClosure)
        }
        if let reason = effects.closed {
            if let continuation = io.poll {
                io.poll = nil
                continuation.resume(returning: .payload([EnginePacket(.close)]))
            }
            if let webSocket = io.webSocket {
                io.webSocket = nil
                webSocket.close(code: reason == .serverShuttingDown ? .goingAway : .normalClosure, immediately: reason == .slowClient)
            }
            if let probe = io.probe {
                io.probe = nil
                probe.close(code: .normalClosure)
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

    /// Makes sure the timer fires by the session's next deadline. A timer already due earlier stays
    /// (no cancellation per pong: it fires, finds nothing to do, and schedules the next deadline).
    private func schedule(_ io: inout EngineIO) {
        guard let next = io.session.nextDeadline else {
            io.timer?.cancel()
            io.timer = nil
            io.timerDeadline = nil
            return
        }
        if let current = io.timerDeadline, current <= next { return }
        io.timer?.cancel()
        io.timerDeadline = next
        io.timer = try? eventLoop.scheduleCallback(at: next, handler: self)
    }

    func handle(_ aftermath: Aftermath) {
        if let reason = aftermath.closed {
            logger.debug("Session closed: \(reason.rawValue)")
            server.connectionClosed(self)
            engineClosed(reason)
        }
    }
}

/// A WebSocket a session writes to, with the outbox of its event loop.
struct WebSocketLink: Sendable {
    let channel: any Channel
    let outbox: WebSocketOutbox
    /// Below the frame encoder, for broadcasts encoded once (the event-loop path only).
    let encoded: EncodedFrameSink?

    init(_ channel: any Channel, encoded: EncodedFrameSink? = nil) {
        self.channel = channel
        self.outbox = WebSocketOutbox.of(channel.eventLoop)
        self.encoded = encoded
    }

    /// Writes the packets, one frame each, after everything written to this loop's WebSockets before
    /// (`connection`: closed if its client does not read; `burst`: see `SlowClientLimit`).
    func write(_ packets: [EnginePacket], burst: Bool = false, for connection: Connection?) {
        outbox.submit(.write(Connection.frames(packets), to: WebSocketOutbox.Target(channel: channel, connection: connection), burst: burst))
    }

    /// Sends a close frame with `code` after what was written before, then closes the connection
    /// (`immediately`: without waiting for what is queued; a slow client).
    func close(code: WebSocketErrorCode, immediately: Bool = false) {
        outbox.submit(.close(channel, code: code, immediately: immediately))
    }
}
