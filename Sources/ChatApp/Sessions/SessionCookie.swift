import Foundation

/// The express-session cookie: its value is `encodeURIComponent("s:" + sign(sid, secret))`, so a
/// Node.js instance of the original app can read the sessions chat-node writes, and the reverse.
public struct SessionCookie: Sendable, Hashable {
    public var name: String
    public var secrets: [String]

    public init(name: String, secrets: [String]) {
        self.name = name
        self.secrets = secrets
    }

    /// The cookie value for a session id, signed with the first secret.
    public func value(for sessionID: String) -> String {
        Self.encodeURIComponent("s:" + CookieSignature.sign(sessionID, secret: secrets.first ?? ""))
    }

    /// The session id in a cookie value, when it is signed by one of the secrets; nil for a forged,
    /// unsigned or malformed value.
    public func sessionID(fromValue raw: String) -> String? {
        guard let decoded = Self.decodeURIComponent(raw), decoded.hasPrefix("s:") else { return nil }
        guard let sid = CookieSignature.unsign(String(decoded.dropFirst(2)), secrets: secrets.filter { !$0.isEmpty }) else {
            return nil
        }
        return SessionID.isWellFormed(sid) ? sid : nil
    }

    /// The session id from `Cookie` request headers. Only the first cookie of this name counts, as
    /// with express-session (the `cookie` package keeps the first of duplicates).
    public func sessionID(fromHeaders headers: [String]) -> String? {
        Self.values(named: name, inCookieHeaders: headers).first.flatMap { sessionID(fromValue: $0) }
    }

    /// The values of the cookies called `name` in `Cookie` header lines, in order.
    static func values(named name: String, inCookieHeaders headers: [String]) -> [String] {
        var found: [String] = []
        for header in headers {
            for pair in header.split(separator: ";") {
                guard let equals = pair.firstIndex(of: "=") else { continue }
                let key = pair[..<equals].trimmingCharacters(in: .whitespaces)
                guard key == name else { continue }
                var value = pair[pair.index(after: equals)...].trimmingCharacters(in: .whitespaces)
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
                found.append(value)
            }
        }
        return found
    }

    /// RFC 6265 token characters (what Set-Cookie allows in a name).
    public static func isValidName(_ name: String) -> Bool {
        let allowed = Set("!#$%&'*+-.^_`|~".utf8)
        return !name.isEmpty
            && name.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || allowed.contains(byte)
            }
    }

    /// JavaScript's encodeURIComponent: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )` is %XX-escaped.
    static func encodeURIComponent(_ text: String) -> String {
        let unreserved = Set("-_.!~*'()".utf8)
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            let isAlnum = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
            if isAlnum || unreserved.contains(byte) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                out += byte < 16 ? "%0" + hex : "%" + hex
            }
        }
        return out
    }

    /// decodeURIComponent; nil on a malformed escape or invalid UTF-8 (JavaScript throws there too).
    static func decodeURIComponent(_ text: String) -> String? {
        guard text.contains("%") else { return text }
        return text.removingPercentEncoding
    }
}

/// Session ids as express-session makes them (uid-safe, 24 random bytes): 32 base64url characters.
public enum SessionID {
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<24).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Ids this server accepts from a (validly signed) cookie: 1 to 128 URL-safe characters, so a key
    /// built from one is always sane even if another app signed it.
    public static func isWellFormed(_ sid: String) -> Bool {
        (1...128).contains(sid.utf8.count)
            && sid.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
            }
    }
}
