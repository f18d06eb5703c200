import Foundation

/// gorouter's `router.register` / `router.unregister` message, field for field. The cluster sends it to
/// sticky-proxy's admin API; sticky-proxy's routing table reads it.
public struct RouteRegistration: Sendable, Hashable, Codable {
    public struct Options: Sendable, Hashable, Codable {
        /// `round-robin` or `least-connection`; nil means the router's default.
        public var loadBalancing: String?

        public init(loadBalancing: String? = nil) { self.loadBalancing = loadBalancing }

        enum CodingKeys: String, CodingKey { case loadBalancing = "loadbalancing" }
    }

    public var host: String
    public var port: Int
    /// Routes as `host[/context/path]`.
    public var uris: [String]
    /// The app GUID.
    public var app: String?
    /// The instance GUID (what `__VCAP_ID__` holds).
    public var privateInstanceID: String?
    /// The instance index; gorouter carries it as a string.
    public var privateInstanceIndex: String?
    public var tags: [String: String]?
    public var staleThresholdInSeconds: Int?
    public var options: Options?

    public init(
        host: String,
        port: Int,
        uris: [String],
        app: String? = nil,
        privateInstanceID: String? = nil,
        privateInstanceIndex: String? = nil,
        tags: [String: String]? = nil,
        staleThresholdInSeconds: Int? = 120,
        options: Options? = nil
    ) {
        self.host = host
        self.port = port
        self.uris = uris
        self.app = app
        self.privateInstanceID = privateInstanceID
        self.privateInstanceIndex = privateInstanceIndex
        self.tags = tags
        self.staleThresholdInSeconds = staleThresholdInSeconds
        self.options = options
    }

    enum CodingKeys: String, CodingKey {
        case host, port, uris, app, tags, options
        case privateInstanceID = "private_instance_id"
        case privateInstanceIndex = "private_instance_index"
        case staleThresholdInSeconds = "stale_threshold_in_seconds"
    }

    public func json() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)) ?? Data("{}".utf8)
    }
}

/// A route URI split into host and context path, as gorouter reads `host/path`: the host is lower-cased
/// and the path has no trailing slash (`/` when empty).
public struct RouteURI: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var contextPath: String

    public init(_ uri: String) {
        var text = Substring(uri)
        if let scheme = text.range(of: "://") { text = text[scheme.upperBound...] }
        if let slash = text.firstIndex(of: "/") {
            host = text[..<slash].lowercased()
            var path = String(text[slash...])
            while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
            contextPath = path
        } else {
            host = text.lowercased()
            contextPath = "/"
        }
        if let colon = host.lastIndex(of: ":"), !host.hasSuffix("]") { host = String(host[..<colon]) }
    }

    public var description: String { contextPath == "/" ? host : host + contextPath }

    /// The host is a name (letters, digits, `-`, `_`, `.`), an IPv4 address, or a bracketed IPv6 address:
    /// something a request's Host header can match.
    public var hasValidHost: Bool {
        if host.hasPrefix("[") && host.hasSuffix("]") && host.count > 2 {
            return host.dropFirst().dropLast().allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
        }
        return !host.isEmpty
            && host.unicodeScalars.allSatisfy {
                $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0))
            }
    }
}
