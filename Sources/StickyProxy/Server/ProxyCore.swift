import CloudFoundry
import Logging
import NIOCore
import Synchronization

/// What every connection handler shares: configuration, routing table, affinity, metrics, feed, logs.
/// Immutable after start except for atomics.
final class ProxyCore: Sendable {
    let configuration: ProxyConfiguration
    let registry: RouteRegistry
    let policy: ConfiguredAffinity
    let decider: RoutingDecider<ConfiguredAffinity>
    let retryPolicy: RetryPolicy
    let metrics: ProxyMetrics
    let feed: DecisionFeed
    let accessLog: AccessLogWriter?
    let logger: Logger
    let draining = Atomic<Bool>(false)
    /// `MisroutedSession` lines, at most one every 5 s.
    let misroutedSessionLog = Mutex(ThrottledLog(interval: .seconds(5)))
    private let loops: [ObjectIdentifier: LoopContext]

    init(
        configuration: ProxyConfiguration,
        registry: RouteRegistry,
        metrics: ProxyMetrics,
        feed: DecisionFeed,
        accessLog: AccessLogWriter?,
        eventLoops: [any EventLoop],
        logger: Logger
    ) {
        self.configuration = configuration
        self.registry = registry
        self.policy = ConfiguredAffinity(configuration)
        self.decider = RoutingDecider(policy: policy)
        self.retryPolicy = RetryPolicy(maxAttempts: configuration.maxAttempts)
        self.metrics = metrics
        self.feed = feed
        self.accessLog = accessLog
        self.logger = logger
        var loops: [ObjectIdentifier: LoopContext] = [:]
        for eventLoop in eventLoops {
            loops[ObjectIdentifier(eventLoop)] = LoopContext(
                eventLoop: eventLoop,
                registry: registry,
                accessLog: accessLog,
                maxIdlePerBackend: configuration.maxIdleConnectionsPerBackend
            )
        }
        self.loops = loops
    }

    /// The state of the event loop a channel runs on.
    func loopContext(for eventLoop: any EventLoop) -> LoopContext? {
        loops[ObjectIdentifier(eventLoop)]
    }

    var allLoopContexts: [LoopContext] { Array(loops.values) }

    var isDraining: Bool { draining.load(ordering: .relaxed) }

    /// Logs, at most once every 5 s, an app's 400 to an Engine.IO request that no affinity sent to the
    /// instance holding its session (`MisroutedSession`).
    func noteMisroutedSession(_ exchange: MisroutedSession.Exchange) {
        var exchange = exchange
        if exchange.decision == .fallbackInstanceGone, let pinned = exchange.pinnedInstanceID,
            MisroutedSession.sessionID(inTarget: exchange.target) != nil
        {
            // Only for 400s to Engine.IO requests after a fallback: one lock, off the common path.
            exchange.pinnedInstanceNeverRegistered = registry.everRegistered(instanceID: pinned) == false
            exchange.routerUptime = ContinuousClock.now - registry.startedAt
        }
        // The text is built only for the lines that are logged: an app can answer every request so.
        guard MisroutedSession.isSymptom(exchange, affinity: configuration.affinity),
            let suppressed = misroutedSessionLog.withLock({ $0.record(now: .now) }),
            let hint = MisroutedSession.hint(
                for: exchange, affinity: configuration.affinity, webSocketAffinity: configuration.webSocketAffinity,
                stickyCookieNames: configuration.stickyCookieNames, haproxyCookieName: configuration.haproxyCookieName)
        else { return }
        let more = suppressed > 0 ? " (\(suppressed) more since the last such line)" : ""
        logger.warning("\(hint)\(more)")
    }
}

/// The state of one event loop: its copy of the routing table, its keep-alive connections to
/// backends, its access log buffer, its open client connections, a fast random generator. Only ever
/// touched on its own event loop (hence unchecked Sendable: it is only reached through
/// `ProxyCore.loopContext(for:)` from that loop).
final class LoopContext: @unchecked Sendable {
    let eventLoop: any EventLoop
    let backendPool: BackendPool
    let accessLog: LoopAccessLog?
    private let registry: RouteRegistry
    private var cachedTable = RoutingTable()
    private var cachedGeneration = 0
    private var random: SplitMix64
    /// Open client connections, closed at the end of a drain.
    var clientChannels: [ObjectIdentifier: any Channel] = [:]

    init(eventLoop: any EventLoop, registry: RouteRegistry, accessLog: AccessLogWriter?, maxIdlePerBackend: Int) {
        self.eventLoop = eventLoop
        self.registry = registry
        self.backendPool = BackendPool(maxIdlePerBackend: maxIdlePerBackend)
        self.accessLog = accessLog.map { LoopAccessLog(writer: $0, eventLoop: eventLoop) }
        var seed = SystemRandomNumberGenerator()
        self.random = SplitMix64(seed: seed.next())
    }

    /// The current routing table: one atomic load when nothing changed.
    func table() -> RoutingTable {
        let generation = registry.generation
        if generation != cachedGeneration {
            cachedTable = registry.snapshot()
            cachedGeneration = generation
            cachedHost = nil
        }
        return cachedTable
    }

    private var cachedHost: String?
    private var cachedHostPools: [RoutingTable.Pool]?

    /// `RoutingTable.lookup` with the last host's pools remembered (most connections ask for one host).
    func lookup(host: String, path: String) -> RoutingTable.Pool? {
        let table = self.table()
        if host != cachedHost {
            cachedHost = host
            cachedHostPools = table.pools(forHost: host)
        }
        guard let pools = cachedHostPools else { return nil }
        return RoutingTable.longestMatch(in: pools, path: path)
    }

    func nextRandom() -> UInt64 { random.next() }

    /// A new request id in UUID v4 text form (lower case, like gorouter's).
    func nextRequestID() -> String {
        let high = random.next()
        let low = random.next()
        return String(unsafeUninitializedCapacity: 36) { buffer in
            let hex: StaticString = "0123456789abcdef"
            var position = 0
            func put(_ value: UInt64, nibbles: Int, shift: Int) {
                for index in 0..<nibbles {
                    let nibble = Int((value >> UInt64(shift - 4 * index)) & 0xF)
                    buffer[position] = hex.utf8Start[nibble]
                    position += 1
                }
            }
            func dash() {
                buffer[position] = UInt8(ascii: "-")
                position += 1
            }
            // Version 4 and variant bits.
            let versioned = (high & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000
            let varianted = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
            put(versioned, nibbles: 8, shift: 60)
            dash()
            put(versioned, nibbles: 4, shift: 28)
            dash()
            put(versioned, nibbles: 4, shift: 12)
            dash()
            put(varianted, nibbles: 4, shift: 60)
            dash()
            put(varianted, nibbles: 12, shift: 44)
            return position
        }
    }
}
