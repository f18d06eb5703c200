import CloudFoundry
import NIOCore

/// What a routing decision was: written to the access log, counted in /metrics, streamed on /events.
public enum RoutingDecisionKind: String, Sendable, Codable, CaseIterable {
    /// The request was pinned and went to its instance.
    case stickyHit = "sticky_hit"
    /// The pinned instance is not in the pool any more (crashed, stopped, restarted with a new GUID).
    case fallbackInstanceGone = "fallback_instance_gone"
    /// The pinned instance is at max_conns.
    case fallbackOverloaded = "fallback_overloaded"
    /// Not pinned, and the response started a session (the app set a session cookie).
    case newSession = "new_session"
    /// Not pinned: the balancing algorithm chose.
    case balanced
    /// A later attempt after a retriable error.
    case retryAfterError = "retry_after_error"
    /// `X-CF-APP-INSTANCE` named the instance.
    case targeted
    /// `ip-hash` mode: the client address chose.
    case ipHash = "ip_hash"
    /// The request had to reach its pinned instance (`Authorization: Negotiate` with
    /// `--sticky-sessions-for-auth-negotiate`), and that instance is gone or at max_conns: 502, no fallback.
    case requiredInstanceUnavailable = "required_instance_unavailable"

    /// Position in `allCases` (array-indexed counters).
    var ordinal: Int {
        switch self {
        case .stickyHit: return 0
        case .fallbackInstanceGone: return 1
        case .fallbackOverloaded: return 2
        case .newSession: return 3
        case .balanced: return 4
        case .retryAfterError: return 5
        case .targeted: return 6
        case .ipHash: return 7
        case .requiredInstanceUnavailable: return 8
        }
    }
}

/// The affinity a request asks for.
public enum AffinityPin: Sendable, Equatable {
    case none
    /// Pinned to this instance (GUID, or address for endpoints registered without one).
    case instance(String)
    /// Pinned to this instance with no fallback: every attempt goes there or the request fails
    /// (gorouter's `mustBeSticky`, for `Authorization: Negotiate` handshakes).
    case required(String)
    /// A hash of the client address (`ip-hash`).
    case hash(UInt64)

    public var instanceID: String? {
        switch self {
        case .instance(let id), .required(let id): return id
        case .none, .hash: return nil
        }
    }
}

/// The parts of a request affinity looks at.
public struct AffinityRequest: Sendable {
    public var cookieHeaders: [String]
    /// The client's IP address as text.
    public var clientAddress: String
    public var isUpgrade: Bool
    /// The first `Authorization` header names the `Negotiate` scheme.
    public var negotiatesAuthentication: Bool

    public init(cookieHeaders: [String], clientAddress: String, isUpgrade: Bool, negotiatesAuthentication: Bool = false) {
        self.cookieHeaders = cookieHeaders
        self.clientAddress = clientAddress
        self.isUpgrade = isUpgrade
        self.negotiatesAuthentication = negotiatesAuthentication
    }
}

/// The endpoint chosen for one attempt.
public struct Selection: Sendable, Equatable {
    public var index: Int
    public var kind: RoutingDecisionKind
    /// The balancer ignored failure marks because every candidate had one: clear them all.
    public var clearedFailures: Bool

    public init(index: Int, kind: RoutingDecisionKind, clearedFailures: Bool = false) {
        self.index = index
        self.kind = kind
        self.clearedFailures = clearedFailures
    }
}

/// What the balancer needs for one choice, passed in so that choices are pure.
public struct SelectionContext: Sendable {
    public var balancer: Balancer
    public var tried: TriedEndpoints
    public var now: NIODeadline
    /// The route's round-robin cursor, advanced only by a round-robin choice: as in gorouter, a sticky
    /// hit or a least-connection choice leaves it where it is (else, with sticky requests between new
    /// clients, new clients would not be spread round-robin).
    public var cursor: PoolCursor
    /// Seeds the least-connection tie break.
    public var randomSeed: UInt64

    public init(balancer: Balancer, tried: TriedEndpoints = TriedEndpoints(), now: NIODeadline, cursor: PoolCursor, randomSeed: UInt64) {
        self.balancer = balancer
        self.tried = tried
        self.now = now
        self.cursor = cursor
        self.randomSeed = randomSeed
    }

    /// The balancer's choice, tagged `kind`.
    public func balanced<E: BalancerEndpoint>(_ endpoints: [E], kind: RoutingDecisionKind) -> Selection? {
        var random = SplitMix64(seed: randomSeed)
        let start = balancer.algorithm == .roundRobin ? cursor.next(count: endpoints.count) : 0
        guard let pick = balancer.pick(from: endpoints, excluding: tried, now: now, start: start, random: &random) else { return nil }
        return Selection(index: pick.index, kind: kind, clearedFailures: pick.clearedFailures)
    }
}

/// The response facts the cookie rules need.
public struct AffinityResponse: Sendable {
    public var pin: AffinityPin
    /// The instance GUID of the endpoint that served (may be empty).
    public var servedInstanceID: String
    /// The endpoint's address, for modes that pin endpoints without a GUID.
    public var servedAddress: String
    public var setCookieHeaders: [String]
    /// The route's context path (`/` for a host-only route).
    public var contextPath: String
    public var isUpgrade: Bool
    public var nowSecondsSince1970: Int64
    /// The request's `Cookie` headers (`__VCAP_ID_META__` is read from them on a fallback).
    public var requestCookieHeaders: [String]
    /// The first `WWW-Authenticate` header of the response names the `Negotiate` scheme.
    public var negotiatesAuthentication: Bool

    public init(
        pin: AffinityPin,
        servedInstanceID: String,
        servedAddress: String,
        setCookieHeaders: [String],
        contextPath: String,
        isUpgrade: Bool,
        nowSecondsSince1970: Int64,
        requestCookieHeaders: [String] = [],
        negotiatesAuthentication: Bool = false
    ) {
        self.pin = pin
        self.servedInstanceID = servedInstanceID
        self.servedAddress = servedAddress
        self.setCookieHeaders = setCookieHeaders
        self.contextPath = contextPath
        self.isUpgrade = isUpgrade
        self.nowSecondsSince1970 = nowSecondsSince1970
        self.requestCookieHeaders = requestCookieHeaders
        self.negotiatesAuthentication = negotiatesAuthentication
    }
}

/// What affinity adds to a response.
public struct ResponseAffinity: Sendable, Equatable {
    /// `Set-Cookie` values to append.
    public var setCookies: [String] = []
    /// Other headers to set, as (name, value).
    public var headers: [HeaderField] = []
    /// The response started a session for a request that was not pinned.
    public var startedSession = false

    public init(setCookies: [String] = [], headers: [HeaderField] = [], startedSession: Bool = false) {
        self.setCookies = setCookies
        self.headers = headers
        self.startedSession = startedSession
    }

    public static let nothing = ResponseAffinity()
}

public struct HeaderField: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// One affinity mode: how a request is pinned, which endpoint its first attempt goes to, and what the
/// response must set. Later attempts (retries) use the balancer (`RoutingDecider`), except for a
/// `.required` pin, whose every attempt goes to its instance.
public protocol AffinityPolicy: Sendable {
    var mode: AffinityMode { get }
    func pin(for request: AffinityRequest) -> AffinityPin
    func firstSelection<E: BalancerEndpoint>(endpoints: [E], pin: AffinityPin, context: SelectionContext) -> Selection?
    func response(_ response: AffinityResponse) -> ResponseAffinity
    /// The `Cookie` header to forward to the app (nil drops it).
    func forwardedCookieHeader(_ header: String) -> String?
    /// True when this mode reads the request's cookies (saves parsing them otherwise).
    var readsCookies: Bool { get }
    /// True when this mode changes the `Cookie` header forwarded to the app.
    var rewritesCookies: Bool { get }
}

extension AffinityPolicy {
    public func forwardedCookieHeader(_ header: String) -> String? { header }
    public var rewritesCookies: Bool { false }

    /// The pinned instance when it is in the pool and not overloaded, else the balancer's choice with
    /// the fallback named. `skipFailed`: treat an endpoint marked failed as down (HAProxy); gorouter
    /// still tries a failed sticky target.
    func pinnedOrBalanced<E: BalancerEndpoint>(endpoints: [E], pin: AffinityPin, context: SelectionContext, skipFailed: Bool) -> Selection? {
        if case .required = pin { return requiredSelection(endpoints: endpoints, pin: pin, attempt: 1, context: context) }
        guard case .instance(let id) = pin else { return context.balanced(endpoints, kind: .balanced) }
        guard let index = endpoints.firstIndex(where: { $0.instanceID == id }) else {
            return context.balanced(endpoints, kind: .fallbackInstanceGone)
        }
        if context.balancer.isOverloaded(endpoints[index]) {
            return context.balanced(endpoints, kind: .fallbackOverloaded)
        }
        if skipFailed, let until = endpoints[index].failedUntil, until > context.now {
            return context.balanced(endpoints, kind: .fallbackInstanceGone)
        }
        return Selection(index: index, kind: .stickyHit)
    }
}

/// gorouter's `mustBeSticky` (`FindStickyEndpoint`): every attempt goes to the pinned instance,
/// failure marks or not, and none when it is gone or at max_conns. A later attempt only while the
/// pool has at least as many endpoints as attempts, where gorouter's retry loop stops.
func requiredSelection<E: BalancerEndpoint>(endpoints: [E], pin: AffinityPin, attempt: Int, context: SelectionContext) -> Selection? {
    guard case .required(let id) = pin, !id.isEmpty, attempt <= max(1, endpoints.count),
        let index = endpoints.firstIndex(where: { $0.instanceID == id }),
        !context.balancer.isOverloaded(endpoints[index])
    else { return nil }
    return Selection(index: index, kind: attempt <= 1 ? .stickyHit : .retryAfterError)
}

/// Why `requiredSelection` found nothing for a first attempt, in words for the log.
func requiredInstanceUnavailableReason<E: BalancerEndpoint>(instanceID id: String, endpoints: [E]) -> String {
    if id.isEmpty { return "its __VCAP_ID__ is empty" }
    if endpoints.contains(where: { $0.instanceID == id }) { return "that instance is at max_conns" }
    return "that instance is not in the route's pool (crashed, stopped, or restarted with a new GUID)"
}

/// The choice for every attempt of a request: the mode's first choice, then the balancer on endpoints
/// not tried yet.
public struct RoutingDecider<Policy: AffinityPolicy>: Sendable {
    public let policy: Policy

    public init(policy: Policy) {
        self.policy = policy
    }

    public func select<E: BalancerEndpoint>(endpoints: [E], pin: AffinityPin, attempt: Int, context: SelectionContext) -> Selection? {
        if attempt <= 1 && context.tried.count == 0 {
            return policy.firstSelection(endpoints: endpoints, pin: pin, context: context)
        }
        if case .required = pin { return requiredSelection(endpoints: endpoints, pin: pin, attempt: attempt, context: context) }
        return context.balanced(endpoints, kind: .retryAfterError)
    }
}

/// The configured mode as a closed set, so that every call reaches the concrete type (specialised
/// code, no existential) on the hot path.
public enum ConfiguredAffinity: AffinityPolicy {
    case cf(CFAffinity)
    case none(NoAffinity)
    case haproxy(HAProxyAffinity)
    case ipHash(IPHashAffinity)

    public init(_ configuration: ProxyConfiguration) {
        switch configuration.affinity {
        case .cf:
            self = .cf(
                CFAffinity(
                    stickyCookieNames: configuration.stickyCookieNames,
                    secureCookies: configuration.secureCookies,
                    webSocketAffinity: configuration.webSocketAffinity,
                    vcapIDMeta: configuration.vcapIDMeta,
                    stickySessionsForAuthNegotiate: configuration.stickySessionsForAuthNegotiate
                ))
        case .none: self = .none(NoAffinity())
        case .haproxy: self = .haproxy(HAProxyAffinity(cookieName: configuration.haproxyCookieName))
        case .ipHash: self = .ipHash(IPHashAffinity())
        }
    }

    public var mode: AffinityMode {
        switch self {
        case .cf(let policy): return policy.mode
        case .none(let policy): return policy.mode
        case .haproxy(let policy): return policy.mode
        case .ipHash(let policy): return policy.mode
        }
    }

    public var readsCookies: Bool {
        switch self {
        case .cf(let policy): return policy.readsCookies
        case .none(let policy): return policy.readsCookies
        case .haproxy(let policy): return policy.readsCookies
        case .ipHash(let policy): return policy.readsCookies
        }
    }

    public var rewritesCookies: Bool {
        switch self {
        case .cf(let policy): return policy.rewritesCookies
        case .none(let policy): return policy.rewritesCookies
        case .haproxy(let policy): return policy.rewritesCookies
        case .ipHash(let policy): return policy.rewritesCookies
        }
    }

    public func pin(for request: AffinityRequest) -> AffinityPin {
        switch self {
        case .cf(let policy): return policy.pin(for: request)
        case .none(let policy): return policy.pin(for: request)
        case .haproxy(let policy): return policy.pin(for: request)
        case .ipHash(let policy): return policy.pin(for: request)
        }
    }

    public func firstSelection<E: BalancerEndpoint>(endpoints: [E], pin: AffinityPin, context: SelectionContext) -> Selection? {
        switch self {
        case .cf(let policy): return policy.firstSelection(endpoints: endpoints, pin: pin, context: context)
        case .none(let policy): return policy.firstSelection(endpoints: endpoints, pin: pin, context: context)
        case .haproxy(let policy): return policy.firstSelection(endpoints: endpoints, pin: pin, context: context)
        case .ipHash(let policy): return policy.firstSelection(endpoints: endpoints, pin: pin, context: context)
        }
    }

    public func response(_ response: AffinityResponse) -> ResponseAffinity {
        switch self {
        case .cf(let policy): return policy.response(response)
        case .none(let policy): return policy.response(response)
        case .haproxy(let policy): return policy.response(response)
        case .ipHash(let policy): return policy.response(response)
        }
    }

    public func forwardedCookieHeader(_ header: String) -> String? {
        switch self {
        case .cf(let policy): return policy.forwardedCookieHeader(header)
        case .none(let policy): return policy.forwardedCookieHeader(header)
        case .haproxy(let policy): return policy.forwardedCookieHeader(header)
        case .ipHash(let policy): return policy.forwardedCookieHeader(header)
        }
    }
}
