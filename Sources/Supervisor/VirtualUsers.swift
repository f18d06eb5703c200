import CloudFoundry
import Foundation
import NIOHTTP1
import Synchronization

/// `cluster chaos --users N`: simulated users who browse the app through the proxy while the faults
/// happen, each with a cookie jar of its own as a browser has, so that what a fault does to a user's
/// session shows: did it move to another instance, did it keep its session there, or did it lose it
/// (the app, which kept the session in the dead instance's memory, started a new one or showed the
/// login page again)?
public struct VirtualUsersOptions: Sendable, Equatable {
    /// How many users (0: none).
    public var count: Int
    /// What each user requests, over and over.
    public var path: String
    /// The pause between two requests of one user.
    public var every: Duration
    /// Log in first: a form POST of `user=<the user's name>` to this path (chat-node's `/user`, the
    /// original redispubsub's form), again after a lost session.
    public var login: String?
    /// The form the login sends, `{user}` standing for the user's name (`user={user}`, chat-node's and
    /// the original sample's; `--users-login-form 'email={user}%40example.com&password=secret'`), and
    /// `{field:NAME}` for a field of the login page's form (its CSRF token: `{field:_csrf}`). See
    /// `LoginFormTemplate`.
    public var loginForm: String
    /// Text that every page of a logged-in user contains (in its first `checkedPageBytes`): a 2xx
    /// answer without it means the user is logged out (its session lost) and logs in again.
    public var check: String?
    /// The app's session cookie (the router's trigger cookie).
    public var sessionCookie: String
    /// `--max-lost-sessions`: the run fails when the users lost more sessions than this.
    public var maxLostSessions: Int?

    public init(
        count: Int = 0, path: String = "/", every: Duration = .milliseconds(500), login: String? = nil,
        loginForm: String = VirtualUsersOptions.defaultLoginForm, check: String? = nil, sessionCookie: String = "JSESSIONID",
        maxLostSessions: Int? = nil
    ) {
        self.count = count
        self.path = path
        self.every = every
        self.login = login
        self.loginForm = loginForm
        self.check = check
        self.sessionCookie = sessionCookie
        self.maxLostSessions = maxLostSessions
    }

    public static let maxCount = 1_000
    /// How much of a page a user keeps to look for `check` or the login form's fields in (the rest is
    /// read and dropped): a thousand users fetching large pages at once keep at most this much each.
    public static let checkedPageBytes = 1_048_576
    public static let defaultLoginForm = "user={user}"

    /// What is wrong with these options, for the command line (nil: nothing).
    public var problem: String? {
        if count < 0 || count > Self.maxCount { return "--users must be from 0 to \(Self.maxCount) (not \(count))" }
        let usersOnly = "needs --users N (the simulated users it is about)"
        if count == 0 {
            if login != nil { return "--users-login \(usersOnly)" }
            if loginForm != Self.defaultLoginForm { return "--users-login-form \(usersOnly)" }
            if check != nil { return "--users-check \(usersOnly)" }
            if maxLostSessions != nil { return "--max-lost-sessions \(usersOnly)" }
        }
        if let problem = Self.pathProblem(path, "--users-path") { return problem }
        if let login, let problem = Self.pathProblem(login, "--users-login") { return problem }
        if loginForm != Self.defaultLoginForm {
            if login == nil { return "--users-login-form goes with --users-login PATH (where the form is sent)" }
            if loginForm.isEmpty || loginForm.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F }) {
                return "--users-login-form must be a URL-encoded form without spaces (name=value&other=value; %20 for a space)"
            }
            if let problem = LoginFormTemplate.problem(loginForm) { return problem }
        }
        if let check, check.isEmpty { return "--users-check must not be empty" }
        if every < .milliseconds(10) || every > .seconds(60) {
            return "--users-every must be from 10ms to 1m (not \(DurationText.format(every)))"
        }
        if !CookieName.isValid(sessionCookie) { return "--users-cookie must be a cookie name (not \(sessionCookie))" }
        if let maxLostSessions, maxLostSessions < 0 { return "--max-lost-sessions must be 0 or more (not \(maxLostSessions))" }
        return nil
    }

    /// A request target: a path from the root, without spaces or control characters (which a
    /// request line cannot carry unencoded).
    static func pathProblem(_ path: String, _ option: String) -> String? {
        if !path.hasPrefix("/") { return "\(option) must be a path starting with / (not \(path))" }
        if path.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F }) {
            return "\(option) must not contain spaces or control characters (percent-encode them: %20)"
        }
        return nil
    }

    /// The login form, parsed (the default when `loginForm` is not a valid one: `problem` says so).
    public var loginTemplate: LoginFormTemplate { LoginFormTemplate(loginForm) ?? LoginFormTemplate(Self.defaultLoginForm)! }

    /// The login form of one user: `{user}` replaced by its name, `{field:NAME}` by the login page's
    /// value of NAME.
    public func loginBody(user: String, fields: [String: String] = [:]) -> String { loginTemplate.body(user: user, fields: fields) }

    /// One line saying what the users do.
    public func summary(proxyURL: String) -> String {
        let users = count == 1 ? "1 simulated user" : "\(count) simulated users"
        var text = "\(users), each with its own cookies: GET \(path) through \(proxyURL) every \(DurationText.format(every))"
        if let login {
            let fields = loginTemplate.pageFields
            let page = fields.isEmpty ? "" : " with the login page's \(fields.joined(separator: ", ")) (a GET of \(login) first)"
            text += ", after logging in with a POST to \(login)\(page)"
        }
        if let check { text += "; logged in while the page contains \"\(check)\"" }
        return text
    }
}

/// One simulated user: its cookie jar, its session and the instance the proxy pins it to. A value
/// type without I/O: the runner sends `next` with `cookieHeader`, and reports the answer (or its
/// absence); the user says what happened to it.
public struct VirtualUser: Sendable, Equatable {
    /// What the user sends next.
    public enum Step: Sendable, Equatable {
        /// A GET of the login path, for the fields of its form the login sends (a CSRF token).
        case loginPage
        case logIn
        case browse
    }

    /// A request to send: `bodyLimit` is how much of the answer's body the user looks at.
    public struct Request: Sendable {
        public var method: HTTPMethod
        public var path: String
        public var headers: [(String, String)]
        public var body: [UInt8]?
        public var bodyLimit: Int
    }

    public enum Loss: Sendable, Equatable {
        /// The app set a new value for the session cookie: it did not know the one sent.
        case replaced
        /// The app deleted the session cookie.
        case deleted
        /// A page without the `check` text: logged out.
        case loggedOut
        /// A redirect to the login path instead of the page (an app that sends logged-out users to
        /// its login form).
        case redirectedToLogin
    }

    public enum Event: Sendable, Equatable {
        /// An HTTP answer with this status.
        case answered(Int)
        /// No HTTP answer (refused, reset, timed out), and why.
        case noAnswer(String)
        /// The app gave the user its first session cookie.
        case sessionStarted
        /// Another instance answered: the proxy's trace header named another address, or (without
        /// one) the proxy pinned the user to another instance (a new `__VCAP_ID__`).
        case moved(from: String, to: String)
        case sessionLost(Loss)
        /// The login page had no field of these names, which the login form needs (`{field:NAME}`).
        case loginFieldsMissing([String])
        /// The login (its POST, or the GET of its page) was answered with this client error (4xx: the
        /// path or the form is wrong; a 5xx is an instance or the router failing, tried again).
        case loginFailed(Int)
        /// A page after a login without the `check` text, when no page since that login had it: the
        /// text may be wrong (`--users-check`) rather than the session lost, so no loss is counted.
        case checkNeverSeen
        /// The first page since a login with the `check` text.
        case checkSeen
        /// How long the answer took, from the connection to its end (the runner measures it).
        case took(Duration)
    }

    public let name: String
    public let sessionCookie: String
    /// The login path (`--users-login`), nil for a user who does not log in.
    public let login: String?
    public let check: String?
    /// The fields of the login page the login form needs (`{field:NAME}`): with any, each login starts
    /// with a GET of the login page.
    public let loginFields: [String]
    /// Cookie name to value, as the app and the proxy set them.
    public private(set) var cookies: [String: String] = [:]
    public private(set) var loggedIn = false
    /// The values of `loginFields` on the login page last fetched, for the next login (then dropped:
    /// a token is good for one session).
    public private(set) var pageFields: [String: String]?
    /// A page since the last login had the `check` text: one without it is then a lost session.
    public private(set) var sawCheck = false
    /// The instance address that answered last, when the proxy says it (`X-Vcap-Backend`).
    public private(set) var servedBy: String?

    public init(
        name: String, sessionCookie: String = "JSESSIONID", login: String? = nil, check: String? = nil, loginFields: [String] = []
    ) {
        self.name = name
        self.sessionCookie = sessionCookie
        self.login = login
        self.check = check
        self.loginFields = loginFields
    }

    public var next: Step {
        guard login != nil, !loggedIn else { return .browse }
        return !loginFields.isEmpty && pageFields == nil ? .loginPage : .logIn
    }

    /// The `Cookie` header to send, nil with no cookies (names in order, so a request is repeatable).
    public var cookieHeader: String? {
        cookies.isEmpty ? nil : cookies.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "; ")
    }

    /// The instance the proxy pins the user to (its `__VCAP_ID__`).
    public var instance: String? { cookies[Self.vcapCookie] }

    static let vcapCookie = "__VCAP_ID__"

    /// The answer to `step`: its status, its `Set-Cookie` headers, its body, its `Location`, and the
    /// instance that answered when the proxy says it (its trace header `X-Vcap-Backend`: then a move
    /// is seen whatever the affinity, also with none, where no `__VCAP_ID__` is set).
    public mutating func answered(
        _ step: Step, status: Int, setCookies: [String], body: String, location: String? = nil, backend: String? = nil
    ) -> [Event] {
        var events: [Event] = [.answered(status)]
        let sessionBefore = cookies[sessionCookie]
        let instanceBefore = instance
        var loss: Loss?
        for header in setCookies {
            guard let cookie = SetCookie(header: header) else { continue }
            if cookie.isDeletion(nowSecondsSince1970: Int64(Date().timeIntervalSince1970)) {
                if cookies.removeValue(forKey: cookie.name) != nil, cookie.name == sessionCookie, step == .browse { loss = .deleted }
            } else {
                cookies[cookie.name] = cookie.value
            }
        }
        let session = cookies[sessionCookie]
        if sessionBefore == nil, session != nil { events.append(.sessionStarted) }
        // A login may start a new session (express-session regenerates it): only a page replaces it.
        if step == .browse, let sessionBefore, let session, session != sessionBefore { loss = .replaced }
        if let backend {
            // A move matters to a user with a session: one without is balanced on every request.
            if let servedBy, servedBy != backend, sessionBefore != nil { events.append(.moved(from: servedBy, to: backend)) }
            servedBy = backend
        } else if let instanceBefore, let now = instance, now != instanceBefore {
            events.append(.moved(from: instanceBefore, to: now))
        }
        switch step {
        case .loginPage:
            // A page that is not there or not a form is fetched again next time.
            if (400..<500).contains(status) { events.append(.loginFailed(status)) }
            guard (200..<300).contains(status) else { break }
            let values = HTMLFormFields.values(in: body)
            let missing = loginFields.filter { values[$0] == nil }
            if missing.isEmpty {
                pageFields = values.filter { loginFields.contains($0.key) }
            } else {
                events.append(.loginFieldsMissing(missing))
            }
        case .logIn:
            // A login answered with a redirect or a page (not followed) counts; an error is tried again
            // (with a fresh page).
            pageFields = nil
            if status < 400 {
                loggedIn = true
                sawCheck = false
            } else if status < 500 {
                events.append(.loginFailed(status))
            }
        case .browse:
            if !sawCheck, let check, (200..<300).contains(status), body.contains(check) {
                sawCheck = true
                events.append(.checkSeen)
            }
            if loss == nil, loggedIn, let check, (200..<300).contains(status), !body.contains(check) {
                // Right after a move, a page without the text is the session lost on the way (an app
                // keeping sessions in memory, with no affinity), not a text that may be wrong.
                let movedNow = events.contains { if case .moved = $0 { true } else { false } }
                if sawCheck || login == nil || movedNow {
                    loss = .loggedOut
                } else {
                    events.append(.checkNeverSeen)
                }
            }
            if loss == nil, loggedIn, let login, (300..<400).contains(status), let location, Self.path(of: location) == login {
                loss = .redirectedToLogin
            }
        }
        if let loss {
            events.append(.sessionLost(loss))
            loggedIn = false
        }
        return events
    }

    /// The request for `next`: a GET of the options' path (its body kept only when there is a check
    /// text to look for), a GET of the login page, or the login form's POST.
    public func request(_ options: VirtualUsersOptions) -> Request {
        var headers: [(String, String)] = [("User-Agent", "stickylab-chaos-user")]
        if let cookies = cookieHeader { headers.append(("Cookie", cookies)) }
        let page = VirtualUsersOptions.checkedPageBytes
        switch (next, login) {
        case (.loginPage, let login?):
            return Request(method: .GET, path: login, headers: headers, body: nil, bodyLimit: page)
        case (.logIn, let login?):
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            let body = options.loginBody(user: name, fields: pageFields ?? [:])
            return Request(method: .POST, path: login, headers: headers, body: Array(body.utf8), bodyLimit: 0)
        default:
            return Request(method: .GET, path: options.path, headers: headers, body: nil, bodyLimit: check == nil ? 0 : page)
        }
    }

    /// The path of a `Location` (`/login?next=%2F`, `http://localhost:8080/login`): what comes before
    /// its query or fragment, after its scheme and authority.
    static func path(of location: String) -> Substring {
        var rest = Substring(location)
        if let scheme = rest.range(of: "://") {
            rest = rest[scheme.upperBound...]
            rest = rest.firstIndex(of: "/").map { rest[$0...] } ?? "/"
        }
        return rest.prefix { $0 != "?" && $0 != "#" }
    }

    /// No answer to the request: the cookies stay, as in a browser.
    public func failed(_ reason: String) -> [Event] { [.noAnswer(reason)] }
}

/// What the simulated users got, all together.
public struct VirtualUsersTally: Sendable, Equatable {
    public var requests = 0
    /// Answers by status class (2 for 2xx).
    public var statusClasses: [Int: Int] = [:]
    /// Requests without an answer, by reason.
    public var noAnswer: [String: Int] = [:]
    public var sessionsStarted = 0
    public var moves = 0
    public var usersMoved: Set<String> = []
    public var losses: [VirtualUser.Loss: Int] = [:]
    public var usersWithLosses: Set<String> = []
    /// How long the answers took.
    public var responseTimes = ResponseTimes()
    /// Login pages without a field the login form needs, and the names of those fields.
    public var loginPagesWithoutFields = 0
    public var missingLoginFields: Set<String> = []
    /// Logins (or login pages) answered with an error, by status.
    public var failedLogins: [Int: Int] = [:]
    /// Pages after a login without the `check` text, when none since that login had it.
    public var pagesWithoutCheck = 0
    /// A page had the `check` text.
    public var checkSeen = false

    public init() {}

    public var sessionsLost: Int { losses.values.reduce(0, +) }

    public mutating func record(_ events: [VirtualUser.Event], of user: String) {
        for event in events {
            switch event {
            case .answered(let status):
                requests += 1
                statusClasses[status / 100, default: 0] += 1
            case .noAnswer(let reason):
                requests += 1
                noAnswer[reason, default: 0] += 1
            case .sessionStarted:
                sessionsStarted += 1
            case .moved:
                moves += 1
                usersMoved.insert(user)
            case .sessionLost(let loss):
                losses[loss, default: 0] += 1
                usersWithLosses.insert(user)
            case .loginFieldsMissing(let names):
                loginPagesWithoutFields += 1
                missingLoginFields.formUnion(names)
            case .loginFailed(let status):
                failedLogins[status, default: 0] += 1
            case .checkNeverSeen:
                pagesWithoutCheck += 1
            case .checkSeen:
                checkSeen = true
            case .took(let duration):
                responseTimes.record(duration)
            }
        }
    }

    /// One line: requests and answers, sessions, moves and losses.
    public func summary(options: VirtualUsersOptions) -> String {
        let count = { (number: Int, noun: String) in CountText.count(number, noun) }
        var answers = statusClasses.sorted { $0.key < $1.key }.map { "\($0.key)xx \(CountText.grouped($0.value))" }
        let unanswered = noAnswer.values.reduce(0, +)
        if unanswered > 0 {
            let reasons = noAnswer.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map {
                "\($0.key) \(CountText.grouped($0.value))"
            }
            answers.append("no answer \(CountText.grouped(unanswered)) (\(reasons.joined(separator: ", ")))")
        }
        var text = "\(count(options.count, "user")), \(count(requests, "request"))"
        text += answers.isEmpty ? "" : " (\(answers.joined(separator: ", ")))"
        if let times = responseTimes.summary { text += ", answered in \(times)" }
        text += "; \(count(sessionsStarted, "session")) started"
        if sessionsStarted == 0, requests > noAnswer.values.reduce(0, +) {
            text += " (the app set no \(options.sessionCookie) cookie, so the router pinned nobody"
            text += options.login == nil ? ": does it need a login first, --users-login? another cookie, --users-cookie?)" : ")"
        }
        if !failedLogins.isEmpty, let login = options.login {
            let statuses = failedLogins.sorted { $0.key < $1.key }.map { "\($0.key) \(CountText.grouped($0.value))" }.joined(separator: ", ")
            text += "; logins to \(login) FAILED (\(statuses)): is --users-login the path the login form posts to?"
        }
        if pagesWithoutCheck > 0, let check = options.check {
            text += "; \(count(pagesWithoutCheck, "page")) after a login had no \"\(check)\", not even the first: is --users-check a text"
            text += " every logged-in page contains? (chat-node: data-user=; not counted as lost sessions)"
        }
        if loginPagesWithoutFields > 0, let login = options.login {
            let names = missingLoginFields.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
            text += "; the login page \(login) had no field \(names) (\(count(loginPagesWithoutFields, "time"))): name a field of its form in"
            text += " --users-login-form's {field:NAME} (view the page's source for <input name=...>)"
        }
        text +=
            moves == 0
            ? "; none moved to another instance" : "; \(count(usersMoved.count, "user")) moved to another instance (\(count(moves, "time")))"
        guard sessionsLost > 0 else { return text + "; no session lost" }
        var how: [String] = []
        if let replaced = losses[.replaced] { how.append("the app set a new \(options.sessionCookie) \(count(replaced, "time"))") }
        if let deleted = losses[.deleted] { how.append("the app deleted \(options.sessionCookie) \(count(deleted, "time"))") }
        if let loggedOut = losses[.loggedOut] {
            how.append("\(count(loggedOut, "page")) without \"\(options.check ?? "")\" (logged out)")
        }
        if let redirected = losses[.redirectedToLogin] {
            how.append("\(count(redirected, "redirect")) to \(options.login ?? "the login") (logged out)")
        }
        text += "; \(count(sessionsLost, "session")) LOST by \(count(usersWithLosses.count, "user")) (\(how.joined(separator: "; ")))"
        guard moves > 0 else { return text + ": nobody moved to another instance, so the app itself ended them" }
        return text
            + ": the instance a user moved to did not know its session. Sessions kept in an instance's memory die with it;"
            + " keep them in a store all instances share, such as Redis"
    }

    /// Why the run fails on the users' sessions (nil when it does not): more lost than `--max-lost-sessions`.
    public func failure(options: VirtualUsersOptions) -> String? {
        guard let limit = options.maxLostSessions else { return nil }
        // A check that never held, or logins that never worked, would pass having tested nothing.
        if pagesWithoutCheck > 0, !checkSeen, let check = options.check {
            return "FAILED: no page after a login had the --users-check text \"\(check)\": the sessions were not checked"
        }
        if options.login != nil, !failedLogins.isEmpty, sessionsStarted == 0 {
            return "FAILED: every login failed: the sessions were not checked"
        }
        guard sessionsLost > limit else { return nil }
        let sessions = sessionsLost == 1 ? "1 session" : "\(sessionsLost) sessions"
        return "FAILED: the simulated users lost \(sessions), more than --max-lost-sessions \(limit)"
    }
}

/// Runs the simulated users against the proxy until cancelled.
public enum VirtualUsers {

    /// `proxyURL`: the proxy's URL as the cluster prints it (`http://localhost:8080/`); the requests
    /// go to 127.0.0.1 on its port, where the proxy listens, with its host name in `Host` (the route). Each user waits a share
    /// of `every` before its first request, so that the users' requests are spread over the interval.
    /// `traceKey`: the proxy's, sent in `X-Vcap-Trace` to be told which instance answered.
    /// `record`: what happened to a user on one request (called from the users' tasks).
    public static func run(
        _ options: VirtualUsersOptions, proxyURL: String, traceKey: String? = nil,
        record: @escaping @Sendable (_ user: String, _ events: [VirtualUser.Event]) -> Void
    ) async throws {
        guard let url = URLComponents(string: proxyURL), let host = url.host, let port = url.port else {
            throw ChaosRun.Failure("the proxy's URL \(proxyURL) has no host and port to send the simulated users' requests to")
        }
        let authority = "\(host):\(port)"
        guard options.count > 0 else { return }
        await withTaskGroup(of: Void.self) { group in
            for number in 1...options.count {
                group.addTask {
                    var user = VirtualUser(
                        name: "user-\(number)", sessionCookie: options.sessionCookie, login: options.login, check: options.check,
                        loginFields: options.loginTemplate.pageFields)
                    let offset = options.every * Double(number - 1) / Double(options.count)
                    guard (try? await Task.sleep(for: offset)) != nil else { return }
                    while !Task.isCancelled {
                        let step = user.next
                        let request = user.request(options)
                        var events: [VirtualUser.Event]
                        let start = ContinuousClock.now
                        do {
                            let headers = request.headers + (traceKey.map { [("X-Vcap-Trace", $0)] } ?? [])
                            let response = try await Probe.exchange(
                                method: request.method, host: "127.0.0.1", port: port, path: request.path, headers: headers,
                                body: request.body, timeout: .seconds(5), authority: authority, bodyLimit: request.bodyLimit)
                            let setCookies = response.headers.filter { $0.0.lowercased() == "set-cookie" }.map(\.1)
                            let location = response.headers.first { $0.0.lowercased() == "location" }?.1
                            let backend = traceKey == nil ? nil : response.headers.first { $0.0.lowercased() == "x-vcap-backend" }?.1
                            events = user.answered(
                                step, status: response.status, setCookies: setCookies, body: response.text, location: location, backend: backend)
                            events.append(.took(ContinuousClock.now - start))
                        } catch {
                            // A request cut short by the end of the run is not the app's failure.
                            if Task.isCancelled { return }
                            events = user.failed(Probe.reason(error))
                        }
                        record(user.name, events)
                        guard (try? await Task.sleep(for: options.every)) != nil else { return }
                    }
                }
            }
        }
    }
}

/// The line `cluster users` prints as it happens when a user moves to another instance or loses its
/// session; nil for the answers that tell nothing new.
public struct VirtualUsersNarrative: Sendable, Equatable {
    /// Instance names (`chat.1`) by instance guid and by address (`127.0.0.1:port`), from the cluster's status.
    public var names: [String: String]

    public init(names: [String: String] = [:]) { self.names = names }

    /// The names of the instances of `status`, and of the old processes of rolling restarts.
    public init(status: ClusterStatus) {
        var names: [String: String] = [:]
        for instance in status.instances {
            let name = "\(status.app).\(instance.index)"
            if let guid = instance.guid { names[guid] = name }
            if let port = instance.port { names["127.0.0.1:\(port)"] = name }
            if let old = instance.replacing?.guid { names[old] = name + " (old)" }
            if let port = instance.replacing?.port { names["127.0.0.1:\(port)"] = name + " (old)" }
        }
        self.names = names
    }

    func name(_ id: String) -> String { names[id] ?? (id.contains(":") ? "instance \(id)" : "instance \(id.prefix(8))") }

    public func line(user: String, events: [VirtualUser.Event], options: VirtualUsersOptions) -> String? {
        var move: (from: String, to: String)?
        var loss: VirtualUser.Loss?
        for event in events {
            switch event {
            case .moved(let from, let to): move = (from, to)
            case .sessionLost(let lost): loss = lost
            case .answered, .noAnswer, .sessionStarted, .loginFieldsMissing, .loginFailed, .checkNeverSeen, .checkSeen, .took: break
            }
        }
        let lost: String? = loss.map { loss in
            switch loss {
            case .replaced: "the app set a new \(options.sessionCookie)"
            case .deleted: "the app deleted \(options.sessionCookie)"
            case .loggedOut: "a page without \"\(options.check ?? "")\": logged out"
            case .redirectedToLogin: "redirected to \(options.login ?? "the login"): logged out"
            }
        }
        /// From one instance to another; or to a new process at the same index (a scale to 0 and back,
        /// a restart), which "chat.0 to chat.0" did not say.
        func moved(_ move: (from: String, to: String)) -> String {
            let (from, to) = (name(move.from), name(move.to))
            let which = move.to.contains(":") ? move.to : "guid \(move.to.prefix(8))"
            return "\(user) moved from \(from) to " + (from == to ? "a new process of \(to) (\(which))" : to)
        }
        switch (move, lost) {
        case (nil, nil):
            return nil
        case (let move?, nil):
            let kept = options.check == nil ? "kept its \(options.sessionCookie)" : "still logged in"
            return "\(moved(move)): \(kept)"
        case (let move?, let lost?):
            return "\(moved(move)) and LOST its session (\(lost))"
        case (nil, let lost?):
            return "\(user) LOST its session (\(lost))"
        }
    }
}

extension VirtualUsers {
    /// Users started against the proxy and counted, until `stop` says what they got: what `cluster
    /// chaos --users` and `cluster users` share.
    public final class Running: Sendable {
        private let task: Task<Void, any Error>
        private let tally = Shared(VirtualUsersTally())

        /// `onEvents`: also told what happened to a user on each request (`cluster users` prints it).
        public init(
            _ options: VirtualUsersOptions, proxyURL: String, traceKey: String? = nil,
            onEvents: @escaping @Sendable (_ user: String, _ events: [VirtualUser.Event]) -> Void = { _, _ in }
        ) {
            let tally = tally
            task = Task {
                try await VirtualUsers.run(options, proxyURL: proxyURL, traceKey: traceKey) { user, events in
                    tally.value.withLock { $0.record(events, of: user) }
                    onEvents(user, events)
                }
            }
        }

        /// Ends the users (a request in flight is not counted) and returns what they got; `say` hears
        /// why when they could not run at all.
        public func stop(say: (String) -> Void) async -> VirtualUsersTally {
            task.cancel()
            if case .failure(let error) = await task.result { say("the simulated users could not run: \(error)") }
            return tally.value.withLock { $0 }
        }

        /// Ends the users without waiting (the run is leaving by an error).
        public func cancel() { task.cancel() }
    }
}

/// `cluster users`: the simulated users alone, for as long as asked or until Ctrl-C, telling each
/// move and each lost session as it happens while someone kills, scales and restarts by hand.
public enum VirtualUsersRun {
    public enum Outcome: Sendable, Equatable {
        case done
        /// More sessions lost than `--max-lost-sessions`.
        case sessionsLost
    }

    /// `run`, ended early by SIGINT or SIGTERM: the users stop, the summary is printed all the same.
    public static func runUntilInterrupted(
        options: VirtualUsersOptions, duration: Duration?, send: @escaping ChaosRun.Send, print: @escaping @Sendable (String) -> Void
    ) async throws -> Outcome {
        try await cancellingOnInterrupt { try await run(options: options, duration: duration, send: send, print: print) }
    }

    /// The users for `duration` (nil: until cancelled); a line per move or loss, then the summary.
    /// Cancelled, it ends the same way: Ctrl-C is how a run without `duration` ends.
    public static func run(
        options: VirtualUsersOptions, duration: Duration?, send: @escaping ChaosRun.Send, print: @escaping @Sendable (String) -> Void
    ) async throws -> Outcome {
        let say: @Sendable (String) -> Void = { text in print(LogLine(time: LogHub.now(), source: "users", text: text).formatted()) }
        let response = try await send(ControlRequest(command: .status, fresh: true))
        guard response.ok, let status = response.status else {
            throw ChaosRun.Failure("the cluster did not give its status: \(response.error ?? "no reason given")")
        }
        guard let url = status.entry.url else {
            throw ChaosRun.Failure(
                "the simulated users send their requests through the proxy, and this cluster has no proxy running (\(status.entry.state))")
        }
        let narrative = Shared(VirtualUsersNarrative(status: status))
        let users = VirtualUsers.Running(options, proxyURL: url, traceKey: status.proxy.traceKey) { user, events in
            if let line = narrative.value.withLock({ $0.line(user: user, events: events, options: options) }) { say(line) }
        }
        // Instances come and go with new guids: their names are read again every second.
        let names = Task {
            while (try? await Task.sleep(for: .seconds(1))) != nil {
                guard let status = try? await send(ControlRequest(command: .status)).status else { continue }
                let current = VirtualUsersNarrative(status: status)
                narrative.value.withLock { $0.names.merge(current.names) { _, new in new } }
            }
        }
        defer {
            users.cancel()
            names.cancel()
        }
        let length = duration.map { " for \(DurationText.format($0))" } ?? " until Ctrl-C"
        say(options.summary(proxyURL: url) + length)
        if let duration {
            try? await Task.sleep(for: duration)
        } else {
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(60)) }
        }
        let tally = await users.stop(say: say)
        say("simulated users: \(tally.summary(options: options))")
        if let failure = tally.failure(options: options) {
            say(failure)
            return .sessionsLost
        }
        return .done
    }
}

/// A value behind a lock that tasks share (the users' tally, the instances' names, a chaos report).
public final class Shared<Value: Sendable>: Sendable {
    public let value: Mutex<Value>
    public init(_ value: Value) { self.value = Mutex(value) }
}
