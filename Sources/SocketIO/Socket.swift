import NIOCore
import Synchronization

/// Errors the app sees from the Socket.IO API.
public enum SocketIOError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The client did not acknowledge within the timeout.
    case ackTimeout(event: String, timeout: Duration)
    /// The socket disconnected before the acknowledgement arrived (or was already disconnected).
    case disconnected(socket: String)
    /// The event name is reserved by the protocol (`connect`, `disconnect`, ...).
    case reservedEventName(String)

    public var description: String {
        switch self {
        case .ackTimeout(let event, let timeout): return "the client did not acknowledge '\(event)' within \(timeout)"
        case .disconnected(let socket): return "socket \(socket) disconnected before acknowledging"
        case .reservedEventName(let name): return "'\(name)' is a reserved event name and cannot be emitted"
        }
    }
}

/// Sends the acknowledgement a client asked for with its event. Only the first call sends.
public struct Ack: Sendable {
    let socket: Socket
    let id: Int
    let sent: SentFlag

    final class SentFlag: Sendable {
        let value = Atomic<Bool>(false)
    }

    init(socket: Socket, id: Int) {
        self.socket = socket
        self.id = id
        self.sent = SentFlag()
    }

    /// Acknowledges with these arguments (binary values included).
    public func callAsFunction(_ arguments: JSONValue...) {
        send(arguments)
    }

    public func send(_ arguments: [JSONValue]) {
        guard sent.value.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        socket.connection.sendPacket(SocketPacket(.ack, namespace: socket.namespace.name, id: id, data: .array(arguments)))
    }
}

/// A client's connection to one namespace. Register handlers in the namespace's `onConnection`.
public final class Socket: Sendable {
    /// The socket id (not the Engine.IO session id); also a room only this socket is in.
    public let id: String
    /// The private id a client presents to recover this socket (nil without connection state recovery).
    public let pid: String?
    public let namespace: Namespace
    /// Whether this socket recovered a previous one (same id, rooms and data; missed packets replayed).
    public let recovered: Bool
    /// The CONNECT packet's auth payload (`{}` when the client sent none).
    public let auth: JSONValue
    let connection: Connection
    private let state: Mutex<State>

    struct State {
        /// Event handlers by name (a few per socket: an array costs less memory than a dictionary).
        var handlers: [(event: String, handler: EventHandler)] = []
        var anyHandler: (@Sendable (String, [JSONValue], Ack?) async -> Void)?
        var disconnectHandlers: [@Sendable (String) async -> Void] = []
        var data: JSONValue
        var connected = true
        var acks: [Int: (continuation: CheckedContinuation<[JSONValue], any Error>, timer: Scheduled<Void>?)] = [:]
        /// Ack ids start at 1, as the protocol test suite expects.
        var nextAckID = 1
    }

    init(id: String, pid: String?, namespace: Namespace, connection: Connection, auth: JSONValue, data: JSONValue, recovered: Bool) {
        self.id = id
        self.auth = auth.isNull ? .object([:]) : auth
        self.pid = pid
        self.namespace = namespace
        self.connection = connection
        self.recovered = recovered
        self.state = Mutex(State(data: data))
    }

    /// The Engine.IO handshake's HTTP request (headers, cookies, query, remote address).
    public var handshake: Handshake { connection.handshake }

    /// The Engine.IO session id (shared by the client's sockets in every namespace).
    public var sessionID: String { connection.id }

    /// App data: what the connect hooks accepted with, restored on recovery, saved for it.
    public var data: JSONValue {
        get { state.withLock { $0.data } }
        set { state.withLock { $0.data = newValue } }
    }

    public var connected: Bool { state.withLock { $0.connected } }

    /// Rooms this socket is in (its own id included).
    public var rooms: Set<String> { namespace.rooms(of: id) }

    // MARK: Handlers

    /// Handles `event` from the client. Handlers of one client run one at a time, in arrival order.
    public func on(_ event: String, _ handler: @escaping EventHandler) {
        state.withLock { state in
            if let index = state.handlers.firstIndex(where: { $0.event == event }) {
                state.handlers[index].handler = handler
            } else {
                state.handlers.append((event, handler))
            }
        }
    }

    /// Handles every event that has no handler of its own.
    public func onAny(_ handler: @escaping @Sendable (_ event: String, _ arguments: [JSONValue], _ ack: Ack?) async -> Void) {
        state.withLock { $0.anyHandler = handler }
    }

    /// Runs when the socket disconnects, with the reason (`transport close`, `ping timeout`,
    /// `client namespace disconnect`, `server namespace disconnect`, `server shutting down`, ...).
    public func onDisconnect(_ handler: @escaping @Sendable (_ reason: String) async -> Void) {
        state.withLock { $0.disconnectHandlers.append(handler) }
    }

    func dispatch(event: String, arguments: [JSONValue], ackID: Int?) async {
        let (handler, anyHandler) = state.withLock { state in
            (state.handlers.first(where: { $0.event == event })?.handler, state.anyHandler)
        }
        let ack = ackID.map { Ack(socket: self, id: $0) }
        if let handler {
            await handler(arguments, ack)
        } else if let anyHandler {
            await anyHandler(event, arguments, ack)
        }
    }

    func runDisconnectHandlers(reason: String) async {
        let handlers = state.withLock { state -> [@Sendable (String) async -> Void] in
            defer {
                // Drop the handlers: they usually capture this socket.
                state.handlers.removeAll()
                state.anyHandler = nil
                state.disconnectHandlers.removeAll()
            }
            return state.disconnectHandlers
        }
        for handler in handlers { await handler(reason) }
    }

    func markDisconnected() {
        let acks = state.withLock { state -> [(continuation: CheckedContinuation<[JSONValue], any Error>, timer: Scheduled<Void>?)] in
            state.connected = false
            defer { state.acks.removeAll() }
            return Array(state.acks.values)
        }
        for ack in acks {
            ack.timer?.cancel()
            ack.continuation.resume(throwing: SocketIOError.disconnected(socket: id))
        }
    }

    // MARK: Emitting

    /// Sends an event to this client.
    public func emit(_ event: String, _ arguments: JSONValue...) {
        emit(event, arguments: arguments)
    }

    public func emit(_ event: String, arguments: [JSONValue]) {
        guard !reservedEventNames.contains(event), connected else { return }
        connection.sendPacket(eventPacket(event, arguments))
    }

    /// The EVENT packet `[event, ...arguments]` in this socket's namespace.
    private func eventPacket(_ event: String, _ arguments: [JSONValue], ackID: Int? = nil) -> SocketPacket {
        SocketPacket(.event, namespace: namespace.name, id: ackID, data: .array([.string(event)] + arguments))
    }

    /// Sends several events at once, in order: one write. Meant for a replay (the lines a
    /// reconnecting client missed): the batch may take the client's queue past
    /// `maxOutboundBufferBytes` without the client being closed as slow, as long as it was within the
    /// limit before; what follows is judged as usual.
    public func emit(batch events: [(event: String, arguments: [JSONValue])]) {
        let events = events.filter { !reservedEventNames.contains($0.event) }
        guard connected, !events.isEmpty else { return }
        let packets = events.flatMap { SocketCodec.encode(eventPacket($0.event, $0.arguments)) }
        connection.server.metrics.messagesSent.increment(by: events.count)
        connection.send(packets, burst: true)
    }

    /// Sends an event and waits for the client's acknowledgement (its arguments).
    public func emitWithAck(_ event: String, _ arguments: JSONValue..., timeout: Duration) async throws -> [JSONValue] {
        try await emitWithAck(event, arguments: arguments, timeout: timeout)
    }

    public func emitWithAck(_ event: String, arguments: [JSONValue], timeout: Duration) async throws -> [JSONValue] {
        guard !reservedEventNames.contains(event) else { throw SocketIOError.reservedEventName(event) }
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[JSONValue], any Error>) in
            let id = state.withLock { state -> Int? in
                guard state.connected else { return nil }
                let id = state.nextAckID
                state.nextAckID += 1
                state.acks[id] = (continuation, nil)
                return id
            }
            guard let id else {
                continuation.resume(throwing: SocketIOError.disconnected(socket: self.id))
                return
            }
            let timer = connection.eventLoop.scheduleTask(in: TimeAmount(timeout)) { [self] in
                let pending = state.withLock { $0.acks.removeValue(forKey: id) }
                pending?.continuation.resume(throwing: SocketIOError.ackTimeout(event: event, timeout: timeout))
            }
            state.withLock { state in
                if state.acks[id] != nil { state.acks[id]?.timer = timer }
            }
            connection.sendPacket(eventPacket(event, arguments, ackID: id))
        }
    }

    func resolveAck(id: Int, arguments: [JSONValue]) {
        guard let pending = state.withLock({ $0.acks.removeValue(forKey: id) }) else { return }
        pending.timer?.cancel()
        pending.continuation.resume(returning: arguments)
    }

    // MARK: Rooms and broadcasts

    public func join(_ room: String) {
        namespace.join(socketID: id, rooms: [room])
    }

    public func join(_ rooms: [String]) {
        namespace.join(socketID: id, rooms: rooms)
    }

    public func leave(_ room: String) {
        namespace.leave(socketID: id, room: room)
    }

    /// Every socket of the namespace but this one.
    public var broadcast: BroadcastOperator { BroadcastOperator(namespace: namespace).except(id) }

    /// The sockets in `room` but this one.
    public func to(_ room: String) -> BroadcastOperator { broadcast.to(room) }

    /// Leaves the namespace (the client gets DISCONNECT and does not reconnect by itself). With
    /// `close`, the whole connection closes too.
    public func disconnect(close: Bool = false) {
        connection.socketDisconnected(self, close: close)
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
