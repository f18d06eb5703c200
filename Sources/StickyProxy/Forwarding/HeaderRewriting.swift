import NIOHTTP1

/// Header names compared without allocating: `lowercaseName` must be lower case ASCII.
@inline(__always)
func headerName(_ name: String, is lowercaseName: StaticString) -> Bool {
    let expectedCount = lowercaseName.utf8CodeUnitCount
    var name = name
    return name.withUTF8 { bytes in
        guard bytes.count == expectedCount else { return false }
        let expected = lowercaseName.utf8Start
        for offset in 0..<expectedCount where asciiLower(bytes[offset]) != expected[offset] {
            return false
        }
        return true
    }
}

/// True when the comma-separated header value contains `token` (lower case), ignoring case.
func headerValue(_ value: String, containsToken token: StaticString) -> Bool {
    for part in value.split(separator: ",") {
        let trimmed = part.trimmingCharacters()
        if headerName(String(trimmed), is: token) { return true }
    }
    return false
}

/// The facts about a client request gathered in one pass over its headers.
public struct InboundRequest: Sendable {
    /// The Host header as sent (with any port), empty when missing.
    public var host: String = ""
    public var cookieHeaders: [String] = []
    public var appInstanceHeader: String?
    /// `Connection: upgrade` with an `Upgrade` header.
    public var isUpgrade = false
    public var hasIdempotencyKey = false
    /// The request has a body (Content-Length above 0, or Transfer-Encoding).
    public var hasBody = false
    public var userAgent: String?
    public var referer: String?
    /// The `X-Forwarded-For` and `X-Forwarded-Proto` values forwarded to the app.
    public var forwardedFor: String = ""
    public var forwardedProto: String = ""

    public init() {}
}

/// What gorouter does to a request before it reaches the app (cloud-foundry-behaviour.md section 2):
/// hop-by-hop headers removed, `X-Forwarded-For` appended, `X-Forwarded-Proto` when absent, a new
/// `X-Vcap-Request-Id`, `X-Request-Start` when absent, `X-CF-APP-INSTANCE` removed, and on every attempt
/// `X-CF-ApplicationID`, `X-CF-InstanceID`, `X-CF-InstanceIndex`.
public enum RequestRewriter {
    /// The request to forward (without the per-attempt instance headers) and the facts read from it.
    /// `requestStartMillis`: milliseconds since 1970.
    public static func rewrite(
        _ head: HTTPRequestHead,
        clientIP: String,
        vcapRequestID: String,
        requestStartMillis: Int64,
        policy: any AffinityPolicy
    ) -> (head: HTTPRequestHead, request: InboundRequest) {
        var request = InboundRequest()
        var outgoing = HTTPHeaders()
        outgoing.reserveCapacity(head.headers.count + 6)
        var connectionTokens: [Substring] = []
        var priorForwardedFor: [String] = []
        var hasRequestStart = false
        var upgradeValue: String?
        var connectionHasUpgrade = false
        var chunked = false

        for (name, value) in head.headers {
            switch name.utf8.count {
            case 4 where headerName(name, is: "host"):
                if request.host.isEmpty { request.host = value }
                outgoing.add(name: name, value: value)
            case 6 where headerName(name, is: "cookie"):
                request.cookieHeaders.append(value)
                if let forwarded = policy.forwardedCookieHeader(value) { outgoing.add(name: name, value: forwarded) }
            case 7 where headerName(name, is: "referer"):
                request.referer = value
                outgoing.add(name: name, value: value)
            case 7 where headerName(name, is: "upgrade"):
                upgradeValue = value
            case 10 where headerName(name, is: "connection"):
                for token in value.split(separator: ",") {
                    let trimmed = token.trimmingCharacters()
                    if headerName(String(trimmed), is: "upgrade") { connectionHasUpgrade = true }
                    connectionTokens.append(trimmed)
                }
            case 10 where headerName(name, is: "user-agent"):
                request.userAgent = value
                outgoing.add(name: name, value: value)
            case 10 where headerName(name, is: "keep-alive"):
                continue
            case 2 where headerName(name, is: "te"):
                continue
            case 7 where headerName(name, is: "trailer"):
                continue
            case 16 where headerName(name, is: "proxy-connection"):
                continue
            case 18 where headerName(name, is: "proxy-authenticate"):
                continue
            case 19 where headerName(name, is: "proxy-authorization"):
                continue
            case 17 where headerName(name, is: "transfer-encoding"):
                request.hasBody = true
                if headerValue(value, containsToken: "chunked") { chunked = true }
            case 14 where headerName(name, is: "content-length"):
                if value != "0" { request.hasBody = true }
                outgoing.add(name: name, value: value)
            case 15 where headerName(name, is: "x-forwarded-for"):
                priorForwardedFor.append(value)
            case 17 where headerName(name, is: "x-forwarded-proto"):
                if request.forwardedProto.isEmpty { request.forwardedProto = value }
                outgoing.add(name: name, value: value)
            case 17 where headerName(name, is: "x-vcap-request-id"):
                continue
            case 15 where headerName(name, is: "x-request-start"):
                hasRequestStart = true
                outgoing.add(name: name, value: value)
            case 17 where headerName(name, is: "x-cf-app-instance"):
                request.appInstanceHeader = value
            case 18 where headerName(name, is: "x-cf-applicationid"):
                continue
            case 15 where headerName(name, is: "x-cf-instanceid"):
                continue
            case 18 where headerName(name, is: "x-cf-instanceindex"):
                continue
            case 15 where headerName(name, is: "idempotency-key"), 17 where headerName(name, is: "x-idempotency-key"):
                request.hasIdempotencyKey = true
                outgoing.add(name: name, value: value)
            default:
                outgoing.add(name: name, value: value)
            }
        }

        // Headers named in Connection are hop-by-hop too.
        let named = connectionTokens.filter { token in
            let lower = token.lowercased()
            return lower != "close" && lower != "keep-alive" && lower != "upgrade"
        }
        for token in named { outgoing.remove(name: String(token)) }

        request.isUpgrade = connectionHasUpgrade && upgradeValue != nil
        if request.isUpgrade, let upgradeValue {
            outgoing.add(name: "Connection", value: "Upgrade")
            outgoing.add(name: "Upgrade", value: upgradeValue)
        }
        if chunked { outgoing.add(name: "Transfer-Encoding", value: "chunked") }

        request.forwardedFor = priorForwardedFor.isEmpty ? clientIP : priorForwardedFor.joined(separator: ", ") + ", " + clientIP
        outgoing.add(name: "X-Forwarded-For", value: request.forwardedFor)
        if request.forwardedProto.isEmpty {
            request.forwardedProto = "http"
            outgoing.add(name: "X-Forwarded-Proto", value: "http")
        }
        outgoing.add(name: "X-Vcap-Request-Id", value: vcapRequestID)
        if !hasRequestStart { outgoing.add(name: "X-Request-Start", value: String(requestStartMillis)) }

        // gorouter speaks HTTP/1.1 to apps whatever the client spoke.
        let forwarded = HTTPRequestHead(version: .http1_1, method: head.method, uri: head.uri, headers: outgoing)
        return (forwarded, request)
    }

    /// `head` with the instance headers of `endpoint` (set on every attempt).
    public static func addingInstanceHeaders(to head: HTTPRequestHead, endpoint: Endpoint) -> HTTPRequestHead {
        var head = head
        head.headers.add(name: "X-CF-ApplicationID", value: endpoint.appID)
        head.headers.add(name: "X-CF-InstanceID", value: endpoint.instanceHeaderValue)
        head.headers.add(name: "X-CF-InstanceIndex", value: endpoint.instanceIndex)
        return head
    }
}

/// How a response body is delimited toward the client.
public enum ResponseBodyFraming: Sendable, Equatable {
    /// No body (HEAD, 1xx, 204, 304).
    case none
    case contentLength
    case chunked
    /// The body ends when the connection closes (HTTP/1.0 clients); the client connection is closed.
    case untilClose
}

/// The facts about a backend response gathered while rewriting it.
public struct OutboundResponse: Sendable {
    public var setCookieHeaders: [String] = []
    /// The backend allows reusing its connection.
    public var backendKeepAlive = true
    public var framing: ResponseBodyFraming = .none
    /// The client connection must close after this response.
    public var closeClient = false

    public init() {}
}

/// What gorouter does to a response before the client gets it: hop-by-hop headers removed, framing
/// kept valid for the client's HTTP version, `X-Vcap-Request-Id` echoed, affinity cookies appended.
public enum ResponseRewriter {
    public static func rewrite(
        _ head: HTTPResponseHead,
        requestMethod: HTTPMethod,
        clientVersion: HTTPVersion,
        clientKeepAlive: Bool,
        vcapRequestID: String
    ) -> (head: HTTPResponseHead, response: OutboundResponse) {
        var response = OutboundResponse()
        response.backendKeepAlive = head.isKeepAlive
        let isSwitching = head.status.code == 101
        var headers = HTTPHeaders()
        headers.reserveCapacity(head.headers.count + 4)
        var hasContentLength = false
        var connectionTokens: [Substring] = []
        var upgradeValue: String?

        for (name, value) in head.headers {
            switch name.utf8.count {
            case 10 where headerName(name, is: "set-cookie"):
                response.setCookieHeaders.append(value)
                headers.add(name: name, value: value)
            case 10 where headerName(name, is: "connection"):
                for token in value.split(separator: ",") { connectionTokens.append(token.trimmingCharacters()) }
            case 10 where headerName(name, is: "keep-alive"):
                continue
            case 7 where headerName(name, is: "upgrade"):
                upgradeValue = value
            case 2 where headerName(name, is: "te"), 7 where headerName(name, is: "trailer"):
                continue
            case 16 where headerName(name, is: "proxy-connection"), 18 where headerName(name, is: "proxy-authenticate"):
                continue
            case 17 where headerName(name, is: "transfer-encoding"):
                continue
            case 14 where headerName(name, is: "content-length"):
                hasContentLength = true
                headers.add(name: name, value: value)
            case 17 where headerName(name, is: "x-vcap-request-id"):
                continue
            default:
                headers.add(name: name, value: value)
            }
        }
        let named = connectionTokens.filter { token in
            let lower = token.lowercased()
            return lower != "close" && lower != "keep-alive" && lower != "upgrade"
        }
        for token in named { headers.remove(name: String(token)) }
        headers.add(name: "X-Vcap-Request-Id", value: vcapRequestID)

        let clientSpeaks11 = clientVersion.major == 1 && clientVersion.minor >= 1
        var closeClient = !clientKeepAlive
        if isSwitching {
            headers.add(name: "Connection", value: "Upgrade")
            if let upgradeValue { headers.add(name: "Upgrade", value: upgradeValue) }
            response.framing = .none
            response.closeClient = false
            return (HTTPResponseHead(version: .http1_1, status: head.status, headers: headers), response)
        }
        let code = head.status.code
        if requestMethod == .HEAD || (100..<200).contains(code) || code == 204 || code == 304 {
            response.framing = .none
        } else if hasContentLength {
            response.framing = .contentLength
        } else if clientSpeaks11 {
            headers.add(name: "Transfer-Encoding", value: "chunked")
            response.framing = .chunked
        } else {
            response.framing = .untilClose
            closeClient = true
        }
        if closeClient {
            headers.add(name: "Connection", value: "close")
        } else if !clientSpeaks11 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        response.closeClient = closeClient
        let version: HTTPVersion = clientSpeaks11 ? .http1_1 : .http1_0
        return (HTTPResponseHead(version: version, status: head.status, headers: headers), response)
    }
}
