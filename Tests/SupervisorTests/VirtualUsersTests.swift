import Testing

@testable import Supervisor

@Suite("cluster chaos --users: simulated users and their sessions")
struct VirtualUsersTests {
    let vcap = "__VCAP_ID__"

    @Test("A user keeps its cookies, sends them back, and sees its session start, move with the router's fallback, and survive")
    func sessionKept() {
        var user = VirtualUser(name: "user-1")
        #expect(user.next == .browse)
        #expect(user.cookieHeader == nil)
        // The app starts a session; the proxy pins it to instance a.
        var events = user.answered(.browse, status: 200, setCookies: ["JSESSIONID=s1; Path=/; HttpOnly", "\(vcap)=a; Path=/; HttpOnly"], body: "")
        #expect(events == [.answered(200), .sessionStarted])
        #expect(user.cookieHeader == "JSESSIONID=s1; \(vcap)=a")
        #expect(user.instance == "a")
        // A sticky hit: nothing set.
        #expect(user.answered(.browse, status: 200, setCookies: [], body: "") == [.answered(200)])
        // Instance a is gone: the router falls back to b and says so with a new __VCAP_ID__; the app
        // (sessions in Redis) knows the session, so it sets nothing.
        events = user.answered(.browse, status: 200, setCookies: ["\(vcap)=b; Path=/; HttpOnly"], body: "")
        #expect(events == [.answered(200), .moved(from: "a", to: "b")])
        #expect(user.cookieHeader == "JSESSIONID=s1; \(vcap)=b")
    }

    @Test("A session the app replaces (kept in the dead instance's memory) or deletes is lost; a failed request changes nothing")
    func sessionLost() {
        var user = VirtualUser(name: "user-1")
        _ = user.answered(.browse, status: 200, setCookies: ["JSESSIONID=s1", "\(vcap)=a"], body: "")
        #expect(user.failed("connection refused") == [.noAnswer("connection refused")])
        #expect(user.cookieHeader == "JSESSIONID=s1; \(vcap)=a")
        let events = user.answered(.browse, status: 200, setCookies: ["JSESSIONID=s2; Path=/", "\(vcap)=b"], body: "")
        #expect(events == [.answered(200), .moved(from: "a", to: "b"), .sessionLost(.replaced)])
        #expect(user.cookies["JSESSIONID"] == "s2")
        // The same value set again is not a new session.
        #expect(user.answered(.browse, status: 200, setCookies: ["JSESSIONID=s2"], body: "") == [.answered(200)])
        // Deleted: Max-Age=0, or an Expires in the past.
        #expect(user.answered(.browse, status: 200, setCookies: ["JSESSIONID=; Max-Age=0"], body: "") == [.answered(200), .sessionLost(.deleted)])
        #expect(user.cookies["JSESSIONID"] == nil)
        _ = user.answered(.browse, status: 200, setCookies: ["JSESSIONID=s3"], body: "")
        let expired = user.answered(.browse, status: 200, setCookies: ["JSESSIONID=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT"], body: "")
        #expect(expired == [.answered(200), .sessionLost(.deleted)])
        // A cookie that is not the session's changes nothing of the session.
        #expect(user.answered(.browse, status: 200, setCookies: ["theme=dark", "bad header"], body: "") == [.answered(200)])
        #expect(user.cookieHeader == "\(vcap)=b; theme=dark")
    }

    @Test("With a login: log in first, stay logged in while the page has the check text, log in again after a loss")
    func login() {
        var user = VirtualUser(name: "user-1", login: "/user", check: "data-user=")
        #expect(user.next == .logIn)
        let options = VirtualUsersOptions(count: 1, path: "/chat", login: "/user", loginForm: "name={user}&x=1")
        let login = user.request(options)
        #expect(login.method == .POST && login.path == "/user" && login.body == Array("name=user-1&x=1".utf8))
        #expect(login.headers.contains { $0 == ("Content-Type", "application/x-www-form-urlencoded") })
        #expect(!login.headers.contains { $0.0 == "Cookie" })
        // A refused login is tried again.
        #expect(user.answered(.logIn, status: 503, setCookies: [], body: "") == [.answered(503)])  // an instance failing, not the login
        #expect(user.next == .logIn)
        // The login regenerates nothing yet: the session starts here, answered with a redirect.
        var events = user.answered(.logIn, status: 303, setCookies: ["JSESSIONID=s1", "\(vcap)=a"], body: "")
        #expect(events == [.answered(303), .sessionStarted])
        #expect(user.next == .browse)
        let page = user.request(options)
        #expect(page.method == .GET && page.path == "/chat" && page.body == nil)
        #expect(page.headers.contains { $0 == ("Cookie", "JSESSIONID=s1; \(vcap)=a") })
        #expect(user.answered(.browse, status: 200, setCookies: [], body: "<body data-user=\"user-1\">") == [.answered(200), .checkSeen])
        // An error page does not say the user is logged out.
        #expect(user.answered(.browse, status: 502, setCookies: [], body: "502 Bad Gateway") == [.answered(502)])
        // Moved to b, which shows the login page: lost, and the next step logs in again.
        events = user.answered(.browse, status: 200, setCookies: ["\(vcap)=b"], body: "<form>Your name</form>")
        #expect(events == [.answered(200), .moved(from: "a", to: "b"), .sessionLost(.loggedOut)])
        #expect(user.next == .logIn)
        // Logging in again sets a new session cookie: not a second loss.
        #expect(user.answered(.logIn, status: 303, setCookies: ["JSESSIONID=s2"], body: "") == [.answered(303)])
        // A replaced cookie and a page without the text on one answer are one loss.
        events = user.answered(.browse, status: 200, setCookies: ["JSESSIONID=s3"], body: "login")
        #expect(events == [.answered(200), .sessionLost(.replaced)])
    }

    @Test("An app that redirects a logged-out user to its login form: a redirect to the login path is a lost session, another is not")
    func redirectToLogin() {
        var user = VirtualUser(name: "user-1", login: "/login")
        #expect(user.next == .logIn)
        _ = user.answered(.logIn, status: 302, setCookies: ["JSESSIONID=s1", "\(vcap)=a"], body: "", location: "/")
        #expect(user.next == .browse)
        #expect(user.answered(.browse, status: 302, setCookies: [], body: "", location: "/cart") == [.answered(302)])
        let events = user.answered(.browse, status: 302, setCookies: ["\(vcap)=b"], body: "", location: "/login?next=%2F")
        #expect(events == [.answered(302), .moved(from: "a", to: "b"), .sessionLost(.redirectedToLogin)])
        #expect(user.next == .logIn)
        _ = user.answered(.logIn, status: 302, setCookies: ["JSESSIONID=s2"], body: "", location: "/")
        #expect(
            user.answered(.browse, status: 303, setCookies: [], body: "", location: "http://localhost:8080/login#form")
                == [.answered(303), .sessionLost(.redirectedToLogin)])
        #expect(VirtualUser.path(of: "http://localhost:8080") == "/")
        #expect(VirtualUser.path(of: "/login?x=1") == "/login")
        var tally = VirtualUsersTally()
        tally.record([.answered(302), .sessionLost(.redirectedToLogin)], of: "user-1")
        #expect(
            tally.summary(options: VirtualUsersOptions(count: 1, login: "/login")).contains(
                "1 session LOST by 1 user (1 redirect to /login (logged out))"))
        let story = VirtualUsersNarrative()
        #expect(
            story.line(user: "user-1", events: [.sessionLost(.redirectedToLogin)], options: VirtualUsersOptions(count: 1, login: "/login"))
                == "user-1 LOST its session (redirected to /login: logged out)")
    }

    @Test("The tally's line: answers, sessions, moves, losses and what to do about them")
    func tallyLine() {
        let options = VirtualUsersOptions(count: 2, maxLostSessions: 0)
        var tally = VirtualUsersTally()
        tally.record([.answered(200), .sessionStarted], of: "user-1")
        tally.record([.answered(200), .sessionStarted], of: "user-2")
        tally.record([.noAnswer("connection refused")], of: "user-1")
        tally.record([.answered(502)], of: "user-2")
        tally.record([.answered(200), .moved(from: "a", to: "b")], of: "user-1")
        #expect(tally.failure(options: options) == nil)
        #expect(
            tally.summary(options: options)
                == "2 users, 5 requests (2xx 3, 5xx 1, no answer 1 (connection refused 1)); 2 sessions started;"
                + " 1 user moved to another instance (1 time); no session lost")
        tally.record([.answered(200), .moved(from: "b", to: "c"), .sessionLost(.replaced)], of: "user-1")
        tally.record([.answered(200), .sessionLost(.deleted)], of: "user-1")
        #expect(
            tally.summary(options: options)
                == "2 users, 7 requests (2xx 5, 5xx 1, no answer 1 (connection refused 1)); 2 sessions started;"
                + " 1 user moved to another instance (2 times); 2 sessions LOST by 1 user (the app set a new JSESSIONID 1 time;"
                + " the app deleted JSESSIONID 1 time): the instance a user moved to did not know its session. Sessions kept in an"
                + " instance's memory die with it; keep them in a store all instances share, such as Redis")
        #expect(tally.failure(options: options) == "FAILED: the simulated users lost 2 sessions, more than --max-lost-sessions 0")
        #expect(tally.failure(options: VirtualUsersOptions(count: 2, maxLostSessions: 2)) == nil)
        #expect(tally.failure(options: VirtualUsersOptions(count: 2)) == nil)
    }

    @Test("Response times: percentiles to two significant digits, the longest exactly, the slow ones counted")
    func responseTimes() {
        #expect(ResponseTimes.bucket(7) == 7)
        #expect(ResponseTimes.bucket(99) == 99)
        #expect(ResponseTimes.bucket(3_456) == 3_400)
        #expect(ResponseTimes.bucket(999_999) == 990_000)
        #expect(ResponseTimes.bucket(4_987_654) == 4_900_000)
        var times = ResponseTimes()
        #expect(times.summary == nil && times.percentile(0.5) == nil)
        // 97 quick answers, then a user stuck behind a frozen instance: 1.5 s, 2 s and a 4.987 s one.
        for _ in 0..<97 { times.record(.microseconds(3_456)) }
        for wait in [Duration.milliseconds(1_500), .seconds(2), .microseconds(4_987_654)] { times.record(wait) }
        #expect(times.count == 100)
        #expect(times.percentile(0.5) == .microseconds(3_400))
        #expect(times.percentile(0.97) == .microseconds(3_400))
        #expect(times.percentile(0.98) == .milliseconds(1_500))
        #expect(times.percentile(0.99) == .seconds(2))
        #expect(times.percentile(1) == .milliseconds(4_900))
        #expect(times.longest == .microseconds(4_987_654))
        #expect(times.count(atLeast: .seconds(1)) == 3)
        #expect(times.buckets.count == 4)
        #expect(times.summary == "p50 3.4ms, p99 2s, longest 4.988s (3 took 1s or more)")
        // In the tally's line, after the answers.
        var tally = VirtualUsersTally()
        tally.record([.answered(200), .sessionStarted, .took(.milliseconds(12))], of: "user-1")
        tally.record([.noAnswer("connection refused")], of: "user-1")
        #expect(
            tally.summary(options: VirtualUsersOptions(count: 1)).hasPrefix(
                "1 user, 2 requests (2xx 1, no answer 1 (connection refused 1)), answered in p50 12ms, p99 12ms, longest 12ms; 1 session started"))
    }

    @Test("Counts are grouped by thousands whatever the locale, with their noun")
    func counts() {
        #expect([0, 7, 999, 1_000, 12_345, 1_234_567, -4_321].map(CountText.grouped) == ["0", "7", "999", "1,000", "12,345", "1,234,567", "-4,321"])
        #expect(CountText.count(1, "user") == "1 user")
        #expect(CountText.count(1_500, "request") == "1,500 requests")
        var tally = VirtualUsersTally()
        for _ in 0..<1_200 { tally.record([.answered(200)], of: "user-1") }
        #expect(tally.summary(options: VirtualUsersOptions(count: 1)).hasPrefix("1 user, 1,200 requests (2xx 1,200); 0 sessions started"))
    }

    @Test("No session cookie at all: the line says the router pinned nobody, and what to try")
    func noSessionStarted() {
        var tally = VirtualUsersTally()
        tally.record([.answered(404)], of: "user-1")
        #expect(
            tally.summary(options: VirtualUsersOptions(count: 1))
                == "1 user, 1 request (4xx 1); 0 sessions started (the app set no JSESSIONID cookie, so the router pinned nobody:"
                + " does it need a login first, --users-login? another cookie, --users-cookie?); none moved to another instance;"
                + " no session lost")
        var loggedOut = VirtualUsersTally()
        loggedOut.record([.answered(200), .sessionLost(.loggedOut)], of: "user-1")
        let options = VirtualUsersOptions(count: 1, login: "/user", check: "data-user=")
        #expect(loggedOut.summary(options: options).contains("(the app set no JSESSIONID cookie, so the router pinned nobody)"))
        #expect(loggedOut.summary(options: options).contains("1 session LOST by 1 user (1 page without \"data-user=\" (logged out))"))
    }

    @Test("A user keeps no page without a check text, and at most a MiB of each page with one")
    func bodyLimit() {
        let options = VirtualUsersOptions(count: 1_000, login: "/user")
        #expect(VirtualUser(name: "user-1").request(options).bodyLimit == 0)
        var user = VirtualUser(name: "user-1", login: "/user", check: "data-user=")
        #expect(user.request(options).bodyLimit == 0)  // the login's answer
        _ = user.answered(.logIn, status: 303, setCookies: ["JSESSIONID=s1"], body: "")
        #expect(user.request(options).bodyLimit == 1_048_576)
    }

    @Test("Options: bad values and options without --users are refused with the option's name")
    func options() {
        #expect(VirtualUsersOptions().problem == nil)
        #expect(VirtualUsersOptions(count: 20, login: "/user", check: "x", maxLostSessions: 0).problem == nil)
        #expect(VirtualUsersOptions(count: 1001).problem == "--users must be from 0 to 1000 (not 1001)")
        #expect(VirtualUsersOptions(count: -1).problem == "--users must be from 0 to 1000 (not -1)")
        #expect(VirtualUsersOptions(login: "/user").problem == "--users-login needs --users N (the simulated users it is about)")
        #expect(VirtualUsersOptions(check: "x").problem == "--users-check needs --users N (the simulated users it is about)")
        #expect(VirtualUsersOptions(maxLostSessions: 0).problem == "--max-lost-sessions needs --users N (the simulated users it is about)")
        #expect(VirtualUsersOptions(count: 1, path: "chat").problem == "--users-path must be a path starting with / (not chat)")
        #expect(VirtualUsersOptions(count: 1, login: "user").problem == "--users-login must be a path starting with / (not user)")
        #expect(
            VirtualUsersOptions(count: 1, path: "/a b").problem
                == "--users-path must not contain spaces or control characters (percent-encode them: %20)")
        #expect(VirtualUsersOptions(count: 1, login: "/user\r\nX: y").problem?.hasPrefix("--users-login must not contain spaces") == true)
        #expect(VirtualUsersOptions(count: 1, path: "/search?q=a%20b").problem == nil)
        // The login form: {user} stands for the user's name; it needs a login path, and no spaces.
        let form = VirtualUsersOptions(count: 1, login: "/login", loginForm: "email={user}%40example.com&password=s3cret")
        #expect(form.problem == nil)
        #expect(form.loginBody(user: "user-7") == "email=user-7%40example.com&password=s3cret")
        #expect(VirtualUsersOptions(count: 1).loginBody(user: "user-1") == "user=user-1")
        #expect(
            VirtualUsersOptions(count: 1, loginForm: "name={user}").problem
                == "--users-login-form goes with --users-login PATH (where the form is sent)")
        #expect(VirtualUsersOptions(loginForm: "name={user}").problem == "--users-login-form needs --users N (the simulated users it is about)")
        #expect(
            VirtualUsersOptions(count: 1, login: "/login", loginForm: "name=a b").problem
                == "--users-login-form must be a URL-encoded form without spaces (name=value&other=value; %20 for a space)")
        #expect(VirtualUsersOptions(count: 1, check: "").problem == "--users-check must not be empty")
        #expect(VirtualUsersOptions(count: 1, every: .milliseconds(5)).problem == "--users-every must be from 10ms to 1m (not 5ms)")
        #expect(VirtualUsersOptions(count: 1, sessionCookie: "a b").problem == "--users-cookie must be a cookie name (not a b)")
        #expect(VirtualUsersOptions(count: 1, maxLostSessions: -1).problem == "--max-lost-sessions must be 0 or more (not -1)")
        // The chaos options carry them.
        let chaos = ChaosOptions(every: .seconds(1), duration: .seconds(1), seed: 1, users: VirtualUsersOptions(count: 1, path: "x"))
        #expect(chaos.problem == "--users-path must be a path starting with / (not x)")
    }

    @Test("cluster users tells a move with the instances' names, whether the session survived it, and a loss without a move")
    func narrative() {
        let status = ClusterStatus(
            app: "chat", command: "chat-node", ready: true, desiredInstances: 2, affinity: "cf", restartPolicy: "diego", timeScale: 1,
            proxy: .init(state: "running", url: "http://localhost:8080/"), redis: .init(state: "running"),
            instances: [
                ClusterStatus.Instance(index: 0, guid: "g0", pid: 10, state: .running),
                ClusterStatus.Instance(index: 1, guid: "g1", pid: 11, state: .running, replacing: .init(pid: 9, guid: "g1-old", state: .serving)),
            ])
        let story = VirtualUsersNarrative(status: status)
        #expect(story.names == ["g0": "chat.0", "g1": "chat.1", "g1-old": "chat.1 (old)"])
        // With the proxy's trace header, users know instances by address.
        var traced = status
        traced.instances[0].port = 4100
        traced.instances[1].replacing?.port = 4099
        let byAddress = VirtualUsersNarrative(status: traced)
        #expect(byAddress.names["127.0.0.1:4100"] == "chat.0" && byAddress.names["127.0.0.1:4099"] == "chat.1 (old)")
        #expect(
            byAddress.line(
                user: "user-7", events: [.answered(200), .moved(from: "127.0.0.1:4099", to: "127.0.0.1:4100")], options: VirtualUsersOptions(count: 1)
            )
                == "user-7 moved from chat.1 (old) to chat.0: kept its JSESSIONID")
        #expect(
            byAddress.line(user: "user-8", events: [.moved(from: "127.0.0.1:4100", to: "127.0.0.1:5000")], options: VirtualUsersOptions(count: 1))
                == "user-8 moved from chat.0 to instance 127.0.0.1:5000: kept its JSESSIONID")
        let plain = VirtualUsersOptions(count: 1)
        let loggedIn = VirtualUsersOptions(count: 1, login: "/user", check: "data-user=")
        #expect(story.line(user: "user-1", events: [.answered(200), .sessionStarted], options: plain) == nil)
        #expect(
            story.line(user: "user-1", events: [.answered(200), .moved(from: "g1-old", to: "g0")], options: plain)
                == "user-1 moved from chat.1 (old) to chat.0: kept its JSESSIONID")
        #expect(
            story.line(user: "user-2", events: [.answered(200), .moved(from: "g0", to: "gone-guid-123")], options: loggedIn)
                == "user-2 moved from chat.0 to instance gone-gui: still logged in")
        #expect(
            story.line(user: "user-3", events: [.answered(200), .moved(from: "g0", to: "g1"), .sessionLost(.replaced)], options: plain)
                == "user-3 moved from chat.0 to chat.1 and LOST its session (the app set a new JSESSIONID)")
        #expect(
            story.line(user: "user-4", events: [.answered(200), .sessionLost(.loggedOut)], options: loggedIn)
                == "user-4 LOST its session (a page without \"data-user=\": logged out)")
        #expect(
            story.line(user: "user-5", events: [.answered(200), .sessionLost(.deleted)], options: plain)
                == "user-5 LOST its session (the app deleted JSESSIONID)")
        // A new process at the same index (scaled to 0 and back): it said "from chat.0 to chat.0".
        var renamed = story
        renamed.names["g0-new-guid"] = "chat.0"
        #expect(
            renamed.line(user: "user-6", events: [.answered(200), .moved(from: "g0", to: "g0-new-guid")], options: plain)
                == "user-6 moved from chat.0 to a new process of chat.0 (guid g0-new-g): kept its JSESSIONID")
    }

    @Test("cluster users without a proxy running is refused at once")
    func standaloneUsersNeedTheProxy() async throws {
        let status = ClusterStatus(
            app: "web", command: "app", ready: true, desiredInstances: 1, affinity: "cf", restartPolicy: "diego", timeScale: 1,
            proxy: .init(state: "absent"), redis: .init(state: "running"), instances: [])
        let error = await #expect(throws: ChaosRun.Failure.self) {
            _ = try await VirtualUsersRun.run(
                options: VirtualUsersOptions(count: 1), duration: .seconds(1), send: { _ in ControlResponse(ok: true, status: status) },
                print: { _ in })
        }
        #expect(error?.description == "the simulated users send their requests through the proxy, and this cluster has no proxy running (absent)")
    }

    @Test("Without a proxy running, --users is refused before any fault")
    func usersNeedTheProxy() async throws {
        let status = ClusterStatus(
            app: "web", command: "app", ready: true, desiredInstances: 1, affinity: "cf", restartPolicy: "diego", timeScale: 1,
            proxy: .init(state: "absent"), redis: .init(state: "running"), instances: [ClusterStatus.Instance(index: 0, pid: 10, state: .running)])
        let options = ChaosOptions(every: .seconds(1), duration: .seconds(1), seed: 1, users: VirtualUsersOptions(count: 2))
        let error = await #expect(throws: ChaosRun.Failure.self) {
            _ = try await ChaosRun.run(
                options: options, send: { _ in ControlResponse(ok: true, status: status) }, print: { _ in })
        }
        #expect(error?.description == "--users sends its requests through the proxy, and this cluster has no proxy running (absent): drop --users")
    }
}

@Suite("Simulated users told apart from a wrong option")
struct VirtualUsersMisconfigurationTests {
    let options = VirtualUsersOptions(count: 2, login: "/user", check: "NOPE", maxLostSessions: 0)

    @Test("A check text no page has is reported as such, not as lost sessions, and fails a gated run")
    func aWrongCheckIsNotALostSession() {
        var user = VirtualUser(name: "user-1", login: "/user", check: "NOPE")
        _ = user.answered(.logIn, status: 303, setCookies: ["JSESSIONID=s1", "__VCAP_ID__=a"], body: "")
        let events = user.answered(.browse, status: 200, setCookies: [], body: "<body data-user=\"user-1\">")
        #expect(events == [.answered(200), .checkNeverSeen])
        // Right after a move, the same page is a session lost on the way (sessions in memory, no affinity).
        var moving = VirtualUser(name: "user-2", login: "/user", check: "NOPE")
        _ = moving.answered(.logIn, status: 303, setCookies: ["JSESSIONID=s1"], body: "", backend: "127.0.0.1:1")
        #expect(
            moving.answered(.browse, status: 200, setCookies: [], body: "login", backend: "127.0.0.1:2")
                == [.answered(200), .moved(from: "127.0.0.1:1", to: "127.0.0.1:2"), .sessionLost(.loggedOut)])
        var tally = VirtualUsersTally()
        tally.record([.answered(303), .sessionStarted], of: "user-1")
        for _ in 0..<3 { tally.record(events, of: "user-1") }
        let summary = tally.summary(options: options)
        #expect(summary.contains("no session lost") && summary.contains("3 pages after a login had no \"NOPE\", not even the first"), "\(summary)")
        #expect(tally.failure(options: options) == "FAILED: no page after a login had the --users-check text \"NOPE\": the sessions were not checked")
    }

    @Test("Logins answered with an error are said, and a gated run where none worked fails")
    func failedLoginsAreSaid() {
        var user = VirtualUser(name: "user-1", login: "/nologin")
        #expect(user.answered(.logIn, status: 404, setCookies: [], body: "") == [.answered(404), .loginFailed(404)])
        var tally = VirtualUsersTally()
        for _ in 0..<12 { tally.record([.answered(404), .loginFailed(404)], of: "user-1") }
        let loginOptions = VirtualUsersOptions(count: 2, login: "/nologin", maxLostSessions: 0)
        #expect(
            tally.summary(options: loginOptions).contains("logins to /nologin FAILED (404 12): is --users-login the path the login form posts to?"))
        #expect(tally.failure(options: loginOptions) == "FAILED: every login failed: the sessions were not checked")
    }

    @Test("Sessions lost with nobody moving are not blamed on a move")
    func lossesWithoutMoves() {
        var tally = VirtualUsersTally()
        tally.record([.answered(200), .sessionStarted], of: "user-1")
        tally.record([.answered(200), .sessionLost(.replaced)], of: "user-1")
        let summary = tally.summary(options: VirtualUsersOptions(count: 1))
        #expect(summary.hasSuffix("nobody moved to another instance, so the app itself ended them"), "\(summary)")
    }
}
@Suite("Simulated users told which instance answered")
struct VirtualUsersTraceTests {
    @Test("With the proxy's trace header a move is seen without __VCAP_ID__ (affinity none)")
    func movesSeenByAddress() {
        var user = VirtualUser(name: "user-1")
        #expect(
            user.answered(.browse, status: 200, setCookies: ["JSESSIONID=s1"], body: "", backend: "127.0.0.1:4100") == [
                .answered(200), .sessionStarted,
            ])
        #expect(user.answered(.browse, status: 200, setCookies: [], body: "", backend: "127.0.0.1:4100") == [.answered(200)])
        #expect(
            user.answered(.browse, status: 200, setCookies: [], body: "", backend: "127.0.0.1:4200")
                == [.answered(200), .moved(from: "127.0.0.1:4100", to: "127.0.0.1:4200")])
        // The address decides, not the cookie: a __VCAP_ID__ set meanwhile is no second move.
        #expect(user.answered(.browse, status: 200, setCookies: ["__VCAP_ID__=g2"], body: "", backend: "127.0.0.1:4200") == [.answered(200)])
        // A user without a session is balanced on every request: no moves to tell.
        var anonymous = VirtualUser(name: "user-2")
        #expect(anonymous.answered(.browse, status: 200, setCookies: [], body: "", backend: "127.0.0.1:4100") == [.answered(200)])
        #expect(anonymous.answered(.browse, status: 200, setCookies: [], body: "", backend: "127.0.0.1:4200") == [.answered(200)])
    }
}
