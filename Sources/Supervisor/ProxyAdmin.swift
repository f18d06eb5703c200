import CloudFoundry
import Foundation
import NIOHTTP1

/// sticky-proxy's admin API on 127.0.0.1 (bearer token): register and unregister one
/// `RouteRegistration` at a time, read the routing table with per-endpoint counters, health.
public struct ProxyAdmin: Sendable {
    public var port: Int
    public var token: String
    public var timeout: Duration

    public init(port: Int, token: String, timeout: Duration = .seconds(2)) {
        self.port = port
        self.token = token
        self.timeout = timeout
    }

    public func register(_ registration: RouteRegistration) async throws {
        try await post("/routes/register", registration)
    }

    public func unregister(_ registration: RouteRegistration) async throws {
        try await post("/routes/unregister", registration)
    }

    /// GET /health answers 200.
    public func isHealthy() async -> Bool {
        (try? await Probe.http(port: port, path: "/health", timeout: timeout).status) == 200
    }

    /// GET /routes, per instance GUID.
    public func endpointStats() async throws -> [String: EndpointStats] {
        let response = try await Probe.http(port: port, path: "/routes", headers: [("Authorization", "Bearer \(token)")], timeout: timeout)
        guard response.status == 200 else {
            throw Probe.Failure("sticky-proxy's admin API answered \(response.status) to GET /routes: \(response.text.prefix(200))")
        }
        return EndpointStats.parse(routesJSON: response.body)
    }

    private func post(_ path: String, _ registration: RouteRegistration) async throws {
        let response = try await Probe.http(
            method: .POST, port: port, path: path,
            headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")],
            body: Array(registration.json()), timeout: timeout)
        guard (200..<300).contains(response.status) else {
            throw Probe.Failure("sticky-proxy's admin API answered \(response.status) to POST \(path): \(response.text.prefix(200))")
        }
    }
}

/// One instance's counters in the proxy (shared by the routes it is registered under).
public struct EndpointStats: Sendable, Equatable {
    public var inFlight = 0
    public var requestsTotal = 0
    public var openTunnels = 0

    public init(inFlight: Int = 0, requestsTotal: Int = 0, openTunnels: Int = 0) {
        self.inFlight = inFlight
        self.requestsTotal = requestsTotal
        self.openTunnels = openTunnels
    }

    /// Clients attached right now: requests in flight (long-polls) plus upgraded WebSocket tunnels.
    public var connections: Int { inFlight + openTunnels }

    /// Reads `GET /routes`: an object of uri -> endpoints (an array, or an object with an `endpoints`
    /// array), each endpoint with `private_instance_id` and its counters. Unknown shapes give nothing.
    public static func parse(routesJSON data: [UInt8]) -> [String: EndpointStats] {
        guard let root = try? JSONSerialization.jsonObject(with: Data(data)) else { return [:] }
        var routes: [Any] = []
        if let object = root as? [String: Any] {
            if let list = object["routes"] as? [Any] { routes = list } else { routes = Array(object.values) }
        } else if let list = root as? [Any] {
            routes = list
        }
        var result: [String: EndpointStats] = [:]
        for route in routes {
            let endpoints: [Any]
            if let list = route as? [Any] {
                endpoints = list
            } else if let object = route as? [String: Any], let list = object["endpoints"] as? [Any] {
                endpoints = list
            } else {
                continue
            }
            for case let endpoint as [String: Any] in endpoints {
                guard let guid = endpoint["private_instance_id"] as? String else { continue }
                // sticky-proxy (like gorouter) shares one set of counters between an instance's routes:
                // the same endpoint listed under two URIs is counted once.
                var stats = result[guid] ?? EndpointStats()
                stats.inFlight = max(stats.inFlight, (endpoint["in_flight"] as? Int) ?? 0)
                stats.requestsTotal = max(stats.requestsTotal, (endpoint["requests_total"] as? Int) ?? 0)
                stats.openTunnels = max(stats.openTunnels, (endpoint["open_tunnels"] as? Int) ?? 0)
                result[guid] = stats
            }
        }
        return result
    }
}
