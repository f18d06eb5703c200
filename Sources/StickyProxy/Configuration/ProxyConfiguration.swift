import CloudFoundry
import NIOCore

/// How requests are pinned to instances.
public enum AffinityMode: String, Sendable, CaseIterable, Codable {
    /// Cloud Foundry's gorouter: `JSESSIONID` + `__VCAP_ID__` (the default).
    case cf
    /// Plain round-robin or least-connection with no affinity at all.
    case none
    /// HAProxy's `cookie SERVERID insert indirect nocache` with `option redispatch`.
    case haproxy
    /// nginx's `ip_hash`-style hashing of the client address.
    case ipHash = "ip-hash"
}

/// gorouter's two balancing algorithms.
public enum LoadBalancingAlgorithm: String, Sendable, CaseIterable, Codable {
    case roundRobin = "round-robin"
    case leastConnection = "least-connection"
}

/// Where the access log goes.
public enum AccessLogDestination: Sendable, Equatable {
    case standardOutput
    case file(String)

    /// `-` is standard output, anything else a file path.
    public init(_ text: String) {
        self = text == "-" ? .standardOutput : .file(text)
    }
}

/// Everything sticky-proxy can be told. The defaults are Cloud Foundry's (see
/// shared/docs/cloud-foundry-behaviour.md); each has a command-line flag.
public struct ProxyConfiguration: Sendable {
    // Listeners
    public var bindHost = "127.0.0.1"
    /// 0 picks a free port (read it back from `StickyProxyServer.boundPort`).
    public var port = 8080
    /// nil disables the admin API.
    public var adminPort: Int? = 8081
    public var adminToken: String
    public var eventLoopThreads = System.coreCount

    // Affinity
    public var affinity: AffinityMode = .cf
    /// Affinity on WebSocket upgrades (current Cloud Foundry). Off reproduces Cloud Foundry before 2024.
    public var webSocketAffinity = true
    /// The `__VCAP_ID_META__` companion cookie (current gorouter). Off reproduces older routers: after a
    /// fallback without a new session cookie, `__VCAP_ID__` has default attributes.
    public var vcapIDMeta = true
    public var stickyCookieNames: [String] = ["JSESSIONID"]
    public var secureCookies = false
    /// gorouter's `router.sticky_sessions_for_auth_negotiate` (off there too): `Negotiate`
    /// authentication handshakes (Kerberos, NTLM) kept on one instance, without a fallback.
    public var stickySessionsForAuthNegotiate = false
    /// The cookie the `haproxy` mode inserts.
    public var haproxyCookieName = "SERVERID"

    // Balancing and retries
    public var balancing: LoadBalancingAlgorithm = .roundRobin
    /// In-flight requests per backend before it is skipped; 0 means no limit.
    public var maxConnsPerBackend = 500
    public var maxAttempts = 3
    public var retryAfterFailure: TimeAmount = .seconds(30)

    // Timeouts
    public var dialTimeout: TimeAmount = .seconds(5)
    /// Whole request, from the request head to the end of the response; 0 disables.
    public var requestTimeout: TimeAmount = .seconds(900)
    /// Keep-alive idle time of a client connection between requests.
    public var idleTimeout: TimeAmount = .seconds(900)
    /// Time a client may take to send a complete request head once it started one (slow clients).
    public var headerReadTimeout: TimeAmount = .seconds(30)
    public var drainTimeout: TimeAmount = .seconds(10)

    // Routing table
    public var pruneInterval: TimeAmount = .seconds(30)
    public var staleThreshold: TimeAmount = .seconds(120)
    public var staticRoutes: [RouteRegistration] = []
    /// gorouter's `empty_pool_response_code_503` and `empty_pool_timeout` (off by default, as in the
    /// platform defaults this project follows): a route whose last instance left is kept for
    /// `emptyPoolTimeout` and answers 503 `no_endpoints` instead of 404 `unknown_route`. gorouter
    /// needs both; here one without the other is refused (it would do nothing).
    public var emptyPoolResponseCode503 = false
    public var emptyPoolTimeout: TimeAmount = .zero
    /// gorouter's `router.trace_key`: a request with `X-Vcap-Trace` equal to it gets `X-Vcap-Router`,
    /// `X-Vcap-Backend` and `X-Cf-Routeendpoint` on its response (which instance served it). Nil: off.
    public var traceKey: String?

    /// How long the routing table keeps a route with no endpoint; nil: not at all.
    public var keepEmptyRoutesFor: TimeAmount? {
        emptyPoolResponseCode503 && emptyPoolTimeout.nanoseconds > 0 ? emptyPoolTimeout : nil
    }

    // Limits
    /// Largest request header section (all names and values) before 431; gorouter's default is Go's 1 MiB.
    public var maxHeaderBytes = 1 << 20
    /// Request bodies up to this size are kept so that a retry can send them again.
    public var maxReplayBodyBytes = 1 << 20
    /// Idle keep-alive connections kept per backend and event loop.
    public var maxIdleConnectionsPerBackend = 100
    public var backendIdleTimeout: TimeAmount = .seconds(90)

    // Logs
    public var accessLog: AccessLogDestination? = nil

    public init(adminToken: String) {
        self.adminToken = adminToken
    }

    /// The most event loop threads `--threads` takes.
    public static let maximumThreads = 1024

    /// Problems a user must fix before the proxy can start, each phrased as what to change.
    public func validationErrors() -> [String] {
        var errors: [String] = []
        if !(0...65535).contains(port) { errors.append("--port \(port) is not a TCP port (0-65535)") }
        if let adminPort, !(0...65535).contains(adminPort) { errors.append("--admin-port \(adminPort) is not a TCP port (0-65535)") }
        if adminToken.isEmpty { errors.append("the admin token is empty: pass --admin-token or set STICKY_PROXY_ADMIN_TOKEN") }
        if stickyCookieNames.isEmpty || stickyCookieNames.contains(where: { !CookieName.isValid($0) }) {
            errors.append("--sticky-cookie-names needs one or more cookie names separated by commas (got \(stickyCookieNames))")
        }
        if !CookieName.isValid(haproxyCookieName) { errors.append("--haproxy-cookie-name '\(haproxyCookieName)' is not a cookie name") }
        if maxConnsPerBackend < 0 { errors.append("--max-conns must be 0 (no limit) or more") }
        if maxAttempts < 1 { errors.append("--max-attempts must be at least 1") }
        if dialTimeout.nanoseconds <= 0 { errors.append("--dial-timeout must be more than 0") }
        if let traceKey, traceKey.isEmpty || traceKey.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value > 0x7E }) {
            errors.append("--trace-key must be printable ASCII without spaces (it is compared with the X-Vcap-Trace header)")
        }
        if staleThreshold.nanoseconds <= 0 {
            errors.append("--stale-threshold must be more than 0: an endpoint not registered again for this long is pruned")
        }
        if maxHeaderBytes < 1024 { errors.append("--max-header-bytes must be at least 1024") }
        if emptyPoolTimeout.nanoseconds < 0 { errors.append("--empty-pool-timeout must be 0 or more") }
        if emptyPoolResponseCode503 && emptyPoolTimeout.nanoseconds == 0 {
            errors.append(
                "--empty-pool-response-code-503 needs --empty-pool-timeout (for example 30s): how long a route with no instance answers 503 before it is deleted (with 0 it goes at once and answers 404, so the flag would do nothing)"
            )
        }
        if !emptyPoolResponseCode503 && emptyPoolTimeout.nanoseconds > 0 {
            errors.append(
                "--empty-pool-timeout \(emptyPoolTimeout.durationText) does nothing without --empty-pool-response-code-503 (as in gorouter): add the flag, or leave the timeout out"
            )
        }
        // Each thread is a process-wide resource: a typo such as 100000 would take every pid the
        // machine has (pid_max is 32768 by default) before failing.
        if !(1...Self.maximumThreads).contains(eventLoopThreads) {
            errors.append("--threads must be from 1 to \(Self.maximumThreads) (this machine has \(System.coreCount) cores), not \(eventLoopThreads)")
        }
        return errors
    }
}
