import CloudFoundry
import NIOCore
import Synchronization

/// The round-robin cursor of one route: one per route, shared by every event loop, random start.
public final class PoolCursor: Sendable {
    private let value: Atomic<Int>

    public init(start: Int = Int.random(in: 0..<Int.max)) {
        value = Atomic(start)
    }

    /// The next starting index for a pool of `count` endpoints.
    public func next(count: Int) -> Int {
        guard count > 0 else { return 0 }
        let raw = value.wrappingAdd(1, ordering: .relaxed).oldValue
        return Int(UInt(bitPattern: raw) % UInt(count))
    }
}

/// gorouter's routing table as a value: routes (host + context path) each with a pool of endpoints.
/// Fed by register / unregister messages, pruned when registrations go stale. Pure: time is passed in.
/// A route whose last endpoint leaves is deleted at once (so it answers 404), unless
/// `emptyPoolTimeout` keeps it, empty, as gorouter's `empty_pool_response_code_503` with
/// `empty_pool_timeout` do: the router answers 503 `no_endpoints` for it, and the first prune more
/// than `emptyPoolTimeout` after its last change deletes it.
public struct RoutingTable: Sendable {
    /// One route and its endpoints.
    public struct Pool: Sendable {
        public let uri: RouteURI
        public internal(set) var endpoints: [Endpoint]
        /// The algorithm the route's registrations asked for (`options.loadbalancing`); nil means the
        /// router's default.
        public internal(set) var loadBalancing: LoadBalancingAlgorithm?
        public let cursor: PoolCursor
        /// When an endpoint was last added, refreshed or removed (gorouter's pool `updatedAt`): how
        /// long an empty route has been empty.
        public internal(set) var updatedAt: NIODeadline

        init(uri: RouteURI, now: NIODeadline) {
            self.uri = uri
            self.endpoints = []
            self.cursor = PoolCursor()
            self.updatedAt = now
        }

        /// The endpoint with this instance GUID.
        public func index(ofInstance instanceID: some StringProtocol) -> Int? {
            guard !instanceID.isEmpty else { return nil }
            return endpoints.firstIndex { $0.instanceID == instanceID }
        }
    }

    /// What a register message changed.
    public enum RegisterOutcome: Sendable, Equatable {
        case added
        case refreshed
    }

    /// An endpoint removed by `prune`.
    public struct Pruned: Sendable {
        public var uri: RouteURI
        public var endpoint: Endpoint
    }

    /// host -> pools, longest context path first.
    private var hosts: [String: [Pool]] = [:]
    /// How long a route without endpoints is kept (answering 503); nil deletes it at once (404).
    public let emptyPoolTimeout: TimeAmount?

    public init(emptyPoolTimeout: TimeAmount? = nil) {
        self.emptyPoolTimeout = emptyPoolTimeout
    }

    public var isEmpty: Bool { hosts.isEmpty }

    /// Every route, sorted by URI, for listings.
    public var pools: [Pool] {
        hosts.values.flatMap { $0 }.sorted { $0.uri.description < $1.uri.description }
    }

    /// The routes kept with no endpoint (`emptyPoolTimeout`), by URI.
    public var emptyRoutes: Set<String> {
        Set(hosts.values.joined().filter(\.endpoints.isEmpty).map(\.uri.description))
    }

    public var endpointCount: Int { hosts.values.reduce(0) { $0 + $1.reduce(0) { $0 + $1.endpoints.count } } }

    /// Adds or refreshes the endpoint `registration` describes on each of its URIs. `defaultStaleThreshold`
    /// applies when the message has none, or a larger one (gorouter caps it at the router's setting).
    @discardableResult
    public mutating func register(
        _ registration: RouteRegistration,
        now: NIODeadline,
        wallClock: Double,
        defaultStaleThreshold: TimeAmount = .seconds(120),
        isStatic: Bool = false,
        resolvedAddress: SocketAddress? = nil
    ) -> [RegisterOutcome] {
        let threshold: TimeAmount
        // Over the proxy's own threshold: capped to it, as in gorouter (compared in seconds, which cannot overflow).
        if let seconds = registration.staleThresholdInSeconds, seconds > 0, Int64(seconds) <= defaultStaleThreshold.nanoseconds / 1_000_000_000 {
            threshold = .seconds(Int64(seconds))
        } else {
            threshold = defaultStaleThreshold
        }
        let algorithm = registration.options?.loadBalancing.flatMap(LoadBalancingAlgorithm.init(rawValue:))
        var outcomes: [RegisterOutcome] = []
        let address = "\(registration.host):\(registration.port)"
        let instanceID = registration.privateInstanceID ?? ""
        // One set of counters per instance, shared by all its routes (gorouter registers the same
        // endpoint object on every URI), kept when the same instance refreshes; a new instance on the
        // same address starts clean.
        let stats = existingStats(address: address, instanceID: instanceID) ?? EndpointStats()
        for uriText in Set(registration.uris) {
            let uri = RouteURI(uriText)
            guard !uri.host.isEmpty else { continue }
            var pools = hosts[uri.host] ?? []
            let poolIndex: Int
            if let existing = pools.firstIndex(where: { $0.uri.contextPath == uri.contextPath }) {
                poolIndex = existing
            } else {
                pools.append(Pool(uri: uri, now: now))
                poolIndex = pools.count - 1
            }
            var pool = pools[poolIndex]
            let existingIndex = pool.endpoints.firstIndex { $0.address == address }
            let endpoint = Endpoint(
                host: registration.host,
                port: registration.port,
                appID: registration.app ?? "",
                instanceID: instanceID,
                instanceIndex: registration.privateInstanceIndex ?? "",
                tags: registration.tags ?? [:],
                staleThreshold: threshold,
                loadBalancing: algorithm,
                updatedAt: now,
                updatedAtWallClock: wallClock,
                isStatic: isStatic,
                resolvedAddress: resolvedAddress,
                stats: stats
            )
            if let existingIndex {
                pool.endpoints[existingIndex] = endpoint
                outcomes.append(.refreshed)
            } else {
                pool.endpoints.append(endpoint)
                outcomes.append(.added)
            }
            if let algorithm { pool.loadBalancing = algorithm }
            pool.updatedAt = now
            pools[poolIndex] = pool
            pools.sort { $0.uri.contextPath.utf8.count > $1.uri.contextPath.utf8.count }
            hosts[uri.host] = pools
        }
        return outcomes
    }

    private func existingStats(address: String, instanceID: String) -> EndpointStats? {
        for pools in hosts.values {
            for pool in pools {
                if let endpoint = pool.endpoints.first(where: { $0.address == address && $0.instanceID == instanceID }) {
                    return endpoint.stats
                }
            }
        }
        return nil
    }

    /// Removes the endpoint at `registration.host:port` from each of its URIs; a route left with no
    /// endpoint is deleted at once, or kept empty per `emptyPoolTimeout`. When the message names an
    /// instance GUID, only that instance is removed (a late unregister of a crashed instance must not
    /// remove its successor on the same port). Returns how many endpoints were removed.
    @discardableResult
    public mutating func unregister(_ registration: RouteRegistration, now: NIODeadline) -> Int {
        let address = "\(registration.host):\(registration.port)"
        var removed = 0
        for uriText in Set(registration.uris) {
            let uri = RouteURI(uriText)
            guard var pools = hosts[uri.host], let poolIndex = pools.firstIndex(where: { $0.uri.contextPath == uri.contextPath }) else {
                continue
            }
            let before = pools[poolIndex].endpoints.count
            pools[poolIndex].endpoints.removeAll { endpoint in
                guard endpoint.address == address else { return false }
                if let id = registration.privateInstanceID, !id.isEmpty, !endpoint.instanceID.isEmpty, id != endpoint.instanceID {
                    return false
                }
                return true
            }
            let removedHere = before - pools[poolIndex].endpoints.count
            removed += removedHere
            if removedHere > 0 { pools[poolIndex].updatedAt = now }
            if pools[poolIndex].endpoints.isEmpty && !keepsEmpty(pools[poolIndex], now: now) { pools.remove(at: poolIndex) }
            hosts[uri.host] = pools.isEmpty ? nil : pools
        }
        return removed
    }

    /// Removes endpoints whose last registration is older than their stale threshold, and the empty
    /// routes `emptyPoolTimeout` no longer keeps.
    @discardableResult
    public mutating func prune(now: NIODeadline) -> [Pruned] {
        var pruned: [Pruned] = []
        for (host, pools) in hosts {
            var kept: [Pool] = []
            for var pool in pools {
                let before = pool.endpoints.count
                pool.endpoints.removeAll { endpoint in
                    guard !endpoint.isStatic, endpoint.updatedAt + endpoint.staleThreshold < now else { return false }
                    pruned.append(Pruned(uri: pool.uri, endpoint: endpoint))
                    return true
                }
                if pool.endpoints.count != before { pool.updatedAt = now }
                if !pool.endpoints.isEmpty || keepsEmpty(pool, now: now) { kept.append(pool) }
            }
            hosts[host] = kept.isEmpty ? nil : kept
        }
        return pruned
    }

    /// Whether an empty route stays: as gorouter, while no more than `emptyPoolTimeout` has passed
    /// since its last change (so an unregister or prune that empties it keeps it; a later prune
    /// deletes it).
    private func keepsEmpty(_ pool: Pool, now: NIODeadline) -> Bool {
        guard let emptyPoolTimeout, emptyPoolTimeout.nanoseconds > 0 else { return false }
        return now - pool.updatedAt <= emptyPoolTimeout
    }

    /// The route for a request: the host (without port, any case) and the longest context path that is
    /// a prefix of `path` on a segment boundary (`/app` matches `/app` and `/app/x`, not `/apple`).
    /// The query string, if any, is ignored.
    public func lookup(host: some StringProtocol, path: some StringProtocol) -> Pool? {
        guard let pools = pools(forHost: host) else { return nil }
        return Self.longestMatch(in: pools, path: path)
    }

    /// The first pool (longest context path first) whose context path matches `path`.
    static func longestMatch(in pools: [Pool], path: some StringProtocol) -> Pool? {
        for pool in pools where contextPath(pool.uri.contextPath, matches: path) {
            return pool
        }
        return nil
    }

    /// The pools of a host (any case, port ignored), longest context path first.
    func pools(forHost host: some StringProtocol) -> [Pool]? {
        let bare = Self.hostWithoutPort(host)
        if let pools = hosts[String(bare)] { return pools }
        let lower = bare.lowercased()
        return hosts[lower]
    }

    /// `host` without a `:port` suffix (IPv6 literals in brackets keep their colons).
    static func hostWithoutPort<S: StringProtocol>(_ host: S) -> S.SubSequence {
        let utf8 = host.utf8
        if utf8.first == UInt8(ascii: "[") {
            if let close = host.firstIndex(of: "]") { return host[host.startIndex...close] }
            return host[...]
        }
        if let colon = host.lastIndex(of: ":") { return host[..<colon] }
        return host[...]
    }

    static func contextPath(_ contextPath: String, matches requestPath: some StringProtocol) -> Bool {
        if contextPath == "/" { return true }
        let path = requestPath.utf8
        let prefix = contextPath.utf8
        var pathIndex = path.startIndex
        for byte in prefix {
            guard pathIndex != path.endIndex else { return false }
            guard asciiLower(path[pathIndex]) == asciiLower(byte) else { return false }
            pathIndex = path.index(after: pathIndex)
        }
        guard pathIndex != path.endIndex else { return true }
        let next = path[pathIndex]
        return next == UInt8(ascii: "/") || next == UInt8(ascii: "?")
    }
}

@inline(__always)
func asciiLower(_ byte: UInt8) -> UInt8 {
    byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
}
