import CloudFoundry
import NIOCore
import Synchronization

/// Live counters of one backend, shared by every event loop without locks. Kept across refreshes of
/// the same registration, so that in-flight counts survive a re-register.
public final class EndpointStats: Sendable {
    /// Requests sent and waiting for their response head (gorouter's "connections" for max_conns and
    /// least-connection).
    let inFlightCount = Atomic<Int>(0)
    let requestsCount = Atomic<Int>(0)
    let tunnelsCount = Atomic<Int>(0)
    /// `NIODeadline.uptimeNanoseconds` until which the balancer skips this endpoint; 0 when not failed.
    let failedUntilNanos = Atomic<UInt64>(0)

    public init() {}

    public var inFlight: Int { inFlightCount.load(ordering: .relaxed) }
    public var requestsTotal: Int { requestsCount.load(ordering: .relaxed) }
    public var openTunnels: Int { tunnelsCount.load(ordering: .relaxed) }

    public var failedUntil: NIODeadline? {
        let value = failedUntilNanos.load(ordering: .relaxed)
        return value == 0 ? nil : .uptimeNanoseconds(value)
    }

    func markFailed(until deadline: NIODeadline) {
        failedUntilNanos.store(max(deadline.uptimeNanoseconds, 1), ordering: .relaxed)
    }

    func clearFailure() {
        failedUntilNanos.store(0, ordering: .relaxed)
    }

    func requestStarted() {
        inFlightCount.add(1, ordering: .relaxed)
        requestsCount.add(1, ordering: .relaxed)
    }

    func responseHeadReceived() {
        inFlightCount.subtract(1, ordering: .relaxed)
    }

    func tunnelOpened() { tunnelsCount.add(1, ordering: .relaxed) }
    func tunnelClosed() { tunnelsCount.subtract(1, ordering: .relaxed) }
}

/// One registered backend instance in one route's pool, as gorouter keeps it. Immutable: a refresh
/// replaces it (keeping `stats`); a class so that passing it around costs one reference count.
public final class Endpoint: Sendable {
    public let host: String
    public let port: Int
    /// `host:port`, the endpoint's identity inside a pool (gorouter's CanonicalAddr).
    public let address: String
    public let appID: String
    /// The instance GUID; what `__VCAP_ID__` holds. Empty when the registration had none.
    public let instanceID: String
    public let instanceIndex: String
    public let tags: [String: String]
    public let staleThreshold: TimeAmount
    public let loadBalancing: LoadBalancingAlgorithm?
    /// Monotonic time of the last register message (pruning).
    public let updatedAt: NIODeadline
    /// Wall-clock seconds since 1970 of the last register message (the admin listing).
    public let updatedAtWallClock: Double
    /// From the routes file: never pruned.
    public let isStatic: Bool
    /// Resolved once at registration; nil when the host could not be resolved (dialling then fails).
    public let socketAddress: SocketAddress?
    public let stats: EndpointStats
    /// The value of `X-CF-InstanceID`: the instance GUID, or the address when there is none (gorouter).
    public let instanceHeaderValue: String

    public init(
        host: String,
        port: Int,
        appID: String = "",
        instanceID: String = "",
        instanceIndex: String = "",
        tags: [String: String] = [:],
        staleThreshold: TimeAmount = .seconds(120),
        loadBalancing: LoadBalancingAlgorithm? = nil,
        updatedAt: NIODeadline = .uptimeNanoseconds(0),
        updatedAtWallClock: Double = 0,
        isStatic: Bool = false,
        resolvedAddress: SocketAddress? = nil,
        stats: EndpointStats = EndpointStats()
    ) {
        self.host = host
        self.port = port
        self.address = "\(host):\(port)"
        self.appID = appID
        self.instanceID = instanceID
        self.instanceIndex = instanceIndex
        self.tags = tags
        self.staleThreshold = staleThreshold
        self.loadBalancing = loadBalancing
        self.updatedAt = updatedAt
        self.updatedAtWallClock = updatedAtWallClock
        self.isStatic = isStatic
        self.socketAddress = (try? SocketAddress(ipAddress: host, port: port)) ?? resolvedAddress
        self.stats = stats
        self.instanceHeaderValue = instanceID.isEmpty ? address : instanceID
    }
}
