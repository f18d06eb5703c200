import Testing

@testable import Supervisor

@Suite("--users-login-form: {user}, {field:NAME} and the login page's fields")
struct LoginFormTests {
    @Test("The template: placeholders, form encoding, the page fields it needs, and clear refusals")
    func template() throws {
        let spring = try #require(LoginFormTemplate("username={user}&password=secret&_csrf={field:_csrf}"))
        #expect(spring.pageFields == ["_csrf"])
        // A token with the characters a form must encode arrives as the page had it.
        #expect(spring.body(user: "user-1", fields: ["_csrf": "a+b/c=d é"]) == "username=user-1&password=secret&_csrf=a%2Bb%2Fc%3Dd+%C3%A9")
        let plain = try #require(LoginFormTemplate("email={user}%40example.com&password=secret"))
        #expect(plain.pageFields.isEmpty)
        #expect(plain.body(user: "user-7", fields: [:]) == "email=user-7%40example.com&password=secret")
        let twice = try #require(LoginFormTemplate("a={field:t}&b={field:u}&c={field:t}"))
        #expect(twice.pageFields == ["t", "u"])
        #expect(LoginFormTemplate.problem("user={user}&_csrf={field:_csrf}") == nil)
        #expect(LoginFormTemplate.problem("user={name}")?.hasPrefix("--users-login-form has an unknown placeholder {name}: use {user}") == true)
        #expect(LoginFormTemplate.problem("user={field:}")?.contains("unknown placeholder {field:}") == true)
        #expect(LoginFormTemplate.problem("user={user") == "--users-login-form has a { without its }: use {user} or {field:NAME} (%7B for a brace)")
        #expect(LoginFormTemplate("user={nope}") == nil)
        // The options refuse it before anything starts.
        #expect(
            VirtualUsersOptions(count: 1, login: "/login", loginForm: "user={nope}").problem?.hasPrefix(
                "--users-login-form has an unknown placeholder {nope}") == true)
    }

    @Test("The fields of a page's forms: Spring's, Django's and Rails' token inputs, any quoting, references decoded")
    func fields() {
        let spring = """
            <form class="form-signin" method="post" action="/login">
              <input type="text" id="username" name="username" class="form-control" placeholder="Username" required autofocus>
              <input type="password" id="password" name="password" class="form-control" required>
              <input name="_csrf" type="hidden" value="q7Xz-4Rk_0aVbNzL2mYp8w==" />
            </form>
            """
        let values = HTMLFormFields.values(in: spring)
        #expect(values["_csrf"] == "q7Xz-4Rk_0aVbNzL2mYp8w==")
        #expect(values["username"] == "")
        let django = "<FORM method=post><INPUT TYPE=hidden NAME=csrfmiddlewaretoken VALUE=abcDEF123></FORM>"
        #expect(HTMLFormFields.values(in: django)["csrfmiddlewaretoken"] == "abcDEF123")
        let rails = "<input type='hidden' name='authenticity_token' value='x&#43;y&amp;z&#x3D;&quot;' autocomplete=\"off\">"
        #expect(HTMLFormFields.values(in: rails)["authenticity_token"] == "x+y&z=\"")
        // Value before name, spaces around "=", the first of two fields of one name, other tags ignored.
        let odd = "<inputs name=no value=no><input value = \"v1\" name = \"t\"><input name=t value=v2><p name=p value=p>"
        #expect(HTMLFormFields.values(in: odd) == ["t": "v1"])
        // Broken markup gives what it can and never traps.
        for broken in ["<input", "<input name=", "<input name=\"t", "<input =x name=t value=&#xZZ;&amp", "<input name=t value=&#1114112;>"] {
            _ = HTMLFormFields.values(in: broken)
        }
        #expect(HTMLFormFields.values(in: "<input =x name=t value=&amp>")["t"] == "&amp")
        #expect(HTMLFormFields.values(in: "<input name=t value=&#1114112;>")["t"] == "&#1114112;")
    }

    @Test("A user with a token in its login form: login page, then the POST with the token, a fresh page after each loss")
    func csrfLogin() {
        let options = VirtualUsersOptions(
            count: 1, path: "/account", login: "/login", loginForm: "username={user}&_csrf={field:_csrf}", check: "Signed in")
        var user = VirtualUser(
            name: "user-1", login: options.login, check: options.check, loginFields: options.loginTemplate.pageFields)
        #expect(user.next == .loginPage)
        var request = user.request(options)
        #expect(request.method == .GET && request.path == "/login" && request.body == nil)
        #expect(request.bodyLimit == VirtualUsersOptions.checkedPageBytes)
        // The login page starts a session (Spring keeps the token in it) and holds the token.
        let page = "<form><input type=\"hidden\" name=\"_csrf\" value=\"tok/1\"></form>"
        var events = user.answered(.loginPage, status: 200, setCookies: ["JSESSIONID=s1; Path=/"], body: page)
        #expect(events == [.answered(200), .sessionStarted])
        #expect(user.next == .logIn)
        request = user.request(options)
        #expect(request.method == .POST && request.path == "/login")
        #expect(request.body.map { String(decoding: $0, as: UTF8.self) } == "username=user-1&_csrf=tok%2F1")
        #expect(request.headers.contains { $0 == ("Cookie", "JSESSIONID=s1") })
        // Spring changes the session id on login: not a loss.
        events = user.answered(.logIn, status: 302, setCookies: ["JSESSIONID=s2; Path=/"], body: "", location: "/account")
        #expect(events == [.answered(302)])
        #expect(user.next == .browse && user.pageFields == nil)
        #expect(user.request(options).bodyLimit == VirtualUsersOptions.checkedPageBytes)
        #expect(user.answered(.browse, status: 200, setCookies: [], body: "Signed in as user-1") == [.answered(200), .checkSeen])
        // The session is lost: the next login starts with a fresh page, for a fresh token.
        events = user.answered(.browse, status: 200, setCookies: [], body: "Please sign in")
        #expect(events == [.answered(200), .sessionLost(.loggedOut)])
        #expect(user.next == .loginPage)
        // A page without the field: said, and fetched again.
        events = user.answered(.loginPage, status: 200, setCookies: [], body: "<form><input name=username></form>")
        #expect(events == [.answered(200), .loginFieldsMissing(["_csrf"])])
        #expect(user.next == .loginPage)
        // An error page: fetched again, nothing said beyond its status.
        #expect(user.answered(.loginPage, status: 503, setCookies: [], body: "") == [.answered(503)])
        #expect(user.next == .loginPage)
        // A refused login (a token gone stale) is tried again with a fresh page.
        _ = user.answered(.loginPage, status: 200, setCookies: [], body: page)
        #expect(user.answered(.logIn, status: 403, setCookies: [], body: "Invalid CSRF token") == [.answered(403), .loginFailed(403)])
        #expect(user.next == .loginPage)

        var tally = VirtualUsersTally()
        tally.record([.answered(200), .loginFieldsMissing(["_csrf"])], of: "user-1")
        tally.record([.answered(200), .loginFieldsMissing(["_csrf"])], of: "user-2")
        #expect(
            tally.summary(options: options)
                == "1 user, 2 requests (2xx 2); 0 sessions started (the app set no JSESSIONID cookie, so the router pinned nobody); "
                + "the login page /login had no field \"_csrf\" (2 times): name a field of its form in --users-login-form's "
                + "{field:NAME} (view the page's source for <input name=...>); none moved to another instance; no session lost")
        #expect(
            options.summary(proxyURL: "http://localhost:8080/")
                == "1 simulated user, each with its own cookies: GET /account through http://localhost:8080/ every 500ms, after logging "
                + "in with a POST to /login with the login page's _csrf (a GET of /login first); logged in while the page contains "
                + "\"Signed in\"")
    }
}
