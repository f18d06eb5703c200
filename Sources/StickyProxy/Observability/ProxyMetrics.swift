import CloudFoundry
import NIOCore
import Prometheus
import Synchronization

/// The proxy's Prometheus metrics (served on the admin API's `GET /metrics`). Counters are atomic;
/// the gauges are read from the routing table and the endpoints' counters when scraped.
public final class ProxyMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let responsesByClass: [Counter]
    /// Indexed by `RoutingDecisionKind.allCases` order.
    private let decisions: [Counter]
    private let routerErrors: [RouterErrorKind: Counter]
    private let backendFailures: Counter
    private let retries: Counter
    private let requestDuration: DurationHistogram
    private let routes: Gauge
    private let endpoints: Gauge
    private let inFlight: Gauge
    private let openTunnels: Gauge
    private let clientConnections: Gauge
    private let droppedEvents: Gauge
    let clientConnectionCount = Atomic<Int>(0)

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        // The counters the cluster reads back (ProxyCounter): their names and labels from that list.
        func counter(_ counter: ProxyCounter, _ help: String, label value: String? = nil) -> Counter {
            let descriptor = MetricNameDescriptor(
                namespace: ProxyCounter.namespace, metricName: counter.rawValue, unitName: ProxyCounter.unit, helpText: help)
            guard let label = counter.label, let value else { return registry.makeCounter(descriptor: descriptor) }
            return registry.makeCounter(descriptor: descriptor, labels: [(label, value)])
        }
        responsesByClass = (1...5).map { counter(.responses, "Responses sent to clients, by status class", label: "\($0)xx") }
        decisions = RoutingDecisionKind.allCases.map {
            counter(.routingDecisions, "Routing decisions (sticky_hit, fallback_instance_gone, new_session, ...)", label: $0.rawValue)
        }
        routerErrors = Dictionary(
            uniqueKeysWithValues: RouterErrorKind.allCases.map {
                ($0, counter(.routerErrors, "Responses the router answered itself, by X-Cf-Routererror", label: $0.rawValue))
            })
        backendFailures = counter(.backendFailures, "Attempts that failed to reach a backend (connect errors, resets, EOF before a response)")
        retries = counter(.retries, "Attempts retried on another endpoint")
        requestDuration = registry.makeDurationHistogram(
            descriptor: MetricNameDescriptor(
                namespace: ProxyCounter.namespace, metricName: "request_duration", unitName: "seconds",
                helpText: "Time from the request head to the end of the response"),
            buckets: [
                .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
            ])
        func gauge(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: ProxyCounter.namespace, metricName: name, unitName: "", helpText: help))
        }
        routes = gauge("routes", "Routes in the routing table")
        endpoints = gauge("endpoints", "Endpoints registered across all routes")
        inFlight = gauge("in_flight_requests", "Requests sent to backends and waiting for their response head")
        openTunnels = gauge("open_tunnels", "Upgraded connections (WebSockets) being tunnelled")
        clientConnections = gauge("client_connections", "Open client connections")
        droppedEvents = gauge("dropped_feed_events", "Routing events not delivered to a slow /events subscriber")
    }

    func responseSent(status: Int) {
        let index = status / 100 - 1
        if responsesByClass.indices.contains(index) { responsesByClass[index].increment() }
    }

    func decided(_ kind: RoutingDecisionKind) { decisions[kind.ordinal].increment() }

    func routerError(_ error: RouterError) {
        routerErrors[error.kind]?.increment()
    }

    func backendFailed() { backendFailures.increment() }
    func retried() { retries.increment() }
    func requestFinished(after duration: TimeAmount) { requestDuration.record(.nanoseconds(duration.nanoseconds)) }

    /// Prometheus text, with the gauges refreshed from `table`.
    public func scrape(table: RoutingTable, feed: DecisionFeed) -> [UInt8] {
        let pools = table.pools
        routes.set(Double(pools.count))
        var endpointCount = 0
        var inFlightCount = 0
        var tunnelCount = 0
        var seen = Set<ObjectIdentifier>()
        for pool in pools {
            endpointCount += pool.endpoints.count
            for endpoint in pool.endpoints where seen.insert(ObjectIdentifier(endpoint.stats)).inserted {
                inFlightCount += endpoint.stats.inFlight
                tunnelCount += endpoint.stats.openTunnels
            }
        }
        endpoints.set(Double(endpointCount))
        inFlight.set(Double(inFlightCount))
        openTunnels.set(Double(tunnelCount))
        clientConnections.set(Double(clientConnectionCount.load(ordering: .relaxed)))
        droppedEvents.set(Double(feed.dropped))
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}
