import Foundation

/// Whether a state-changing request (the login and logout form posts) may have been sent by another
/// site's page: a cross-site request forgery. The session cookie is SameSite=Lax, which browsers still
/// send, and whose Set-Cookie they still store, on a top-level form post from another site: such a
/// post could log a user out, or log them in under a name the other site chose (login CSRF).
///
/// Decided from what browsers send and pages cannot forge, in this order:
/// 1. `GET`, `HEAD`, `OPTIONS`, `TRACE` change nothing here: allowed.
/// 2. `Sec-Fetch-Site` (every current browser): `same-origin` and `none` (typed or bookmarked by the
///    user) are allowed; `cross-site` is refused; `same-site` (another port or subdomain of the same
///    site, such as another app under a platform's shared domain) and any unknown value are allowed
///    only with an `Origin` that names this server, as in 3.
/// 3. `Origin` (older browsers): allowed when its host and port (the scheme's default port when it
///    has none) equal the request's `Host`, or the first `X-Forwarded-Host` a proxy set; `null` (a
///    sandboxed frame, a `data:` page, a redirect from another origin) and anything that is not an
///    http(s) origin are refused.
/// 4. Neither header: not a browser's form (curl, scripts, tests, browsers from before 2019): allowed.
public enum CrossSiteCheck {
    public enum Verdict: Sendable, Hashable {
        case allow
        case refuse(Refusal)
    }

    /// Why a request was refused; its description names the headers that said so.
    public enum Refusal: Sendable, Hashable, CustomStringConvertible {
        /// `Sec-Fetch-Site: cross-site`.
        case crossSite(origin: String?)
        /// An `Origin` that is not this server (or `null`, or no origin at all), with the
        /// `Sec-Fetch-Site` that came with it.
        case otherOrigin(String, fetchSite: String?)
        /// `Sec-Fetch-Site: same-site` (or an unknown value) without an `Origin` to compare.
        case noOrigin(fetchSite: String)

        public var description: String {
            switch self {
            case .crossSite(let origin):
                "Sec-Fetch-Site: cross-site" + (origin.map { ", Origin \(Self.shown($0))" } ?? "")
            case .otherOrigin(let origin, let fetchSite):
                "Origin \(Self.shown(origin))" + (fetchSite.map { ", Sec-Fetch-Site: \(Self.shown($0))" } ?? "")
            case .noOrigin(let fetchSite):
                "Sec-Fetch-Site: \(Self.shown(fetchSite)) without an Origin"
            }
        }

        /// A header value as quoted in the message and the log: at most 200 characters.
        static func shown(_ value: String) -> String {
            value.count > 200 ? value.prefix(200) + "…" : value
        }
    }

    /// - Parameters:
    ///   - method: the request's method (`POST`).
    ///   - fetchSite: the `Sec-Fetch-Site` header.
    ///   - origin: the `Origin` header.
    ///   - host: the `Host` header (the request's authority), as the client sent it.
    ///   - forwardedHost: the `X-Forwarded-Host` header: a proxy that changes `Host` sets it to the
    ///     client's (Cloud Foundry's router and sticky-proxy keep `Host` and set none).
    public static func decide(method: String, fetchSite: String?, origin: String?, host: String?, forwardedHost: String?) -> Verdict {
        if ["GET", "HEAD", "OPTIONS", "TRACE"].contains(method.uppercased()) { return .allow }
        let site = fetchSite.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        switch site {
        case "same-origin", "none":
            return .allow
        case "cross-site":
            return .refuse(.crossSite(origin: origin))
        case nil:
            guard let origin else { return .allow }
            return isThisServer(origin: origin, host: host, forwardedHost: forwardedHost) ? .allow : .refuse(.otherOrigin(origin, fetchSite: nil))
        case let site?:
            guard let origin else { return .refuse(.noOrigin(fetchSite: site)) }
            return isThisServer(origin: origin, host: host, forwardedHost: forwardedHost) ? .allow : .refuse(.otherOrigin(origin, fetchSite: site))
        }
    }

    /// `origin` (`http://example.com:8080`) names the server the request was sent to: its host and
    /// port equal those of `host` or of the first `forwardedHost` (`example.com:8080`). A missing port
    /// is the origin scheme's default on both sides.
    static func isThisServer(origin: String, host: String?, forwardedHost: String?) -> Bool {
        guard let parts = split(origin: origin), let origin = parse(authority: parts.authority, defaultPort: parts.defaultPort) else {
            return false
        }
        let defaultPort = parts.defaultPort
        let firstForwarded = forwardedHost?.split(separator: ",", omittingEmptySubsequences: false).first
        let candidates = [host.map { Substring($0) }, firstForwarded].compactMap { $0?.trimmingCharacters(in: .whitespaces) }
        return candidates.contains { candidate in
            parse(authority: Substring(candidate), defaultPort: defaultPort) == origin
        }
    }

    /// `scheme://authority` with scheme http or https: the scheme's default port and the authority.
    static func split(origin: String) -> (defaultPort: Int, authority: Substring)? {
        guard let separator = origin.range(of: "://") else { return nil }
        let port: Int
        switch origin[..<separator.lowerBound].lowercased() {
        case "http": port = 80
        case "https": port = 443
        default: return nil
        }
        return (port, origin[separator.upperBound...])
    }

    struct Authority: Hashable {
        var host: String
        var port: Int
    }

    /// `host[:port]` or `[v6]:port`, lowercased; nil when it is no bare authority (a path, user info,
    /// spaces, a list, a bad port).
    static func parse(authority: Substring, defaultPort: Int) -> Authority? {
        guard !authority.isEmpty, !authority.contains(where: { "/?#@,\\".contains($0) || $0.isWhitespace }) else { return nil }
        let host: Substring
        let port: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[...close]
            let rest = authority[authority.index(after: close)...]
            guard rest.isEmpty || rest.hasPrefix(":") else { return nil }
            port = rest.isEmpty ? nil : rest.dropFirst()
        } else if let colon = authority.firstIndex(of: ":") {
            host = authority[..<colon]
            port = authority[authority.index(after: colon)...]
        } else {
            host = authority
            port = nil
        }
        guard !host.isEmpty else { return nil }
        guard let port else { return Authority(host: host.lowercased(), port: defaultPort) }
        guard (1...5).contains(port.count), port.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(port), number <= 65_535 else {
            return nil
        }
        return Authority(host: host.lowercased(), port: number)
    }
}
