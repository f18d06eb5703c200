/// The counters sticky-proxy serves on its admin API's `GET /metrics` that the cluster reads back to
/// say what clients got through the proxy (`cluster status`, `cluster chaos`): one list of their
/// names and labels for the proxy that writes them and the cluster that reads them.
public enum ProxyCounter: String, CaseIterable, Sendable {
    /// Responses sent to clients, by status class (`code="2xx"`).
    case responses
    /// Responses the router answered itself, by `RouterErrorKind` (`error="endpoint_failure"`).
    case routerErrors = "router_errors"
    /// Routing decisions (`decision="sticky_hit"`).
    case routingDecisions = "routing_decisions"
    /// Attempts retried on another endpoint.
    case retries
    /// Attempts that failed to reach a backend.
    case backendFailures = "backend_failures"

    /// The prefix of every sticky-proxy metric.
    public static let namespace = "sticky_proxy"
    /// The unit suffix of a counter.
    public static let unit = "total"

    /// The name in the Prometheus text: `sticky_proxy_responses_total`.
    public var exposedName: String { "\(Self.namespace)_\(rawValue)_\(Self.unit)" }

    /// The label that tells its series apart; nil for a counter of one series.
    public var label: String? {
        switch self {
        case .responses: "code"
        case .routerErrors: "error"
        case .routingDecisions: "decision"
        case .retries, .backendFailures: nil
        }
    }

    /// The counter with this exposed name, nil for another metric.
    public init?(exposedName: some StringProtocol) {
        guard let counter = Self.allCases.first(where: { $0.exposedName == exposedName }) else { return nil }
        self = counter
    }
}
