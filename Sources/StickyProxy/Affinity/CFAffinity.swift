import CloudFoundry

/// Cloud Foundry's gorouter sticky sessions (shared/docs/cloud-foundry-behaviour.md, section 1).
///
/// A request is pinned only when it carries BOTH a trigger cookie (JSESSIONID by default) and
/// `__VCAP_ID__`; only its first attempt honours the pin; a missing or overloaded instance silently
/// falls back to the balancer. The response gets `__VCAP_ID__` when it sets a trigger cookie, or when a
/// pinned request landed elsewhere.
///
/// With `stickySessionsForAuthNegotiate` (gorouter's `router.sticky_sessions_for_auth_negotiate`, off
/// by default), a request whose `Authorization` names `Negotiate` and that carries `__VCAP_ID__` must
/// reach that instance (no trigger cookie needed, no fallback: a 502 when it is gone), and a response
/// whose `WWW-Authenticate` names `Negotiate` to a request not pinned there gets a `__VCAP_ID__` of 60
/// seconds, `SameSite=Strict`: a SPNEGO (Kerberos, NTLM) handshake takes several requests, all on the
/// instance that began it.
public struct CFAffinity: AffinityPolicy {
    public static let vcapCookieName = "__VCAP_ID__"
    /// The `Max-Age` of the `__VCAP_ID__` set for a `Negotiate` handshake (gorouter's
    /// `AuthNegotiateHeaderCookieMaxAgeInSeconds`).
    public static let negotiateCookieMaxAge = 60

    public let stickyCookieNames: [String]
    /// The cookie names that trigger stickiness, in requests and in responses: each of
    /// `stickyCookieNames`, and the same with the `__Host-` prefix of RFC 6265bis, as current
    /// gorouters read them (`__Host-JSESSIONID`).
    let triggerNames: [String]
    public var secureCookies: Bool
    /// Affinity on WebSocket upgrades (Cloud Foundry since 2024); false reproduces the older router,
    /// which neither honoured nor set `__VCAP_ID__` on upgrades.
    public var webSocketAffinity: Bool
    /// `__VCAP_ID_META__` beside each `__VCAP_ID__` set for a session cookie, read back on a fallback
    /// (current gorouter); false reproduces older routers (default attributes after a fallback).
    public var vcapIDMeta: Bool
    /// Sticky `Negotiate` authentication handshakes (see the type's comment).
    public var stickySessionsForAuthNegotiate: Bool

    public init(
        stickyCookieNames: [String] = ["JSESSIONID"],
        secureCookies: Bool = false,
        webSocketAffinity: Bool = true,
        vcapIDMeta: Bool = true,
        stickySessionsForAuthNegotiate: Bool = false
    ) {
        self.stickyCookieNames = stickyCookieNames
        self.triggerNames = stickyCookieNames + stickyCookieNames.map { "__Host-" + $0 }
        self.secureCookies = secureCookies
        self.webSocketAffinity = webSocketAffinity
        self.vcapIDMeta = vcapIDMeta
        self.stickySessionsForAuthNegotiate = stickySessionsForAuthNegotiate
    }

    public var mode: AffinityMode { .cf }
    public var readsCookies: Bool { true }

    public func pin(for request: AffinityRequest) -> AffinityPin {
        if request.isUpgrade && !webSocketAffinity { return .none }
        // gorouter's GetStickySession: a Negotiate handshake with __VCAP_ID__ (even an empty one) must
        // stay on that instance, trigger cookie or not.
        if stickySessionsForAuthNegotiate && request.negotiatesAuthentication,
            let vcapID = RequestCookies.value(named: Self.vcapCookieName, in: request.cookieHeaders)
        {
            return .required(String(vcapID))
        }
        guard !request.cookieHeaders.isEmpty,
            RequestCookies.containsAny(of: triggerNames, in: request.cookieHeaders),
            let vcapID = RequestCookies.value(named: Self.vcapCookieName, in: request.cookieHeaders),
            !vcapID.isEmpty
        else { return .none }
        return .instance(String(vcapID))
    }

    public func firstSelection<E: BalancerEndpoint>(endpoints: [E], pin: AffinityPin, context: SelectionContext) -> Selection? {
        pinnedOrBalanced(endpoints: endpoints, pin: pin, context: context, skipFailed: false)
    }

    /// gorouter's `setupStickySession`: a `__VCAP_ID__` (and with `vcapIDMeta` its `__VCAP_ID_META__`)
    /// for each session cookie the app sets, with that cookie's attributes (several during a CHIPS
    /// migration: a partitioned one and the deletion of the old one); else, when the pinned instance is
    /// gone, one for the instance that served, with the attributes `__VCAP_ID_META__` kept (default
    /// ones without it). Never when the app sets `__VCAP_ID__` itself. Before all of these, with
    /// `stickySessionsForAuthNegotiate`: a `Negotiate` challenge to a request not (or no longer)
    /// pinned to the instance that served gets a short-lived `__VCAP_ID__` of its own.
    public func response(_ response: AffinityResponse) -> ResponseAffinity {
        if response.isUpgrade && !webSocketAffinity { return .nothing }
        // gorouter only sets the cookie for endpoints registered with an instance GUID.
        guard !response.servedInstanceID.isEmpty else { return .nothing }
        let pinnedID = response.pin.instanceID ?? ""
        let requestWasSticky = !pinnedID.isEmpty
        let stale = requestWasSticky && pinnedID != response.servedInstanceID

        var sessionCookies: [SetCookie] = []
        for header in response.setCookieHeaders {
            let name = Self.cookieName(in: header)
            // The app's own __VCAP_ID__ always wins.
            if name == Self.vcapCookieName { return .nothing }
            if triggerNames.contains(where: { $0 == name }), let parsed = SetCookie(header: header) {
                sessionCookies.append(parsed)
            }
        }
        let negotiates = stickySessionsForAuthNegotiate && response.negotiatesAuthentication && (!requestWasSticky || stale)
        guard stale || negotiates || !sessionCookies.isEmpty else { return .nothing }

        let now = response.nowSecondsSince1970
        var vcapID = SetCookie(name: Self.vcapCookieName, value: response.servedInstanceID)
        vcapID.path = response.contextPath
        vcapID.httpOnly = true
        vcapID.secure = secureCookies
        if negotiates {
            // gorouter: only the configured Secure, no __VCAP_ID_META__, whatever session cookie the
            // response also sets.
            vcapID.maxAge = Self.negotiateCookieMaxAge
            vcapID.sameSite = "Strict"
            return ResponseAffinity(setCookies: [vcapID.headerValue], startedSession: !requestWasSticky)
        }
        guard !sessionCookies.isEmpty else {
            // A fallback, and no new session cookie: the attributes kept in __VCAP_ID_META__, if any.
            if vcapIDMeta, let meta = RequestCookies.value(named: VCAPIDMeta.cookieName, in: response.requestCookieHeaders) {
                VCAPIDMeta(value: String(meta)).restore(into: &vcapID, now: now)
            }
            return ResponseAffinity(setCookies: [vcapID.headerValue], startedSession: false)
        }
        var setCookies: [String] = []
        var startedSession = false
        for session in sessionCookies {
            var cookie = vcapID
            cookie.secure = cookie.secure || session.secure
            // Go's cookie reader in gorouter keeps what it understands, and writes it its own way.
            cookie.sameSite = session.canonicalSameSite
            cookie.expires = session.canonicalExpires
            cookie.partitioned = session.partitioned
            cookie.maxAge = session.maxAge
            if session.isDeletion(nowSecondsSince1970: now) {
                cookie.maxAge = 0
            } else if !requestWasSticky {
                startedSession = true
            }
            setCookies.append(cookie.headerValue)
            if vcapIDMeta { setCookies.append(VCAPIDMeta.cookie(for: cookie, now: now).headerValue) }
        }
        return ResponseAffinity(setCookies: setCookies, startedSession: startedSession)
    }

    /// The cookie name of a `Set-Cookie` value, without parsing the rest.
    static func cookieName(in header: String) -> Substring {
        let name = header.prefix { $0 != "=" && $0 != ";" }
        return name.trimmingCharacters()
    }
}

/// No affinity: every request is balanced (socket.io long-polling then fails with "Session ID unknown").
public struct NoAffinity: AffinityPolicy {
    public init() {}

    public var mode: AffinityMode { .none }
    public var readsCookies: Bool { false }

    public func pin(for request: AffinityRequest) -> AffinityPin { .none }

    public func firstSelection<E: BalancerEndpoint>(endpoints: [E], pin: AffinityPin, context: SelectionContext) -> Selection? {
        context.balanced(endpoints, kind: .balanced)
    }

    public func response(_ response: AffinityResponse) -> ResponseAffinity { .nothing }
}

/// HAProxy's `cookie SERVERID insert indirect nocache` with `option redispatch`: the proxy inserts its
/// own cookie naming the server; the cookie is not passed to the app; a request pinned to a server
/// that is gone or down is redispatched and gets a new cookie.
public struct HAProxyAffinity: AffinityPolicy {
    public var cookieName: String

    public init(cookieName: String = "SERVERID") {
        self.cookieName = cookieName
    }

    public var mode: AffinityMode { .haproxy }
    public var readsCookies: Bool { true }
    public var rewritesCookies: Bool { true }

    public func pin(for request: AffinityRequest) -> AffinityPin {
        guard let value = RequestCookies.value(named: cookieName, in: request.cookieHeaders), !value.isEmpty else { return .none }
        return .instance(String(value))
    }

    public func firstSelection<E: BalancerEndpoint>(endpoints: [E], pin: AffinityPin, context: SelectionContext) -> Selection? {
        pinnedOrBalanced(endpoints: endpoints, pin: pin, context: context, skipFailed: true)
    }

    public func response(_ response: AffinityResponse) -> ResponseAffinity {
        let served = response.servedInstanceID.isEmpty ? response.servedAddress : response.servedInstanceID
        guard response.pin.instanceID != served else { return .nothing }
        return ResponseAffinity(
            setCookies: ["\(cookieName)=\(served); path=/"],
            headers: [HeaderField("Cache-Control", "private")],
            startedSession: response.pin == .none
        )
    }

    public func forwardedCookieHeader(_ header: String) -> String? {
        RequestCookies.removing(named: cookieName, from: header)
    }
}

/// nginx-style `ip_hash`: the client address picks the instance; when it is unavailable the next
/// one on the ring is taken. The whole address is hashed (nginx hashes the first three octets of an
/// IPv4 address, which would send every loopback client to one instance).
public struct IPHashAffinity: AffinityPolicy {
    public init() {}

    public var mode: AffinityMode { .ipHash }
    public var readsCookies: Bool { false }

    public func pin(for request: AffinityRequest) -> AffinityPin {
        .hash(Self.fnv1a(request.clientAddress))
    }

    public func firstSelection<E: BalancerEndpoint>(endpoints: [E], pin: AffinityPin, context: SelectionContext) -> Selection? {
        guard case .hash(let hash) = pin, !endpoints.isEmpty else { return context.balanced(endpoints, kind: .balanced) }
        let count = endpoints.count
        let home = Int(hash % UInt64(count))
        for step in 0..<count {
            let index = (home + step) % count
            let endpoint = endpoints[index]
            if context.tried.contains(index) || context.balancer.isOverloaded(endpoint) { continue }
            if let until = endpoint.failedUntil, until > context.now { continue }
            if step == 0 { return Selection(index: index, kind: .ipHash) }
            return Selection(index: index, kind: context.balancer.isOverloaded(endpoints[home]) ? .fallbackOverloaded : .fallbackInstanceGone)
        }
        return context.balanced(endpoints, kind: .fallbackInstanceGone)
    }

    public func response(_ response: AffinityResponse) -> ResponseAffinity { .nothing }

    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return hash
    }
}
