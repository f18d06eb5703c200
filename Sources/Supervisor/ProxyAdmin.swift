import CloudFoundry
import Foundation
import NIOHTTP1

/// sticky-proxy's admin API on 127.0.0.1 (bearer token): register and unregister one
/// `RouteRegistration` at a time, read the routing table with per-endpoint counters, health.
public struct ProxyAdmin: Sendable {
    public var port: Int
    public var token: String
    public var timeout: Duration
    /// The proxy's `--trace-key` (gorouter's `router.trace_key`): the simulated users send it in
    /// `X-Vcap-Trace` to be told which instance answered. Empty: none.
    public var traceKey: String

    public init(port: Int, token: String, timeout: Duration = .seconds(2), traceKey: String = "") {
        self.port = port
        self.token = token
        self.timeout = timeout
        self.traceKey = traceKey
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

    /// GET /metrics: what clients got through the proxy so far.
    public func traffic() async throws -> ProxyTraffic {
        let response = try await Probe.http(port: port, path: "/metrics", headers: [("Authorization", "Bearer \(token)")], timeout: timeout)
        guard response.status == 200 else {
            throw Probe.Failure("sticky-proxy's admin API answered \(response.status) to GET /metrics: \(response.text.prefix(200))")
        }
        return ProxyTraffic.parse(prometheus: response.text)
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

/// What clients got through the proxy, from its Prometheus counters (`GET /metrics`): responses by
/// status class, the router's own errors, routing decisions, retries. `since(_:)` gives what happened
/// between two readings: what the users of an app saw during a chaos run, say.
public struct ProxyTraffic: Codable, Sendable, Equatable {
    /// `2xx` ... `5xx` -> responses sent to clients.
    public var responses: [String: Int] = [:]
    /// `X-Cf-Routererror` values (`endpoint_failure`, `Connection Limit Reached`, `unknown_route`,
    /// `client_closed_request`, ...) -> responses the router answered itself.
    public var routerErrors: [String: Int] = [:]
    /// `sticky_hit`, `fallback_instance_gone`, `new_session`, `balanced`, `retry_after_error`, ...
    public var decisions: [String: Int] = [:]
    /// Attempts retried on another instance after a retriable error.
    public var retries = 0
    /// Attempts that failed to reach an instance (refused, reset, EOF before a response).
    public var backendFailures = 0

    public init(
        responses: [String: Int] = [:], routerErrors: [String: Int] = [:], decisions: [String: Int] = [:], retries: Int = 0,
        backendFailures: Int = 0
    ) {
        self.responses = responses
        self.routerErrors = routerErrors
        self.decisions = decisions
        self.retries = retries
        self.backendFailures = backendFailures
    }

    enum CodingKeys: String, CodingKey {
        case responses, decisions, retries
        case routerErrors = "router_errors"
        case backendFailures = "backend_failures"
    }

    public var responseCount: Int { responses.values.reduce(0, +) }
    /// Responses with a 5xx status: the app's own, and the router's 502s and 503s.
    public var serverErrors: Int { responses["5xx", default: 0] }
    /// The router's own 5xx among its errors: 502 `endpoint_failure` and 503 `Connection Limit Reached`
    /// (its other errors are 4xx), those that happened.
    public var routerServerErrors: [String: Int] {
        routerErrors.filter { $0.value > 0 && RouterErrorKind(rawValue: $0.key)?.isServerError == true }
    }

    /// Reads sticky-proxy's Prometheus text. Lines it does not know are skipped.
    public static func parse(prometheus text: String) -> ProxyTraffic {
        var traffic = ProxyTraffic()
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let count = Int(value)
            let series = line[..<space]
            let name = series.prefix { $0 != "{" }
            let label = series.firstIndex(of: "\"").flatMap { open in
                series[series.index(after: open)...].firstIndex(of: "\"").map { String(series[series.index(after: open)..<$0]) }
            }
            guard let counter = ProxyCounter(exposedName: name) else { continue }
            switch (counter, label) {
            case (.responses, let label?): traffic.responses[label] = count
            case (.routerErrors, let label?): traffic.routerErrors[label] = count
            case (.routingDecisions, let label?): traffic.decisions[label] = count
            case (.retries, nil): traffic.retries = count
            case (.backendFailures, nil): traffic.backendFailures = count
            default: continue
            }
        }
        return traffic
    }

    /// What was counted after `earlier` (a counter that went down, a restarted proxy, counts from zero).
    public func since(_ earlier: ProxyTraffic) -> ProxyTraffic {
        func delta(_ now: Int, _ before: Int) -> Int { now >= before ? now - before : now }
        func delta(_ now: [String: Int], _ before: [String: Int]) -> [String: Int] {
            now.reduce(into: [:]) { result, entry in result[entry.key] = delta(entry.value, before[entry.key, default: 0]) }
        }
        return ProxyTraffic(
            responses: delta(responses, earlier.responses), routerErrors: delta(routerErrors, earlier.routerErrors),
            decisions: delta(decisions, earlier.decisions), retries: delta(retries, earlier.retries),
            backendFailures: delta(backendFailures, earlier.backendFailures))
    }

    /// One line: `1,234 responses (2xx 1,200, 4xx 30, 5xx 4); router errors: endpoint_failure 3, ...;
    /// 17 retried on another instance; decisions: fallback_instance_gone 150, sticky_hit 1,000`.
    public var summary: String {
        let number = CountText.grouped
        func listed(_ counts: [String: Int]) -> String {
            counts.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key) \(number($0.value))" }.joined(separator: ", ")
        }
        let total = responseCount
        var parts = [CountText.count(total, "response") + (total > 0 ? " (\(listed(responses)))" : "")]
        let errors = listed(routerErrors)
        parts.append(errors.isEmpty ? "no router errors" : "router errors: \(errors)")
        parts.append("\(number(retries)) retried on another instance")
        let decided = listed(decisions)
        if !decided.isEmpty { parts.append("routing: \(decided)") }
        return parts.joined(separator: "; ")
    }
}
