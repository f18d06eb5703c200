import CloudFoundry
import NIOCore
import Testing

@testable import StickyProxy

/// An endpoint as the balancer sees it, without any shared counters.
struct FakeEndpoint: BalancerEndpoint {
    var instanceID: String
    var inFlight = 0
    var failedUntil: NIODeadline? = nil
}

@Suite("Balancer")
struct BalancerTests {
    let now = NIODeadline.uptimeNanoseconds(5_000_000_000)
    var rng = SplitMix64(seed: 42)

    func endpoints(_ loads: [Int], failed: Set<Int> = []) -> [FakeEndpoint] {
        loads.enumerated().map { index, load in
            FakeEndpoint(instanceID: "i\(index)", inFlight: load, failedUntil: failed.contains(index) ? now + .seconds(10) : nil)
        }
    }

    @Test mutating func roundRobinStartsAtTheCursor() {
        let balancer = Balancer(algorithm: .roundRobin, maxConnsPerBackend: 0)
        let pool = endpoints([0, 0, 0])
        let picks = (0..<6).map { balancer.pick(from: pool, excluding: .init(), now: now, start: $0, random: &rng)?.index }
        #expect(picks == [0, 1, 2, 0, 1, 2])
    }

    @Test mutating func roundRobinSkipsOverloadedFailedAndTriedEndpoints() {
        let balancer = Balancer(algorithm: .roundRobin, maxConnsPerBackend: 5)
        let pool = endpoints([5, 0, 0, 0], failed: [1])
        var tried = TriedEndpoints()
        tried.insert(2)
        #expect(balancer.pick(from: pool, excluding: tried, now: now, start: 0, random: &rng) == .init(index: 3, clearedFailures: false))
    }

    @Test mutating func aFailureMarkExpires() {
        let balancer = Balancer(algorithm: .roundRobin, maxConnsPerBackend: 0)
        let pool = endpoints([0, 0], failed: [0])
        #expect(balancer.pick(from: pool, excluding: .init(), now: now, start: 0, random: &rng)?.index == 1)
        #expect(balancer.pick(from: pool, excluding: .init(), now: now + .seconds(11), start: 0, random: &rng)?.index == 0)
    }

    @Test mutating func whenEveryCandidateFailedTheMarksAreIgnored() {
        let balancer = Balancer(algorithm: .roundRobin, maxConnsPerBackend: 0)
        let pool = endpoints([0, 0], failed: [0, 1])
        #expect(balancer.pick(from: pool, excluding: .init(), now: now, start: 1, random: &rng) == .init(index: 1, clearedFailures: true))
    }

    @Test mutating func nothingLeftWhenAllAreTriedOrOverloaded() {
        let balancer = Balancer(algorithm: .roundRobin, maxConnsPerBackend: 1)
        var tried = TriedEndpoints()
        tried.insert(0)
        #expect(balancer.pick(from: endpoints([0, 1]), excluding: tried, now: now, start: 0, random: &rng) == nil)
        #expect(balancer.allOverloaded(endpoints([1, 1])))
        #expect(!balancer.allOverloaded(endpoints([1, 0])))
        #expect(!Balancer(algorithm: .roundRobin, maxConnsPerBackend: 0).allOverloaded(endpoints([900])))
    }

    @Test mutating func leastConnectionPicksTheFewestInFlight() {
        let balancer = Balancer(algorithm: .leastConnection, maxConnsPerBackend: 0)
        #expect(balancer.pick(from: endpoints([3, 1, 2]), excluding: .init(), now: now, start: 0, random: &rng)?.index == 1)
    }

    @Test func leastConnectionBreaksTiesAtRandom() {
        let balancer = Balancer(algorithm: .leastConnection, maxConnsPerBackend: 0)
        var chosen = Set<Int>()
        for seed in 0..<64 {
            var random = SplitMix64(seed: UInt64(seed))
            chosen.insert(balancer.pick(from: endpoints([1, 0, 0, 0]), excluding: .init(), now: now, start: 0, random: &random)!.index)
        }
        #expect(chosen == [1, 2, 3])
    }

    @Test func decisionOrdinalsFollowAllCases() {
        for (index, kind) in RoutingDecisionKind.allCases.enumerated() { #expect(kind.ordinal == index) }
    }

    @Test func triedEndpointsHoldsManyIndices() {
        var tried = TriedEndpoints()
        for index in [0, 5, 63, 64, 200] { tried.insert(index) }
        tried.insert(5)
        #expect(tried.count == 5)
        #expect(tried.contains(64) && tried.contains(200) && !tried.contains(1))
    }
}

@Suite("CF affinity (gorouter)")
struct CFAffinityTests {
    let policy = CFAffinity()
    let now = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func request(_ cookie: String?, upgrade: Bool = false, negotiate: Bool = false) -> AffinityRequest {
        AffinityRequest(cookieHeaders: cookie.map { [$0] } ?? [], clientAddress: "127.0.0.1", isUpgrade: upgrade, negotiatesAuthentication: negotiate)
    }

    func response(
        pin: AffinityPin = .none, served: String = "guid-a", setCookies: [String] = [], path: String = "/", upgrade: Bool = false,
        requestCookies: [String] = [], now: Int64 = 1_700_000_000, negotiate: Bool = false
    )
        -> AffinityResponse
    {
        AffinityResponse(
            pin: pin, servedInstanceID: served, servedAddress: "127.0.0.1:1", setCookieHeaders: setCookies, contextPath: path,
            isUpgrade: upgrade, nowSecondsSince1970: now, requestCookieHeaders: requestCookies, negotiatesAuthentication: negotiate)
    }

    @Test func pinnedOnlyWithBothCookies() {
        #expect(policy.pin(for: request("JSESSIONID=s; __VCAP_ID__=guid-a")) == .instance("guid-a"))
        #expect(policy.pin(for: request("__VCAP_ID__=guid-a")) == .none)
        #expect(policy.pin(for: request("JSESSIONID=s")) == .none)
        #expect(policy.pin(for: request("JSESSIONID=s; __VCAP_ID__=")) == .none)
        #expect(policy.pin(for: request(nil)) == .none)
        #expect(CFAffinity(stickyCookieNames: ["SESSION"]).pin(for: request("SESSION=1; __VCAP_ID__=g")) == .instance("g"))
    }

    @Test("A trigger cookie with the __Host- prefix (RFC 6265bis) triggers as the name without it, in requests and responses")
    func hostPrefixedSessionCookies() {
        #expect(policy.pin(for: request("__Host-JSESSIONID=s; __VCAP_ID__=guid-a")) == .instance("guid-a"))
        // The exact prefix only, as the RFC writes it, and only in front of a configured name.
        #expect(policy.pin(for: request("__host-JSESSIONID=s; __VCAP_ID__=guid-a")) == .none)
        #expect(policy.pin(for: request("__Secure-JSESSIONID=s; __VCAP_ID__=guid-a")) == .none)
        #expect(policy.pin(for: request("X__Host-JSESSIONID=s; __VCAP_ID__=guid-a")) == .none)
        #expect(CFAffinity(stickyCookieNames: ["SESSION"]).pin(for: request("__Host-SESSION=1; __VCAP_ID__=g")) == .instance("g"))
        let result = CFAffinity(vcapIDMeta: false).response(response(setCookies: ["__Host-JSESSIONID=abc; Path=/; Secure"]))
        #expect(result.setCookies == ["__VCAP_ID__=guid-a; Path=/; HttpOnly; Secure"])
        #expect(result.startedSession)
        #expect(policy.response(response(setCookies: ["__host-JSESSIONID=abc; Path=/; Secure"])) == .nothing)
    }

    @Test func upgradesArePinnedUnlessWebSocketAffinityIsOff() {
        #expect(policy.pin(for: request("JSESSIONID=s; __VCAP_ID__=g", upgrade: true)) == .instance("g"))
        let old = CFAffinity(webSocketAffinity: false)
        #expect(old.pin(for: request("JSESSIONID=s; __VCAP_ID__=g", upgrade: true)) == .none)
        #expect(old.pin(for: request("JSESSIONID=s; __VCAP_ID__=g")) == .instance("g"))
        #expect(old.response(response(setCookies: ["JSESSIONID=1"], upgrade: true)) == .nothing)
    }

    @Test func firstSelectionHonoursThePinOrFallsBack() {
        let pool = [FakeEndpoint(instanceID: "a"), FakeEndpoint(instanceID: "b", inFlight: 500), FakeEndpoint(instanceID: "c")]
        let context = SelectionContext(
            balancer: Balancer(algorithm: .roundRobin, maxConnsPerBackend: 500), now: now, cursor: PoolCursor(start: 0), randomSeed: 1)
        // The cursor (at 0) moves only when the balancer chooses: not on the sticky hit.
        #expect(policy.firstSelection(endpoints: pool, pin: .instance("c"), context: context) == Selection(index: 2, kind: .stickyHit))
        #expect(policy.firstSelection(endpoints: pool, pin: .instance("b"), context: context) == Selection(index: 0, kind: .fallbackOverloaded))
        // From 1: b is at max_conns, so c.
        #expect(policy.firstSelection(endpoints: pool, pin: .instance("gone"), context: context) == Selection(index: 2, kind: .fallbackInstanceGone))
        #expect(policy.firstSelection(endpoints: pool, pin: .none, context: context) == Selection(index: 2, kind: .balanced))
        #expect(policy.firstSelection(endpoints: pool, pin: .none, context: context) == Selection(index: 0, kind: .balanced))
    }

    @Test func stickyHitsAndLeastConnectionLeaveTheRoundRobinCursorWhereItIs() {
        let pool = [FakeEndpoint(instanceID: "a"), FakeEndpoint(instanceID: "b")]
        let cursor = PoolCursor(start: 0)
        let roundRobin = SelectionContext(balancer: Balancer(algorithm: .roundRobin, maxConnsPerBackend: 0), now: now, cursor: cursor, randomSeed: 1)
        let leastConnection = SelectionContext(
            balancer: Balancer(algorithm: .leastConnection, maxConnsPerBackend: 0), now: now, cursor: cursor, randomSeed: 1)
        // New clients alternate between a and b whatever the sticky and least-connection choices between them.
        var chosen: [Int] = []
        for _ in 0..<4 {
            chosen.append(policy.firstSelection(endpoints: pool, pin: .none, context: roundRobin)?.index ?? -1)
            #expect(policy.firstSelection(endpoints: pool, pin: .instance("a"), context: roundRobin)?.kind == .stickyHit)
            _ = policy.firstSelection(endpoints: pool, pin: .none, context: leastConnection)
        }
        #expect(chosen == [0, 1, 0, 1])
    }

    @Test func aFailedStickyTargetIsStillTriedFirst() {
        let pool = [FakeEndpoint(instanceID: "a"), FakeEndpoint(instanceID: "b", failedUntil: now + .seconds(30))]
        let context = SelectionContext(
            balancer: Balancer(algorithm: .roundRobin, maxConnsPerBackend: 0), now: now, cursor: PoolCursor(start: 0), randomSeed: 1)
        #expect(policy.firstSelection(endpoints: pool, pin: .instance("b"), context: context) == Selection(index: 1, kind: .stickyHit))
    }

    @Test func retriesUseTheBalancerOnUntriedEndpoints() {
        let decider = RoutingDecider(policy: policy)
        let pool = [FakeEndpoint(instanceID: "a"), FakeEndpoint(instanceID: "b")]
        var tried = TriedEndpoints()
        tried.insert(1)
        let context = SelectionContext(
            balancer: Balancer(algorithm: .roundRobin, maxConnsPerBackend: 0), tried: tried, now: now, cursor: PoolCursor(start: 1), randomSeed: 1)
        #expect(decider.select(endpoints: pool, pin: .instance("b"), attempt: 2, context: context) == Selection(index: 0, kind: .retryAfterError))
    }

    @Test func responseSettingTheSessionCookieGetsVCAPID() {
        let result = policy.response(response(setCookies: ["JSESSIONID=abc; Path=/"]))
        // With its __VCAP_ID_META__, which has no attribute to keep here (gorouter writes it empty).
        #expect(result.setCookies == ["__VCAP_ID__=guid-a; Path=/; HttpOnly", "__VCAP_ID_META__=; Path=/; HttpOnly"])
        #expect(result.startedSession)
        let older = CFAffinity(vcapIDMeta: false).response(response(setCookies: ["JSESSIONID=abc; Path=/"]))
        #expect(older.setCookies == ["__VCAP_ID__=guid-a; Path=/; HttpOnly"])
    }

    @Test("SameSite and Expires are copied as Go reads and writes them: the case made canonical, what it cannot read left out")
    func attributesAreCopiedAsGoWritesThem() {
        let cases: [(String, String)] = [
            ("SameSite=strict; Expires=Wed, 21 Oct 2037 07:28:00 GMT", "; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly; SameSite=Strict"),
            ("samesite=NONE; Secure", "; HttpOnly; Secure; SameSite=None"),
            ("SameSite=bogus; Expires=garbage", "; HttpOnly"),
            ("Expires=Wednesday, 21-Oct-37 07:28:00 GMT", "; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly"),
        ]
        for (attributes, expected) in cases {
            let result = CFAffinity(vcapIDMeta: false).response(response(setCookies: ["JSESSIONID=abc; \(attributes)"]))
            #expect(result.setCookies == ["__VCAP_ID__=guid-a; Path=/\(expected)"], "\(attributes)")
        }
    }

    @Test func attributesAreCopiedFromTheSessionCookie() {
        let session = "JSESSIONID=abc; Path=/; Secure; SameSite=Lax; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=60; Partitioned"
        let result = policy.response(response(setCookies: [session], path: "/app"))
        let attributes = "Path=/app; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=60; HttpOnly; Secure; SameSite=Lax; Partitioned"
        #expect(
            result.setCookies == [
                "__VCAP_ID__=guid-a; \(attributes)",
                // Max-Age as the time it runs out (1,700,000,000 + 60), Expires as Unix seconds.
                "__VCAP_ID_META__=secure&partitioned&expires=2139722880&maxage=1700000060&samesite=lax; \(attributes)",
            ])
    }

    @Test("After a fallback without a new session cookie, __VCAP_ID__ gets back the attributes __VCAP_ID_META__ kept")
    func fallbackRestoresTheAttributesFromTheMetaCookie() {
        let session = "JSESSIONID=abc; Path=/; Secure; SameSite=Strict; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=600; Partitioned"
        let first = policy.response(response(setCookies: [session], now: 1_700_000_000))
        let meta = String(first.setCookies[1].prefix { $0 != ";" })
        // 100 s later, the pinned instance is gone and the app sets no session cookie.
        let fallback = policy.response(
            response(pin: .instance("gone"), served: "guid-b", requestCookies: ["JSESSIONID=abc; __VCAP_ID__=gone; \(meta)"], now: 1_700_000_100))
        #expect(
            fallback.setCookies == [
                "__VCAP_ID__=guid-b; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=500; HttpOnly; Secure; SameSite=Strict; Partitioned"
            ])
        // Without the META cookie (or with the older routers' behaviour): default attributes.
        let bare = policy.response(response(pin: .instance("gone"), served: "guid-b", requestCookies: ["JSESSIONID=abc; __VCAP_ID__=gone"]))
        #expect(bare.setCookies == ["__VCAP_ID__=guid-b; Path=/; HttpOnly"])
        let older = CFAffinity(vcapIDMeta: false).response(
            response(pin: .instance("gone"), served: "guid-b", requestCookies: ["JSESSIONID=abc; __VCAP_ID__=gone; \(meta)"]))
        #expect(older.setCookies == ["__VCAP_ID__=guid-b; Path=/; HttpOnly"])
        // Once the Max-Age it kept has run out, the refreshed cookie is a deletion, as gorouter makes it.
        let late = policy.response(
            response(pin: .instance("gone"), served: "guid-b", requestCookies: ["__VCAP_ID__=gone; \(meta)"], now: 1_700_000_700))
        #expect(late.setCookies.first?.contains("Max-Age=0") == true)
    }

    @Test("A META cookie from the client is read defensively: unknown parts, bad numbers and impossible dates are left out")
    func metaCookieValuesFromTheClient() {
        var cookie = SetCookie(name: "__VCAP_ID__", value: "g")
        VCAPIDMeta(value: "samesite=bogus&maxage=x&expires=99999999999999&partitioned&zzz=1").restore(into: &cookie, now: 1_700_000_000)
        #expect(cookie.headerValue == "__VCAP_ID__=g; Partitioned")
        VCAPIDMeta(value: "expires=-9223372036854775808&maxage=9223372036854775807").restore(into: &cookie, now: 1_700_000_000)
        #expect(cookie.expires == nil && cookie.maxAge == Int(9_223_372_036_854_775_807 - 1_700_000_000))
        #expect(
            VCAPIDMeta(value: VCAPIDMeta(value: "secure&expires=5&maxage=-1&samesite=none").value)
                == VCAPIDMeta(value: "secure&samesite=none&maxage=-1&expires=5"))
        #expect(HTTPDate.format(2_139_722_880) == "Wed, 21 Oct 2037 07:28:00 GMT")
        #expect(HTTPDate.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
        #expect(HTTPDate.format(-11_644_473_600) == "Mon, 01 Jan 1601 00:00:00 GMT")
        for seconds: Int64 in [0, 951_782_400, 1_700_000_000, 4_102_444_799, -86_401] {
            #expect(HTTPDate.parse(HTTPDate.format(seconds)) == seconds)
        }
    }

    @Test func secureCookiesForcesSecure() {
        let result = CFAffinity(secureCookies: true).response(response(setCookies: ["JSESSIONID=abc"]))
        #expect(result.setCookies == ["__VCAP_ID__=guid-a; Path=/; HttpOnly; Secure", "__VCAP_ID_META__=secure; Path=/; HttpOnly; Secure"])
    }

    @Test func stickyToTheSameInstanceWithoutSessionCookieSetsNothing() {
        #expect(policy.response(response(pin: .instance("guid-a"))) == .nothing)
    }

    @Test func fallbackSetsVCAPIDEvenWithoutSessionCookie() {
        let result = policy.response(response(pin: .instance("gone")))
        #expect(result.setCookies == ["__VCAP_ID__=guid-a; Path=/; HttpOnly"])
        #expect(!result.startedSession)
    }

    @Test func deletingTheSessionDeletesVCAPID() {
        let byMaxAge = policy.response(response(pin: .instance("guid-a"), setCookies: ["JSESSIONID=; Max-Age=0"]))
        // Its META cookie is deleted with it.
        #expect(
            byMaxAge.setCookies == ["__VCAP_ID__=guid-a; Path=/; Max-Age=0; HttpOnly", "__VCAP_ID_META__=maxage=-1; Path=/; Max-Age=0; HttpOnly"])
        let byExpires = policy.response(response(pin: .instance("guid-a"), setCookies: ["JSESSIONID=; Expires=Thu, 01 Jan 1970 00:00:00 GMT"]))
        #expect(
            byExpires.setCookies == [
                "__VCAP_ID__=guid-a; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly",
                "__VCAP_ID_META__=expires=0&maxage=-1; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly",
            ])
        #expect(!byExpires.startedSession)
    }

    @Test("Each session cookie gets its own pair (a CHIPS migration: a partitioned cookie and the deletion of the old one)")
    func eachSessionCookieGetsItsPair() {
        let result = CFAffinity(vcapIDMeta: false).response(
            response(setCookies: ["JSESSIONID=new; Secure; SameSite=None; Partitioned", "JSESSIONID=; Max-Age=0"]))
        #expect(
            result.setCookies == [
                "__VCAP_ID__=guid-a; Path=/; HttpOnly; Secure; SameSite=None; Partitioned", "__VCAP_ID__=guid-a; Path=/; Max-Age=0; HttpOnly",
            ])
        #expect(result.startedSession)
    }

    @Test func theAppsOwnVCAPIDWins() {
        #expect(policy.response(response(pin: .instance("gone"), setCookies: ["JSESSIONID=1", "__VCAP_ID__=mine"])) == .nothing)
    }

    @Test func endpointsWithoutInstanceGUIDGetNoCookie() {
        #expect(policy.response(response(served: "", setCookies: ["JSESSIONID=1"])) == .nothing)
    }

    @Test("sticky_sessions_for_auth_negotiate: a Negotiate request with __VCAP_ID__ must reach that instance, trigger cookie or not")
    func negotiateRequestsArePinnedWithoutFallback() {
        let negotiate = CFAffinity(stickySessionsForAuthNegotiate: true)
        #expect(negotiate.pin(for: request("__VCAP_ID__=guid-a", negotiate: true)) == .required("guid-a"))
        #expect(negotiate.pin(for: request("JSESSIONID=s; __VCAP_ID__=guid-a", negotiate: true)) == .required("guid-a"))
        #expect(negotiate.pin(for: request("__VCAP_ID__=", negotiate: true)) == .required(""))
        // Without __VCAP_ID__ or without Negotiate: the usual rules; and off by default, as in gorouter.
        #expect(negotiate.pin(for: request("JSESSIONID=s", negotiate: true)) == .none)
        #expect(negotiate.pin(for: request("__VCAP_ID__=guid-a")) == .none)
        #expect(negotiate.pin(for: request("JSESSIONID=s; __VCAP_ID__=guid-a")) == .instance("guid-a"))
        #expect(policy.pin(for: request("__VCAP_ID__=guid-a", negotiate: true)) == .none)
        #expect(policy.pin(for: request("JSESSIONID=s; __VCAP_ID__=guid-a", negotiate: true)) == .instance("guid-a"))
        #expect(AffinityPin.required("guid-a").instanceID == "guid-a")

        let pool = [
            FakeEndpoint(instanceID: "a"), FakeEndpoint(instanceID: "b", inFlight: 500),
            FakeEndpoint(instanceID: "c", failedUntil: now + .seconds(30)),
        ]
        let context = SelectionContext(
            balancer: Balancer(algorithm: .roundRobin, maxConnsPerBackend: 500), now: now, cursor: PoolCursor(start: 0), randomSeed: 1)
        // A failure mark does not matter; a missing or overloaded instance means no endpoint at all.
        #expect(negotiate.firstSelection(endpoints: pool, pin: .required("c"), context: context) == Selection(index: 2, kind: .stickyHit))
        #expect(negotiate.firstSelection(endpoints: pool, pin: .required("b"), context: context) == nil)
        #expect(negotiate.firstSelection(endpoints: pool, pin: .required("gone"), context: context) == nil)
        #expect(negotiate.firstSelection(endpoints: pool, pin: .required(""), context: context) == nil)
        #expect(negotiate.firstSelection(endpoints: [FakeEndpoint(instanceID: "")], pin: .required(""), context: context) == nil)

        // Retries go to the same instance, while the pool has at least as many endpoints as attempts.
        let decider = RoutingDecider(policy: negotiate)
        var tried = TriedEndpoints()
        tried.insert(0)
        let retry = SelectionContext(
            balancer: Balancer(algorithm: .roundRobin, maxConnsPerBackend: 500), tried: tried, now: now, cursor: PoolCursor(start: 0), randomSeed: 1)
        #expect(decider.select(endpoints: pool, pin: .required("a"), attempt: 2, context: retry) == Selection(index: 0, kind: .retryAfterError))
        #expect(decider.select(endpoints: pool, pin: .required("a"), attempt: 3, context: retry) == Selection(index: 0, kind: .retryAfterError))
        #expect(decider.select(endpoints: Array(pool.prefix(2)), pin: .required("a"), attempt: 3, context: retry) == nil)
        #expect(decider.select(endpoints: Array(pool.prefix(1)), pin: .required("a"), attempt: 2, context: retry) == nil)
        // An ordinary pin: the balancer, elsewhere.
        #expect(decider.select(endpoints: pool, pin: .instance("a"), attempt: 2, context: retry)?.index == 2)
    }

    @Test("sticky_sessions_for_auth_negotiate: a Negotiate challenge gets a __VCAP_ID__ for 60 s, SameSite=Strict")
    func negotiateChallengeSetsAShortLivedVCAPID() {
        let negotiate = CFAffinity(stickySessionsForAuthNegotiate: true)
        let challenge = negotiate.response(response(negotiate: true))
        #expect(challenge.setCookies == ["__VCAP_ID__=guid-a; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"])
        #expect(challenge.startedSession)
        // It comes before a session cookie's pair: the configured Secure only, no __VCAP_ID_META__.
        let withSession = CFAffinity(secureCookies: true, stickySessionsForAuthNegotiate: true).response(
            response(setCookies: ["JSESSIONID=s; Secure; SameSite=Lax"], path: "/app", negotiate: true))
        #expect(withSession.setCookies == ["__VCAP_ID__=guid-a; Path=/app; Max-Age=60; HttpOnly; Secure; SameSite=Strict"])
        // Already on that instance: the usual rules. Pinned to one that is gone: the challenge's cookie.
        #expect(negotiate.response(response(pin: .instance("guid-a"), negotiate: true)) == .nothing)
        #expect(negotiate.response(response(pin: .required("guid-a"), negotiate: true)) == .nothing)
        let fellBack = negotiate.response(response(pin: .instance("gone"), negotiate: true))
        #expect(fellBack.setCookies == ["__VCAP_ID__=guid-a; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"] && !fellBack.startedSession)
        // The app's own __VCAP_ID__ still wins; and off by default.
        #expect(negotiate.response(response(setCookies: ["__VCAP_ID__=mine"], negotiate: true)) == .nothing)
        #expect(policy.response(response(negotiate: true)) == .nothing)
    }
}

@Suite("Other affinity modes")
struct OtherModesTests {
    let now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let context = SelectionContext(
        balancer: Balancer(algorithm: .roundRobin, maxConnsPerBackend: 0), now: .uptimeNanoseconds(1_000_000_000), cursor: PoolCursor(start: 1),
        randomSeed: 7)
    let pool = [FakeEndpoint(instanceID: "a"), FakeEndpoint(instanceID: "b"), FakeEndpoint(instanceID: "c")]

    @Test func noneBalancesAndNeverSetsCookies() {
        let policy = NoAffinity()
        #expect(policy.pin(for: AffinityRequest(cookieHeaders: ["JSESSIONID=1; __VCAP_ID__=a"], clientAddress: "", isUpgrade: false)) == .none)
        #expect(policy.firstSelection(endpoints: pool, pin: .none, context: context) == Selection(index: 1, kind: .balanced))
    }

    @Test func haproxyInsertsItsCookieAndHidesItFromTheApp() {
        let policy = HAProxyAffinity()
        #expect(policy.pin(for: AffinityRequest(cookieHeaders: ["a=1; SERVERID=c"], clientAddress: "", isUpgrade: false)) == .instance("c"))
        #expect(policy.firstSelection(endpoints: pool, pin: .instance("c"), context: context) == Selection(index: 2, kind: .stickyHit))
        let inserted = policy.response(
            AffinityResponse(
                pin: .none, servedInstanceID: "b", servedAddress: "x", setCookieHeaders: [], contextPath: "/", isUpgrade: false,
                nowSecondsSince1970: 0))
        #expect(inserted.setCookies == ["SERVERID=b; path=/"])
        #expect(inserted.headers == [HeaderField("Cache-Control", "private")])
        #expect(policy.forwardedCookieHeader("a=1; SERVERID=c; b=2") == "a=1; b=2")
        #expect(policy.forwardedCookieHeader("SERVERID=c") == nil)
        // A combining mark after "=" (U+07AF) made one Character of "=" and it: the cookie was read
        // (pinned) but not removed, so the app got it (found by make fuzz).
        let marked = "a=1; SERVERID=\u{7AF}c; b=2"
        #expect(policy.pin(for: AffinityRequest(cookieHeaders: [marked], clientAddress: "", isUpgrade: false)) == .instance("\u{7AF}c"))
        #expect(policy.forwardedCookieHeader(marked) == "a=1; b=2")
        #expect(policy.forwardedCookieHeader(" SERVERID = x ;; é=ü ; SERVERID=y") == "é=ü")
        // A part without "=" is a nameless cookie (RFC 6265bis), not SERVERID: the pin does not read it,
        // so the app gets it unchanged. It used to be removed, though it pinned nothing.
        for header in ["SERVERID", "a=1; SERVERID", "SERVERID ; a=1", "=SERVERID; a=1"] {
            #expect(policy.pin(for: AffinityRequest(cookieHeaders: [header], clientAddress: "", isUpgrade: false)) == .none)
            #expect(policy.forwardedCookieHeader(header) == header)
        }
        #expect(policy.forwardedCookieHeader("SERVERID; SERVERID=c; a=1") == "SERVERID; a=1")
    }

    @Test func haproxyRedispatchesAwayFromADownServer() {
        let down = [FakeEndpoint(instanceID: "a"), FakeEndpoint(instanceID: "b", failedUntil: now + .seconds(5))]
        let selection = HAProxyAffinity().firstSelection(endpoints: down, pin: .instance("b"), context: context)
        #expect(selection == Selection(index: 0, kind: .fallbackInstanceGone))
    }

    @Test func ipHashIsStablePerAddressAndMovesOnWhenUnavailable() {
        let policy = IPHashAffinity()
        let pin = policy.pin(for: AffinityRequest(cookieHeaders: [], clientAddress: "127.0.0.5", isUpgrade: false))
        let first = policy.firstSelection(endpoints: pool, pin: pin, context: context)
        #expect(first?.kind == .ipHash)
        #expect(policy.firstSelection(endpoints: pool, pin: pin, context: context) == first)
        var busy = pool
        busy[first!.index].failedUntil = now + .seconds(5)
        let moved = policy.firstSelection(endpoints: busy, pin: pin, context: context)
        #expect(moved?.index == (first!.index + 1) % 3)
        #expect(moved?.kind == .fallbackInstanceGone)
    }
}
