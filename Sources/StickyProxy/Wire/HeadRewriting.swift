import NIOCore

/// The facts about a client request that routing, retries and the logs need.
public struct InboundRequest: Sendable {
    /// The Host header as sent (with any port), or the authority of an absolute-form target; empty
    /// when missing.
    public var host: String = ""
    public var cookieHeaders: [String] = []
    public var appInstanceHeader: String?
    /// `Connection: upgrade` with an `Upgrade` header.
    public var isUpgrade = false
    public var hasIdempotencyKey = false
    /// The first `Authorization` header names the `Negotiate` scheme.
    public var negotiatesAuthentication = false
    /// The `X-Forwarded-For` value sent to the app.
    public var forwardedFor: String = ""
    /// The `X-Forwarded-Proto` value sent to the app.
    public var forwardedProto: String = "http"

    public init() {}
}

/// What gorouter does to a request before the app gets it (cloud-foundry-behaviour.md section 2),
/// on the raw head: hop-by-hop headers (and those named in Connection) removed, `X-Forwarded-For`
/// appended, `X-Forwarded-Proto` when absent, a new `X-Vcap-Request-Id`, `X-Request-Start` when
/// absent, `X-CF-APP-INSTANCE` removed, HTTP/1.1 toward the app. Every other header line is copied
/// byte for byte. The per-attempt `X-CF-*` instance headers and the final empty line are added by
/// `instanceHeaders(for:)`.
enum RequestRewriter {
    static func rewrite<Policy: AffinityPolicy>(
        _ head: HTTPHead,
        clientIP: String,
        vcapRequestID: String,
        requestStartMillis: Int64,
        policy: Policy,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> (base: ByteBuffer, request: InboundRequest) {
        var request = InboundRequest()
        request.host = head.hostValue
        request.isUpgrade = head.isUpgradeRequest
        request.hasIdempotencyKey = head.hasIdempotencyKey
        request.negotiatesAuthentication = head.negotiatesAuthentication
        // Room for the added headers and for one attempt's instance headers.
        var out = allocator.buffer(capacity: head.bytes.readableBytes + 384)
        var priorForwardedFor: [String] = []
        head.bytes.withUnsafeReadableBytes { raw in
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.first]))
            out.writeInteger(UInt8(ascii: " "))
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.second]))
            out.writeStaticString(" HTTP/1.1\r\n")
            for field in head.fields {
                switch field.kind {
                case .connection, .keepAlive, .proxyConnection, .te, .trailer, .proxyAuthenticate, .proxyAuthorization, .xVcapRequestID,
                    .xCFApplicationID, .xCFInstanceID, .xCFInstanceIndex:
                    continue
                case .xCFAppInstance:
                    if request.appInstanceHeader == nil { request.appInstanceHeader = head.string(field.value) }
                    continue
                case .xForwardedFor:
                    priorForwardedFor.append(head.string(field.value))
                    continue
                case .xForwardedProto:
                    // gorouter sets it to http when the first one is empty, replacing them all.
                    guard head.hasForwardedProto else { continue }
                    if request.forwardedProto == "http" { request.forwardedProto = head.string(field.value) }
                case .upgrade:
                    guard request.isUpgrade else { continue }
                case .host:
                    // An absolute-form target names the host: the app gets it as Host (Go's req.Host).
                    // Host is no header to Go, so naming it in Connection does not remove it either.
                    guard head.targetAuthority == nil else { continue }
                case .cookie:
                    let value = head.string(field.value)
                    if policy.readsCookies { request.cookieHeaders.append(value) }
                    if policy.rewritesCookies {
                        if let forwarded = policy.forwardedCookieHeader(value) {
                            out.writeStaticString("Cookie: ")
                            out.writeString(forwarded)
                            out.writeStaticString("\r\n")
                        }
                        continue
                    }
                default:
                    if head.isNamedInConnection(field) { continue }
                }
                out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[field.line]))
            }
        }
        if head.targetAuthority != nil {
            out.writeStaticString("Host: ")
            out.writeString(request.host)
            out.writeStaticString("\r\n")
        }
        if request.isUpgrade { out.writeStaticString("Connection: Upgrade\r\n") }
        request.forwardedFor = priorForwardedFor.isEmpty ? clientIP : priorForwardedFor.joined(separator: ", ") + ", " + clientIP
        out.writeStaticString("X-Forwarded-For: ")
        out.writeString(request.forwardedFor)
        if !head.hasForwardedProto {
            out.writeStaticString("\r\nX-Forwarded-Proto: http")
        }
        out.writeStaticString("\r\nX-Vcap-Request-Id: ")
        out.writeString(vcapRequestID)
        if !head.hasRequestStart {
            out.writeStaticString("\r\nX-Request-Start: ")
            out.writeString(String(requestStartMillis))
        }
        out.writeStaticString("\r\n")
        return (out, request)
    }

    /// `X-CF-ApplicationID`, `X-CF-InstanceID`, `X-CF-InstanceIndex` of the attempt's endpoint, and the
    /// empty line ending the head.
    static func instanceHeaders(for endpoint: Endpoint, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var out = allocator.buffer(capacity: 96 + endpoint.appID.utf8.count + endpoint.instanceHeaderValue.utf8.count)
        writeInstanceHeaders(for: endpoint, into: &out)
        return out
    }

    /// Appends the instance headers and the final empty line (copying `out` first if it is shared).
    static func writeInstanceHeaders(for endpoint: Endpoint, into out: inout ByteBuffer) {
        out.writeStaticString("X-CF-ApplicationID: ")
        out.writeString(endpoint.appID)
        out.writeStaticString("\r\nX-CF-InstanceID: ")
        out.writeString(endpoint.instanceHeaderValue)
        out.writeStaticString("\r\nX-CF-InstanceIndex: ")
        out.writeString(endpoint.instanceIndex)
        out.writeStaticString("\r\n\r\n")
    }
}

/// How a response body reaches the client.
public enum ResponseBodyFraming: Sendable, Equatable {
    /// No body (HEAD, 1xx, 204, 304, 101).
    case none
    /// Content-Length, passed through.
    case contentLength
    /// Chunked, passed through.
    case chunked
    /// Chunked from the app, sent to an HTTP/1.0 client without the chunk framing; closed after.
    case dechunked
    /// The body ends when the app closes the connection; the client connection is closed after it.
    case untilClose
}

/// What the proxy learned from a response head.
struct OutboundResponse: Sendable {
    /// How the app's body is delimited.
    var backendFraming: BodyFramer.Framing = .none
    var clientFraming: ResponseBodyFraming = .none
    /// The app allows reusing its connection.
    var backendKeepAlive = true
    /// The client connection must close after this response.
    var closeClient = false
}

/// What gorouter does to a response before the client gets it: hop-by-hop headers removed, framing
/// kept valid for the client's HTTP version, `X-Vcap-Request-Id` echoed, affinity cookies appended.
/// Every other header line is copied byte for byte.
enum ResponseRewriter {
    static func framing(of head: HTTPHead, requestMethodIsHead: Bool, clientMinorVersion: Int, clientKeepAlive: Bool) -> OutboundResponse {
        var response = OutboundResponse()
        response.backendKeepAlive = head.keepAlive
        let code = head.statusCode
        if code == 101 {
            return response
        }
        if requestMethodIsHead || (100..<200).contains(code) || code == 204 || code == 304 {
            response.backendFraming = .none
            response.clientFraming = .none
        } else if head.chunked {
            response.backendFraming = .chunked
            response.clientFraming = clientMinorVersion >= 1 ? .chunked : .dechunked
        } else if let length = head.contentLength {
            response.backendFraming = .length(length)
            response.clientFraming = .contentLength
        } else {
            response.backendFraming = .untilClose
            response.clientFraming = .untilClose
            response.backendKeepAlive = false
        }
        response.closeClient = !clientKeepAlive || response.clientFraming == .untilClose || response.clientFraming == .dechunked
        return response
    }

    static func rewrite(
        _ head: HTTPHead,
        response: OutboundResponse,
        clientMinorVersion: Int,
        vcapRequestID: String,
        affinity: ResponseAffinity,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        let isSwitching = head.statusCode == 101
        // Go's server in gorouter drops the framing headers of a status that has no body (204, 304),
        // and a 304's Content-Type.
        let hasNoBody = head.statusCode == 204 || head.statusCode == 304
        var out = allocator.buffer(capacity: head.bytes.readableBytes + 96 + affinity.setCookies.reduce(0) { $0 + $1.utf8.count + 14 })
        let replacesCacheControl = affinity.headers.contains { headerNameIs($0.name, "cache-control") }
        head.bytes.withUnsafeReadableBytes { raw in
            out.writeStaticString(clientMinorVersion >= 1 ? "HTTP/1.1 " : "HTTP/1.0 ")
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.first]))
            out.writeInteger(UInt8(ascii: " "))
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.second]))
            out.writeStaticString("\r\n")
            for field in head.fields {
                switch field.kind {
                case .connection, .keepAlive, .proxyConnection, .te, .trailer, .proxyAuthenticate, .xVcapRequestID:
                    continue
                case .upgrade:
                    guard isSwitching else { continue }
                case .transferEncoding:
                    guard response.clientFraming != .dechunked && !hasNoBody else { continue }
                case .contentLength:
                    // With `Transfer-Encoding: chunked` too, the chunks frame the body: the length is
                    // dropped, as Go's transport in gorouter does (RFC 9112 6.3: a sender MUST remove it).
                    guard !head.chunked && !hasNoBody else { continue }
                case .contentType:
                    guard head.statusCode != 304 else { continue }
                case .cacheControl:
                    guard !replacesCacheControl else { continue }
                default:
                    if head.isNamedInConnection(field) { continue }
                }
                out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[field.line]))
            }
        }
        out.writeStaticString("X-Vcap-Request-Id: ")
        out.writeString(vcapRequestID)
        out.writeStaticString("\r\n")
        for cookie in affinity.setCookies {
            out.writeStaticString("Set-Cookie: ")
            out.writeString(cookie)
            out.writeStaticString("\r\n")
        }
        for header in affinity.headers {
            out.writeString(header.name)
            out.writeStaticString(": ")
            out.writeString(header.value)
            out.writeStaticString("\r\n")
        }
        if isSwitching {
            out.writeStaticString("Connection: Upgrade\r\n")
        } else if response.closeClient {
            out.writeStaticString("Connection: close\r\n")
        } else if clientMinorVersion == 0 {
            out.writeStaticString("Connection: keep-alive\r\n")
        }
        out.writeStaticString("\r\n")
        return out
    }

    /// An informational (1xx) head for the client: status line only.
    static func informational(_ head: HTTPHead, clientMinorVersion: Int) -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: 64)
        head.bytes.withUnsafeReadableBytes { raw in
            out.writeStaticString(clientMinorVersion >= 1 ? "HTTP/1.1 " : "HTTP/1.0 ")
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.first]))
            out.writeInteger(UInt8(ascii: " "))
            out.writeBytes(UnsafeRawBufferPointer(rebasing: raw[head.second]))
        }
        out.writeStaticString("\r\n\r\n")
        return out
    }
}

/// Header names compared ignoring case; `lowercase` must be lower case.
func headerNameIs(_ name: String, _ lowercase: StaticString) -> Bool {
    var name = name
    return name.withUTF8 { HTTPHeadParser.equalsIgnoringCase(UnsafeRawBufferPointer($0), lowercase) }
}
