import CloudFoundry
import Foundation
import NIOCore
import NIOHTTP1

/// One endpoint in the `GET /routes` listing.
public struct RouteListingEndpoint: Codable, Sendable, Equatable {
    public var address: String
    public var app: String
    public var privateInstanceID: String
    public var privateInstanceIndex: String
    public var tags: [String: String]
    public var staleThresholdInSeconds: Int
    /// RFC 3339 time of the last register message.
    public var updatedAt: String
    public var inFlight: Int
    public var requestsTotal: Int
    public var openTunnels: Int
    /// RFC 3339 time until which the balancer skips this endpoint after a failure; absent otherwise.
    public var failedUntil: String?
    /// The route's balancing algorithm when a registration chose one.
    public var loadBalancing: String?
    public var isStatic: Bool

    enum CodingKeys: String, CodingKey {
        case address, app, tags
        case privateInstanceID = "private_instance_id"
        case privateInstanceIndex = "private_instance_index"
        case staleThresholdInSeconds = "stale_threshold_in_seconds"
        case updatedAt = "updated_at"
        case inFlight = "in_flight"
        case requestsTotal = "requests_total"
        case openTunnels = "open_tunnels"
        case failedUntil = "failed_until"
        case loadBalancing = "load_balancing"
        case isStatic = "static"
    }
}

/// The admin API's answers, decided without I/O: `AdminHandler` carries them out.
public struct AdminAPI: Sendable {
    public enum Outcome: Sendable, Equatable {
        case json(HTTPResponseStatus, Data)
        case noContent
        case metrics
        case events
        /// Register/unregister: valid, to be applied (may resolve a host name, so off the event loop).
        case register(RouteRegistration)
        case unregister(RouteRegistration)
    }

    public let token: String

    public init(token: String) {
        self.token = token
    }

    /// The largest request body read (a registration is a few hundred bytes).
    public static let maxBodyBytes = 1 << 20

    /// The methods an endpoint takes (the `Allow` header of a 405), nil for no such endpoint.
    public static func allowedMethods(path: String) -> String? {
        switch path {
        case "/health": return "GET, HEAD"
        case "/routes/register", "/routes/unregister": return "POST"
        case "/routes", "/events", "/metrics": return "GET"
        default: return nil
        }
    }

    /// Decides what a request gets. `body` is the complete request body; `bodyTooLarge` when it was
    /// over `maxBodyBytes` (or announced so) and not kept. The token is checked before the body.
    public func route(
        method: HTTPMethod, uri: String, authorization: String?, body: ByteBuffer?, bodyTooLarge: Bool = false, routes: () -> RoutingTable
    ) -> Outcome {
        let path = String(uri.prefix { $0 != "?" })
        if path == "/health" {
            guard method == .GET || method == .HEAD else { return Self.error(.methodNotAllowed, "use GET /health") }
            return .json(.ok, Data(#"{"status":"ok"}"#.utf8))
        }
        guard isAuthorized(authorization) else {
            return Self.error(
                .unauthorized,
                "missing or wrong admin token: send the header 'Authorization: Bearer <token>' (the token sticky-proxy was started with)")
        }
        if bodyTooLarge { return Self.error(.payloadTooLarge, "the body is larger than 1 MiB: send one route registration as JSON") }
        switch path {
        case "/routes/register", "/routes/unregister":
            guard method == .POST else { return Self.error(.methodNotAllowed, "use POST \(path) with one route registration as JSON") }
            guard let body, body.readableBytes > 0 else {
                return Self.error(
                    .badRequest,
                    "the body is empty: send one registration as JSON, for example {\"host\":\"127.0.0.1\",\"port\":9001,\"uris\":[\"localhost\"]}")
            }
            let registration: RouteRegistration
            let data = Data(body.readableBytesView)
            do {
                registration = try JSONDecoder().decode(RouteRegistration.self, from: data)
            } catch DecodingError.dataCorrupted(let context)
                where context.codingPath.isEmpty && (try? JSONSerialization.jsonObject(with: data)) != nil
            {
                // Foundation's decoder calls a number that does not fit its field (`"port": 9001.5`)
                // invalid JSON, without saying where.
                return Self.error(
                    .badRequest,
                    "the body is not a route registration: a number does not fit its field (\"port\" and \"stale_threshold_in_seconds\" are whole numbers)"
                )
            } catch {
                return Self.error(.badRequest, "the body is not a route registration: \(Self.describe(error))")
            }
            if let problem = RouteRegistry.problem(with: registration) { return Self.error(.badRequest, problem) }
            return path == "/routes/register" ? .register(registration) : .unregister(registration)
        case "/routes":
            guard method == .GET else { return Self.error(.methodNotAllowed, "use GET /routes") }
            return .json(.ok, Self.listing(routes(), now: .now(), wallNow: WallClockTime.now()))
        case "/events":
            guard method == .GET else { return Self.error(.methodNotAllowed, "use GET /events") }
            return .events
        case "/metrics":
            guard method == .GET else { return Self.error(.methodNotAllowed, "use GET /metrics") }
            return .metrics
        default:
            return Self.error(
                .notFound,
                "no such admin endpoint \(path): use POST /routes/register, POST /routes/unregister, GET /routes, GET /events, GET /metrics or GET /health"
            )
        }
    }

    func isAuthorized(_ header: String?) -> Bool {
        guard let header else { return false }
        let prefix = "Bearer "
        guard header.count > prefix.count, header.lowercased().hasPrefix("bearer ") else { return false }
        let presented = Array(header.utf8.dropFirst(prefix.utf8.count))
        let expected = Array(token.utf8)
        // Constant time for equal lengths.
        guard presented.count == expected.count else { return false }
        var difference: UInt8 = 0
        for index in expected.indices { difference |= presented[index] ^ expected[index] }
        return difference == 0
    }

    public static func error(_ status: HTTPResponseStatus, _ message: String) -> Outcome {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(["error": message])) ?? Data()
        return .json(status, data)
    }

    /// `{uri: [endpoint, ...]}`.
    public static func listing(_ table: RoutingTable, now: NIODeadline, wallNow: WallClockTime) -> Data {
        var result: [String: [RouteListingEndpoint]] = [:]
        for pool in table.pools {
            result[pool.uri.description] = pool.endpoints.map { endpoint in
                var failedUntil: String?
                if let until = endpoint.stats.failedUntil, until > now {
                    let remaining = (until - now).nanoseconds
                    let wall = wallNow.seconds * 1_000_000_000 + Int64(wallNow.nanoseconds) + remaining
                    failedUntil = WallClockTime(seconds: wall / 1_000_000_000, nanoseconds: Int32(wall % 1_000_000_000)).rfc3339
                }
                let updatedNanos = Int64((endpoint.updatedAtWallClock * 1e9).rounded())
                return RouteListingEndpoint(
                    address: endpoint.address,
                    app: endpoint.appID,
                    privateInstanceID: endpoint.instanceID,
                    privateInstanceIndex: endpoint.instanceIndex,
                    tags: endpoint.tags,
                    staleThresholdInSeconds: Int(endpoint.staleThreshold.nanoseconds / 1_000_000_000),
                    updatedAt: WallClockTime(seconds: updatedNanos / 1_000_000_000, nanoseconds: Int32(updatedNanos % 1_000_000_000)).rfc3339,
                    inFlight: endpoint.stats.inFlight,
                    requestsTotal: endpoint.stats.requestsTotal,
                    openTunnels: endpoint.stats.openTunnels,
                    failedUntil: failedUntil,
                    loadBalancing: pool.loadBalancing?.rawValue,
                    isStatic: endpoint.isStatic
                )
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(result)) ?? Data("{}".utf8)
    }

    /// A decoding error as a person can act on it: what is wrong, and where (`routes[0].port`).
    /// `format` names the text's language (JSON, YAML) for syntax errors, with the parser's own
    /// position when it gives one.
    static func describe(_ error: any Error, format: String = "JSON") -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        func path(_ context: DecodingError.Context) -> String {
            let keys = CodingPathText.text(context.codingPath)
            return keys.isEmpty ? "" : " at \"\(keys)\""
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "the field \"\(key.stringValue)\" is missing\(path(context))"
        case .typeMismatch(let type, let context):
            return "wrong type\(path(context)): expected \(type)"
        case .valueNotFound(let type, let context):
            return "a value is null\(path(context)): expected \(type)"
        case .dataCorrupted(let context):
            let detail = context.underlyingError.map { "\($0)" } ?? context.debugDescription
            return "invalid \(format)\(path(context)): \(detail)"
        @unknown default:
            return "\(error)"
        }
    }
}
