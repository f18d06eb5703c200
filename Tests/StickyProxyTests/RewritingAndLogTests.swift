import CloudFoundry
import Foundation
import NIOCore
import NIOHTTP1
import Testing

@testable import StickyProxy

@Suite("Request and response rewriting")
struct HeaderRewritingTests {
    func request(_ text: String) throws -> HTTPHead {
        try HTTPHeadParser.parseRequest(ByteBuffer(string: text.replacingOccurrences(of: "\n", with: "\r\n")))
    }

    func response(_ text: String) throws -> HTTPHead {
        try HTTPHeadParser.parseResponse(ByteBuffer(string: text.replacingOccurrences(of: "\n", with: "\r\n")))
    }

    func rewrite(_ text: String, policy: any AffinityPolicy = CFAffinity()) throws -> (String, InboundRequest) {
        let (base, info) = RequestRewriter.rewrite(
            try request(text), clientIP: "10.0.0.9", vcapRequestID: "rid", requestStartMillis: 1234, policy: policy)
        return (String(buffer: base), info)
    }

    @Test("Negotiate authentication is seen as gorouter reads it: the first Authorization of a request, WWW-Authenticate of a response")
    func negotiateAuthenticationIsRecognised() throws {
        #expect(try request("GET / HTTP/1.1\nHost: h\nauthorization: NEGOTIATE YIIG\n\n").negotiatesAuthentication)
        #expect(try request("GET / HTTP/1.1\nHost: h\nAuthorization: Negotiate\n\n").negotiatesAuthentication)
        #expect(try !request("GET / HTTP/1.1\nHost: h\nAuthorization: Basic eDp5\nAuthorization: Negotiate x\n\n").negotiatesAuthentication)
        #expect(try !request("GET / HTTP/1.1\nHost: h\nAuthorization: Negotiat\n\n").negotiatesAuthentication)
        #expect(try !request("GET / HTTP/1.1\nHost: h\nWWW-Authenticate: Negotiate\n\n").negotiatesAuthentication)
        #expect(try response("HTTP/1.1 401 Unauthorized\nWWW-Authenticate: Negotiate\nContent-Length: 0\n\n").negotiatesAuthentication)
        #expect(try !response("HTTP/1.1 401 Unauthorized\nWWW-Authenticate: Basic realm=x\nWWW-Authenticate: Negotiate\n\n").negotiatesAuthentication)
        #expect(try !response("HTTP/1.1 200 OK\nAuthorization: Negotiate x\nContent-Length: 0\n\n").negotiatesAuthentication)
        // Passed to the app unchanged, and told to affinity.
        let (out, info) = try rewrite("GET / HTTP/1.1\nHost: h\nAuthorization: Negotiate YIIG\n\n")
        #expect(info.negotiatesAuthentication && out.contains("Authorization: Negotiate YIIG\r\n"))
    }

    @Test("An absolute-form request reaches the app as gorouter sends it: the target as received, Host from its authority")
    func absoluteFormRequestsTakeTheirHostFromTheTarget() throws {
        let (out, info) = try rewrite("GET http://a.test/x HTTP/1.1\nHost: other.test\nX-A: 1\n\n")
        #expect(info.host == "a.test")
        #expect(out.hasPrefix("GET http://a.test/x HTTP/1.1\r\n") && out.contains("\r\nHost: a.test\r\n") && !out.contains("other.test"))
        let (old, oldInfo) = try rewrite("GET http://a.test:81/x HTTP/1.0\n\n")
        #expect(oldInfo.host == "a.test:81" && old.contains("\r\nHost: a.test:81\r\n"))
        let (plain, _) = try rewrite("GET /x HTTP/1.1\nHost: h\n\n")
        #expect(plain.components(separatedBy: "Host: h\r\n").count == 2)
    }

    @Test func everyHeaderTheRewriterActsOnIsRecognised() throws {
        let (out, info) = try rewrite(
            """
            POST /x?y=1 HTTP/1.0
            Host: h
            cookie: a=1
            Referer: r
            USER-AGENT: ua
            Keep-Alive: 1
            TE: trailers
            Trailer: x
            Proxy-Connection: k
            Proxy-Authenticate: x
            Proxy-Authorization: x
            Transfer-Encoding: chunked
            X-Forwarded-For: 1.1.1.1
            X-Forwarded-Proto: https
            X-Vcap-Request-Id: spoof
            X-Request-Start: 5
            X-CF-APP-INSTANCE: a:1
            X-CF-ApplicationID: s
            X-CF-InstanceID: s
            X-CF-InstanceIndex: s
            Idempotency-Key: k
            Connection: close


            """)
        #expect(info.host == "h" && info.cookieHeaders == ["a=1"] && info.appInstanceHeader == "a:1" && info.hasIdempotencyKey)
        #expect(info.forwardedFor == "1.1.1.1, 10.0.0.9" && info.forwardedProto == "https")
        #expect(
            out == """
                POST /x?y=1 HTTP/1.1\r
                Host: h\r
                cookie: a=1\r
                Referer: r\r
                USER-AGENT: ua\r
                Transfer-Encoding: chunked\r
                X-Forwarded-Proto: https\r
                X-Request-Start: 5\r
                Idempotency-Key: k\r
                X-Forwarded-For: 1.1.1.1, 10.0.0.9\r
                X-Vcap-Request-Id: rid\r

                """)
    }

    @Test func forwardedHeadersAreAddedWhenAbsent() throws {
        let (out, info) = try rewrite("GET / HTTP/1.1\nHost: h\n\n")
        #expect(
            out
                == "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Vcap-Request-Id: rid\r\nX-Request-Start: 1234\r\n"
        )
        #expect(!info.isUpgrade && info.forwardedProto == "http")
    }

    @Test func anEmptyForwardedProtoCountsAsNone() throws {
        // Go's Header.Get: an empty first value is none, and gorouter sets http in place of them all.
        let (out, info) = try rewrite("GET / HTTP/1.1\nHost: h\nX-Forwarded-Proto:\nX-Forwarded-Proto: https\n\n")
        #expect(
            out
                == "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Vcap-Request-Id: rid\r\nX-Request-Start: 1234\r\n"
        )
        #expect(info.forwardedProto == "http")
        // A first value that is set is kept, with any others.
        let (kept, keptInfo) = try rewrite("GET / HTTP/1.1\nHost: h\nX-Forwarded-Proto: https\nX-Forwarded-Proto:\n\n")
        #expect(kept.contains("X-Forwarded-Proto: https\r\nX-Forwarded-Proto:\r\n") && keptInfo.forwardedProto == "https")
        #expect(!kept.contains("X-Forwarded-Proto: http\r\n"))
    }

    @Test func headersNamedInConnectionAreRemoved() throws {
        let (out, _) = try rewrite("GET / HTTP/1.1\nHost: h\nConnection: keep-alive, X-Hop\nx-hop: 1\nX-End: 2\n\n")
        #expect(!out.lowercased().contains("x-hop") && out.contains("X-End: 2\r\n"))
    }

    @Test func upgradeRequestsKeepTheirUpgradeHeaders() throws {
        let (out, info) = try rewrite("GET / HTTP/1.1\nHost: h\nConnection: keep-alive, Upgrade\nUpgrade: websocket\n\n")
        #expect(info.isUpgrade && out.contains("Upgrade: websocket\r\n") && out.contains("Connection: Upgrade\r\n"))
        let (plain, plainInfo) = try rewrite("GET / HTTP/1.1\nHost: h\nUpgrade: websocket\n\n")
        #expect(!plainInfo.isUpgrade && !plain.contains("Upgrade"))
    }

    @Test func haproxyModeHidesItsCookieFromTheApp() throws {
        let (out, info) = try rewrite("GET / HTTP/1.1\nHost: h\nCookie: SERVERID=a; x=1\n\n", policy: HAProxyAffinity())
        #expect(info.cookieHeaders == ["SERVERID=a; x=1"])
        #expect(out.contains("Cookie: x=1\r\n") && !out.contains("SERVERID"))
    }

    @Test func instanceHeadersEndTheHead() {
        let endpoint = Endpoint(host: "127.0.0.1", port: 1, appID: "app", instanceID: "", instanceIndex: "2")
        #expect(
            String(buffer: RequestRewriter.instanceHeaders(for: endpoint))
                == "X-CF-ApplicationID: app\r\nX-CF-InstanceID: 127.0.0.1:1\r\nX-CF-InstanceIndex: 2\r\n\r\n")
    }

    func framing(_ text: String, head: Bool = false, client: Int = 1, keepAlive: Bool = true) throws -> OutboundResponse {
        ResponseRewriter.framing(of: try response(text), requestMethodIsHead: head, clientMinorVersion: client, clientKeepAlive: keepAlive)
    }

    @Test func responsesKeepTheirFramingOrGetOneTheClientUnderstands() throws {
        #expect(try framing("HTTP/1.1 200 OK\nContent-Length: 5\n\n").backendFraming == .length(5))
        let chunked = try framing("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n")
        #expect(chunked.backendFraming == .chunked && chunked.clientFraming == .chunked && !chunked.closeClient)
        // Only one `Transfer-Encoding: chunked` field, as in gorouter: other forms are read differently
        // by different parsers. The first two were relayed with another end than a client (llhttp)
        // read (make fuzz, response-splitting).
        for refused in [
            "Transfer-Encoding: chunked\nTransfer-Encoding:", "Transfer-Encoding: chunked,", "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: gzip", "Transfer-Encoding:", "Transfer-Encoding: chunked\nTransfer-Encoding: chunked",
        ] {
            #expect(throws: HeadError.self, "\(refused)") { try response("HTTP/1.1 200 OK\n\(refused)\n\n") }
        }
        let old = try framing("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n", client: 0)
        #expect(old.clientFraming == .dechunked && old.closeClient)
        let untilClose = try framing("HTTP/1.0 200 OK\n\n")
        #expect(untilClose.backendFraming == .untilClose && untilClose.closeClient && !untilClose.backendKeepAlive)
        #expect(try framing("HTTP/1.1 200 OK\nContent-Length: 5\n\n", head: true).backendFraming == .none)
        #expect(try framing("HTTP/1.1 204 No Content\n\n").backendFraming == .none)
        #expect(try framing("HTTP/1.1 200 OK\nContent-Length: 5\n\n", keepAlive: false).closeClient)
    }

    @Test func responseHopByHopHeadersAreRemovedAndTheRequestIdEchoed() throws {
        let head = try response(
            "HTTP/1.1 200 OK\nContent-Length: 0\nConnection: close, X-Hop\nX-Hop: 1\nKeep-Alive: t\nSet-Cookie: a=1\nX-Vcap-Request-Id: app\n\n")
        let framing = ResponseRewriter.framing(of: head, requestMethodIsHead: false, clientMinorVersion: 1, clientKeepAlive: true)
        #expect(!framing.backendKeepAlive)
        #expect(head.values(.setCookie) == ["a=1"])
        let out = String(
            buffer: ResponseRewriter.rewrite(
                head, response: framing, clientMinorVersion: 1, vcapRequestID: "rid",
                affinity: ResponseAffinity(setCookies: ["__VCAP_ID__=g; Path=/; HttpOnly"])))
        #expect(
            out
                == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nSet-Cookie: a=1\r\nX-Vcap-Request-Id: rid\r\nSet-Cookie: __VCAP_ID__=g; Path=/; HttpOnly\r\n\r\n"
        )
    }

    @Test func aChunkedResponseLosesItsContentLength() throws {
        let head = try response("HTTP/1.1 200 OK\nContent-Length: 5\nTransfer-Encoding: chunked\nX-A: 1\n\n")
        for client in [1, 0] {
            let framing = ResponseRewriter.framing(of: head, requestMethodIsHead: false, clientMinorVersion: client, clientKeepAlive: true)
            let out = String(
                buffer: ResponseRewriter.rewrite(head, response: framing, clientMinorVersion: client, vcapRequestID: "r", affinity: .nothing))
            #expect(!out.lowercased().contains("content-length"), "HTTP/1.\(client): \(out)")
            #expect(out.contains("Transfer-Encoding: chunked\r\n") == (client == 1))
            #expect(out.contains("X-A: 1\r\n"))
        }
    }

    @Test("A 204 or 304 loses its framing headers (and a 304 its Content-Type), as Go's server writes them; a HEAD response keeps its length")
    func statusesWithoutABodyLoseTheirFraming() throws {
        func forwarded(_ text: String, head isHead: Bool = false) throws -> String {
            let head = try response(text)
            let framing = ResponseRewriter.framing(of: head, requestMethodIsHead: isHead, clientMinorVersion: 1, clientKeepAlive: true)
            return String(buffer: ResponseRewriter.rewrite(head, response: framing, clientMinorVersion: 1, vcapRequestID: "r", affinity: .nothing))
        }
        #expect(
            try forwarded("HTTP/1.1 204 No Content\nContent-Length: 5\nContent-Type: text/plain\nX-A: 1\n\n")
                == "HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\nX-A: 1\r\nX-Vcap-Request-Id: r\r\n\r\n")
        #expect(
            try forwarded("HTTP/1.1 304 Not Modified\nContent-Length: 5\nContent-Type: text/plain\nETag: x\n\n")
                == "HTTP/1.1 304 Not Modified\r\nETag: x\r\nX-Vcap-Request-Id: r\r\n\r\n")
        #expect(
            try forwarded("HTTP/1.1 200 OK\nContent-Length: 5\nContent-Type: text/plain\n\n", head: true).contains(
                "Content-Length: 5\r\nContent-Type: text/plain\r\n"))
    }

    @Test func switchingProtocolsKeepsTheUpgradeHeaders() throws {
        let head = try response("HTTP/1.1 101 Switching Protocols\nConnection: Upgrade\nUpgrade: websocket\nSec-WebSocket-Accept: x\n\n")
        let framing = ResponseRewriter.framing(of: head, requestMethodIsHead: false, clientMinorVersion: 1, clientKeepAlive: true)
        let out = String(buffer: ResponseRewriter.rewrite(head, response: framing, clientMinorVersion: 1, vcapRequestID: "r", affinity: .nothing))
        #expect(out.contains("Upgrade: websocket\r\n") && out.contains("Connection: Upgrade\r\n") && out.contains("Sec-WebSocket-Accept: x\r\n"))
        #expect(framing.backendFraming == .none && !framing.closeClient)
    }

    @Test func haproxyCacheControlReplacesTheAppsOne() throws {
        let head = try response("HTTP/1.1 200 OK\nCache-Control: max-age=60\nContent-Length: 0\n\n")
        let framing = ResponseRewriter.framing(of: head, requestMethodIsHead: false, clientMinorVersion: 1, clientKeepAlive: true)
        let out = String(
            buffer: ResponseRewriter.rewrite(
                head, response: framing, clientMinorVersion: 1, vcapRequestID: "r",
                affinity: ResponseAffinity(setCookies: ["SERVERID=a; path=/"], headers: [HeaderField("Cache-Control", "private")])))
        #expect(!out.contains("max-age") && out.contains("Cache-Control: private\r\n"))
    }
}

@Suite("HTTP/1 wire")
struct WireTests {
    func parse(_ text: String) -> Result<HTTPHead, HeadError> {
        Result { () throws(HeadError) in try HTTPHeadParser.parseRequest(ByteBuffer(string: text)) }
    }

    @Test func findsTheEndOfAHeadAcrossReads() {
        var scanned = 0
        #expect(HTTPHeadParser.headLength(in: ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r"), scanned: &scanned) == nil)
        #expect(HTTPHeadParser.headLength(in: ByteBuffer(string: "GET / HTTP/1.1\r\nHost: h\r\n\r\nBODY"), scanned: &scanned) == 27)
        // One byte at a time.
        let head = Array("GET / HTTP/1.1\r\nHost: h\r\n\r\n".utf8)
        scanned = 0
        for length in 1..<head.count {
            #expect(HTTPHeadParser.headLength(in: ByteBuffer(bytes: head.prefix(length)), scanned: &scanned) == nil)
        }
        #expect(HTTPHeadParser.headLength(in: ByteBuffer(bytes: head), scanned: &scanned) == head.count)
        scanned = 0
        #expect(HTTPHeadParser.headLength(in: ByteBuffer(string: "\r\n\r\n"), scanned: &scanned) == 4)
        #expect(HTTPHeadParser.headLength(in: ByteBuffer(string: "GET / HTTP/1.1\r\nX: a\rb\r\n"), scanned: &scanned) == nil)
    }

    @Test("A head ended with bare LFs is found, so that it is rejected instead of awaited")
    func bareLineFeeds() {
        for text in ["GET / HTTP/1.1\nHost: h\n\n", "GET / HTTP/1.1\r\nHost: h\n\r\n", "GET / HTTP/1.1\nHost: h\r\n\n"] {
            var scanned = 0
            let length = HTTPHeadParser.headLength(in: ByteBuffer(string: text + "NEXT"), scanned: &scanned)
            #expect(length == text.utf8.count, "\(text.debugDescription)")
            #expect(throws: HeadError.self) { try HTTPHeadParser.parseRequest(ByteBuffer(string: text)) }
        }
    }

    @Test func readsARequestHead() throws {
        let head = try parse("GET /a?b HTTP/1.1\r\nHost: h:1\r\nContent-Length: 12\r\nConnection: keep-alive, X-A\r\n\r\n").get()
        #expect(head.method == "GET" && head.target == "/a?b" && head.minorVersion == 1 && head.hostValue == "h:1")
        #expect(head.contentLength == 12 && !head.chunked && head.keepAlive && head.connectionTokens.count == 1)
    }

    @Test("The request target's forms, as Go's server reads them: an absolute form's authority names the host, its path routes")
    func requestTargetForms() throws {
        let absolute = try parse("GET http://App.test:8080/a/b?c=1 HTTP/1.1\r\nHost: other.test\r\n\r\n").get()
        #expect(absolute.target == "http://App.test:8080/a/b?c=1" && absolute.routingTarget == "/a/b?c=1")
        #expect(absolute.hostValue == "App.test:8080")
        let cases: [(String, host: String, routing: String)] = [
            ("http://user:pw@a.test/x", "a.test", "/x"),
            ("http://a.test", "a.test", "/"),
            ("https://a.test?q", "a.test", "/?q"),
            ("http:/x", "h", "/x"),
            ("http:///x", "h", "/x"),
            ("*", "h", "*"),
            ("/p?x=http://b.test/", "h", "/p?x=http://b.test/"),
        ]
        for (target, host, routing) in cases {
            let head = try parse("GET \(target) HTTP/1.0\r\nHost: h\r\n\r\n").get()
            #expect(head.hostValue == host && head.routingTarget == routing, "\(target)")
        }
        let connect = try parse("CONNECT a.test:443 HTTP/1.1\r\nHost: h\r\n\r\n").get()
        #expect(connect.hostValue == "a.test:443" && connect.routingTarget == "/")
        // No path, no scheme: Go's server answers 400 (url.ParseRequestURI refuses them).
        for target in ["?x=1", "a.test/x", "a.test:80", "http:x", "1http://a/", ":/x", "http:"] {
            guard case .failure(.malformed) = parse("GET \(target) HTTP/1.1\r\nHost: h\r\n\r\n") else {
                Issue.record("accepted: \(target)")
                continue
            }
        }
    }

    @Test func methodsAreCaseSensitive() throws {
        #expect(try parse("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n").get().isMethod("HEAD"))
        #expect(try !parse("head / HTTP/1.1\r\nHost: h\r\n\r\n").get().isMethod("HEAD"))
        #expect(try parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").get().hasIdempotentMethod)
        #expect(try !parse("POST / HTTP/1.1\r\nHost: h\r\n\r\n").get().hasIdempotentMethod)
        #expect(try !parse("get / HTTP/1.1\r\nHost: h\r\n\r\n").get().hasIdempotentMethod)
    }

    @Test func http10KeepAliveNeedsTheHeader() throws {
        #expect(try !parse("GET / HTTP/1.0\r\n\r\n").get().keepAlive)
        #expect(try parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").get().keepAlive)
        #expect(try !parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").get().keepAlive)
    }

    @Test func rejectsWhatCouldDesynchroniseTheApp() {
        let bad = [
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\u{0}b\r\n\r\n",
            "GET / HTTP/1.10\r\n\r\n",
            "GET / HTTP/11.1\r\n\r\n",
            "GET / HTTP/1,1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET /\u{7f} HTTP/1.1\r\n\r\n",
        ]
        for text in bad {
            guard case .failure(.malformed) = parse(text) else {
                Issue.record("accepted: \(text.debugDescription)")
                continue
            }
        }
    }

    @Test("HTTP versions as Go's server takes them: any HTTP/1.x (served as 1.1), 505 for HTTP/2 and later")
    func httpVersions() throws {
        #expect(try parse("GET / HTTP/1.2\r\nHost: a\r\n\r\n").get().minorVersion == 1)
        #expect(try parse("GET / HTTP/1.0\r\n\r\n").get().minorVersion == 0)
        for version in ["2.0", "3.0", "9.9"] {
            guard case .failure(.unsupportedVersion) = parse("GET / HTTP/\(version)\r\n\r\n") else {
                Issue.record("HTTP/\(version) is not a 505")
                continue
            }
        }
        #expect(RequestReadError(HeadError.unsupportedVersion).status.code == 505)
        #expect(throws: HeadError.malformed("not HTTP/1.x")) { try HTTPHeadParser.parseResponse(ByteBuffer(string: "HTTP/2.0 200 OK\r\n\r\n")) }
    }

    @Test("Host as Go's server requires it: one, and present in HTTP/1.1 (not for CONNECT); HTTP/1.0 may go without")
    func hostHeaderRequirements() throws {
        for text in ["GET / HTTP/1.1\r\n\r\n", "GET http://a/ HTTP/1.1\r\nX: 1\r\n\r\n"] {
            guard case .failure(.refused("missing required Host header")) = parse(text) else {
                Issue.record("no 400 for a missing Host: \(text.debugDescription)")
                continue
            }
        }
        guard case .failure(.refused("too many Host headers")) = parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n") else {
            Issue.record("two Host headers accepted")
            return
        }
        #expect(try parse("GET / HTTP/1.0\r\n\r\n").get().hostValue == "")
        #expect(try parse("CONNECT a:443 HTTP/1.1\r\n\r\n").get().hostValue == "a:443")
        #expect(try parse("GET / HTTP/1.1\r\nHost:\r\n\r\n").get().hostValue == "")
        let refusal = RequestReadError(HeadError.refused("missing required Host header"))
        #expect(refusal.status.code == 400)
        #expect(String(buffer: refusal.response).hasSuffix("\r\n\r\n400 Bad Request: missing required Host header"))
    }

    @Test func readsAStatusLine() throws {
        let head = try HTTPHeadParser.parseResponse(ByteBuffer(string: "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n"))
        #expect(head.statusCode == 404 && head.string(head.second) == "Not Found" && head.contentLength == 3)
        #expect(throws: HeadError.self) { try HTTPHeadParser.parseResponse(ByteBuffer(string: "HTTP/1.1 2000 OK\r\n\r\n")) }
    }

    func frame(_ framing: BodyFramer.Framing, _ pieces: [String]) throws -> (consumed: [Int], payload: String, complete: Bool) {
        var framer = BodyFramer(framing)
        var consumed: [Int] = []
        var payload = ""
        for piece in pieces {
            let bytes = Array(piece.utf8)
            let count = try bytes.withUnsafeBytes { raw throws(BodyFramer.Failure) in
                try framer.consume(raw) { range in payload += String(decoding: bytes[range], as: UTF8.self) }
            }
            consumed.append(count)
        }
        return (consumed, payload, framer.isComplete)
    }

    @Test func contentLengthBodiesEndAtTheirLength() throws {
        let result = try frame(.length(5), ["abc", "deNEXT"])
        #expect(result.consumed == [3, 2] && result.payload == "abcde" && result.complete)
    }

    @Test func chunkedBodiesAreFollowedByteByByte() throws {
        let body = "4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nGET /next"
        let whole = try frame(.chunked, [body])
        #expect(whole.consumed == [body.utf8.count - 9] && whole.payload == "Wikipedia" && whole.complete)
        let split = try frame(.chunked, body.map(String.init))
        #expect(split.payload == "Wikipedia" && split.complete)
    }

    @Test func malformedChunksAreErrors() {
        for body in ["x\r\n", "4\r\nWikiX\r\n", "4\nWiki\r\n", "fffffffffffffffff\r\n", "0\r\nTrailer\n\r\n"] {
            #expect(throws: BodyFramer.Failure.self, "\(body.debugDescription)") { _ = try frame(.chunked, [body]) }
        }
    }

    @Test func untilCloseTakesEverything() throws {
        let result = try frame(.untilClose, ["abc", "def"])
        #expect(result.consumed == [3, 3] && !result.complete)
    }
}

@Suite("Access log")
struct AccessLogTests {
    @Test func timestampsAreRFC3339WithNanoseconds() {
        #expect(WallClockTime(seconds: 0, nanoseconds: 0).rfc3339 == "1970-01-01T00:00:00.000000000Z")
        #expect(WallClockTime(seconds: 1_709_251_199, nanoseconds: 5).rfc3339 == "2024-02-29T23:59:59.000000005Z")
        #expect(WallClockTime(seconds: 951_782_400, nanoseconds: 123_456_789).rfc3339 == "2000-02-29T00:00:00.123456789Z")
    }

    @Test func aLineInGoroutersFormat() {
        var record = AccessLogRecord()
        record.host = "localhost"
        record.startedAt = WallClockTime(seconds: 0, nanoseconds: 0)
        record.method = "GET"
        record.uri = "/a?b=\"c\""
        record.status = 200
        record.bytesReceived = 0
        record.bytesSent = 12
        record.userAgent = "curl/8"
        record.clientAddress = "127.0.0.1:5000"
        record.backendAddress = "127.0.0.1:9001"
        record.forwardedFor = "127.0.0.1"
        record.forwardedProto = "http"
        record.vcapRequestID = "rid"
        record.responseTime = 0.0123456
        record.gorouterTime = 0.0001
        record.appID = "app"
        record.appIndex = "0"
        record.instanceID = "guid"
        record.decision = .stickyHit
        record.pinnedInstanceID = "guid"
        record.attempts = 1
        #expect(
            record.line
                == #"localhost - [1970-01-01T00:00:00.000000000Z] "GET /a?b=\"c\" HTTP/1.1" 200 0 12 "-" "curl/8" "127.0.0.1:5000" "127.0.0.1:9001" x_forwarded_for:"127.0.0.1" x_forwarded_proto:"http" vcap_request_id:"rid" response_time:0.012346 gorouter_time:0.000100 app_id:"app" app_index:"0" instance_id:"guid" x_cf_routererror:"-" routing_decision:"sticky_hit" pinned_instance_id:"guid" attempts:1"#
                + "\n")
    }

    @Test func missingValuesAreDashes() {
        let line = AccessLogRecord().line
        #expect(line.contains(#"" "-" 0 0 "-" "-" "-" "-" x_forwarded_for:"-""#))
        #expect(line.contains(#"response_time:"-" gorouter_time:"-""#))
    }

    @Test func controlCharactersAreEscaped() {
        var buffer = ByteBuffer()
        AccessLogRecord.writeEscaped("a\nb\u{1}\\", into: &buffer)
        #expect(String(buffer: buffer) == #"a\nb\x01\\"#)
    }
}

@Suite("Admin API")
struct AdminAPITests {
    let api = AdminAPI(token: "secret")

    func body(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test func healthNeedsNoToken() {
        #expect(
            api.route(method: .GET, uri: "/health", authorization: nil, body: nil, routes: { RoutingTable() })
                == .json(.ok, Data(#"{"status":"ok"}"#.utf8)))
    }

    @Test func everythingElseNeedsTheBearerToken() {
        for authorization in [nil, "secret", "Bearer wrong", "Bearer secre", "Basic secret"] {
            guard
                case .json(let status, _) = api.route(
                    method: .GET, uri: "/routes", authorization: authorization, body: nil, routes: { RoutingTable() })
            else {
                Issue.record("expected an error for \(String(describing: authorization))")
                continue
            }
            #expect(status == .unauthorized)
        }
        guard case .json(.ok, _) = api.route(method: .GET, uri: "/routes", authorization: "Bearer secret", body: nil, routes: { RoutingTable() })
        else {
            Issue.record("the right token was refused")
            return
        }
    }

    @Test func registrationsAreDecodedFromGoroutersFormat() {
        let json =
            #"{"host":"127.0.0.1","port":9001,"uris":["localhost"],"app":"a","private_instance_id":"g","private_instance_index":"1","tags":{"k":"v"},"stale_threshold_in_seconds":60,"options":{"loadbalancing":"least-connection"}}"#
        let outcome = api.route(method: .POST, uri: "/routes/register", authorization: "Bearer secret", body: body(json), routes: { RoutingTable() })
        guard case .register(let registration) = outcome else {
            Issue.record("not accepted: \(outcome)")
            return
        }
        #expect(registration.privateInstanceID == "g" && registration.privateInstanceIndex == "1" && registration.staleThresholdInSeconds == 60)
        #expect(registration.options?.loadBalancing == "least-connection" && registration.tags == ["k": "v"])
        let unregister = api.route(
            method: .POST, uri: "/routes/unregister", authorization: "Bearer secret", body: body(json), routes: { RoutingTable() })
        #expect(unregister == .unregister(registration))
    }

    @Test func badRequestsGetClearErrors() {
        func error(_ method: HTTPMethod, _ uri: String, _ text: String?) -> (HTTPResponseStatus, String) {
            guard
                case .json(let status, let data) = api.route(
                    method: method, uri: uri, authorization: "Bearer secret", body: text.map(body), routes: { RoutingTable() }),
                let object = try? JSONDecoder().decode([String: String].self, from: data)
            else { return (.ok, "") }
            return (status, object["error"] ?? "")
        }
        #expect(error(.POST, "/routes/register", nil).1.contains("empty"))
        #expect(error(.POST, "/routes/register", "{").1.contains("not a route registration"))
        #expect(error(.POST, "/routes/register", #"{"host":"h","uris":["a"]}"#).1.contains(#""port" is missing"#))
        #expect(error(.GET, "/routes/register", nil).0 == .methodNotAllowed)
        #expect(AdminAPI.allowedMethods(path: "/routes/register") == "POST" && AdminAPI.allowedMethods(path: "/health") == "GET, HEAD")
        #expect(error(.GET, "/nope", nil).0 == .notFound)
        // Valid JSON with a number where a whole one goes: Foundation calls it invalid JSON, with no place.
        let fraction = error(.POST, "/routes/register", #"{"host":"127.0.0.1","port":9001.5,"uris":["a"]}"#)
        #expect(fraction.0 == .badRequest && fraction.1.contains("a number does not fit its field"), "\(fraction)")
        #expect(error(.POST, "/routes/register", "{").1.contains("invalid JSON"))
        // Routes a request could never match, or that are not implemented.
        for (uri, message) in [
            ("*.apps.test", "wildcard route"), ("a test", "spaces or control characters"), ("a\u{1}b", "spaces or control characters"),
            ("ex%61mple.test", "does not start with a host name"), ("[::1]/x", ""), ("my_app-1.apps.test/api", ""), ("10.0.0.1:8080", ""),
        ] {
            let json = String(decoding: try! JSONEncoder().encode(RouteRegistration(host: "127.0.0.1", port: 80, uris: [uri])), as: UTF8.self)
            let answer = error(.POST, "/routes/register", json)
            if message.isEmpty {
                #expect(answer.0 == .ok, "\(uri): \(answer)")  // .ok: not an error (registered)
            } else {
                #expect(answer.0 == .badRequest && answer.1.contains(message), "\(uri): \(answer)")
            }
        }
    }

    @Test("The token is checked before the body's size: a stranger learns nothing from a 413")
    func tokenBeforeSize() {
        let anonymous = api.route(
            method: .POST, uri: "/routes/register", authorization: nil, body: nil, bodyTooLarge: true, routes: { RoutingTable() })
        let known = api.route(
            method: .POST, uri: "/routes/register", authorization: "Bearer secret", body: nil, bodyTooLarge: true, routes: { RoutingTable() })
        guard case .json(.unauthorized, _) = anonymous, case .json(.payloadTooLarge, _) = known else {
            Issue.record("\(anonymous), \(known)")
            return
        }
    }

    @Test func listingShowsEndpointsByRoute() throws {
        var table = RoutingTable()
        table.register(
            RouteRegistration(host: "127.0.0.1", port: 9001, uris: ["localhost"], app: "a", privateInstanceID: "g", privateInstanceIndex: "0"),
            now: .uptimeNanoseconds(1), wallClock: 1_700_000_000.5)
        let endpoint = table.lookup(host: "localhost", path: "/")!.endpoints[0]
        endpoint.stats.requestStarted()
        endpoint.stats.markFailed(until: .uptimeNanoseconds(31_000_000_001))
        let data = AdminAPI.listing(table, now: .uptimeNanoseconds(1_000_000_001), wallNow: WallClockTime(seconds: 1_700_000_001, nanoseconds: 0))
        let listing = try JSONDecoder().decode([String: [RouteListingEndpoint]].self, from: data)
        let entry = try #require(listing["localhost"]?.first)
        #expect(entry.address == "127.0.0.1:9001" && entry.app == "a" && entry.privateInstanceID == "g" && entry.privateInstanceIndex == "0")
        #expect(entry.inFlight == 1 && entry.requestsTotal == 1 && entry.openTunnels == 0)
        #expect(entry.updatedAt == "2023-11-14T22:13:20.500000000Z")
        #expect(entry.failedUntil == "2023-11-14T22:13:51.000000000Z")
    }
}

@Suite("Routes file")
struct RoutesFileTests {
    @Test func yamlWithARoutesKey() throws {
        let routes = try RoutesFile.parse(
            """
            routes:
              - host: 127.0.0.1
                port: 9001
                uris: [localhost, 127.0.0.1/app]
                private_instance_id: abc
                private_instance_index: "0"
            """)
        #expect(routes.count == 1 && routes[0].uris == ["localhost", "127.0.0.1/app"] && routes[0].privateInstanceID == "abc")
    }

    @Test func jsonListAndYamlList() throws {
        #expect(try RoutesFile.parse(#"[{"host":"127.0.0.1","port":1,"uris":["a"]}]"#).count == 1)
        #expect(try RoutesFile.parse("- host: 127.0.0.1\n  port: 2\n  uris: [b]\n").first?.port == 2)
    }

    @Test func problemsNameTheRoute() {
        #expect(throws: RoutesFile.LoadError.self) { try RoutesFile.parse("routes:\n  - host: 127.0.0.1\n    port: 70000\n    uris: [a]\n") }
        do {
            _ = try RoutesFile.parse("routes:\n  - host: 127.0.0.1\n    port: 70000\n    uris: [a]\n", source: "r.yml")
        } catch {
            #expect("\(error)" == "r.yml, at \"routes[0]\": \"port\" 70000 is not a TCP port (1-65535)")
        }
        #expect(throws: RoutesFile.LoadError.self) { try RoutesFile.parse("routes: [1, 2]") }
    }

    @Test("Errors say where: the route's place in the list, or the YAML parser's line and column")
    func errorsSayWhere() {
        func message(_ text: String) -> String {
            do {
                _ = try RoutesFile.parse(text, source: "r.yml")
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(
            message("routes:\n  - host: 127.0.0.1\n    port: abc\n")
                == #"r.yml is not a list of route registrations: wrong type at "routes[0].port": expected Int"#)
        #expect(
            message(#"[{"host":"127.0.0.1","port":80,"uris":["a"]},{"host":1}]"#)
                == #"r.yml is not a list of route registrations: wrong type at "[1].host": expected String"#)
        // Was "invalid JSON: The given data was not valid YAML." for a YAML file.
        let yaml = message("routes: [ {host: 127.0.0.1, port: 80, uris: [a]")
        #expect(yaml.hasPrefix("r.yml is not a list of route registrations: invalid YAML: 2:1: error: parser:"), "\(yaml)")
        #expect(yaml.contains("did not find expected ',' or '}'"), "\(yaml)")
        #expect(message(#"[{"host":"#).hasPrefix("r.yml is not a list of route registrations: invalid JSON"))
        // A route is named the same way whether decoding or checking found the problem (counted from 0).
        #expect(
            message(#"[{"host":"127.0.0.1","port":80,"uris":["a"]},{"host":"127.0.0.1","port":0,"uris":["a"]}]"#)
                == #"r.yml, at "[1]": "port" 0 is not a TCP port (1-65535)"#)
        #expect(message(" \n") == "r.yml is empty: give a list of route registrations (see the example under --routes-file in docs/sticky-proxy.md)")
        #expect(
            message(#"{"host":"127.0.0.1","port":80,"uris":["a"]}"#).hasPrefix(#"r.yml has no "routes" list: give a list of route registrations"#))
        #expect(message(#"[{"host":"127.0.0.1","port":80,"uris":["*.apps.test"]}]"#).contains("wildcard route"))
    }
}
