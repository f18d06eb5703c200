import Foundation
import NIOCore
import RedisClient
import Synchronization

/// One session as express-session stores it in Redis through connect-redis: key `sess:<sid>`, a JSON
/// value with the cookie's options and the app's fields (here `user`), a TTL.
public struct SessionRecord: Sendable, Hashable, Codable {
    public struct CookieOptions: Sendable, Hashable, Codable {
        /// null: a browser-session cookie (no Expires), as the original app used.
        public var originalMaxAge: Int?
        public var expires: String?
        public var secure: Bool?
        public var httpOnly: Bool
        public var path: String
        public var sameSite: String?

        public init(secure: Bool) {
            originalMaxAge = nil
            expires = nil
            self.secure = secure ? true : nil
            httpOnly = true
            path = "/"
            sameSite = "lax"
        }

        enum CodingKeys: String, CodingKey { case originalMaxAge, expires, secure, httpOnly, path, sameSite }

        /// Writes `originalMaxAge` and `expires` as explicit nulls, as express-session does.
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(originalMaxAge, forKey: .originalMaxAge)
            try container.encode(expires, forKey: .expires)
            try container.encodeIfPresent(secure, forKey: .secure)
            try container.encode(httpOnly, forKey: .httpOnly)
            try container.encode(path, forKey: .path)
            try container.encodeIfPresent(sameSite, forKey: .sameSite)
        }
    }

    public var cookie: CookieOptions
    public var user: String?

    public init(user: String?, secure: Bool = false) {
        self.cookie = CookieOptions(secure: secure)
        self.user = user
    }

    /// Decodes a stored value; nil when it is not a session (another app's key, corrupted JSON).
    public static func decode(_ bytes: some Collection<UInt8>) -> SessionRecord? {
        try? JSONDecoder().decode(SessionRecord.self, from: Data(bytes))
    }

    public func encoded() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

/// Where sessions live. `redis` (the default) is express-session's Redis store (connect-redis layout),
/// shared by every instance; `memory` keeps them in this instance's memory, the original sample's
/// mistake, on purpose: a user whose instance dies, or whose request reaches another instance, is
/// logged out (a teaching scenario, `SESSION_STORE=memory`).
public struct SessionStore: Sendable {
    public enum Storage: Sendable {
        case redis(RedisClient)
        case memory(InMemorySessions)
    }

    public let storage: Storage
    public let prefix: String
    public let ttl: Duration

    public init(redis: RedisClient, prefix: String = "sess:", ttl: Duration = .seconds(86_400)) {
        self.storage = .redis(redis)
        self.prefix = prefix
        self.ttl = ttl
    }

    public init(memory: InMemorySessions, ttl: Duration = .seconds(86_400)) {
        self.storage = .memory(memory)
        self.prefix = "sess:"
        self.ttl = ttl
    }

    public func key(_ sid: String) -> String { prefix + sid }

    /// The ids among `sids` that have no session (any more): one round trip to Redis for all of them.
    public func missing(_ sids: [String]) async throws -> [String] {
        switch storage {
        case .redis(let redis):
            let replies = try await redis.pipeline(sids.map { ["EXISTS", RESPArgument(key($0))] })
            return zip(sids, replies).compactMap { sid, reply in reply == .integer(0) ? sid : nil }
        case .memory(let sessions):
            return sids.filter { sessions.load($0, now: .now) == nil }
        }
    }

    /// The session, or nil when there is none (expired, destroyed, never existed, not a session).
    public func load(_ sid: String) async throws -> SessionRecord? {
        switch storage {
        case .redis(let redis):
            guard let value = try await redis.get(key(sid)) else { return nil }
            return SessionRecord.decode(value.readableBytesView)
        case .memory(let sessions):
            return sessions.load(sid, now: .now)
        }
    }

    public func save(_ sid: String, _ record: SessionRecord) async throws {
        switch storage {
        case .redis(let redis):
            try await redis.set(key(sid), to: RESPArgument(record.encoded()), expiration: .seconds(Int(ttl.components.seconds)))
        case .memory(let sessions):
            let now = ContinuousClock.now
            sessions.save(sid, record, until: now + ttl, now: now)
        }
    }

    /// Extends the session's life (a page load); false when it no longer exists.
    @discardableResult
    public func touch(_ sid: String) async throws -> Bool {
        switch storage {
        case .redis(let redis):
            return try await redis.expire(key(sid), seconds: Int(ttl.components.seconds))
        case .memory(let sessions):
            let now = ContinuousClock.now
            return sessions.touch(sid, until: now + ttl, now: now)
        }
    }

    public func destroy(_ sid: String) async throws {
        switch storage {
        case .redis(let redis):
            try await redis.del(key(sid))
        case .memory(let sessions):
            sessions.destroy(sid)
        }
    }
}

/// Sessions in one process's memory, each with its expiry (expired ones are dropped when met, and
/// in passing when the map grows).
public final class InMemorySessions: Sendable {
    private struct Entry {
        var record: SessionRecord
        var expires: ContinuousClock.Instant
    }

    private let entries = Mutex<[String: Entry]>([:])

    public init() {}

    public var count: Int { entries.withLock { $0.count } }

    public func load(_ sid: String, now: ContinuousClock.Instant) -> SessionRecord? {
        entries.withLock { entries in
            guard let entry = entries[sid] else { return nil }
            guard entry.expires > now else {
                entries[sid] = nil
                return nil
            }
            return entry.record
        }
    }

    public func save(_ sid: String, _ record: SessionRecord, until expires: ContinuousClock.Instant, now: ContinuousClock.Instant) {
        entries.withLock { entries in
            if entries.count >= 1_024, entries.count.isMultiple(of: 1_024) {
                entries = entries.filter { $0.value.expires > now }
            }
            entries[sid] = Entry(record: record, expires: expires)
        }
    }

    public func touch(_ sid: String, until expires: ContinuousClock.Instant, now: ContinuousClock.Instant) -> Bool {
        entries.withLock { entries in
            guard let entry = entries[sid], entry.expires > now else {
                entries[sid] = nil
                return false
            }
            entries[sid]?.expires = expires
            return true
        }
    }

    public func destroy(_ sid: String) {
        _ = entries.withLock { $0.removeValue(forKey: sid) }
    }
}
