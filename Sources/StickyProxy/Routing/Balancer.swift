import NIOCore

/// What the balancer needs to know about an endpoint at decision time.
public protocol BalancerEndpoint {
    var instanceID: String { get }
    var inFlight: Int { get }
    var failedUntil: NIODeadline? { get }
}

extension Endpoint: BalancerEndpoint {
    public var inFlight: Int { stats.inFlight }
    public var failedUntil: NIODeadline? { stats.failedUntil }
}

/// The endpoints of a pool already tried by one request (by index in the pool snapshot the request
/// holds). Inline for the first 64 endpoints: no allocation on the hot path.
public struct TriedEndpoints: Sendable, Equatable {
    private var low: UInt64 = 0
    private var high: Set<Int> = []
    public private(set) var count = 0

    public init() {}

    /// The endpoints of `previous` in `tried`, as indices into `current`: the route's endpoints at the
    /// time of a retry. gorouter's retries read the route's pool as it is at each attempt (its
    /// iterator holds the live pool), so an instance registered while the request was in flight is a
    /// candidate and one unregistered meanwhile is not; the ones tried are found again by identity
    /// (their counters, kept across re-registrations), so that every attempt still goes to a distinct
    /// endpoint.
    public init(_ tried: TriedEndpoints, of previous: [Endpoint], in current: [Endpoint]) {
        self.init()
        guard tried.count > 0 else { return }
        let triedStats = Set(previous.indices.filter(tried.contains).map { ObjectIdentifier(previous[$0].stats) })
        for (index, endpoint) in current.enumerated() where triedStats.contains(ObjectIdentifier(endpoint.stats)) {
            insert(index)
        }
    }

    public func contains(_ index: Int) -> Bool {
        index < 64 ? low & (1 << UInt64(index)) != 0 : high.contains(index)
    }

    public mutating func insert(_ index: Int) {
        guard !contains(index) else { return }
        if index < 64 { low |= 1 << UInt64(index) } else { high.insert(index) }
        count += 1
    }
}

/// gorouter's endpoint choice inside one pool: round-robin (skips endpoints at max_conns and, for
/// `retryAfterFailure`, endpoints that failed) or least-connection (fewest in-flight, ties random).
/// Pure: loads, time, the route's cursor and randomness are passed in.
public struct Balancer: Sendable {
    public var algorithm: LoadBalancingAlgorithm
    /// 0: no limit.
    public var maxConnsPerBackend: Int

    public init(algorithm: LoadBalancingAlgorithm, maxConnsPerBackend: Int) {
        self.algorithm = algorithm
        self.maxConnsPerBackend = maxConnsPerBackend
    }

    /// The result of a pick.
    public struct Pick: Sendable, Equatable {
        public var index: Int
        /// Every candidate was marked failed, so the marks were ignored (gorouter then clears them all).
        public var clearedFailures: Bool
    }

    public func isOverloaded(_ endpoint: some BalancerEndpoint) -> Bool {
        maxConnsPerBackend > 0 && endpoint.inFlight >= maxConnsPerBackend
    }

    /// True when every endpoint is at its limit: the route answers 503.
    public func allOverloaded<E: BalancerEndpoint>(_ endpoints: [E]) -> Bool {
        guard maxConnsPerBackend > 0, !endpoints.isEmpty else { return false }
        return endpoints.allSatisfy { isOverloaded($0) }
    }

    /// An endpoint not in `tried`, or nil when none is left. `start` is the route's next round-robin
    /// index; `random` breaks least-connection ties.
    public func pick<E: BalancerEndpoint, R: RandomNumberGenerator>(
        from endpoints: [E],
        excluding tried: TriedEndpoints,
        now: NIODeadline,
        start: Int,
        random: inout R
    ) -> Pick? {
        guard !endpoints.isEmpty else { return nil }
        switch algorithm {
        case .roundRobin:
            return roundRobin(endpoints, tried: tried, now: now, start: start)
        case .leastConnection:
            return leastConnection(endpoints, tried: tried, random: &random).map { Pick(index: $0, clearedFailures: false) }
        }
    }

    private func roundRobin<E: BalancerEndpoint>(_ endpoints: [E], tried: TriedEndpoints, now: NIODeadline, start: Int) -> Pick? {
        let count = endpoints.count
        let first = start % count
        var index = first
        var sawFailedCandidate = false
        repeat {
            let endpoint = endpoints[index]
            if !tried.contains(index) && !isOverloaded(endpoint) {
                if let until = endpoint.failedUntil, until > now {
                    sawFailedCandidate = true
                } else {
                    return Pick(index: index, clearedFailures: false)
                }
            }
            index = index + 1 == count ? 0 : index + 1
        } while index != first
        guard sawFailedCandidate else { return nil }
        // Every candidate is marked failed: gorouter resets the marks and tries them again.
        index = first
        repeat {
            if !tried.contains(index) && !isOverloaded(endpoints[index]) { return Pick(index: index, clearedFailures: true) }
            index = index + 1 == count ? 0 : index + 1
        } while index != first
        return nil
    }

    private func leastConnection<E: BalancerEndpoint, R: RandomNumberGenerator>(_ endpoints: [E], tried: TriedEndpoints, random: inout R) -> Int? {
        var best: Int?
        var bestLoad = Int.max
        var ties = 0
        for index in endpoints.indices where !tried.contains(index) && !isOverloaded(endpoints[index]) {
            let load = endpoints[index].inFlight
            if load < bestLoad {
                best = index
                bestLoad = load
                ties = 1
            } else if load == bestLoad {
                // Reservoir sampling: each of the tied endpoints ends up chosen with equal chance.
                ties += 1
                if random.next(upperBound: UInt(ties)) == 0 { best = index }
            }
        }
        return best
    }
}
