import NIOCore

/// The Engine.IO errors a request gets, exactly as the reference server sends them: HTTP 400 (403 for
/// `forbidden`) with `{"code":N,"message":"..."}`.
public enum EngineErrorCode: Int, Sendable, Hashable, CaseIterable {
    case transportUnknown = 0
    case unknownSessionID = 1
    case badHandshakeMethod = 2
    case badRequest = 3
    case forbidden = 4
    case unsupportedProtocolVersion = 5

    public var message: String {
        switch self {
        case .transportUnknown: return "Transport unknown"
        case .unknownSessionID: return "Session ID unknown"
        case .badHandshakeMethod: return "Bad handshake method"
        case .badRequest: return "Bad request"
        case .forbidden: return "Forbidden"
        case .unsupportedProtocolVersion: return "Unsupported protocol version"
        }
    }

    public var httpStatus: Int { self == .forbidden ? 403 : 400 }

    /// The JSON body: `{"code":1,"message":"Session ID unknown"}`.
    public var body: String { #"{"code":\#(rawValue),"message":"\#(message)"}"# }
}

/// Why an Engine.IO session ended. The raw value is the reason string the reference server reports.
public enum EngineCloseReason: String, Sendable, Hashable {
    /// The client closed it (close packet) or its WebSocket went away.
    case transportClose = "transport close"
    /// The transport failed: a second concurrent GET or POST, a broken connection.
    case transportError = "transport error"
    /// No pong within pingTimeout of a ping.
    case pingTimeout = "ping timeout"
    /// The client sent something that does not parse (Engine.IO or Socket.IO).
    case parseError = "parse error"
    /// The server closed it (an app's `disconnect(close: true)`, a connect timeout).
    case forcedClose = "forced close"
    /// The client could not keep up: its outbound queue passed the limit.
    case slowClient = "slow client"
    /// Graceful shutdown.
    case serverShuttingDown = "server shutting down"

    /// Socket.IO keeps a session for recovery only after these (the reference server's list).
    public var isRecoverable: Bool {
        switch self {
        case .transportClose, .transportError, .pingTimeout, .forcedClose, .serverShuttingDown, .slowClient: return true
        case .parseError: return false
        }
    }
}

/// Timing and limits of a session (from the server configuration).
struct EngineSessionConfiguration: Sendable, Hashable {
    var pingInterval: TimeAmount
    var pingTimeout: TimeAmount
    var upgradeTimeout: TimeAmount
    /// Bytes queued for a long-polling client before it counts as too slow and is closed.
    var maxBufferedBytes: Int
    /// Packets in one long-polling response (python-engineio refuses payloads of more than 16).
    var maxPacketsPerPoll: Int
}

/// What the I/O around a session must do after an event. Fields left empty mean nothing to do.
struct EngineEffects: Sendable {
    /// Packets to write on the active WebSocket, in order.
    var webSocketWrites: [EnginePacket] = []
    /// `webSocketWrites` are a burst (see `SlowClientLimit`).
    var webSocketBurst = false
    /// Packets to write on the WebSocket that is probing an upgrade.
    var probeWrites: [EnginePacket] = []
    /// Answer the parked long-polling GET with this payload.
    var pollResponse: [EnginePacket]?
    /// Close the probing WebSocket (the upgrade failed or timed out).
    var closeProbe = false
    /// The probing WebSocket is now the session's transport.
    var upgraded = false
    /// The session ended: close every transport, forget the session.
    var closed: EngineCloseReason?
    /// Message packets for the application, in order.
    var received: [EnginePacket] = []

    var isEmpty: Bool {
        webSocketWrites.isEmpty && probeWrites.isEmpty && pollResponse == nil && !closeProbe && !upgraded && closed == nil && received.isEmpty
    }
}

/// One Engine.IO v4 session as a value: transport (long-polling or WebSocket), upgrade probing,
/// heartbeat, the long-polling queue, and closing. Every method is pure: time is passed in, and the
/// result says what to write, answer, deliver or close. The I/O code around it only carries that out.
struct EngineSession: Sendable {
    enum Transport: Sendable, Hashable {
        case polling
        case websocket
    }

    enum Upgrade: Sendable, Hashable {
        case none
        /// A WebSocket with this sid is open, `2probe` not yet received.
        case probing(deadline: NIODeadline)
        /// `3probe` sent; waiting for the client's `5`.
        case probed(deadline: NIODeadline)
    }

    enum Heartbeat: Sendable, Hashable {
        /// The next ping goes out at this time.
        case pingDue(NIODeadline)
        /// A ping went out; a pong must arrive before this time.
        case awaitingPong(deadline: NIODeadline)
    }

    enum PollDecision: Sendable, Hashable {
        /// Answer now with this payload.
        case respond([EnginePacket])
        /// Hold the request until something is queued (`EngineEffects.pollResponse`).
        case park
        case fail(EngineErrorCode)
    }

    let configuration: EngineSessionConfiguration
    private(set) var transport: Transport
    private(set) var isClosed = false
    private(set) var upgrade: Upgrade = .none
    private(set) var heartbeat: Heartbeat
    /// Closes the session unless cleared before (Socket.IO's connect timeout).
    private(set) var attachDeadline: NIODeadline?
    private(set) var buffer: [EnginePacket] = []
    private(set) var bufferedBytes = 0
    /// When the long-polling client is too slow (`bufferedBytes` against `maxBufferedBytes`).
    private(set) var slowClient: SlowClientLimit
    /// What a burst added to the slow-client limit, until the client has drained back within it.
    var burstAllowance: Int { slowClient.allowance }
    private(set) var pollParked = false
    private(set) var postInProgress = false

    init(transport: Transport, now: NIODeadline, configuration: EngineSessionConfiguration) {
        self.configuration = configuration
        self.transport = transport
        self.heartbeat = .pingDue(now + configuration.pingInterval)
        self.slowClient = SlowClientLimit(limit: configuration.maxBufferedBytes)
    }

    /// The earliest time `timerFired` has something to do.
    var nextDeadline: NIODeadline? {
        guard !isClosed else { return nil }
        var earliest: NIODeadline
        switch heartbeat {
        case .pingDue(let time): earliest = time
        case .awaitingPong(let time): earliest = time
        }
        switch upgrade {
        case .none: break
        case .probing(let time), .probed(let time): earliest = min(earliest, time)
        }
        if let attachDeadline { earliest = min(earliest, attachDeadline) }
        return earliest
    }

    var isUpgrading: Bool { upgrade != .none }

    /// Whether a WebSocket with this sid may start probing an upgrade.
    var canProbe: Bool { !isClosed && transport == .polling && upgrade == .none }

    mutating func setAttachDeadline(_ deadline: NIODeadline?) {
        attachDeadline = deadline
    }

    // MARK: Sending

    /// Queues packets for the client, in order. A `burst` (a recovery replay: finite, sent once) may
    /// pass the slow-client limit (`SlowClientLimit`); over a WebSocket the outbox applies the same rule.
    mutating func send(_ packets: [EnginePacket], burst: Bool = false) -> EngineEffects {
        var effects = EngineEffects()
        guard !isClosed, !packets.isEmpty else { return effects }
        if transport == .websocket {
            effects.webSocketWrites = packets
            effects.webSocketBurst = burst
            return effects
        }
        let before = bufferedBytes
        buffer.append(contentsOf: packets)
        for packet in packets { bufferedBytes += packet.pollingSize + 1 }
        if burst { slowClient.burst(of: bufferedBytes - before, waiting: before) }
        if slowClient.isSlow(waiting: bufferedBytes) {
            return close(.slowClient)
        }
        if pollParked {
            pollParked = false
            effects.pollResponse = drain()
        }
        return effects
    }

    /// Empties the queue (and with it the byte count and any burst's allowance); returns what it held.
    private mutating func takeAll() -> [EnginePacket] {
        defer {
            buffer.removeAll(keepingCapacity: false)
            bufferedBytes = 0
            slowClient.drained(to: 0)
        }
        return buffer
    }

    private mutating func drain() -> [EnginePacket] {
        if buffer.count <= configuration.maxPacketsPerPoll { return takeAll() }
        let taken = Array(buffer.prefix(configuration.maxPacketsPerPoll))
        buffer.removeFirst(taken.count)
        for packet in taken { bufferedBytes -= packet.pollingSize + 1 }
        slowClient.drained(to: bufferedBytes)
        return taken
    }

    // MARK: Long-polling

    /// A GET with this sid arrived.
    mutating func poll() -> (PollDecision, EngineEffects) {
        guard !isClosed else { return (.fail(.unknownSessionID), EngineEffects()) }
        guard transport == .polling else { return (.fail(.badRequest), EngineEffects()) }
        if pollParked {
            // Two GETs at once: the reference server closes the session; the held GET gets the close packet.
            let effects = close(.transportError)
            return (.fail(.badRequest), effects)
        }
        if !buffer.isEmpty { return (.respond(drain()), EngineEffects()) }
        if case .probed = upgrade { return (.respond([EnginePacket(.noop)]), EngineEffects()) }
        pollParked = true
        return (.park, EngineEffects())
    }

    /// The parked GET went away (its task was cancelled); the caller answers it with a noop.
    mutating func pollCancelled() {
        pollParked = false
    }

    /// A POST with this sid arrived; nil means go ahead (then call `postEnded`).
    mutating func postStarted() -> (EngineErrorCode?, EngineEffects) {
        guard !isClosed else { return (.unknownSessionID, EngineEffects()) }
        guard transport == .polling else { return (.badRequest, EngineEffects()) }
        if postInProgress {
            return (.badRequest, close(.transportError))
        }
        postInProgress = true
        return (nil, EngineEffects())
    }

    mutating func postEnded() {
        postInProgress = false
    }

    // MARK: Receiving

    /// Packets from the client on the active transport (a POST body or a WebSocket frame).
    mutating func receive(_ packets: [EnginePacket], now: NIODeadline) -> EngineEffects {
        var effects = EngineEffects()
        guard !isClosed else { return effects }
        for packet in packets {
            switch packet.type {
            case .message:
                effects.received.append(packet)
            case .pong:
                heartbeat = .pingDue(now + configuration.pingInterval)
            case .close:
                var closing = close(.transportClose, clientInitiated: true)
                closing.received = effects.received
                return closing
            case .noop:
                break
            case .ping, .open, .upgrade:
                // v4: only the server pings; open and upgrade make no sense here.
                var closing = close(.parseError)
                closing.received = effects.received
                return closing
            }
        }
        return effects
    }

    /// Something the client sent did not decode.
    mutating func receiveFailed() -> EngineEffects {
        guard !isClosed else { return EngineEffects() }
        return close(.parseError)
    }

    // MARK: Upgrade

    /// A WebSocket with this sid opened; false means refuse it (close it).
    mutating func probeOpened(now: NIODeadline) -> Bool {
        guard canProbe else { return false }
        upgrade = .probing(deadline: now + configuration.upgradeTimeout)
        return true
    }

    /// A packet on the probing WebSocket.
    mutating func probeReceived(_ packet: EnginePacket) -> EngineEffects {
        var effects = EngineEffects()
        guard !isClosed else {
            effects.closeProbe = true
            return effects
        }
        switch upgrade {
        case .probing(let deadline) where packet.type == .ping && !packet.isBinary && packet.text == "probe":
            upgrade = .probed(deadline: deadline)
            effects.probeWrites = [EnginePacket(.pong, "probe")]
            if pollParked {
                // Release the held GET so the client can pause polling.
                pollParked = false
                effects.pollResponse = [EnginePacket(.noop)]
            }
        case .probed where packet.type == .upgrade && !packet.isBinary:
            upgrade = .none
            transport = .websocket
            effects.upgraded = true
            // What is left of a burst (a replay is taken 16 packets per poll) keeps its room on the
            // WebSocket, or the first write after it would find the client "slow".
            effects.webSocketBurst = slowClient.allowance > 0
            effects.webSocketWrites = takeAll()
            if pollParked {
                pollParked = false
                effects.pollResponse = [EnginePacket(.noop)]
            }
        case .none:
            effects.closeProbe = true
        default:
            upgrade = .none
            effects.closeProbe = true
        }
        return effects
    }

    /// The probing WebSocket closed before the upgrade completed.
    mutating func probeClosed() {
        upgrade = .none
    }

    // MARK: Transport loss, timers, close

    /// The active WebSocket went away.
    mutating func webSocketClosed() -> EngineEffects {
        guard !isClosed, transport == .websocket else { return EngineEffects() }
        return close(.transportClose)
    }

    /// Heartbeat, upgrade timeout and attach deadline.
    mutating func timerFired(now: NIODeadline) -> EngineEffects {
        var effects = EngineEffects()
        guard !isClosed else { return effects }
        if let attachDeadline, now >= attachDeadline {
            return close(.forcedClose)
        }
        switch upgrade {
        case .probing(let deadline), .probed(let deadline):
            if now >= deadline {
                upgrade = .none
                effects.closeProbe = true
            }
        case .none:
            break
        }
        switch heartbeat {
        case .pingDue(let time) where now >= time:
            heartbeat = .awaitingPong(deadline: now + configuration.pingTimeout)
            var sent = send([EnginePacket(.ping)])
            sent.closeProbe = sent.closeProbe || effects.closeProbe
            return sent
        case .awaitingPong(let deadline) where now >= deadline:
            var closing = close(.pingTimeout)
            closing.closeProbe = true
            return closing
        default:
            return effects
        }
    }

    /// Ends the session. A parked GET gets the close packet (a noop when the client asked to close).
    mutating func close(_ reason: EngineCloseReason, clientInitiated: Bool = false) -> EngineEffects {
        var effects = EngineEffects()
        guard !isClosed else { return effects }
        isClosed = true
        effects.closed = reason
        effects.closeProbe = upgrade != .none
        upgrade = .none
        if pollParked {
            pollParked = false
            effects.pollResponse = [EnginePacket(clientInitiated ? .noop : .close)]
        }
        _ = takeAll()
        return effects
    }
}
