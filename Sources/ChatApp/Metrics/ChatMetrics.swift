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
    let crossSiteRefused: Counter
    let gapFills: Counter
    let sequenceGaps: Counter
    let positionCheckGaps: Counter

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        connections = registry.makeGauge(descriptor: Self.d("connections", "", "Socket.IO connections open on this instance"))
        connectionsTotal = registry.makeCounter(descriptor: Self.d("connections", "total", "Socket.IO connections accepted"))
        messagesIn = registry.makeCounter(descriptor: Self.d("messages_in", "total", "Chat messages received from clients and stored"))
        messagesOut = registry.makeCounter(descriptor: Self.d("messages_out", "total", "Chat lines sent to clients (live, replayed or recovered)"))
        duplicates = registry.makeCounter(descriptor: Self.d("messages_duplicate", "total", "Resent messages recognised by their id and stored once"))
        recovered = registry.makeCounter(descriptor: Self.d("recoveries", "total", "Reconnects by result"), labels: [("result", "recovered")])
        notRecovered = registry.makeCounter(descriptor: Self.d("recoveries", "total", "Reconnects by result"), labels: [("result", "fresh")])
        redisErrors = registry.makeCounter(descriptor: Self.d("redis_errors", "total", "Redis commands that failed"))
        rejected = registry.makeCounter(descriptor: Self.d("rejected", "total", "Client messages rejected as invalid"))
        refused = registry.makeCounter(descriptor: Self.d("connect_refused", "total", "Socket.IO connections refused (not logged in)"))
        logins = registry.makeCounter(descriptor: Self.d("logins", "total", "Successful logins"))
        crossSiteRefused = registry.makeCounter(
            descriptor: Self.d("cross_site_refused", "total", "Login and logout form posts refused because another site sent them (403)"))
        gapFills = registry.makeCounter(descriptor: Self.d("gap_fills", "total", "Times the subscription caught up from the history after a gap"))
        let missed = Self.d("pubsub_gaps", "total", "Times the subscription was found to have missed lines, which were then read from the history")
        sequenceGaps = registry.makeCounter(descriptor: missed, labels: [("detected_by", "sequence")])
        positionCheckGaps = registry.makeCounter(descriptor: missed, labels: [("detected_by", "position_check")])
    }

    private static func d(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "chat", metricName: name, unitName: unit, helpText: help)
    }

    /// The Prometheus text exposition.
    public func exposition() -> String { registry.emitToString() }
}
