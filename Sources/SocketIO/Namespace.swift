import NIOCore
import Synchronization

/// A Socket.IO namespace (`/`, `/admin`): its connect hooks, its connection handler, and the sockets
/// of this instance with their rooms.
public final class Namespace: Sendable {
    public let name: String
    let server: SocketIOServer
    private let state: Mutex<State>

    /// Sockets and rooms. A socket's own id is a room only it is in, implicitly: nothing is stored for
    /// it, and a socket that joined no other room costs one dictionary entry.
    struct State {
        var hooks: [ConnectHook] = []
        var connectionHandler: (@Sendable (Socket) async -> Void)?
        var sockets: [String: Socket] = [:]
        /// socket id -> the rooms it joined (not its own id; no entry when none)
        var memberships: [String: Set<String>] = [:]
        /// room -> socket ids (socket-id rooms are not stored)
        var rooms: [String: Set<String>] = [:]
        /// Broadcasts captured while recovering clients look their session up.
        var captures: [Int: [BroadcastMessage]] = [:]
        var nextCapture = 0

        mutating func join(_ id: String, _ room: String) {
            guard room != id, sockets[id] != nil else { return }
            memberships[id, default: []].insert(room)
            rooms[room, default: []].insert(id)
        }

        mutating func leave(_ id: String, _ room: String) {
            guard memberships[id]?.remove(room) != nil else { return }
            if memberships[id]?.isEmpty == true { memberships.removeValue(forKey: id) }
            rooms[room]?.remove(id)
            if rooms[room]?.isEmpty == true { rooms.removeValue(forKey: room) }
        }

        /// The rooms of socket `id`, its own id included.
        func rooms(of id: String) -> Set<String> {
            guard sockets[id] != nil else { return [] }
            var rooms = memberships[id] ?? []
            rooms.insert(id)
            return rooms
        }

        /// Calls `body` with the id of every socket in `room` (a socket's id is a room of its own).
        func forEachMember(of room: String, _ body: (String) -> Void) {
            if let members = rooms[room] {
                for id in members { body(id) }
            }
            if sockets[room] != nil { body(room) }
        }
    }

    init(name: String, server: SocketIOServer) {
        self.name = name
        self.server = server
        self.state = Mutex(State())
    }

    // MARK: App API

    /// Adds a connect hook. Hooks run in order for every CONNECT; the first refusal wins.
    public func use(_ hook: @escaping ConnectHook) {
        state.withLock { $0.hooks.append(hook) }
    }

    /// Runs for each accepted socket, after the CONNECT reply: register the socket's handlers here.
    /// The client's events wait until it returns.
    public func onConnection(_ handler: @escaping @Sendable (Socket) async -> Void) {
        state.withLock { $0.connectionHandler = handler }
    }

    /// Broadcasts to every socket of the namespace, on every instance.
    public func emit(_ event: String, _ arguments: JSONValue..., offset: String? = nil) async throws {
        try await BroadcastOperator(namespace: self).emit(event, arguments: arguments, offset: offset)
    }

    public func emit(_ event: String, arguments: [JSONValue], offset: String? = nil) async throws {
        try await BroadcastOperator(namespace: self).emit(event, arguments: arguments, offset: offset)
    }

    /// The sockets in `room`.
    public func to(_ room: String) -> BroadcastOperator { BroadcastOperator(namespace: self).to(room) }

    /// Every socket but those in `room`.
    public func except(_ room: String) -> BroadcastOperator { BroadcastOperator(namespace: self).except(room) }

    /// This instance's sockets only (not sent through the adapter).
    public var local: BroadcastOperator { BroadcastOperator(namespace: self).local }

    /// Sockets connected to this namespace on this instance.
    public var socketCount: Int { state.withLock { $0.sockets.count } }

    /// This instance's sockets (in `room` when given).
    public func sockets(in room: String? = nil) -> [Socket] {
        state.withLock { state in
            guard let room else { return Array(state.sockets.values) }
            var found: [Socket] = []
            state.forEachMember(of: room) { id in
                if let socket = state.sockets[id] { found.append(socket) }
            }
            return found
        }
    }

    // MARK: Internals

    var hooks: [ConnectHook] { state.withLock { $0.hooks } }
    var connectionHandler: (@Sendable (Socket) async -> Void)? { state.withLock { $0.connectionHandler } }

    func rooms(of id: String) -> Set<String> {
        state.withLock { $0.rooms(of: id) }
    }

    func startCapture() -> Int {
        state.withLock { state in
            let key = state.nextCapture
            state.nextCapture += 1
            state.captures[key] = []
            return key
        }
    }

    func endCapture(_ key: Int) {
        state.withLock { _ = $0.captures.removeValue(forKey: key) }
    }

    /// Registers a socket in its rooms and, under the same lock, ends its capture and runs `then`
    /// with what was captured and the socket's rooms (the CONNECT reply and the replay go out there).
    func add(_ socket: Socket, rooms: [String], capture: Int?, then: ([BroadcastMessage], Set<String>) -> Void) {
        state.withLock { state in
            state.sockets[socket.id] = socket
            for room in rooms { state.join(socket.id, room) }
            let captured = capture.flatMap { state.captures.removeValue(forKey: $0) } ?? []
            then(captured, state.rooms(of: socket.id))
        }
    }

    /// Removes a socket from the namespace; returns the rooms it was in (its own id included).
    func remove(_ socket: Socket) -> [String] {
        state.withLock { state in
            guard let current = state.sockets[socket.id], current === socket else { return [] }
            state.sockets.removeValue(forKey: socket.id)
            let rooms = state.memberships.removeValue(forKey: socket.id) ?? []
            for room in rooms {
                state.rooms[room]?.remove(socket.id)
                if state.rooms[room]?.isEmpty == true { state.rooms.removeValue(forKey: room) }
            }
            return [socket.id] + rooms
        }
    }

    func join(socketID: String, rooms: [String]) {
        state.withLock { state in
            for room in rooms { state.join(socketID, room) }
        }
    }

    func leave(socketID: String, room: String) {
        state.withLock { $0.leave(socketID, room) }
    }

    /// Sends a broadcast to this instance's sockets it reaches.
    func deliverLocally(_ message: BroadcastMessage) {
        let packets = SocketCodec.encode(SocketPacket(.event, namespace: name, data: message.packetData))
        let targets = state.withLock { state -> [Connection] in
            for key in state.captures.keys { state.captures[key]?.append(message) }
            var excluded = Set<String>()
            for room in message.except { state.forEachMember(of: room) { excluded.insert($0) } }
            var connections: [Connection] = []
            if message.rooms.isEmpty {
                connections.reserveCapacity(state.sockets.count)
                for (id, socket) in state.sockets where !excluded.contains(id) { connections.append(socket.connection) }
            } else if message.rooms.count == 1, let room = message.rooms.first {
                state.forEachMember(of: room) { id in
                    if !excluded.contains(id), let socket = state.sockets[id] { connections.append(socket.connection) }
                }
            } else {
                var ids = Set<String>()
                for room in message.rooms { state.forEachMember(of: room) { ids.insert($0) } }
                for id in ids where !excluded.contains(id) {
                    if let socket = state.sockets[id] { connections.append(socket.connection) }
                }
            }
            return connections
        }
        server.metrics.messagesSent.increment(by: targets.count)
        var batch: [WebSocketOutbox.Target] = []
        batch.reserveCapacity(targets.count)
        for connection in targets {
            if let target = connection.sendOrBatch(packets) { batch.append(target) }
        }
        Connection.writeBatched(packets, to: batch)
    }
}

/// Chooses who receives a broadcast: `to` rooms (everyone when none), `except` rooms (a socket id is
/// a room), `local` (this instance only). Value type: each call returns a new operator.
public struct BroadcastOperator: Sendable {
    let namespace: Namespace
    var rooms: Set<String> = []
    var exceptRooms: Set<String> = []
    var isLocal = false

    init(namespace: Namespace) {
        self.namespace = namespace
    }

    public func to(_ room: String) -> BroadcastOperator {
        var copy = self
        copy.rooms.insert(room)
        return copy
    }

    public func to(_ rooms: [String]) -> BroadcastOperator {
        var copy = self
        copy.rooms.formUnion(rooms)
        return copy
    }

    public func except(_ room: String) -> BroadcastOperator {
        var copy = self
        copy.exceptRooms.insert(room)
        return copy
    }

    public var local: BroadcastOperator {
        var copy = self
        copy.isLocal = true
        return copy
    }

    /// Sends the event. With connection state recovery, `offset` is appended as the last argument
    /// (the app's own log position, e.g. a Redis stream id); without one, the recovery store is asked
    /// for it. Delivery to this instance's sockets happens before this returns; the adapter then
    /// carries it to the other instances (an adapter failure is thrown after the local delivery).
    public func emit(_ event: String, _ arguments: JSONValue..., offset: String? = nil) async throws {
        try await emit(event, arguments: arguments, offset: offset)
    }

    public func emit(_ event: String, arguments: [JSONValue], offset: String? = nil) async throws {
        guard !reservedEventNames.contains(event) else { throw SocketIOError.reservedEventName(event) }
        let server = namespace.server
        var message = BroadcastMessage(
            namespace: namespace.name, rooms: rooms, except: exceptRooms, event: event, arguments: arguments, offset: offset)
        if offset == nil, server.configuration.recovery != nil, let store = server.recoveryStore {
            message.offset = try await store.record(message)
        }
        namespace.deliverLocally(message)
        if !isLocal {
            try await server.adapter.publish(message)
        }
    }
}
