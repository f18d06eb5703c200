import NIOCore
import RedisClient

/// The chat's history and fan-out in Redis: a capped Stream (one global order) and a pub/sub channel.
/// `append` runs one Lua script that deduplicates the client's message id, XADDs the line and
/// PUBLISHes it with its stream id and the id of the entry before it, atomically, so every instance
/// sees the same order and can tell when the subscription missed a line.
public struct ChatLog: Sendable {
    public let redis: RedisClient
    public let keys: ChatKeys
    public let historyLimit: Int
    /// How long a client's message id is remembered for deduplication, in seconds.
    public let dedupeSeconds: Int

    public init(redis: RedisClient, keys: ChatKeys, historyLimit: Int, dedupeSeconds: Int = 86_400) {
        self.redis = redis
        self.keys = keys
        self.historyLimit = historyLimit
        self.dedupeSeconds = dedupeSeconds
    }

    /// The result of an append: the entry's stream id, and whether it was stored now (false: the same
    /// client id was stored before; the id is the earlier entry's).
    public struct Appended: Sendable, Hashable {
        public var id: StreamID
        public var isNew: Bool
    }

    /// Stores and publishes one line. With a `dedupeKey` (user + client id), a second append of the
    /// same key stores nothing and answers the first entry's id.
    public func append(_ line: ChatLine, dedupeKey: String?) async throws -> Appended {
        var keyList = [keys.history]
        if let dedupeKey { keyList.append(keys.dedupe(dedupeKey)) }
        let reply = try await redis.evalScript(
            Self.appendScript,
            keys: keyList,
            arguments: [RESPArgument(keys.channel), RESPArgument(historyLimit), RESPArgument(line.json()), RESPArgument(dedupeSeconds)]
        )
        guard let parts = reply.array, parts.count == 2, let flag = parts[0].int, let text = parts[1].string, let id = StreamID(text) else {
            throw RedisError.unexpectedReply(command: "chat append script", reply: reply.description)
        }
        return Appended(id: id, isNew: flag == 1)
    }

    /// Entries strictly after `offset`, oldest first, at most `limit`.
    public func entries(after offset: StreamID, limit: Int) async throws -> [StoredLine] {
        try await redis.xrange(keys.history, from: "(\(offset)", to: "+", count: limit).compactMap(StoredLine.init(entry:))
    }

    /// The last `count` entries, oldest first.
    public func recent(_ count: Int) async throws -> [StoredLine] {
        guard count > 0 else { return [] }
        return try await redis.xrevrange(keys.history, from: "+", to: "-", count: count).reversed().compactMap(StoredLine.init(entry:))
    }

    /// The id of the stream's newest entry; nil when the stream is empty or does not exist.
    public func newestID() async throws -> StreamID? {
        try await redis.xrevrange(keys.history, from: "+", to: "-", count: 1).first.flatMap { StreamID($0.id) }
    }

    /// Whether the entry `offset` is still in the stream. The stream only loses its oldest entries, so
    /// when it holds `offset`, it holds everything after it: a client at `offset` can be caught up.
    public func contains(_ offset: StreamID) async throws -> Bool {
        try await !redis.xrange(keys.history, from: offset.description, to: offset.description, count: 1).isEmpty
    }

    /// Parses a message published by the script: `<stream id> <previous entry's id> <line JSON>`.
    public static func parsePublished(_ payload: ByteBuffer) -> PublishedLine? {
        let view = payload.readableBytesView
        guard let first = view.firstIndex(of: UInt8(ascii: " ")) else { return nil }
        let rest = view[view.index(after: first)...]
        guard let second = rest.firstIndex(of: UInt8(ascii: " ")),
            let id = StreamID(String(decoding: view[view.startIndex..<first], as: UTF8.self)),
            let previous = StreamID(String(decoding: rest[rest.startIndex..<second], as: UTF8.self))
        else { return nil }
        let line = StoredLine(id: id, json: String(decoding: rest[rest.index(after: second)...], as: UTF8.self))
        return PublishedLine(line: line, previous: previous)
    }

    /// KEYS[1] history stream, KEYS[2] (optional) dedupe key; ARGV[1] channel, ARGV[2] history cap,
    /// ARGV[3] the line's JSON, ARGV[4] dedupe TTL in seconds. Returns {1 or 0 (duplicate), stream id}.
    /// Publishes `<id> <previous id> <json>`; the previous id is the stream's newest entry before this
    /// one (`0-0` for the first), so the published lines form a chain a subscriber can check.
    public static let appendScript = RedisScript(
        """
        if KEYS[2] then
          local seen = redis.call('GET', KEYS[2])
          if seen then return {0, seen} end
        end
        local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
        local previous = '0-0'
        if newest[1] then previous = newest[1][1] end
        local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[3])
        if KEYS[2] then redis.call('SET', KEYS[2], id, 'EX', ARGV[4]) end
        redis.call('PUBLISH', ARGV[1], id .. ' ' .. previous .. ' ' .. ARGV[3])
        return {1, id}
        """
    )
}

/// A line as the subscription receives it: the line, and the id of the stream entry stored just
/// before it (`0-0` for the first). A subscriber that has not delivered `previous` missed a line.
public struct PublishedLine: Sendable, Hashable {
    public var line: StoredLine
    public var previous: StreamID
}

/// A line with its place in the history.
public struct StoredLine: Sendable, Hashable {
    public var id: StreamID
    /// The line's JSON text, exactly as stored (sent to clients without re-encoding).
    public var json: String

    public init(id: StreamID, json: String) {
        self.id = id
        self.json = json
    }

    init?(entry: RedisStreamEntry) {
        guard let id = StreamID(entry.id), let value = entry["m"] else { return nil }
        self.init(id: id, json: String(buffer: value))
    }
}

/// Every Redis key and channel chat-node uses besides the sessions, under one prefix.
public struct ChatKeys: Sendable, Hashable {
    public var prefix: String

    public init(prefix: String = "chat:") {
        self.prefix = prefix
    }

    public var history: String { prefix + "history" }
    public var channel: String { prefix + "messages" }
    /// Session ids that logged out, for every instance to drop their chat connections.
    public var logouts: String { prefix + "logouts" }
    public func dedupe(_ key: String) -> String { prefix + "dedupe:" + key }
    public var instances: String { prefix + "instances" }
    public var presencePrefix: String { prefix + "presence:" }
    public func presence(_ instance: String) -> String { presencePrefix + instance }
    public func recoverable(_ pid: String) -> String { prefix + "sio:" + pid }
    public var sessionSecret: String { prefix + "session-secret" }
}
