import Testing

@testable import ChatApp

/// Vectors computed with Python's hmac + base64 (the algorithm of npm cookie-signature), see the
/// commit that added them; the first is cookie-signature's own README example.
@Suite struct CookieSignatureTests {
    static let vectors: [(sid: String, secret: String, signed: String, cookie: String)] = [
        ("hello", "tobiiscool", "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI", "s%3Ahello.DGDUkGlIkCzPz%2BC0B064FNgHdEjox7ch8tOBGslZ5QI"),
        (
            "kX9Z3lJ2zQ0nQ2W4n3sX1vYtQy6L2bHq", "keyboard cat", "kX9Z3lJ2zQ0nQ2W4n3sX1vYtQy6L2bHq.8tI3/zD4wvef6gdNZ8u1w17xh37TgNIJu9ADqOAq6/k",
            "s%3AkX9Z3lJ2zQ0nQ2W4n3sX1vYtQy6L2bHq.8tI3%2FzD4wvef6gdNZ8u1w17xh37TgNIJu9ADqOAq6%2Fk"
        ),
        (
            "abc-_123", "s3cr3t:with,comma", "abc-_123.FRdLZr2kEmyALL6aqJIhsKc6CIAPqK+H8sjBc1s9PF8",
            "s%3Aabc-_123.FRdLZr2kEmyALL6aqJIhsKc6CIAPqK%2BH8sjBc1s9PF8"
        ),
    ]

    @Test func signsLikeCookieSignature() {
        for vector in Self.vectors {
            #expect(CookieSignature.sign(vector.sid, secret: vector.secret) == vector.signed)
            #expect(CookieSignature.unsign(vector.signed, secrets: [vector.secret]) == vector.sid)
        }
    }

    @Test func cookieValueIsURLEncodedWithThePrefix() {
        for vector in Self.vectors {
            let cookie = SessionCookie(name: "JSESSIONID", secrets: [vector.secret])
            #expect(cookie.value(for: vector.sid) == vector.cookie)
            #expect(cookie.sessionID(fromValue: vector.cookie) == vector.sid)
        }
    }

    @Test func rotationVerifiesWithEverySecretAndSignsWithTheFirst() {
        let old = SessionCookie(name: "JSESSIONID", secrets: ["old"])
        let rotated = SessionCookie(name: "JSESSIONID", secrets: ["new", "old"])
        let value = old.value(for: "abc")
        #expect(rotated.sessionID(fromValue: value) == "abc")
        #expect(rotated.value(for: "abc") == SessionCookie(name: "JSESSIONID", secrets: ["new"]).value(for: "abc"))
        #expect(SessionCookie(name: "JSESSIONID", secrets: ["new"]).sessionID(fromValue: value) == nil)
    }

    @Test func forgedUnsignedAndMalformedCookiesMeanNoSession() {
        let cookie = SessionCookie(name: "JSESSIONID", secrets: ["keyboard cat"])
        let good = cookie.value(for: "abc")
        #expect(cookie.sessionID(fromValue: good) == "abc")
        #expect(cookie.sessionID(fromValue: "abc") == nil)  // unsigned
        #expect(cookie.sessionID(fromValue: "s%3Aabc") == nil)  // no signature
        #expect(cookie.sessionID(fromValue: "s%3Aabd" + good.dropFirst("s%3Aabc".count)) == nil)  // other sid, same signature
        #expect(cookie.sessionID(fromValue: String(good.dropLast())) == nil)  // truncated signature
        #expect(cookie.sessionID(fromValue: good + "A") == nil)
        #expect(cookie.sessionID(fromValue: "s%3A" + CookieSignature.sign("abc", secret: "guess")) == nil)
        #expect(cookie.sessionID(fromValue: "%E0%A4%A") == nil)  // bad escape
        #expect(cookie.sessionID(fromValue: "") == nil)
        // A validly signed id with characters that are not an id is still refused.
        #expect(cookie.sessionID(fromValue: "s%3A" + CookieSignature.sign("a b", secret: "keyboard cat")) == nil)
        #expect(SessionCookie(name: "JSESSIONID", secrets: [""]).sessionID(fromValue: "s%3A" + CookieSignature.sign("abc", secret: "")) == nil)
    }

    @Test func readsTheFirstCookieOfItsNameFromHeaders() {
        let cookie = SessionCookie(name: "JSESSIONID", secrets: ["k"])
        let value = cookie.value(for: "sid1")
        #expect(cookie.sessionID(fromHeaders: ["a=1; JSESSIONID=\(value); b=2"]) == "sid1")
        #expect(cookie.sessionID(fromHeaders: ["a=1", "JSESSIONID=\"\(value)\""]) == "sid1")
        #expect(cookie.sessionID(fromHeaders: ["jsessionid=\(value)"]) == nil)  // names are case-sensitive
        #expect(cookie.sessionID(fromHeaders: ["JSESSIONID=forged; JSESSIONID=\(value)"]) == nil)
        #expect(cookie.sessionID(fromHeaders: []) == nil)
        #expect(cookie.sessionID(fromHeaders: [";;=;JSESSIONID"]) == nil)
    }

    @Test func sessionIDsLookLikeUidSafe() {
        let sid = SessionID.generate()
        #expect(sid.count == 32)
        #expect(SessionID.isWellFormed(sid))
        #expect(SessionID.generate() != sid)
        #expect(!SessionID.isWellFormed("../etc"))
        #expect(!SessionID.isWellFormed(String(repeating: "a", count: 129)))
    }

    @Test func cookieNames() {
        #expect(SessionCookie.isValidName("JSESSIONID"))
        #expect(SessionCookie.isValidName("connect.sid"))
        #expect(!SessionCookie.isValidName("bad name"))
        #expect(!SessionCookie.isValidName("a;b"))
        #expect(!SessionCookie.isValidName(""))
    }

    @Test func sessionRecordMatchesExpressSessionJSON() throws {
        let json = #"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":"bob"}"#
        let record = try #require(SessionRecord.decode(Array(json.utf8)))
        #expect(record.user == "bob")
        #expect(record.cookie.path == "/")
        let encoded = SessionRecord(user: "ada").encoded()
        #expect(encoded.contains(#""user":"ada""#))
        #expect(encoded == #"{"cookie":{"expires":null,"httpOnly":true,"originalMaxAge":null,"path":"/","sameSite":"lax"},"user":"ada"}"#)
        #expect(SessionRecord.decode(Array("not json".utf8)) == nil)
    }
}

@Suite struct InMemorySessionsTests {
    let record = SessionRecord(user: "ada")

    @Test func keepsSessionsUntilTheyExpireAndForgetsDestroyedOnes() {
        let sessions = InMemorySessions()
        let start = ContinuousClock.now
        sessions.save("a", record, until: start + .seconds(10), now: start)
        #expect(sessions.load("a", now: start + .seconds(9)) == record)
        #expect(sessions.load("a", now: start + .seconds(10)) == nil)
        #expect(sessions.count == 0)  // dropped when met expired

        sessions.save("b", record, until: start + .seconds(10), now: start)
        #expect(sessions.touch("b", until: start + .seconds(20), now: start + .seconds(5)))
        #expect(sessions.load("b", now: start + .seconds(15)) == record)
        #expect(!sessions.touch("c", until: start + .seconds(20), now: start))
        sessions.destroy("b")
        #expect(sessions.load("b", now: start) == nil)
    }

    @Test func expiredSessionsArePrunedAsTheMapGrows() {
        let sessions = InMemorySessions()
        let start = ContinuousClock.now
        for index in 0..<1_024 { sessions.save("old\(index)", record, until: start + .seconds(1), now: start) }
        sessions.save("new", record, until: start + .seconds(100), now: start + .seconds(2))
        #expect(sessions.count == 1)
    }
}
