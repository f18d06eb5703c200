import CloudFoundry
import NIOCore
import NIOHTTP1

/// The errors the router answers itself, with gorouter's status, `X-Cf-Routererror` value and plain
/// text body (`<code> <reason>: <message>`).
public enum RouterError: Sendable, Equatable, Error {
    /// No route for the host and path: 404 `unknown_route`.
    case unknownRoute(host: String)
    /// The route is kept without endpoints (`--empty-pool-timeout`): 503 `no_endpoints`.
    case noEndpoints(host: String)
    /// `X-CF-APP-INSTANCE` well formed but no such instance: 400 `unknown_route`.
    case unknownInstance(host: String, appGUID: String, index: String)
    /// `X-CF-APP-INSTANCE` malformed: 400 `invalid_cf_app_instance_header`.
    case invalidAppInstanceHeader
    /// No Host header: 400 `empty_host`.
    case emptyHost
    /// Every endpoint is at max_conns: 503 `Connection Limit Reached`.
    case connectionLimitReached(host: String)
    /// Attempts exhausted or a non-retriable transport error: 502 `endpoint_failure (<error>)`.
    case endpointFailure(String)
    /// The client went away before the response: logged as 499, nothing is sent.
    case clientClosedRequest

    public var status: HTTPResponseStatus {
        switch self {
        case .unknownRoute: return .notFound
        case .unknownInstance, .invalidAppInstanceHeader, .emptyHost: return .badRequest
        case .noEndpoints, .connectionLimitReached: return .serviceUnavailable
        case .endpointFailure: return .badGateway
        case .clientClosedRequest: return .custom(code: 499, reasonPhrase: "Request Cancelled")
        }
    }

    /// Which kind of router error this is (the metrics' label).
    public var kind: RouterErrorKind {
        switch self {
        case .unknownRoute, .unknownInstance: return .unknownRoute
        case .invalidAppInstanceHeader: return .invalidAppInstanceHeader
        case .emptyHost: return .emptyHost
        case .noEndpoints: return .noEndpoints
        case .connectionLimitReached: return .connectionLimitReached
        case .endpointFailure: return .endpointFailure
        case .clientClosedRequest: return .clientClosedRequest
        }
    }

    /// The `X-Cf-Routererror` header value: the kind, and for `endpoint_failure` the error in brackets.
    public var routerErrorHeader: String {
        if case .endpointFailure(let reason) = self { return "\(kind.rawValue) (\(reason))" }
        return kind.rawValue
    }

    /// The plain-text body, newline-terminated like Go's http.Error.
    public var body: String {
        switch self {
        case .unknownRoute(let host):
            return "404 Not Found: Requested route ('\(host)') does not exist.\n"
        case .unknownInstance(let host, let guid, let index):
            return "400 Bad Request: Requested instance ('\(index)') with guid ('\(guid)') does not exist for route ('\(host)')\n"
        case .invalidAppInstanceHeader:
            return "400 Bad Request: Invalid X-CF-App-Instance Header\n"
        case .emptyHost:
            return "400 Bad Request: Request had empty Host header\n"
        case .noEndpoints(let host):
            return "503 Service Unavailable: Requested route ('\(host)') has no available endpoints.\n"
        case .connectionLimitReached(let host):
            return "503 Service Unavailable: Requested route ('\(host)') has reached the connection limit.\n"
        case .endpointFailure:
            return "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
        case .clientClosedRequest:
            return "499 Request Cancelled\n"
        }
    }

    /// gorouter marks its 4xx lookup errors as not cacheable, except `empty_host` and the 503
    /// `no_endpoints`, which it lets be cached for 2 s (`addInvalidResponseCacheControlHeader`).
    public var cacheControl: String? {
        switch self {
        case .unknownRoute, .unknownInstance, .invalidAppInstanceHeader: return "no-cache, no-store"
        case .emptyHost, .noEndpoints: return "public,max-age=2"
        default: return nil
        }
    }

    /// The whole response the router sends, plain text, in gorouter's form.
    public func response(minorVersion: Int, vcapRequestID: String?, close: Bool) -> ByteBuffer {
        let body = self.body
        var out = ByteBufferAllocator().buffer(capacity: 256 + body.utf8.count)
        out.writeString(minorVersion >= 1 ? "HTTP/1.1 " : "HTTP/1.0 ")
        out.writeString("\(status.code) \(status.reasonPhrase)\r\n")
        out.writeStaticString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Cf-Routererror: ")
        out.writeString(routerErrorHeader)
        if let cacheControl {
            out.writeStaticString("\r\nCache-Control: ")
            out.writeString(cacheControl)
        }
        if let vcapRequestID {
            out.writeStaticString("\r\nX-Vcap-Request-Id: ")
            out.writeString(vcapRequestID)
        }
        out.writeStaticString("\r\nContent-Length: ")
        out.writeString(String(body.utf8.count))
        if close {
            out.writeStaticString("\r\nConnection: close")
        } else if minorVersion == 0 {
            out.writeStaticString("\r\nConnection: keep-alive")
        }
        out.writeStaticString("\r\n\r\n")
        out.writeString(body)
        return out
    }
}

/// Errors from reading the request itself (before routing): Go's net/http answers them.
public enum RequestReadError: Sendable, Equatable {
    /// Malformed request, request smuggling (Content-Length with Transfer-Encoding, duplicate
    /// Content-Length): 400.
    case badRequest
    /// A 400 Go's server gives a reason ("missing required Host header").
    case badRequestBecause(String)
    /// Header section over the limit: 431.
    case headersTooLarge
    /// A request line in HTTP/2 or later: 505.
    case versionNotSupported

    public var status: HTTPResponseStatus {
        switch self {
        case .badRequest, .badRequestBecause: return .badRequest
        case .headersTooLarge: return .requestHeaderFieldsTooLarge
        case .versionNotSupported: return .httpVersionNotSupported
        }
    }

    /// Go's words for each.
    public var body: String {
        switch self {
        case .badRequest: return "400 Bad Request"
        case .badRequestBecause(let reason): return "400 Bad Request: \(reason)"
        case .headersTooLarge: return "431 Request Header Fields Too Large"
        case .versionNotSupported: return "unsupported protocol version"
        }
    }

    init(_ error: HeadError) {
        switch error {
        case .tooLarge: self = .headersTooLarge
        case .unsupportedVersion: self = .versionNotSupported
        case .malformed: self = .badRequest
        case .refused(let reason): self = .badRequestBecause(reason)
        }
    }

    /// The whole response; the connection is closed after it.
    public var response: ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: 160)
        out.writeString("HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n")
        out.writeStaticString("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: ")
        out.writeString(String(body.utf8.count))
        out.writeStaticString("\r\n\r\n")
        out.writeString(body)
        return out
    }
}

/// `X-CF-APP-INSTANCE: <app guid>:<index>`, validated the way gorouter does
/// (`^[\da-f]{8}-([\da-f]{4}-){3}[\da-f]{12}:\d+$`).
public struct AppInstanceTarget: Sendable, Equatable {
    public var appGUID: String
    public var index: String

    public static let headerName = "X-CF-APP-INSTANCE"

    /// nil when malformed.
    public init?(header: String) {
        let utf8 = Array(header.utf8)
        // 36 characters of GUID, a colon, one or more digits.
        guard utf8.count >= 38, utf8[36] == UInt8(ascii: ":") else { return nil }
        for (offset, byte) in utf8[0..<36].enumerated() {
            if [8, 13, 18, 23].contains(offset) {
                guard byte == UInt8(ascii: "-") else { return nil }
            } else {
                let isLowerHex = (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
                guard isLowerHex else { return nil }
            }
        }
        guard utf8[37...].allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else { return nil }
        appGUID = String(decoding: utf8[0..<36], as: UTF8.self)
        index = String(decoding: utf8[37...], as: UTF8.self)
    }
}
