import Foundation

/// Where Redis is and how to talk to it. Built from a URL: `redis://[[user]:password@]host[:port][/db]`.
public struct RedisConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    /// ACL user name (Redis 6+); nil means the default user.
    public var username: String?
    public var password: String?
    public var database: Int
    public var connectTimeout: Duration
    /// How long a command may wait for its reply; nil waits for ever.
    public var commandTimeout: Duration?
    public var reconnectBackoff: Backoff
    /// How often an idle subscriber connection pings the server to notice a dead peer.
    public var subscriberPingInterval: Duration
    /// The most bytes one reply may hold before it is complete. A bigger one (a peer that is not
    /// Redis, or a broken one, sending an endless bulk string) drops the connection with a protocol
    /// error instead of growing memory without bound. Redis's own limit on a string
    /// (proto-max-bulk-len) is 512 MB by default.
    public var maxReplyBytes = Self.defaultMaxReplyBytes
    /// Redis's own limit on a string (proto-max-bulk-len, 512 MB by default), and 64 KiB for the rest
    /// of a reply around it.
    public static let defaultMaxReplyBytes = 512 * 1024 * 1024 + 64 * 1024

    public init(
        host: String = "127.0.0.1",
        port: Int = 6379,
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(5),
        commandTimeout: Duration? = .seconds(5),
        reconnectBackoff: Backoff = Backoff(),
        subscriberPingInterval: Duration = .seconds(5)
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.reconnectBackoff = reconnectBackoff
        self.subscriberPingInterval = subscriberPingInterval
    }

    /// Parses `redis://[[user]:password@]host[:port][/db]`. Percent-escapes in the user and password are decoded.
    public init(url: String) throws(RedisConfigurationError) {
        self.init()
        guard let schemeEnd = url.range(of: "://") else {
            throw .invalidURL(url: url, reason: "it must start with redis://")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "redis" else {
            if scheme == "rediss" {
                throw .invalidURL(url: Self.redact(url), reason: "TLS (rediss://) is not supported; use redis://")
            }
            throw .invalidURL(url: Self.redact(url), reason: "unknown scheme '\(scheme)'; use redis://")
        }
        var rest = url[schemeEnd.upperBound...]
        if let query = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) { rest = rest[..<query] }
        var authority = rest
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        }
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            authority = authority[authority.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let user = Self.percentDecode(userInfo[..<colon])
                username = user.isEmpty ? nil : user
                password = Self.percentDecode(userInfo[userInfo.index(after: colon)...])
            } else if !userInfo.isEmpty {
                // Like redis-cli and most clients: a lone user-info part is the password.
                password = Self.percentDecode(userInfo)
            }
        }
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw .invalidURL(url: Self.redact(url), reason: "unclosed '[' in the host")
            }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { try setPort(after.dropFirst(), url: url) }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            try setPort(authority[authority.index(after: colon)...], url: url)
        } else {
            host = String(authority)
        }
        if host.isEmpty { host = "127.0.0.1" }
        let dbText = path.split(separator: "/").first.map(String.init) ?? ""
        if !dbText.isEmpty {
            guard let db = Int(dbText), db >= 0 else {
                throw .invalidURL(url: Self.redact(url), reason: "the database '\(dbText)' is not a number >= 0")
            }
            database = db
        }
    }

    private mutating func setPort(_ text: Substring, url: String) throws(RedisConfigurationError) {
        guard let value = Int(text), (1...65535).contains(value) else {
            throw .invalidURL(url: Self.redact(url), reason: "the port '\(text)' is not a number from 1 to 65535")
        }
        port = value
    }

    /// `url` with its host and port replaced by `host` and `port`, everything else (user, password,
    /// database, query) as written: how a client is pointed at a relay in front of that Redis.
    public static func url(_ url: String, reachedAt host: String, port: Int) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let rest = url[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let hostStart = authority.lastIndex(of: "@").map { authority.index(after: $0) } ?? authority.startIndex
        let hostText = host.contains(":") ? "[\(host)]" : host
        return String(url[..<hostStart]) + "\(hostText):\(port)" + String(url[authorityEnd...])
    }

    /// `host:port` for messages.
    public var endpoint: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The URL with the password hidden, safe to log.
    public var redactedURL: String {
        var auth = ""
        if password != nil { auth = "\(username ?? ""):***@" } else if let username { auth = "\(username)@" }
        return "redis://\(auth)\(endpoint)/\(database)"
    }

    /// The URL with its password, for handing to another process (for example in VCAP_SERVICES).
    public var url: String {
        var auth = ""
        if let password {
            auth = "\(Self.percentEncode(username ?? "")):\(Self.percentEncode(password))@"
        } else if let username {
            auth = "\(Self.percentEncode(username))@"
        }
        return "redis://\(auth)\(endpoint)/\(database)"
    }

    static func redact(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://"), let at = url[schemeEnd.upperBound...].lastIndex(of: "@") else {
            return url
        }
        return url[..<schemeEnd.upperBound] + "***" + url[at...]
    }

    static func percentDecode(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(text.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%"), utf8.count >= 2,
                let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func percentEncode(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            let scalar = Unicode.Scalar(byte)
            if scalar.properties.isAlphabetic && byte < 128 || (byte >= 48 && byte <= 57) || "-._~".utf8.contains(byte) {
                out.unicodeScalars.append(scalar)
            } else {
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

public enum RedisConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidURL(url: String, reason: String)

    public var description: String {
        switch self {
        case .invalidURL(let url, let reason):
            "Invalid Redis URL '\(url)': \(reason). Expected redis://[:password@]host:port[/db]."
        }
    }
}

/// Exponential backoff with jitter: `initial * multiplier^attempt`, capped at `maximum`, then spread by
/// +/- `jitter` (a fraction) so that many clients do not reconnect in lock step.
public struct Backoff: Sendable, Hashable {
    public var initial: Duration
    public var maximum: Duration
    public var multiplier: Double
    public var jitter: Double

    public init(
        initial: Duration = .milliseconds(50),
        maximum: Duration = .seconds(2),
        multiplier: Double = 2,
        jitter: Double = 0.5
    ) {
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
    }

    /// The delay before retry number `attempt` (0-based). `random` in 0..<1 picks the jitter; pass a fixed
    /// value in tests.
    public func delay(attempt: Int, random: Double) -> Duration {
        let base = initial.seconds * pow(multiplier, Double(min(attempt, 60)))
        let capped = min(base, maximum.seconds)
        let spread = capped * jitter * (random * 2 - 1)
        return .nanoseconds(Int64(max(0, capped + spread) * 1e9))
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    public var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
