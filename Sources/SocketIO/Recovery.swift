import Synchronization

/// A disconnected socket's state, kept so the client can recover it (connection state recovery).
public struct SessionSnapshot: Sendable, Hashable {
    /// The socket id the client had (restored as is).
    public var sid: String
    /// The private session id the client presents to recover (`pid` in the CONNECT reply).
    public var pid: String
    public var namespace: String
    /// Rooms the socket was in, its own id included.
    public var rooms: [String]
    /// The socket's app data.
    public var data: JSONValue
    /// The offset of the last broadcast sent to this socket, if any (informative: the client tells
    /// which offset it last received when it comes back).
    public var lastOffset: String?

    public init(sid: String, pid: String, namespace: String, rooms: [String], data: JSONValue, lastOffset: String? = nil) {
        self.sid = sid
        self.pid = pid
        self.namespace = namespace
        self.rooms = rooms
        self.data = data
        self.lastOffset = lastOffset
    }

    /// The snapshot as JSON text (binary data preserved as base64), for stores that keep strings.
    public var jsonText: String {
        var object = JSONObject()
        object["sid"] = .string(sid)
        object["pid"] = .string(pid)
        object["nsp"] = .string(namespace)
        object["rooms"] = .array(rooms.map { .string($0) })
        object["data"] = data
        if let lastOffset { object["offset"] = .string(lastOffset) }
        return JSONValue.object(object).jsonText
    }

    /// Reads what `jsonText` wrote; nil for anything else.
    public init?(jsonText: String) {
        guard let value = try? JSONValue(parsing: jsonText, preservingBinary: true), let sid = value["sid"]?.stringValue,
            let pid = value["pid"]?.stringValue, let namespace = value["nsp"]?.stringValue, let rooms = value["rooms"]?.arrayValue
        else { return nil }
        self.init(
            sid: sid, pid: pid, namespace: namespace, rooms: rooms.compactMap(\.stringValue), data: value["data"] ?? .null,
            lastOffset: value["offset"]?.stringValue)
    }
}

/// A broadcast the client missed while disconnected, to replay.
public struct MissedPacket: Sendable, Hashable {
    public var event: String
    public var arguments: [JSONValue]
    public var offset: String

    public init(event: String, arguments: [JSONValue], offset: String) {
        self.event = event
        self.arguments = arguments
        self.offset = offset
    }
}

/// What a store found for a recovering client.
public struct RestoredSession: Sendable, Hashable {
    public var session: SessionSnapshot
    /// Broadcasts after the client's offset that reach the session's rooms, oldest first.
    public var missedPackets: [MissedPacket]

    public init(session: SessionSnapshot, missedPackets: [MissedPacket]) {
        self.session = session
        self.missedPackets = missedPackets
    }
}

/// Where disconnected sessions and the broadcasts they may miss are kept. Back it with shared storage
/// (Redis) and a client recovers on any instance.
public protocol RecoveryStore: Sendable {
    /// Keeps a disconnected socket's session for `ttl` (the configuration's maxDisconnectionDuration).
    func save(_ session: SessionSnapshot, ttl: Duration) async throws
    /// The session saved under `pid` with the broadcasts after `offset`, and forgets the session.
    /// nil when the session expired or the offset is unknown: the client then connects afresh.
    func restore(pid: String, offset: String) async throws -> RestoredSession?
    /// Called for each broadcast EVENT the app sends without an explicit offset (when recovery is on).
    /// Returns the offset to append, or nil to send it without one (it will not be replayed). A store
    /// whose app supplies offsets itself (from its own log) returns nil.
    func record(_ broadcast: BroadcastMessage) async throws -> String?
}

/// Decides, from what is known of the broadcasts since a client's offset, what to replay: a value
/// with pure methods (the in-memory store uses it; other stores may too).
public struct RecoveryLog: Sendable {
    public struct Entry: Sendable, Hashable {
        public var offset: String
        public var message: BroadcastMessage
        public var recordedAt: Duration
    }

    public private(set) var entries: [Entry] = []
    private var nextOffset: UInt64 = 0
    private var sessions: [String: (snapshot: SessionSnapshot, expiresAt: Duration)] = [:]
    public let retention: Duration

    public init(retention: Duration) {
        self.retention = retention
    }

    /// Appends a broadcast; returns its offset. `now` is any monotonic time.
    public mutating func append(_ message: BroadcastMessage, now: Duration) -> String {
        prune(now: now)
        nextOffset += 1
        let offset = String(nextOffset, radix: 36)
        var stored = message
        stored.offset = offset
        entries.append(Entry(offset: offset, message: stored, recordedAt: now))
        return offset
    }

    public mutating func save(_ snapshot: SessionSnapshot, ttl: Duration, now: Duration) {
        prune(now: now)
        sessions[snapshot.pid] = (snapshot, now + ttl)
    }

    /// The session and what it missed after `offset`; the session is forgotten either way once found.
    public mutating func restore(pid: String, offset: String, now: Duration) -> RestoredSession? {
        prune(now: now)
        guard let saved = sessions.removeValue(forKey: pid), saved.expiresAt > now else { return nil }
        guard let position = entries.firstIndex(where: { $0.offset == offset }) else { return nil }
        let rooms = Set(saved.snapshot.rooms)
        let missed = entries[(position + 1)...].compactMap { entry -> MissedPacket? in
            guard entry.message.namespace == saved.snapshot.namespace, entry.message.reaches(socketRooms: rooms) else { return nil }
            return MissedPacket(event: entry.message.event, arguments: entry.message.arguments, offset: entry.offset)
        }
        return RestoredSession(session: saved.snapshot, missedPackets: missed)
    }

    /// Sessions waiting to be recovered.
    public var savedSessions: Int { sessions.count }

    mutating func prune(now: Duration) {
        let oldest = now - retention
        if let keep = entries.firstIndex(where: { $0.recordedAt >= oldest }) {
            if keep > 0 { entries.removeFirst(keep) }
        } else {
            entries.removeAll()
        }
        if sessions.count > 0 {
            sessions = sessions.filter { $0.value.expiresAt > now }
        }
    }
}

/// Recovery for a single instance: sessions and broadcasts in memory, offsets generated here.
public final class InMemoryRecoveryStore: RecoveryStore {
    private let log: Mutex<RecoveryLog>
    private let clock = ContinuousClock()
    private let start: ContinuousClock.Instant

    /// `retention`: how long broadcasts are kept for replay (use maxDisconnectionDuration).
    public init(retention: Duration = .seconds(120)) {
        self.log = Mutex(RecoveryLog(retention: retention))
        self.start = clock.now
    }

    private var now: Duration { clock.now - start }

    /// Sessions waiting to be recovered (expired ones included until the next write).
    public var savedSessions: Int { log.withLock { $0.savedSessions } }

    public func save(_ session: SessionSnapshot, ttl: Duration) async throws {
        let now = self.now
        log.withLock { $0.save(session, ttl: ttl, now: now) }
    }

    public func restore(pid: String, offset: String) async throws -> RestoredSession? {
        let now = self.now
        return log.withLock { $0.restore(pid: pid, offset: offset, now: now) }
    }

    public func record(_ broadcast: BroadcastMessage) async throws -> String? {
        let now = self.now
        return log.withLock { $0.append(broadcast, now: now) }
    }
}
