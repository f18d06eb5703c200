/// Settings of a `SocketIOServer`. The defaults are the reference (Node) server's.
public struct SocketIOConfiguration: Sendable {
    /// Where the Engine.IO endpoint lives (`/socket.io/`, as the official clients expect by default).
    public var path: String = "/socket.io"
    /// The server pings every `pingInterval`; the client must answer within `pingTimeout`.
    public var pingInterval: Duration = .milliseconds(25_000)
    public var pingTimeout: Duration = .milliseconds(20_000)
    /// Largest message (POST body, WebSocket message) a client may send, in bytes. Larger: 413 / close 1009.
    public var maxPayload: Int = 1_000_000
    /// A polling-to-WebSocket upgrade must complete within this.
    public var upgradeTimeout: Duration = .seconds(10)
    /// A client that joins no namespace within this is disconnected.
    public var connectTimeout: Duration = .seconds(45)
    /// Whether a client may upgrade from long-polling to WebSocket (`upgrades: ["websocket"]`).
    public var allowUpgrades: Bool = true
    /// Which transports are accepted.
    public var transports: Set<Transport> = [.polling, .websocket]
    /// Cross-origin policy (browsers send `Origin`; requests without one are not from a browser page).
    public var origins: OriginPolicy = .sameOrigin

    /// Limits against abuse.
    public var limits = Limits()

    /// On graceful shutdown: new handshakes are refused, every session is closed at once (the clients
    /// reconnect elsewhere), and the server waits at most this long for recovery sessions to be saved
    /// and handlers to finish.
    public var drainTimeout: Duration = .seconds(10)

    /// How long a WebSocket's flush may wait to carry the frames that follow (zero: every pass of the
    /// event loop flushes what it wrote). A connection not flushed within this window is flushed at
    /// once, so a lone message waits for nothing; one that receives a stream of messages (the
    /// broadcasts of a busy room) gets them in one write system call per window instead of one per
    /// message, for at most this much added latency. Centrifugo PRO calls this `client.write_delay`.
    /// WebSockets only; long-polling already batches per request.
    public var writeCoalescing: Duration = .zero

    /// Connection state recovery (socket.io 4.6+): nil disables it.
    public var recovery: Recovery? = nil

    public init() {}

    public enum Transport: String, Sendable, Hashable, CaseIterable {
        case polling
        case websocket
    }

    /// Which `Origin` headers are accepted. A refused browser gets 403 `{"code":4,"message":"Forbidden"}`
    /// (a refused WebSocket upgrade gets 400): no cross-site WebSocket hijacking.
    public enum OriginPolicy: Sendable, Hashable {
        /// The origin's host and port must equal the request's `Host` header.
        case sameOrigin
        /// Same origin, or one of these origins exactly (`https://chat.example.com`, `http://localhost:3000`).
        case allowList(Set<String>)
        /// Any origin (only for tests and trusted networks).
        case any
    }

    public struct Limits: Sendable, Hashable {
        /// Engine.IO sessions open at once; past it handshakes get 503.
        public var maxSessions: Int = 100_000
        /// Bytes queued for one client (long-polling buffer or WebSocket send buffer) before it is
        /// closed as too slow; a slow client never holds others up.
        public var maxOutboundBufferBytes: Int = 1 << 20
        /// Inbound events waiting for a client's handlers; past it the server stops reading from that
        /// client until its handlers catch up (TCP backpressure).
        public var maxQueuedInboundPackets: Int = 1_000
        /// Binary attachments in one packet; more closes the connection.
        public var maxBinaryAttachments: Int = 10
        /// Packets in one long-polling response (python-engineio refuses more than 16 by default).
        public var maxPacketsPerPoll: Int = 16
        /// JSON nesting depth accepted from clients.
        public var maxJSONDepth: Int = 32

        public init() {}
    }

    public struct Recovery: Sendable, Hashable {
        /// How long a disconnected session stays recoverable (the store's TTL).
        public var maxDisconnectionDuration: Duration = .seconds(120)
        /// Whether a recovered connection skips the namespace's connect hooks (the reference server's
        /// default is true). false runs them again with `ConnectRequest.recovering` set.
        public var skipConnectHooks: Bool = false

        public init(maxDisconnectionDuration: Duration = .seconds(120), skipConnectHooks: Bool = false) {
            self.maxDisconnectionDuration = maxDisconnectionDuration
            self.skipConnectHooks = skipConnectHooks
        }
    }
}
