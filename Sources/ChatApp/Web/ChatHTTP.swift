import Foundation
import Hummingbird
import Logging
import NIOCore
import RedisClient

/// The HTTP side of chat-node: login, logout, the page, its assets, the socket.io client bundle,
/// /health and /metrics. Sessions follow express-session (see `SessionCookie`, `SessionStore`).
public struct ChatHTTP: Sendable {
    public let configuration: ChatConfiguration
    public let assets: ChatAssets
    public let sessions: SessionStore
    public let cookie: SessionCookie
    public let metrics: ChatMetrics
    public let health: @Sendable () async -> HealthReport
    /// Called once a session was destroyed by a logout (its chat connections go too).
    public let sessionEnded: @Sendable (String) async -> Void
    public let logger: Logger

    public init(
        configuration: ChatConfiguration,
        assets: ChatAssets,
        sessions: SessionStore,
        cookie: SessionCookie,
        metrics: ChatMetrics,
        logger: Logger,
        health: @escaping @Sendable () async -> HealthReport,
        sessionEnded: @escaping @Sendable (String) async -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.assets = assets
        self.sessions = sessions
        self.cookie = cookie
        self.metrics = metrics
        self.logger = logger
        self.health = health
        self.sessionEnded = sessionEnded
    }

    var limits: ChatLimits { ChatLimits(maxMessageBytes: configuration.maxMessageBytes, maxNameLength: configuration.maxNameLength) }

    public func register<Context: RequestContext>(on router: Router<Context>) {
        router.add(middleware: NotFoundPage(http: self))
        router.get("/") { request, _ in await page(request) }
        router.post("/user") { request, context in await login(request, context: context) }
        router.get("/logout") { request, _ in await confirmLogout(request) }
        router.post("/logout") { request, _ in await logout(request) }
        router.get("/health") { _, _ in await healthResponse() }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.exposition())))
        }
        router.get("/style.css") { _, _ in asset(assets.style, type: "text/css; charset=utf-8") }
        router.get("/app.js") { _, _ in asset(assets.script, type: "text/javascript; charset=utf-8") }
        router.get("/socket.io/socket.io.js") { _, _ in
            guard let client = assets.socketIOClient else {
                return text(
                    .serviceUnavailable,
                    "The socket.io client bundle is missing at \(assets.socketIOClientPath). Run `make deps` or set SOCKETIO_CLIENT_JS.\n")
            }
            return asset(client, type: "text/javascript; charset=utf-8")
        }
    }

    // MARK: pages

    /// GET /: the chat page when logged in (the session is extended and the cookie set again, which
    /// makes Cloud Foundry's router re-pin the browser to this instance), else the login page.
    func page(_ request: Request) async -> Response {
        guard let sid = cookie.sessionID(fromHeaders: request.headers[values: .cookie]) else {
            return html(.ok, assets.loginPage(error: nil, instance: configuration.instance, limits: limits))
        }
        do {
            guard let record = try await sessions.load(sid), let user = record.user else {
                // A signed cookie whose session is gone: say so, instead of a blank form.
                return html(
                    .ok,
                    assets.loginPage(
                        error: "Your session has ended (it expired, or the chat's data was reset): please log in again.",
                        instance: configuration.instance, limits: limits))
            }
            try await sessions.touch(sid)
            var response = html(.ok, assets.chatPage(user: user, instance: configuration.instance, limits: limits))
            response.headers[values: .setCookie].append(setCookie(sid: sid, secure: isSecure(request)))
            return response
        } catch {
            return redisUnavailable(error)
        }
    }

    /// POST /user with the form field `user`: a new session (a fresh id, so a planted cookie never
    /// becomes a logged-in one), then back to / (post/redirect/get: a refresh does not resubmit).
    /// Refused with 403 when another site's page posted it (`CrossSiteCheck`): no login CSRF.
    func login(_ request: Request, context: some RequestContext) async -> Response {
        if let refused = refuseCrossSite(request, advice: "Log in from the chat's own page.") { return refused }
        var request = request
        let name: String
        do {
            let body = try await request.collectBody(upTo: 16_384)
            let form = try URLEncodedFormDecoder().decode(LoginForm.self, from: String(buffer: body))
            name = form.user ?? ""
        } catch {
            return html(
                .badRequest,
                assets.loginPage(error: "The form could not be read; please try again.", instance: configuration.instance, limits: limits))
        }
        let user: String
        switch UserName.validate(name, limits: limits) {
        case .success(let valid): user = valid
        case .failure(let problem):
            return html(.badRequest, assets.loginPage(error: problem.description, instance: configuration.instance, limits: limits))
        }
        let secure = isSecure(request)
        let sid = SessionID.generate()
        let old = cookie.sessionID(fromHeaders: request.headers[values: .cookie])
        var replaced: String?
        do {
            if let old {
                try await sessions.destroy(old)
                replaced = old
            }
            try await sessions.save(sid, SessionRecord(user: user, secure: secure))
        } catch {
            // The tabs of a session destroyed before the failure end all the same.
            if let replaced { await sessionEnded(replaced) }
            // A reload of POST /user would be a GET of /user, which is no page.
            return formAgain(
                after: error,
                assets.loginPage(
                    error: "The chat's Redis is unavailable right now; please try again in a moment.", instance: configuration.instance,
                    limits: limits))
        }
        // The tabs of the session this login replaced (logged in as someone else, or again) end as
        // after a logout; they would go on chatting under the old name.
        if let replaced { await sessionEnded(replaced) }
        metrics.logins.increment()
        logger.info("User logged in", metadata: ["user": "\(user)", "instance": "\(configuration.instance.id)"])
        var response = redirect("/")
        response.headers[values: .setCookie].append(setCookie(sid: sid, secure: secure))
        return response
    }

    /// GET /logout: asks first, with a button that posts the logout. A GET changes nothing: another
    /// site's link or redirect (the Lax cookie goes along on a top-level navigation) and link
    /// prefetchers follow GETs. Old bookmarks and the original app's link still work, with one more
    /// click. Not logged in: back to /.
    func confirmLogout(_ request: Request) async -> Response {
        guard let sid = cookie.sessionID(fromHeaders: request.headers[values: .cookie]) else { return redirect("/") }
        do {
            guard let record = try await sessions.load(sid), let user = record.user else { return redirect("/") }
            return html(.ok, assets.logoutPage(user: user, instance: configuration.instance))
        } catch {
            return redisUnavailable(error)
        }
    }

    /// POST /logout: destroys the session and its cookie, and closes the session's chat connections
    /// on every instance (its other tabs). Refused with 403 when another site's page posted it.
    func logout(_ request: Request) async -> Response {
        if let refused = refuseCrossSite(request, advice: "Log out from the chat's own page.") { return refused }
        if let sid = cookie.sessionID(fromHeaders: request.headers[values: .cookie]) {
            do {
                try await sessions.destroy(sid)
            } catch {
                // A reload of POST /logout would be a GET, which only asks (one more click, no word of why).
                return formAgain(
                    after: error,
                    assets.logoutPage(
                        user: nil, error: "The chat's Redis is unavailable right now, so you are still logged in; please try again in a moment.",
                        instance: configuration.instance))
            }
            await sessionEnded(sid)
        }
        var response = redirect("/")
        response.headers[values: .setCookie].append("\(cookie.name)=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
        return response
    }

    func healthResponse() async -> Response {
        let report = await health()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(report)).map { ByteBuffer(bytes: $0) } ?? ByteBuffer(string: "{}")
        return Response(
            status: report.healthy ? .ok : .serviceUnavailable,
            headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: body))
    }

    // MARK: helpers

    /// nil when `CrossSiteCheck` allows the request; else a 403 saying why (counted and logged), and
    /// the caller changes nothing.
    func refuseCrossSite(_ request: Request, advice: String) -> Response? {
        let verdict = CrossSiteCheck.decide(
            method: request.method.rawValue, fetchSite: request.headers[.secFetchSite], origin: request.headers[.origin],
            host: request.head.authority, forwardedHost: request.headers[.xForwardedHost])
        guard case .refuse(let refusal) = verdict else { return nil }
        metrics.crossSiteRefused.increment()
        logger.info(
            "Refused a form post from another site",
            metadata: [
                "instance": "\(configuration.instance.id)", "path": "\(request.uri.path)", "reason": "\(refusal)",
                "host": "\(request.head.authority ?? "-")", "x_forwarded_host": "\(request.headers[.xForwardedHost] ?? "-")",
            ])
        var response = text(.forbidden, "Refused: this form was posted from another site (\(refusal)). \(advice)\n")
        response.headers[.cacheControl] = "no-store"
        return response
    }

    /// `JSESSIONID=s%3A<sid>.<sig>; Path=/; HttpOnly; SameSite=Lax[; Secure]`, a browser-session cookie
    /// as the original app set it (the session itself lives `SESSION_TTL` in Redis).
    func setCookie(sid: String, secure: Bool) -> String {
        "\(cookie.name)=\(cookie.value(for: sid)); Path=/; HttpOnly; SameSite=Lax" + (secure ? "; Secure" : "")
    }

    /// The request came over https to the first proxy (X-Forwarded-Proto, first value).
    func isSecure(_ request: Request) -> Bool {
        guard let proto = request.headers[.xForwardedProto] else { return false }
        return proto.split(separator: ",").first?.trimmingCharacters(in: .whitespaces).lowercased() == "https"
    }

    /// Counts and logs a Redis failure of a page request (the page itself does not show the error).
    func noteRedisFailure(_ error: any Error) {
        metrics.redisErrors.increment()
        logger.warning("Redis unavailable for a page request: \(error)", metadata: ["instance": "\(configuration.instance.id)"])
    }

    /// A form post that Redis failed: 503 with the form again and the reason in it, not a page that
    /// reloads itself (a reload of a POST is a GET, which shows another page).
    func formAgain(after error: any Error, _ page: String) -> Response {
        noteRedisFailure(error)
        var response = html(.serviceUnavailable, page)
        response.headers[.retryAfter] = "2"
        return response
    }

    func redisUnavailable(_ error: any Error) -> Response {
        noteRedisFailure(error)
        var response = text(
            .serviceUnavailable,
            "The chat's Redis is unavailable right now. This page retries by itself; please wait a moment.\n")
        response.headers[.retryAfter] = "2"
        response.headers[.refresh] = "2"
        return response
    }

    func html(_ status: HTTPResponse.Status, _ page: String) -> Response {
        Response(
            status: status,
            headers: [
                .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                // No other site may frame the pages and trick a click on their buttons (clickjacking).
                .contentSecurityPolicy: "frame-ancestors 'none'", .xFrameOptions: "DENY",
            ],
            body: ResponseBody(byteBuffer: ByteBuffer(string: page)))
    }

    func text(_ status: HTTPResponse.Status, _ message: String) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: ResponseBody(byteBuffer: ByteBuffer(string: message)))
    }

    func asset(_ body: ByteBuffer, type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-cache"], body: ResponseBody(byteBuffer: body))
    }

    func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
    }
}

/// A path (or a method on it) the chat does not serve: the not-found page instead of an empty 404.
struct NotFoundPage<Context: RequestContext>: RouterMiddleware {
    let http: ChatHTTP

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let page = http.assets.notFoundPage(path: request.uri.path, instance: http.configuration.instance)
            return http.html(.notFound, request.method == .head ? "" : page)
        }
    }
}

struct LoginForm: Decodable {
    var user: String?
}

/// What /health answers, as JSON.
public struct HealthReport: Sendable, Hashable, Codable {
    public var healthy: Bool
    public var status: String
    public var redis: String
    public var subscriber: String
    public var instance: String
    public var connections: Int
    public var reason: String?
    /// "served", or "missing" when the official client bundle was not found: the instance serves
    /// Socket.IO clients, but its page cannot connect (not a failed health check, which would restart it).
    public var pageClient: String

    public init(
        healthy: Bool, redis: String, subscriber: String, instance: String, connections: Int, reason: String? = nil, pageClient: String = "served"
    ) {
        self.healthy = healthy
        self.status = healthy ? "ok" : "unavailable"
        self.redis = redis
        self.subscriber = subscriber
        self.instance = instance
        self.connections = connections
        self.reason = reason
        self.pageClient = pageClient
    }
}

/// Header names HTTPTypes does not predefine (HTTPTypes itself is not a direct dependency).
typealias HeaderName = HTTPFields.Element.Name

extension HeaderName {
    static let xForwardedProto = HeaderName("X-Forwarded-Proto")!
    static let xForwardedHost = HeaderName("X-Forwarded-Host")!
    static let xFrameOptions = HeaderName("X-Frame-Options")!
    static let secFetchSite = HeaderName("Sec-Fetch-Site")!
    static let refresh = HeaderName("Refresh")!
}
