import Prometheus

/// chat-node's Prometheus metrics, served at /metrics. Every instrument lives in the registry passed in
/// (the executable bootstraps swift-metrics on the same registry, so library metrics appear too).
public final class ChatMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let connections: Gauge
    let connectionsTotal: Counter
    let messagesIn: Counter
    let messagesOut: Counter
    let duplicates: Counter
    let recovered: Counter
    let notRecovered: Counter
    let redisErrors: Counter
    let rejected: Counter
    let refused: Counter
    let logins: Counter
    let gapFills: Counter

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        connections = registry.makeGauge(name: "chat_connections", help: "Socket.IO connections open on this instance")
        connectionsTotal = registry.makeCounter(name: "chat_connections_total", help: "Socket.IO connections accepted")
        messagesIn = registry.makeCounter(name: "chat_messages_in_total", help: "Chat messages received from clients and stored")
        messagesOut = registry.makeCounter(name: "chat_messages_out_total", help: "Chat lines sent to clients (live, replayed or recovered)")
        duplicates = registry.makeCounter(name: "chat_messages_duplicate_total", help: "Resent messages recognised by their id and stored once")
        recovered = registry.makeCounter(name: "chat_recoveries_total", labels: [("result", "recovered")], help: "Reconnects by result")
        notRecovered = registry.makeCounter(name: "chat_recoveries_total", labels: [("result", "fresh")], help: "Reconnects by result")
        redisErrors = registry.makeCounter(name: "chat_redis_errors_total", help: "Redis commands that failed")
        rejected = registry.makeCounter(name: "chat_rejected_total", help: "Client messages rejected as invalid")
        refused = registry.makeCounter(name: "chat_connect_refused_total", help: "Socket.IO connections refused (not logged in)")
        logins = registry.makeCounter(name: "chat_logins_total", help: "Successful logins")
        gapFills = registry.makeCounter(name: "chat_gap_fills_total", help: "Times the subscription caught up from the history after a gap")
    }

    /// The Prometheus text exposition.
    public func exposition() -> String { registry.emitToString() }
}
