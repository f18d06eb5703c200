/// A broadcast: an event for every socket of a namespace in `rooms` (all sockets when empty) except
/// those in `except` (a socket id is a room too). This is what travels between instances.
public struct BroadcastMessage: Sendable, Hashable {
    public var namespace: String
    public var rooms: Set<String>
    public var except: Set<String>
    public var event: String
    public var arguments: [JSONValue]
    /// The recovery offset appended as the last argument (connection state recovery), if any.
    public var offset: String?

    public init(
        namespace: String, rooms: Set<String> = [], except: Set<String> = [], event: String, arguments: [JSONValue], offset: String? = nil
    ) {
        self.namespace = namespace
        self.rooms = rooms
        self.except = except
        self.event = event
        self.arguments = arguments
        self.offset = offset
    }

    /// Whether a socket in `socketRooms` (its own id included) receives this broadcast.
    public func reaches(socketRooms: Set<String>) -> Bool {
        if !rooms.isEmpty, rooms.isDisjoint(with: socketRooms) { return false }
        return except.isDisjoint(with: socketRooms)
    }

    /// The EVENT packet's array: name, arguments, then the offset when there is one.
    var packetData: JSONValue {
        var elements: [JSONValue] = [.string(event)]
        elements.reserveCapacity(arguments.count + 2)
        elements.append(contentsOf: arguments)
        if let offset { elements.append(.string(offset)) }
        return .array(elements)
    }
}

/// Carries broadcasts between the instances of an app. Each server delivers a broadcast to its own
/// sockets itself, then hands it to its adapter for the others; the adapter hands the other
/// instances' broadcasts to `deliver`. Rooms live in each server's memory: only broadcasts travel.
public protocol SocketIOAdapter: Sendable {
    /// Receives the other instances' broadcasts until cancelled; `SocketIOServer.run()` calls it.
    func run(deliver: @escaping @Sendable (BroadcastMessage) -> Void) async throws
    /// Sends a broadcast to the other instances.
    func publish(_ message: BroadcastMessage) async throws
}

/// One instance only: nothing to carry. The default adapter.
public struct LocalAdapter: SocketIOAdapter {
    public init() {}

    public func run(deliver: @escaping @Sendable (BroadcastMessage) -> Void) async throws {
        // Nothing arrives from elsewhere: wait for cancellation.
        let (never, continuation) = AsyncStream<Never>.makeStream()
        for await _ in never {}
        continuation.finish()
    }

    public func publish(_ message: BroadcastMessage) async throws {}
}
