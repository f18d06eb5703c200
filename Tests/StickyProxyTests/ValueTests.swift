import CloudFoundry
import Foundation
import NIOCore
import NIOHTTP1
import Testing

@testable import StickyProxy

@Suite("Cookies")
struct CookieTests {
    @Test func requestCookiesAreReadByName() {
        let headers = ["a=1; JSESSIONID=abc ; __VCAP_ID__=\"guid\"", "late=2"]
        #expect(RequestCookies.value(named: "JSESSIONID", in: headers) == "abc")
        #expect(RequestCookies.value(named: "__VCAP_ID__", in: headers) == "guid")
        #expect(RequestCookies.value(named: "late", in: headers) == "2")
        #expect(RequestCookies.value(named: "JSESSION", in: headers) == nil)
        #expect(RequestCookies.containsAny(of: ["x", "late"], in: headers))
        #expect(!RequestCookies.containsAny(of: ["x"], in: headers))
    }

    @Test func setCookieAttributesAreParsed() {
        let cookie = SetCookie(
            header: "JSESSIONID=abc; path=/x; SECURE; httponly; samesite=Strict; Max-Age=-1; Partitioned; Expires=Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(cookie?.name == "JSESSIONID" && cookie?.value == "abc")
        #expect(cookie?.path == "/x" && cookie?.secure == true && cookie?.httpOnly == true && cookie?.partitioned == true)
        #expect(cookie?.sameSite == "Strict" && cookie?.maxAge == -1 && cookie?.expires == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(SetCookie(header: "no-equals-sign") == nil)
        #expect(SetCookie(header: "=value") == nil)
    }

    @Test func deletionIsMaxAgeZeroOrAnExpiryInThePast() {
        let now: Int64 = 1_700_000_000
        #expect(SetCookie(header: "a=; Max-Age=0")!.isDeletion(nowSecondsSince1970: now))
        #expect(SetCookie(header: "a=; Expires=Thu, 01 Jan 1970 00:00:00 GMT")!.isDeletion(nowSecondsSince1970: now))
        #expect(!SetCookie(header: "a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT")!.isDeletion(nowSecondsSince1970: now))
        #expect(!SetCookie(header: "a=1; Max-Age=10")!.isDeletion(nowSecondsSince1970: now))
    }

    @Test func httpDatesInAllThreeFormats() {
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
        #expect(HTTPDate.parse("Sunday, 06-Nov-94 08:49:37 GMT") == 784_111_777)
        #expect(HTTPDate.parse("Sun Nov  6 08:49:37 1994") == 784_111_777)
        #expect(HTTPDate.parse("Thu, 01 Jan 1970 00:00:00 GMT") == 0)
        #expect(HTTPDate.parse("yesterday") == nil)
    }

    @Test("Digits no date has are not a date, and no arithmetic on them overflows (found by make fuzz)")
    func impossibleHTTPDates() {
        #expect(HTTPDate.parse("Sun, 06 Nov 9999999999999999 08:49:37 GMT") == nil)
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 99999999999999999:49:37 GMT") == nil)
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:-9223372036854775808:37 GMT") == nil)
        #expect(HTTPDate.parse("Sun, 99999999999999999999 Nov 1994 08:49:37 GMT") == nil)
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 24:00:00 GMT") == nil)
        #expect(HTTPDate.parse("Sun, 32 Nov 1994 08:49:37 GMT") == nil)
        #expect(HTTPDate.parse("Fri, 31 Dec 9999 23:59:60 GMT") == 253_402_300_800)
        let now: Int64 = 1_700_000_000
        #expect(!SetCookie(header: "JSESSIONID=a; Expires=Sun, 06 Nov 9999999999999999 08:49:37 GMT")!.isDeletion(nowSecondsSince1970: now))
    }

    @Test func cookieNamesAreTokens() {
        #expect(CookieName.isValid("JSESSIONID") && CookieName.isValid("connect.sid"))
        #expect(!CookieName.isValid("") && !CookieName.isValid("a b") && !CookieName.isValid("a;b"))
    }
}

@Suite("Retry rules")
struct RetryPolicyTests {
    let policy = RetryPolicy(maxAttempts: 3)

    func verdict(
        _ failure: BackendFailure, written: Bool = true, reused: Bool = false, started: Bool = false, idempotent: Bool = true,
        replayable: Bool = true, attempt: Int = 1, allowed: Int = 3
    ) -> FailureVerdict {
        policy.verdict(
            for: failure, progress: AttemptProgress(headWritten: written, reusedConnection: reused, responseStarted: started),
            idempotent: idempotent, replayable: replayable, attempt: attempt, attemptsAllowed: allowed)
    }

    @Test func connectFailuresAreRetriedAndMarkTheEndpoint() {
        #expect(verdict(.connectFailed("refused"), written: false, idempotent: false) == .retry(markFailed: true))
        #expect(verdict(.connectFailed("refused"), written: false, attempt: 3) == .fail(markFailed: true))
        #expect(verdict(.connectFailed("refused"), written: false, attempt: 2, allowed: 2) == .fail(markFailed: true))
    }

    @Test func eofIsRetriedForIdempotentRequestsOnlyAndMarksNothing() {
        // gorouter's FailableClassifiers are dial errors and a reset on read: an EOF leaves the
        // endpoint in rotation (it used to be skipped for 30 s).
        #expect(verdict(.closedBeforeResponse, idempotent: true) == .retry(markFailed: false))
        #expect(verdict(.closedBeforeResponse, idempotent: false) == .fail(markFailed: false))
        #expect(verdict(.closedBeforeResponse, written: false, idempotent: false) == .retry(markFailed: false))
    }

    @Test func resetsMarkTheEndpointFailedEvenWhenNotRetried() {
        #expect(verdict(.connectionReset("reset"), idempotent: false) == .fail(markFailed: true))
        #expect(verdict(.connectionReset("reset"), idempotent: true) == .retry(markFailed: true))
    }

    @Test func nothingIsRetriedOnceAResponseStarted() {
        #expect(verdict(.closedBeforeResponse, started: true) == .abort)
        #expect(verdict(.connectFailed("x"), started: true) == .abort)
    }

    @Test func aRequestThatCannotBeSentAgainIsNotRetried() {
        #expect(verdict(.connectionReset("reset"), replayable: false) == .fail(markFailed: true))
    }

    @Test func aStaleKeepAliveConnectionIsReplacedForFree() {
        #expect(verdict(.closedBeforeResponse, reused: true, idempotent: false) == .reconnectSameEndpoint)
        #expect(verdict(.connectionReset("reset"), written: false, reused: true, idempotent: false) == .reconnectSameEndpoint)
        #expect(verdict(.connectionReset("reset"), reused: true, idempotent: false) == .fail(markFailed: true))
    }

    @Test func timeoutsAreNeverRetried() {
        #expect(verdict(.timedOut) == .fail(markFailed: false))
    }

    @Test func idempotentMethods() {
        for method in ["GET", "HEAD", "OPTIONS", "TRACE"] { #expect(RetryPolicy.isIdempotent(method: method, hasIdempotencyKey: false)) }
        #expect(!RetryPolicy.isIdempotent(method: "POST", hasIdempotencyKey: false))
        #expect(RetryPolicy.isIdempotent(method: "POST", hasIdempotencyKey: true))
    }

    @Test func errorTextsReadLikeGo() {
        #expect(
            BackendFailure.connectFailed("connect: connection refused").description(address: "127.0.0.1:1")
                == "dial tcp 127.0.0.1:1: connect: connection refused")
        #expect(BackendFailure.closedBeforeResponse.description(address: "x") == "EOF")
        #expect(BackendFailure.timedOut.description(address: "x") == "context deadline exceeded")
    }
}

@Suite("Exchange state machine")
struct ExchangeStateMachineTests {
    func machine(maxReplay: Int = 100) -> ExchangeStateMachine {
        ExchangeStateMachine(maxReplayBytes: maxReplay, retryPolicy: RetryPolicy(maxAttempts: 3))
    }

    @Test func aSimpleGetGoesThroughAndFreesTheBackendConnection() {
        var m = machine()
        m.requestHead(idempotent: true, isUpgrade: false)
        m.dispatch()
        #expect(m.requestEnd() == .buffer)
        m.connected(reused: false)
        m.headWritten()
        #expect(m.responseHead(status: 200) == .forward)
        let reusable = m.responseEnd(backendKeepAlive: true)
        #expect(reusable)
        #expect(m.isIdle)
    }

    @Test func bodyIsBufferedWhileConnectingAndKeptForRetries() {
        var m = machine()
        m.requestHead(idempotent: false, isUpgrade: false)
        m.dispatch()
        #expect(m.requestBody(bytes: 10) == .buffer)
        m.connected(reused: false)
        #expect(m.requestBody(bytes: 10) == .forward(retain: true))
        #expect(m.requestBody(bytes: 100) == .forward(retain: false))
        #expect(!m.replayable)
    }

    @Test func connectFailureRetriesThenAnswers502() {
        var m = machine()
        m.requestHead(idempotent: true, isUpgrade: false)
        _ = m.requestEnd()
        for attempt in 1...2 {
            m.dispatch()
            #expect(m.attempt == attempt)
            #expect(m.backendFailed(.connectFailed("refused"), attemptsAllowed: 3) == .retry(markFailed: true))
        }
        m.dispatch()
        #expect(m.backendFailed(.connectFailed("refused"), attemptsAllowed: 3) == .respondBadGateway(markFailed: true))
        #expect(m.isIdle)
    }

    @Test func aStaleConnectionIsReplacedOnlyOnce() {
        var m = machine()
        m.requestHead(idempotent: true, isUpgrade: false)
        _ = m.requestEnd()
        m.dispatch()
        m.connected(reused: true)
        m.headWritten()
        #expect(m.backendFailed(.closedBeforeResponse, attemptsAllowed: 3) == .reconnect)
        #expect(m.phase == .connecting)
        m.connected(reused: true)
        #expect(m.backendFailed(.closedBeforeResponse, attemptsAllowed: 3) == .retry(markFailed: false))
    }

    @Test func failureAfterTheResponseStartedClosesTheClient() {
        var m = machine()
        m.requestHead(idempotent: true, isUpgrade: false)
        _ = m.requestEnd()
        m.dispatch()
        m.connected(reused: false)
        #expect(m.responseHead(status: 200) == .forward)
        #expect(m.backendFailed(.closedBeforeResponse, attemptsAllowed: 3) == .closeClient)
    }

    @Test func informationalResponsesKeepWaiting() {
        var m = machine()
        m.requestHead(idempotent: false, isUpgrade: false)
        m.dispatch()
        m.connected(reused: false)
        #expect(m.responseHead(status: 100) == .forwardInformational)
        #expect(m.phase == .awaitingResponse)
        #expect(m.responseHead(status: 201) == .forward)
    }

    @Test func switchingProtocolsOnlyForUpgradeRequests() {
        var upgrade = machine()
        upgrade.requestHead(idempotent: true, isUpgrade: true)
        _ = upgrade.requestEnd()
        upgrade.dispatch()
        upgrade.connected(reused: false)
        #expect(upgrade.responseHead(status: 101) == .upgrade)
        #expect(upgrade.phase == .upgraded)

        var declined = machine()
        declined.requestHead(idempotent: true, isUpgrade: true)
        _ = declined.requestEnd()
        declined.dispatch()
        declined.connected(reused: false)
        #expect(declined.responseHead(status: 403) == .forward)
        let reusable = declined.responseEnd(backendKeepAlive: true)
        #expect(!reusable)
    }

    @Test func anEarlyResponseDrainsTheRestOfTheRequest() {
        var m = machine()
        m.requestHead(idempotent: false, isUpgrade: false)
        m.dispatch()
        m.connected(reused: false)
        #expect(m.responseHead(status: 413) == .forward)
        let reusable = m.responseEnd(backendKeepAlive: true)
        #expect(!reusable)
        #expect(m.phase == .drainingRequest)
        #expect(m.requestBody(bytes: 5) == .drop)
        #expect(m.requestEnd() == .becomeIdle)
        #expect(m.isIdle)
    }

    @Test func routerAnswersWhileTheBodyArrivesDropTheBody() {
        var m = machine()
        m.requestHead(idempotent: false, isUpgrade: false)
        m.answered()
        #expect(m.phase == .answered)
        #expect(m.requestBody(bytes: 5) == .drop)
        #expect(m.requestEnd() == .becomeIdle)
    }

    @Test func clientGoingAwayAbortsTheAttempt() {
        var m = machine()
        m.requestHead(idempotent: true, isUpgrade: false)
        m.dispatch()
        #expect(m.clientClosed() == .abortBackend(responseStarted: false))
        var n = machine()
        n.requestHead(idempotent: true, isUpgrade: false)
        #expect(n.clientClosed() == .none)
    }

    @Test func requestTimeout() {
        var waiting = machine()
        waiting.requestHead(idempotent: true, isUpgrade: false)
        waiting.dispatch()
        #expect(waiting.requestTimedOut() == .respondBadGateway)
        var streaming = machine()
        streaming.requestHead(idempotent: true, isUpgrade: false)
        streaming.dispatch()
        streaming.connected(reused: false)
        _ = streaming.responseHead(status: 200)
        #expect(streaming.requestTimedOut() == .closeClient)
    }
}

@Suite("Connection timeouts")
struct ConnectionTimeoutsTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func timeouts() -> ConnectionTimeouts {
        ConnectionTimeouts(now: t0, idleTimeout: .seconds(900), headerReadTimeout: .seconds(30), requestTimeout: .seconds(60))
    }

    @Test func phasesHaveTheirOwnDeadlines() {
        var t = timeouts()
        #expect(t.deadline?.at == t0 + .seconds(900))
        #expect(t.deadline?.expiry == .idle)
        t.bytesReceived(now: t0 + .seconds(10))
        #expect(t.deadline?.at == t0 + .seconds(40))
        #expect(t.expired(now: t0 + .seconds(40)) == .headerRead)
        #expect(t.expired(now: t0 + .seconds(39)) == nil)
        t.headReceived(now: t0 + .seconds(12))
        #expect(t.deadline?.at == t0 + .seconds(72))
        #expect(t.expired(now: t0 + .seconds(72)) == .request)
        t.exchangeFinished(now: t0 + .seconds(20))
        #expect(t.deadline?.at == t0 + .seconds(920))
    }

    @Test func moreBytesDoNotExtendTheHeaderDeadline() {
        var t = timeouts()
        t.bytesReceived(now: t0)
        t.bytesReceived(now: t0 + .seconds(20))
        #expect(t.deadline?.at == t0 + .seconds(30))
    }

    @Test func tunnelsNeverExpire() {
        var t = timeouts()
        t.headReceived(now: t0)
        t.upgraded()
        t.exchangeFinished(now: t0)
        #expect(t.deadline == nil)
    }

    @Test func zeroDisablesATimeout() {
        var t = ConnectionTimeouts(now: t0, idleTimeout: .seconds(1), headerReadTimeout: .seconds(1), requestTimeout: .zero)
        t.headReceived(now: t0)
        #expect(t.deadline == nil)
    }
}

@Suite("Router errors")
struct RouterErrorTests {
    /// The cluster counts a chaos run's 5xx by `RouterErrorKind.isServerError`: it must agree with the
    /// status the proxy sends, for every error, and every kind must be one the proxy can send.
    @Test func kindsAgreeWithTheStatusesSent() {
        let errors: [RouterError] = [
            .unknownRoute(host: "h"), .unknownInstance(host: "h", appGUID: "g", index: "1"), .invalidAppInstanceHeader, .emptyHost,
            .noEndpoints(host: "h"), .connectionLimitReached(host: "h"), .endpointFailure("EOF"), .clientClosedRequest,
        ]
        for error in errors {
            #expect(error.kind.isServerError == (error.status.code >= 500), "\(error)")
            #expect(error.routerErrorHeader.hasPrefix(error.kind.rawValue))
        }
        #expect(Set(errors.map(\.kind)) == Set(RouterErrorKind.allCases))
    }

    /// The cluster reads these counters back by `ProxyCounter`'s names and labels: the proxy must
    /// expose every one of them under that name, with that label.
    @Test func countersAreExposedUnderTheNamesTheClusterReads() {
        let metrics = ProxyMetrics()
        metrics.responseSent(status: 502)
        metrics.routerError(.endpointFailure("EOF"))
        metrics.retried()
        metrics.backendFailed()
        var bytes: [UInt8] = []
        metrics.registry.emit(into: &bytes)
        let text = String(decoding: bytes, as: UTF8.self)
        for counter in ProxyCounter.allCases {
            let series = counter.label.map { "\(counter.exposedName){\($0)=\"" } ?? "\(counter.exposedName) "
            #expect(text.contains("\n" + series), "\(counter) as \(series) in:\n\(text)")
        }
        #expect(text.contains("sticky_proxy_responses_total{code=\"5xx\"} 1"))
        #expect(text.contains("sticky_proxy_router_errors_total{error=\"endpoint_failure\"} 1"))
        #expect(ProxyCounter(exposedName: "sticky_proxy_retries_total") == .retries)
        #expect(ProxyCounter(exposedName: "sticky_proxy_routes") == nil)
    }

    @Test func bodiesAndHeadersAreGorouters() {
        #expect(RouterError.unknownRoute(host: "a.b:80").body == "404 Not Found: Requested route ('a.b:80') does not exist.\n")
        #expect(RouterError.unknownRoute(host: "x").routerErrorHeader == "unknown_route")
        #expect(RouterError.endpointFailure("EOF").routerErrorHeader == "endpoint_failure (EOF)")
        #expect(RouterError.endpointFailure("EOF").body == "502 Bad Gateway: Registered endpoint failed to handle the request.\n")
        #expect(RouterError.connectionLimitReached(host: "h").status == .serviceUnavailable)
        #expect(RouterError.connectionLimitReached(host: "h").routerErrorHeader == "Connection Limit Reached")
        #expect(RouterError.invalidAppInstanceHeader.routerErrorHeader == "invalid_cf_app_instance_header")
        let empty = String(buffer: RouterError.noEndpoints(host: "h").response(minorVersion: 1, vcapRequestID: nil, close: false))
        #expect(
            empty
                == "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Cf-Routererror: no_endpoints\r\nCache-Control: public,max-age=2\r\nContent-Length: 75\r\n\r\n503 Service Unavailable: Requested route ('h') has no available endpoints.\n"
        )
        #expect(
            RouterError.unknownInstance(host: "h", appGUID: "g", index: "1").body
                == "400 Bad Request: Requested instance ('1') with guid ('g') does not exist for route ('h')\n")
        #expect(RouterError.clientClosedRequest.status.code == 499)
        let response = String(buffer: RouterError.unknownRoute(host: "h").response(minorVersion: 1, vcapRequestID: "id", close: true))
        #expect(
            response
                == "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Cf-Routererror: unknown_route\r\nCache-Control: no-cache, no-store\r\nX-Vcap-Request-Id: id\r\nContent-Length: 53\r\nConnection: close\r\n\r\n404 Not Found: Requested route ('h') does not exist.\n"
        )
    }

    @Test func headErrorsMapTo400And431() {
        #expect(RequestReadError(HeadError.tooLarge) == .headersTooLarge)
        #expect(RequestReadError(HeadError.tooLarge).status.code == 431)
        #expect(RequestReadError(HeadError.malformed("x")) == .badRequest)
        #expect(String(buffer: RequestReadError.badRequest.response).hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
    }

    @Test func appInstanceHeaderIsValidatedLikeGorouter() {
        let guid = "6e5a3b1c-1d2e-4f30-8a4b-5c6d7e8f9a0b"
        let target = AppInstanceTarget(header: "\(guid):12")
        #expect(target?.appGUID == guid && target?.index == "12")
        for bad in ["", guid, "\(guid):", "\(guid):x", "\(guid.uppercased()):0", "\(guid):0:1", "zzzzzzzz-1d2e-4f30-8a4b-5c6d7e8f9a0b:0"] {
            #expect(AppInstanceTarget(header: bad) == nil, "\(bad)")
        }
    }
}

@Suite("Durations")
struct DurationTextTests {
    @Test("Flags take the durations cluster takes (DurationText)")
    func parsesUnits() {
        #expect(TimeAmount(durationText: "500ms") == .milliseconds(500))
        #expect(TimeAmount(durationText: "5s") == .seconds(5))
        #expect(TimeAmount(durationText: "2m") == .minutes(2))
        #expect(TimeAmount(durationText: "1h") == .hours(1))
        #expect(TimeAmount(durationText: "1.5s") == .milliseconds(1500))
        #expect(TimeAmount(durationText: "1m30s") == .seconds(90))
        #expect(TimeAmount(durationText: "30") == .seconds(30))
        #expect(TimeAmount(durationText: "0") == .zero)
        for bad in ["", "s", "5x", "-1s", "five", "1e12"] { #expect(TimeAmount(durationText: bad) == nil, "\(bad)") }
    }

    @Test("Written as gorouter (Go) writes them")
    func formats() {
        #expect(TimeAmount.seconds(5).durationText == "5s")
        #expect(TimeAmount.seconds(900).durationText == "15m0s")
        #expect(TimeAmount.milliseconds(500).durationText == "500ms")
        #expect(TimeAmount.seconds(120).durationText == "2m0s")
        #expect(TimeAmount.hours(2).durationText == "2h0m0s")
        #expect(TimeAmount.zero.durationText == "0s")
    }
}

@Suite("Proxy settings")
struct ProxyConfigurationTests {
    @Test("The defaults are valid")
    func defaults() {
        #expect(ProxyConfiguration(adminToken: "t").validationErrors() == [])
    }

    @Test(
        "Each setting that cannot work is refused with a message naming its flag",
        arguments: [
            ("port", "--port 70000 is not a TCP port (0-65535)"),
            ("admin-port", "--admin-port -1 is not a TCP port (0-65535)"),
            ("token", "the admin token is empty: pass --admin-token or set STICKY_PROXY_ADMIN_TOKEN"),
            ("cookies", "--sticky-cookie-names needs one or more cookie names separated by commas (got [\"JSESSIONID\", \"a b\"])"),
            ("haproxy", "--haproxy-cookie-name 'SERVER ID' is not a cookie name"),
            ("max-conns", "--max-conns must be 0 (no limit) or more"),
            ("attempts", "--max-attempts must be at least 1"),
            ("dial", "--dial-timeout must be more than 0"),
            ("headers", "--max-header-bytes must be at least 1024"),
            ("no-threads", "--threads must be from 1 to 1024 (this machine has \(System.coreCount) cores), not 0"),
            // Was accepted: 100000 threads would take every pid the machine has.
            ("threads", "--threads must be from 1 to 1024 (this machine has \(System.coreCount) cores), not 100000"),
        ])
    func refused(_ setting: String, _ message: String) {
        var configuration = ProxyConfiguration(adminToken: setting == "token" ? "" : "t")
        switch setting {
        case "port": configuration.port = 70_000
        case "admin-port": configuration.adminPort = -1
        case "cookies": configuration.stickyCookieNames = ["JSESSIONID", "a b"]
        case "haproxy": configuration.haproxyCookieName = "SERVER ID"
        case "max-conns": configuration.maxConnsPerBackend = -1
        case "attempts": configuration.maxAttempts = 0
        case "dial": configuration.dialTimeout = .zero
        case "headers": configuration.maxHeaderBytes = 100
        case "no-threads": configuration.eventLoopThreads = 0
        case "threads": configuration.eventLoopThreads = 100_000
        default: break
        }
        #expect(configuration.validationErrors() == [message])
    }
}

@Suite("Engine.IO sessions that no affinity sent home")
struct MisroutedSessionTests {
    func exchange(
        _ target: String = "/socket.io/?EIO=4&transport=polling&sid=abc123", status: Int = 400, decision: RoutingDecisionKind? = .balanced,
        upgrade: Bool = false
    ) -> MisroutedSession.Exchange {
        MisroutedSession.Exchange(target: target, status: status, decision: decision, isUpgrade: upgrade, instanceIndex: "1", instanceID: "guid-1")
    }

    func hint(_ exchange: MisroutedSession.Exchange, _ affinity: AffinityMode = .cf, webSocketAffinity: Bool = true) -> String? {
        MisroutedSession.hint(
            for: exchange, affinity: affinity, webSocketAffinity: webSocketAffinity, stickyCookieNames: ["JSESSIONID"], haproxyCookieName: "SERVERID")
    }

    @Test("The session id of an Engine.IO request, wherever it sits in the query")
    func sessionID() {
        #expect(MisroutedSession.sessionID(inTarget: "/socket.io/?EIO=4&transport=polling&sid=abc123") == "abc123")
        #expect(MisroutedSession.sessionID(inTarget: "/socket.io/?sid=x-y_z&EIO=3&t=1") == "x-y_z")
        #expect(MisroutedSession.sessionID(inTarget: "/io/?EIO=4&transport=websocket&sid=S") == "S")
        #expect(MisroutedSession.sessionID(inTarget: "/socket.io/?EIO=4&transport=polling") == nil)  // the handshake
        #expect(MisroutedSession.sessionID(inTarget: "/socket.io/?EIO=4&sid=") == nil)
        #expect(MisroutedSession.sessionID(inTarget: "/search?sid=abc") == nil)  // not Engine.IO
        #expect(MisroutedSession.sessionID(inTarget: "/socket.io/") == nil)
    }

    @Test("Only an app's 400 to a session request that no affinity routed")
    func when() {
        #expect(hint(exchange()) != nil)
        #expect(hint(exchange(decision: .newSession)) != nil)
        #expect(hint(exchange(status: 200)) == nil)
        #expect(hint(exchange(status: 404)) == nil)
        #expect(hint(exchange("/api/items?page=2")) == nil)
        // Pinned and sent home, or the pinned instance is gone (a crash: the client reconnects), or a retry.
        for decision in [RoutingDecisionKind.stickyHit, .fallbackInstanceGone, .fallbackOverloaded, .retryAfterError, .targeted, .ipHash] {
            #expect(hint(exchange(decision: decision)) == nil)
        }
        #expect(hint(exchange(decision: nil)) == nil)
        #expect(hint(exchange(), .ipHash) == nil)
        #expect(MisroutedSession.isSymptom(exchange(), affinity: .cf) && !MisroutedSession.isSymptom(exchange(status: 200), affinity: .cf))
    }

    @Test("What happened, to which instance, and what to do, per affinity mode")
    func wording() throws {
        let cf = try #require(hint(exchange()))
        #expect(cf.hasPrefix("An Engine.IO long-polling request for session abc123 reached instance 1 (guid-1) without affinity"))
        #expect(cf.contains("(routing_decision balanced), and the app answered 400"))
        #expect(cf.contains("no JSESSIONID cookie with __VCAP_ID__"))
        #expect(cf.contains("cookie=\"JSESSIONID\" in python-socketio"))
        let none = try #require(hint(exchange(), .none))
        #expect(none.contains("affinity none") && none.contains("--affinity cf"))
        let haproxy = try #require(hint(exchange(), .haproxy))
        #expect(haproxy.contains("no SERVERID cookie"))
        let before2024 = try #require(hint(exchange("/socket.io/?EIO=4&transport=websocket&sid=abc123", upgrade: true), webSocketAffinity: false))
        #expect(before2024.hasPrefix("An Engine.IO WebSocket upgrade for session abc123"))
        #expect(before2024.contains("--websocket-affinity off"))
        // With WebSocket affinity on, an upgrade without cookies is the cookie problem.
        let upgrade = try #require(hint(exchange("/socket.io/?EIO=4&transport=websocket&sid=abc123", upgrade: true)))
        #expect(upgrade.contains("no JSESSIONID cookie"))
    }

    @Test("A fallback away from an instance this router never had: a second router on the path sets the cookie too")
    func pinnedByAnotherRouter() throws {
        var elsewhere = exchange(decision: .fallbackInstanceGone)
        elsewhere.pinnedInstanceID = "front-guid"
        // Gone (a crash, a restart): the client reconnects, nothing to say.
        #expect(hint(elsewhere) == nil)
        elsewhere.pinnedInstanceNeverRegistered = true
        elsewhere.routerUptime = .seconds(125)
        let cf = try #require(hint(elsewhere))
        #expect(cf.hasPrefix("An Engine.IO long-polling request for session abc123 was pinned by its __VCAP_ID__ cookie to instance 'front-guid'"))
        #expect(cf.contains("since it started 2m5s ago"))
        #expect(cf.contains("fell back to instance 1 (guid-1), and the app answered 400"))
        #expect(cf.contains("Another router on this client's path also routes with __VCAP_ID__"))
        #expect(try #require(hint(elsewhere, .haproxy)).contains("also routes with SERVERID"))
        #expect(hint(elsewhere, .ipHash) == nil)
        elsewhere.status = 200
        #expect(hint(elsewhere) == nil)
        // Only after a fallback away from the pinned instance.
        var hit = exchange(decision: .stickyHit)
        hit.pinnedInstanceID = "front-guid"
        hit.pinnedInstanceNeverRegistered = true
        #expect(hint(hit) == nil)
    }

    @Test("The instances a router has had, bounded: past the limit it cannot tell")
    func instanceHistory() {
        var history = InstanceHistory(limit: 3)
        for guid in ["a", "b", "a", "c"] { history.insert(guid) }
        #expect(history.contains("a") == true && history.contains("c") == true && history.contains("z") == false)
        history.insert("d")
        #expect(history.contains("a") == nil && history.contains("z") == nil)
        history.insert("e")
        #expect(history.contains("e") == nil)
    }
}
