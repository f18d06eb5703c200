import CloudFoundry
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The header fields the proxy acts on; everything else is forwarded verbatim.
enum KnownHeader: UInt8, Sendable {
    case other
    case host
    case contentLength
    case transferEncoding
    case connection
    case keepAlive
    case proxyConnection
    case te
    case trailer
    case upgrade
    case cookie
    case setCookie
    case xForwardedFor
    case xForwardedProto
    case xVcapRequestID
    case xRequestStart
    case xCFAppInstance
    case xCFApplicationID
    case xCFInstanceID
    case xCFInstanceIndex
    case idempotencyKey
    case userAgent
    case referer
    case proxyAuthenticate
    case proxyAuthorization
    case cacheControl
    case authorization
    case wwwAuthenticate
    case contentType
    case xVcapTrace

    /// Classifies a header name (any case) without allocating.
    static func classify(_ name: UnsafeRawBufferPointer) -> KnownHeader {
        @inline(__always) func equals(_ lowercase: StaticString) -> Bool {
            guard name.count == lowercase.utf8CodeUnitCount else { return false }
            let expected = lowercase.utf8Start
            for offset in 0..<name.count where asciiLower(name[offset]) != expected[offset] { return false }
            return true
        }
        switch name.count {
        case 2: return equals("te") ? .te : .other
        case 4: return equals("host") ? .host : .other
        case 6: return equals("cookie") ? .cookie : .other
        case 7:
            if equals("upgrade") { return .upgrade }
            if equals("trailer") { return .trailer }
            if equals("referer") { return .referer }
            return .other
        case 12:
            if equals("content-type") { return .contentType }
            if equals("x-vcap-trace") { return .xVcapTrace }
            return .other
        case 10:
            if equals("connection") { return .connection }
            if equals("set-cookie") { return .setCookie }
            if equals("keep-alive") { return .keepAlive }
            if equals("user-agent") { return .userAgent }
            return .other
        case 13:
            if equals("cache-control") { return .cacheControl }
            if equals("authorization") { return .authorization }
            return .other
        case 14: return equals("content-length") ? .contentLength : .other
        case 15:
            if equals("x-forwarded-for") { return .xForwardedFor }
            if equals("x-request-start") { return .xRequestStart }
            if equals("x-cf-instanceid") { return .xCFInstanceID }
            if equals("idempotency-key") { return .idempotencyKey }
            return .other
        case 16:
            if equals("proxy-connection") { return .proxyConnection }
            if equals("www-authenticate") { return .wwwAuthenticate }
            return .other
        case 17:
            if equals("transfer-encoding") { return .transferEncoding }
            if equals("x-forwarded-proto") { return .xForwardedProto }
            if equals("x-vcap-request-id") { return .xVcapRequestID }
            if equals("x-cf-app-instance") { return .xCFAppInstance }
            if equals("x-idempotency-key") { return .idempotencyKey }
            return .other
        case 18:
            if equals("x-cf-applicationid") { return .xCFApplicationID }
            if equals("x-cf-instanceindex") { return .xCFInstanceIndex }
            if equals("proxy-authenticate") { return .proxyAuthenticate }
            return .other
        case 19: return equals("proxy-authorization") ? .proxyAuthorization : .other
        default: return .other
        }
    }
}

/// One header field of a parsed head, as offsets into the head's bytes.
struct RawHeaderField: Sendable {
    /// The whole line including its CRLF.
    var line: Range<Int>
    var name: Range<Int>
    /// The value without surrounding whitespace.
    var value: Range<Int>
    var kind: KnownHeader
}

/// Why a head could not be read.
enum HeadError: Error, Equatable {
    /// Malformed or ambiguous (request smuggling): 400.
    case malformed(String)
    /// The header section is larger than allowed: 431.
    case tooLarge
    /// A request in HTTP/2 or later on an HTTP/1 connection: 505, as Go's server answers it.
    case unsupportedVersion
    /// A request Go's server refuses with a reason of its own (`400 Bad Request: missing required
    /// Host header`): 400 with that reason.
    case refused(String)
}

/// The parts of a request or response head the proxy needs, read from its bytes in one pass. Field
/// values stay in `bytes` and become Strings only when asked for.
struct HTTPHead: Sendable {
    /// The head, from the start line to the empty line, both included.
    var bytes: ByteBuffer
    var fields: [RawHeaderField] = []
    /// Request: method; response: status code digits.
    var first: Range<Int> = 0..<0
    /// Request: target; response: reason phrase.
    var second: Range<Int> = 0..<0
    /// Request: the part of the target that routes, in origin form (path and query): the whole
    /// target, or what follows the authority of an absolute form (`GET http://host/path`).
    var originForm: Range<Int> = 0..<0
    /// Request: the authority of an absolute-form target (host and port, no user info), or of a
    /// CONNECT. As in Go's server, it names the host instead of the Host header.
    var targetAuthority: Range<Int>?
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    var minorVersion = 1
    var statusCode = 0

    // Framing
    var contentLength: Int?
    var chunked = false
    var transferEncodingCount = 0

    // Connection management
    var connectionClose = false
    var connectionKeepAlive = false
    var connectionUpgrade = false
    /// Other tokens of Connection: more hop-by-hop header names.
    var connectionTokens: [Range<Int>] = []

    // Fields looked at by routing (first occurrence)
    var host: Range<Int>?
    var upgrade: Range<Int>?
    /// The first `X-Forwarded-Proto` has a value (Go's `Header.Get(...) != ""`: an empty one counts as none).
    var hasForwardedProto = false
    var sawForwardedProto = false
    var hasRequestStart = false
    var hasIdempotencyKey = false
    /// The first `Authorization` (request) or `WWW-Authenticate` (response) field names the
    /// `Negotiate` scheme (SPNEGO: Kerberos or NTLM), which gorouter can keep sticky.
    var negotiatesAuthentication = false
    var sawAuthentication = false

    /// How a request's body ends: chunked, a Content-Length above 0, or no body.
    var requestBodyFraming: BodyFramer.Framing {
        if chunked { return .chunked }
        if let contentLength, contentLength > 0 { return .length(contentLength) }
        return .none
    }

    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    var keepAlive: Bool { minorVersion >= 1 ? !connectionClose : connectionKeepAlive }

    /// GET, HEAD, OPTIONS or TRACE (Go's idempotent methods).
    var hasIdempotentMethod: Bool {
        isMethod("GET") || isMethod("HEAD") || isMethod("OPTIONS") || isMethod("TRACE")
    }

    /// The request method is exactly `method` (methods are case-sensitive).
    func isMethod(_ method: StaticString) -> Bool {
        guard first.count == method.utf8CodeUnitCount else { return false }
        return bytes.withUnsafeReadableBytes { raw in
            memcmp(raw.baseAddress! + first.lowerBound, method.utf8Start, first.count) == 0
        }
    }
    var isUpgradeRequest: Bool { connectionUpgrade && upgrade != nil }

    func string(_ range: Range<Int>) -> String {
        bytes.getString(at: bytes.readerIndex + range.lowerBound, length: range.count) ?? ""
    }

    var method: String { string(first) }
    var target: String { string(second) }
    /// The target as routes and logs see it: the path and query (`/` when an absolute form has no path).
    var routingTarget: String {
        if originForm == second { return target }
        let path = string(originForm)
        return path.hasPrefix("/") ? path : "/" + path
    }
    /// The host that routes the request: the absolute-form target's authority, else the Host header.
    var hostValue: String { (targetAuthority ?? host).map(string) ?? "" }

    /// Values of every field of `kind`.
    func values(_ kind: KnownHeader) -> [String] {
        var result: [String] = []
        for field in fields where field.kind == kind { result.append(string(field.value)) }
        return result
    }

    func firstValue(_ kind: KnownHeader) -> String? {
        for field in fields where field.kind == kind { return string(field.value) }
        return nil
    }

    /// True when the field's name is one of the Connection header's extra tokens (hop-by-hop).
    func isNamedInConnection(_ field: RawHeaderField) -> Bool {
        guard !connectionTokens.isEmpty else { return false }
        return bytes.withUnsafeReadableBytes { raw in
            for token in connectionTokens where token.count == field.name.count {
                var same = true
                for offset in 0..<token.count where asciiLower(raw[token.lowerBound + offset]) != asciiLower(raw[field.name.lowerBound + offset]) {
                    same = false
                    break
                }
                if same { return true }
            }
            return false
        }
    }
}

/// Reads HTTP/1.x heads strictly (RFC 9112), rejecting what could desynchronise the proxy and the
/// app: bare LF, whitespace before a colon, folded lines, control characters, Content-Length with
/// Transfer-Encoding, several Content-Lengths, a Transfer-Encoding other than chunked.
enum HTTPHeadParser {
    /// The length of the head at the start of `buffer` (up to and including the empty line that ends
    /// it), or nil when it is not complete yet. `scanned`: bytes already searched by an earlier call.
    /// The empty line is found whether it and the line before it end with CRLF or with a bare LF: the
    /// parser then rejects a bare LF (400, or 502 for a response), where waiting for a CRLF CRLF that
    /// never comes left the client hanging until the header read timeout.
    static func headLength(in buffer: ByteBuffer, scanned: inout Int) -> Int? {
        buffer.withUnsafeReadableBytes { raw -> Int? in
            let count = raw.count
            guard count > 0, let base = raw.baseAddress else { return nil }
            // Each LF is judged by the bytes before it, so an earlier call's LFs need no second look.
            var index = min(scanned, count)
            while index < count, let found = memchr(base + index, 0x0A, count - index) {
                let lf = base.distance(to: UnsafeRawPointer(found))
                if lf >= 1 && raw[lf - 1] == 0x0A { return lf + 1 }
                if lf >= 2 && raw[lf - 1] == 0x0D && raw[lf - 2] == 0x0A { return lf + 1 }
                index = lf + 1
            }
            scanned = count
            return nil
        }
    }

    static func parseRequest(_ head: ByteBuffer) throws(HeadError) -> HTTPHead {
        try parse(head, isRequest: true)
    }

    static func parseResponse(_ head: ByteBuffer) throws(HeadError) -> HTTPHead {
        try parse(head, isRequest: false)
    }

    private static func parse(_ buffer: ByteBuffer, isRequest: Bool) throws(HeadError) -> HTTPHead {
        var head = HTTPHead(bytes: buffer)
        let result: HeadError? = buffer.withUnsafeReadableBytes { raw -> HeadError? in
            do throws(HeadError) {
                try parse(raw, into: &head, isRequest: isRequest)
                return nil
            } catch {
                return error
            }
        }
        if let result { throw result }
        return head
    }

    private static func parse(_ raw: UnsafeRawBufferPointer, into head: inout HTTPHead, isRequest: Bool) throws(HeadError) {
        let count = raw.count
        // Start line.
        guard let firstEnd = lineEnd(raw, from: 0) else { throw .malformed("the start line does not end with CRLF") }
        if isRequest {
            try parseRequestLine(raw, end: firstEnd, into: &head)
        } else {
            try parseStatusLine(raw, end: firstEnd, into: &head)
        }
        var position = firstEnd + 2
        head.fields.reserveCapacity(16)
        while position < count {
            guard let end = lineEnd(raw, from: position) else { throw .malformed("a header line does not end with CRLF") }
            if end == position {  // the empty line
                // Go's server requires a Host header in HTTP/1.1 (not of a CONNECT), even when the
                // target is absolute; HTTP/1.0 without one reaches the router: `empty_host`.
                if isRequest && head.host == nil && head.minorVersion == 1 && !isConnect(raw, head) {
                    throw .refused("missing required Host header")
                }
                return
            }
            let first = raw[position]
            if first == 0x20 || first == 0x09 { throw .malformed("folded header lines are not allowed") }
            var colon = position
            while colon < end && raw[colon] != UInt8(ascii: ":") {
                guard CookieName.isTokenByte(raw[colon]) else { throw .malformed("invalid character in a header name") }
                colon += 1
            }
            guard colon < end, colon > position else { throw .malformed("a header line has no name or no colon") }
            var valueStart = colon + 1
            var valueEnd = end
            while valueStart < valueEnd && (raw[valueStart] == 0x20 || raw[valueStart] == 0x09) { valueStart += 1 }
            while valueEnd > valueStart && (raw[valueEnd - 1] == 0x20 || raw[valueEnd - 1] == 0x09) { valueEnd -= 1 }
            for index in valueStart..<valueEnd {
                let byte = raw[index]
                if (byte < 0x20 && byte != 0x09) || byte == 0x7F { throw .malformed("control character in a header value") }
            }
            let kind = KnownHeader.classify(UnsafeRawBufferPointer(rebasing: raw[position..<colon]))
            let field = RawHeaderField(line: position..<(end + 2), name: position..<colon, value: valueStart..<valueEnd, kind: kind)
            try note(field, raw: raw, into: &head, isRequest: isRequest)
            head.fields.append(field)
            position = end + 2
        }
        throw .malformed("the head does not end with an empty line")
    }

    private static func note(_ field: RawHeaderField, raw: UnsafeRawBufferPointer, into head: inout HTTPHead, isRequest: Bool) throws(HeadError) {
        switch field.kind {
        case .contentLength:
            guard head.contentLength == nil else { throw .malformed("more than one Content-Length") }
            guard !field.value.isEmpty, field.value.count <= 18 else { throw .malformed("invalid Content-Length") }
            var length = 0
            for index in field.value {
                let byte = raw[index]
                guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { throw .malformed("invalid Content-Length") }
                length = length * 10 + Int(byte - UInt8(ascii: "0"))
            }
            head.contentLength = length
        case .transferEncoding:
            head.transferEncodingCount += 1
            // Only one `Transfer-Encoding: chunked` field is understood, in requests and responses
            // alike, as in gorouter (Go's net/http refuses anything else). Other forms are read
            // differently by different parsers (`chunked,`, an empty second field, `gzip, chunked`),
            // and a proxy and its peer that disagree on where a message ends can be made to take one
            // message for two: a request is a 400, an app's response a 502.
            let value = UnsafeRawBufferPointer(rebasing: raw[field.value])
            guard head.transferEncodingCount == 1, equalsIgnoringCase(value, "chunked") else {
                throw .malformed("unsupported Transfer-Encoding")
            }
            head.chunked = true
        case .connection:
            forEachToken(raw, field.value) { token in
                let bytes = UnsafeRawBufferPointer(rebasing: raw[token])
                if equalsIgnoringCase(bytes, "close") {
                    head.connectionClose = true
                } else if equalsIgnoringCase(bytes, "keep-alive") {
                    head.connectionKeepAlive = true
                } else if equalsIgnoringCase(bytes, "upgrade") {
                    head.connectionUpgrade = true
                } else {
                    head.connectionTokens.append(token)
                }
            }
        case .host:
            if isRequest && head.host != nil { throw .refused("too many Host headers") }
            head.host = field.value
        case .upgrade:
            if head.upgrade == nil { head.upgrade = field.value }
        case .xForwardedProto:
            if !head.sawForwardedProto {
                head.sawForwardedProto = true
                head.hasForwardedProto = !field.value.isEmpty
            }
        case .xRequestStart:
            head.hasRequestStart = true
        case .idempotencyKey:
            head.hasIdempotencyKey = true
        case .authorization, .wwwAuthenticate:
            // As gorouter reads it: the first field's value starts with "negotiate", in any case.
            if !head.sawAuthentication && (field.kind == .authorization) == isRequest {
                head.sawAuthentication = true
                let scheme = field.value.lowerBound..<min(field.value.upperBound, field.value.lowerBound + 9)
                head.negotiatesAuthentication = equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: raw[scheme]), "negotiate")
            }
        default:
            break
        }
        if head.chunked && head.contentLength != nil {
            if isRequest { throw .malformed("Content-Length together with Transfer-Encoding") }
            head.contentLength = nil
        }
    }

    private static func parseRequestLine(_ raw: UnsafeRawBufferPointer, end: Int, into head: inout HTTPHead) throws(HeadError) {
        var index = 0
        while index < end && raw[index] != 0x20 {
            guard CookieName.isTokenByte(raw[index]) else { throw .malformed("invalid method") }
            index += 1
        }
        guard index > 0, index < end else { throw .malformed("no method") }
        head.first = 0..<index
        let targetStart = index + 1
        var targetEnd = targetStart
        while targetEnd < end && raw[targetEnd] != 0x20 {
            let byte = raw[targetEnd]
            guard byte > 0x20 && byte != 0x7F else { throw .malformed("invalid request target") }
            targetEnd += 1
        }
        guard targetEnd > targetStart, targetEnd < end else { throw .malformed("no request target") }
        head.second = targetStart..<targetEnd
        head.originForm = head.second
        if raw[targetStart] != UInt8(ascii: "/") { try parseOtherTargetForm(raw, into: &head) }
        head.minorVersion = try version(raw, from: targetEnd + 1, to: end, isRequest: true)
    }

    private static func isConnect(_ raw: UnsafeRawBufferPointer, _ head: HTTPHead) -> Bool {
        UnsafeRawBufferPointer(rebasing: raw[head.first]).elementsEqual("CONNECT".utf8)
    }

    /// A target that is not a path: `*`, an absolute URI (`http://host:port/path?query`, whose
    /// authority then names the host), or the authority of a CONNECT. Anything else (`?x=1`,
    /// `host/path`) is refused, as Go's server refuses it (400).
    private static func parseOtherTargetForm(_ raw: UnsafeRawBufferPointer, into head: inout HTTPHead) throws(HeadError) {
        let target = head.second
        if target.count == 1 && raw[target.lowerBound] == UInt8(ascii: "*") { return }
        if isConnect(raw, head) {
            head.targetAuthority = target
            head.originForm = target.upperBound..<target.upperBound
            return
        }
        // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ":" and a path or "//" authority.
        var index = target.lowerBound
        func isSchemeByte(_ byte: UInt8, first: Bool) -> Bool {
            let letter = (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z")
            if first { return letter }
            return letter || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "-")
                || byte == UInt8(ascii: ".")
        }
        while index < target.upperBound && isSchemeByte(raw[index], first: index == target.lowerBound) { index += 1 }
        guard index > target.lowerBound, index + 1 < target.upperBound, raw[index] == UInt8(ascii: ":"), raw[index + 1] == UInt8(ascii: "/") else {
            throw .malformed("invalid request target")
        }
        index += 1
        guard index + 1 < target.upperBound, raw[index + 1] == UInt8(ascii: "/") else {
            // `scheme:/path`: no authority, the Host header names the host.
            head.originForm = index..<target.upperBound
            return
        }
        var authorityStart = index + 2
        var authorityEnd = authorityStart
        while authorityEnd < target.upperBound && raw[authorityEnd] != UInt8(ascii: "/") && raw[authorityEnd] != UInt8(ascii: "?") {
            if raw[authorityEnd] == UInt8(ascii: "@") { authorityStart = authorityEnd + 1 }
            authorityEnd += 1
        }
        head.originForm = authorityEnd..<target.upperBound
        if authorityEnd > authorityStart { head.targetAuthority = authorityStart..<authorityEnd }
    }

    private static func parseStatusLine(_ raw: UnsafeRawBufferPointer, end: Int, into head: inout HTTPHead) throws(HeadError) {
        guard end >= 12 else { throw .malformed("short status line") }
        head.minorVersion = try version(raw, from: 0, to: 8, isRequest: false)
        guard raw[8] == 0x20 else { throw .malformed("invalid status line") }
        var code = 0
        for index in 9..<12 {
            let byte = raw[index]
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { throw .malformed("invalid status code") }
            code = code * 10 + Int(byte - UInt8(ascii: "0"))
        }
        guard code >= 100, end == 12 || raw[12] == 0x20 else { throw .malformed("invalid status code") }
        head.statusCode = code
        head.first = 9..<12
        head.second = end > 12 ? 13..<end : end..<end
    }

    /// `HTTP/X.Y` as Go reads it (one digit each): 0 for HTTP/1.0, 1 for any later HTTP/1 (a request
    /// in HTTP/1.2 is served as 1.1); a request in HTTP/2 or later is `unsupportedVersion` (505).
    private static func version(_ raw: UnsafeRawBufferPointer, from start: Int, to end: Int, isRequest: Bool) throws(HeadError) -> Int {
        func digit(_ byte: UInt8) -> Int? { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") ? Int(byte - UInt8(ascii: "0")) : nil }
        guard end - start == 8, equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: raw[start..<(start + 5)]), "http/"),
            raw[start + 6] == UInt8(ascii: "."), let major = digit(raw[start + 5]), let minor = digit(raw[start + 7])
        else {
            throw .malformed("not an HTTP version")
        }
        guard major == 1 else { throw isRequest && major > 1 ? .unsupportedVersion : .malformed("not HTTP/1.x") }
        return minor == 0 ? 0 : 1
    }

    /// The index of the CR of the line starting at `from`; a bare LF is an error (nil).
    private static func lineEnd(_ raw: UnsafeRawBufferPointer, from: Int) -> Int? {
        var index = from
        while index < raw.count {
            let byte = raw[index]
            if byte == 0x0D {
                return index + 1 < raw.count && raw[index + 1] == 0x0A ? index : nil
            }
            if byte == 0x0A { return nil }
            index += 1
        }
        return nil
    }

    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        for offset in 0..<bytes.count where asciiLower(bytes[offset]) != expected[offset] { return false }
        return true
    }

    /// Comma-separated tokens of a field value, trimmed.
    static func forEachToken(_ raw: UnsafeRawBufferPointer, _ value: Range<Int>, _ body: (Range<Int>) -> Void) {
        var start = value.lowerBound
        while start < value.upperBound {
            var end = start
            while end < value.upperBound && raw[end] != UInt8(ascii: ",") { end += 1 }
            var tokenStart = start
            var tokenEnd = end
            while tokenStart < tokenEnd && (raw[tokenStart] == 0x20 || raw[tokenStart] == 0x09) { tokenStart += 1 }
            while tokenEnd > tokenStart && (raw[tokenEnd - 1] == 0x20 || raw[tokenEnd - 1] == 0x09) { tokenEnd -= 1 }
            if tokenEnd > tokenStart { body(tokenStart..<tokenEnd) }
            start = end + 1
        }
    }
}
