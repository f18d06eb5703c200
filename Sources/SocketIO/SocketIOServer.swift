import CloudFoundry
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOPosix
import NIOWebSocket
import ServiceLifecycle
import Synchronization

/// A Socket.IO v5 / Engine.IO v4 server for Hummingbird 2, compatible with the official clients
/// (socket.io-client 4.x, python-socketio 5.x). Mount it on a router (long-polling) and on the HTTP
/// server's WebSocket upgrade, add it to the app's `ServiceGroup` (it receives the adapter's
/// broadcasts and drains on graceful shutdown). See docs/socketio.md.
public final class SocketIOServer: Service, Sendable {
    public let configuration: SocketIOConfiguration
    public let logger: Logger
    let adapter: any SocketIOAdapter
    let recoveryStore: (any RecoveryStore)?
    let eventLoopGroup: any EventLoopGroup
    let metrics: SocketIOMetrics
    let engineConfiguration: EngineSessionConfiguration
    /// `configuration.writeCoalescing`, as the outbox uses it.
    let writeCoalescingWindow: TimeAmount
    private let state: Mutex<State>
    private let unknownSessionLog = Mutex(ThrottledLog(interval: .seconds(5)))

    private struct State: ~Copyable {
        var connections: [String: Connection] = [:]
        var namespaces: [String: Namespace] = [:]
        var draining = false
        var workers = 0
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        /// The current drain gave up waiting (its drain timeout passed).
        var drainGaveUp = false
    }

    /// - Parameters:
    ///   - adapter: carries broadcasts between instances (`LocalAdapter` for one instance, `RedisAdapter`).
    ///   - recoveryStore: where disconnected sessions wait to be recovered; with `configuration.recovery`
    ///     set and no store, an `InMemoryRecoveryStore` (one instance only) is used.
    public init(
        configuration: SocketIOConfiguration = SocketIOConfiguration(),
        adapter: any SocketIOAdapter = LocalAdapter(),
        recoveryStore: (any RecoveryStore)? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "socket.io")
    ) {
        self.configuration = configuration
        self.adapter = adapter
        if let recovery = configuration.recovery {
            self.recoveryStore = recoveryStore ?? InMemoryRecoveryStore(retention: recovery.maxDisconnectionDuration)
        } else {
            self.recoveryStore = recoveryStore
        }
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.metrics = SocketIOMetrics()
        self.engineConfiguration = EngineSessionConfiguration(
            pingInterval: TimeAmount(configuration.pingInterval),
            pingTimeout: TimeAmount(configuration.pingTimeout),
            upgradeTimeout: TimeAmount(configuration.upgradeTimeout),
            maxBufferedBytes: configuration.limits.maxOutboundBufferBytes,
            maxPacketsPerPoll: max(1, configuration.limits.maxPacketsPerPoll)
        )
        self.writeCoalescingWindow = TimeAmount(max(configuration.writeCoalescing, .zero))
        self.state = Mutex(State())
        _ = of("/")
    }

    /// Says, at most once every 5 s, that a request named a session this instance does not have: the
    /// classic symptom of long-polling behind a load balancer without sticky sessions.
    func noteUnknownSession(_ sid: String, transport: String, now: ContinuousClock.Instant = .now) {
        guard let suppressed = unknownSessionLog.withLock({ $0.record(now: now) }) else { return }
        let more = suppressed > 0 ? " (\(suppressed) more since the last such line)" : ""
        let text =
            "Session ID unknown: a \(transport) request for session \(LogText.quoted(sid)) reached this instance, which does not have it\(more). "
            + "Behind a load balancer, every request of an Engine.IO session must reach the instance that opened it: "
            + "make it sticky (Cloud Foundry: a JSESSIONID cookie plus __VCAP_ID__). The client was told 400 and will reconnect."
        logger.notice("\(text)")
    }

    // MARK: Namespaces and broadcasts

    /// The namespace `name` (created on first use). Clients connecting to a namespace that was never
    /// created get CONNECT_ERROR "Invalid namespace".
    public func of(_ name: String) -> Namespace {
        let normalized = name.hasPrefix("/") ? name : "/" + name
        return state.withLock { state in
            if let existing = state.namespaces[normalized] { return existing }
            let namespace = Namespace(name: normalized, server: self)
            state.namespaces[normalized] = namespace
            return namespace
        }
    }

    /// The main namespace `/`.
    public var sockets: Namespace { of("/") }

    func namespace(named name: String) -> Namespace? {
        state.withLock { $0.namespaces[name] }
    }

    /// Engine.IO sessions open on this instance.
    public var sessionCount: Int { state.withLock { $0.connections.count } }

    /// Whether graceful shutdown has begun (new handshakes are refused).
    public var isDraining: Bool { state.withLock { $0.draining } }

    // MARK: Lifecycle

    /// Receives the other instances' broadcasts through the adapter until graceful shutdown, then
    /// drains (see `shutdown()`). Add the server to the `ServiceGroup` after the Hummingbird
    /// application, so it drains first on SIGTERM and releases the long-polling requests.
    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                do {
                    try await cancelWhenGracefulShutdown {
                        try await self.adapter.run { message in self.deliverRemote(message) }
                    }
                } catch is CancellationError {
                } catch {
                    self.logger.error("The Socket.IO adapter stopped: \(error); broadcasts from other instances no longer arrive")
                }
            }
        }
        await shutdown()
    }

    /// Graceful shutdown: refuses new handshakes (503), closes every session at once so that clients
    /// reconnect (elsewhere, behind a load balancer; recoverable sessions are saved first), answers
    /// held long-polling requests, then waits for the handlers to finish, at most `drainTimeout`.
    public func shutdown() async {
        let connections = state.withLock { state -> [Connection] in
            state.draining = true
            state.drainGaveUp = false
            return Array(state.connections.values)
        }
        if !connections.isEmpty {
            logger.info("Draining \(connections.count) Socket.IO sessions (clients will reconnect)")
        }
        for connection in connections { connection.close(.serverShuttingDown) }
        let drained = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await self.waitForIdleWorkers()
                return true
            }
            group.addTask {
                try? await Task.sleep(for: self.configuration.drainTimeout)
                // Release the other child (its wait is not cancellable).
                self.releaseIdleWaiters()
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if !drained, state.withLock({ $0.workers > 0 }) {
            logger.warning("Socket.IO drain timeout (\(configuration.drainTimeout)) passed with handlers still running; stopping anyway")
        }
    }

    private func releaseIdleWaiters() {
        let waiters = state.withLock { state in
            state.drainGaveUp = true
            defer { state.idleWaiters.removeAll() }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func waitForIdleWorkers() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let idle = state.withLock { state -> Bool in
                if state.workers == 0 || state.drainGaveUp { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    func workerStarted() {
        state.withLock { $0.workers += 1 }
    }

    func workerFinished() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.workers -= 1
            guard state.workers == 0 else { return [] }
            defer { state.idleWaiters.removeAll() }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func connectionClosed(_ connection: Connection) {
        let removed = state.withLock { state -> Bool in
            guard let current = state.connections[connection.id], current === connection else { return false }
            state.connections.removeValue(forKey: connection.id)
            return true
        }
        if removed { metrics.sessions.decrement() }
    }

    private func deliverRemote(_ message: BroadcastMessage) {
        namespace(named: message.namespace)?.deliverLocally(message)
    }

    // MARK: Sessions

    enum Admission {
        case admitted
        case refused(String)
    }

    func register(_ connection: Connection) -> Admission {
        let admission = state.withLock { state -> Admission in
            if state.draining { return .refused("Server is shutting down") }
            if state.connections.count >= configuration.limits.maxSessions { return .refused("Too many sessions") }
            state.connections[connection.id] = connection
            return .admitted
        }
        if case .admitted = admission {
            metrics.sessions.increment()
            connection.start()
        }
        return admission
    }

    func connection(_ sid: String) -> Connection? {
        state.withLock { $0.connections[sid] }
    }

    /// Engine.IO session ids: 20 characters of URL-safe base64 from 15 random bytes, like the
    /// reference server's.
    static func generateID() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(15)
        for _ in 0..<15 { bytes.append(generator.next()) }
        var encoded: [UInt8] = []
        Base64.encode(bytes, into: &encoded)
        return String(
            decoding: encoded.map { $0 == UInt8(ascii: "+") ? UInt8(ascii: "-") : $0 == UInt8(ascii: "/") ? UInt8(ascii: "_") : $0 }, as: UTF8.self)
    }

    var openPacketJSON: (polling: String, websocket: String) {
        let common =
            #""pingInterval":\#(configuration.pingInterval.milliseconds),"pingTimeout":\#(configuration.pingTimeout.milliseconds),"maxPayload":\#(configuration.maxPayload)"#
        let upgrades = configuration.allowUpgrades && configuration.transports.contains(.websocket) ? #"["websocket"]"# : "[]"
        return (#""upgrades":\#(upgrades),\#(common)"#, #""upgrades":[],\#(common)"#)
    }

    func openPacket(sid: String, transport: EngineSession.Transport) -> EnginePacket {
        let rest = transport == .polling ? openPacketJSON.polling : openPacketJSON.websocket
        return EnginePacket(.open, #"{"sid":"\#(sid)",\#(rest)}"#)
    }
}

extension Duration {
    /// Whole milliseconds (sub-millisecond parts dropped).
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
