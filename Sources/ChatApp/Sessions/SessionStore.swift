import Foundation
import NIOCore
import RedisClient

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

/// express-session's Redis store (connect-redis layout), on the project's Redis client.
public struct SessionStore: Sendable {
    public let redis: RedisClient
    public let prefix: String
    public let ttl: Duration

    public init(redis: RedisClient, prefix: String = "sess:", ttl: Duration = .seconds(86_400)) {
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
    }

    public func key(_ sid: String) -> String { prefix + sid }

    /// The session, or nil when there is none (expired, destroyed, never existed, not a session).
    public func load(_ sid: String) async throws -> SessionRecord? {
        guard let value = try await redis.get(key(sid)) else { return nil }
        return SessionRecord.decode(value.readableBytesView)
    }

    public func save(_ sid: String, _ record: SessionRecord) async throws {
        try await redis.set(key(sid), to: RESPArgument(record.encoded()), expiration: .seconds(Int(ttl.components.seconds)))
    }

    /// Extends the session's life (a page load); false when it no longer exists.
    @discardableResult
    public func touch(_ sid: String) async throws -> Bool {
        try await redis.expire(key(sid), seconds: Int(ttl.components.seconds))
    }

    public func destroy(_ sid: String) async throws {
        try await redis.del(key(sid))
    }
}
