import CloudFoundry
import Logging
import NIOCore
import Synchronization

/// The routing table shared by the admin API (writers) and every event loop (readers). Readers keep
/// their own copy and refresh it only when `generation` moved: one atomic load per request, no lock.
public final class RouteRegistry: Sendable {
    private let table: Mutex<RoutingTable>
    private let generationCounter = Atomic<Int>(1)
    public let defaultStaleThreshold: TimeAmount
    private let logger: Logger
    /// Every instance GUID registered since the start, up to `InstanceHistory.defaultLimit`: tells an
    /// instance that is gone from one this router never had (`InstanceHistory`).
    private let history = Mutex(InstanceHistory())
    /// When this router started, for messages about what it has seen since.
    public let startedAt = ContinuousClock.now

    /// `emptyPoolTimeout`: how long a route whose last instance left is kept, answering 503
    /// (gorouter's `empty_pool_response_code_503` with `empty_pool_timeout`); nil deletes it at once.
    public init(
        defaultStaleThreshold: TimeAmount = .seconds(120), emptyPoolTimeout: TimeAmount? = nil,
        logger: Logger = Logger(label: "sticky-proxy.routes")
    ) {
        self.defaultStaleThreshold = defaultStaleThreshold
        self.table = Mutex(RoutingTable(emptyPoolTimeout: emptyPoolTimeout))
        self.logger = logger
    }

    /// Whether an instance with this GUID was ever registered since the start: nil when too many
    /// instances came and went to tell.
    public func everRegistered(instanceID: String) -> Bool? {
        history.withLock { $0.contains(instanceID) }
    }

    /// Changes on every modification.
    public var generation: Int { generationCounter.load(ordering: .acquiring) }

    public func snapshot() -> RoutingTable {
        table.withLock { $0 }
    }

    /// Checks a register/unregister message; nil when it is usable, else what is wrong with it.
    public static func problem(with registration: RouteRegistration) -> String? {
        if registration.host.isEmpty { return "\"host\" is empty: give the instance's IP address (for example 127.0.0.1)" }
        if registration.host.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.properties.generalCategory == .control }) {
            return "\"host\" \(String(reflecting: registration.host)) has spaces or control characters: give the instance's IP address or host name"
        }
        if !(1...65535).contains(registration.port) { return "\"port\" \(registration.port) is not a TCP port (1-65535)" }
        if registration.uris.isEmpty { return "\"uris\" is empty: give at least one route, for example \"localhost\"" }
        if let bad = registration.uris.first(where: { RouteURI($0).host.isEmpty }) { return "route \"\(bad)\" has no host" }
        if let bad = registration.uris.first(where: {
            $0.unicodeScalars.contains { $0.properties.isWhitespace || $0.properties.generalCategory == .control }
        }) {
            return
                "route \(String(reflecting: bad)) has spaces or control characters: give a host name and an optional path, for example \"localhost/api\""
        }
        if let bad = registration.uris.first(where: { RouteURI($0).host.hasPrefix("*.") }) {
            return "route \"\(bad)\" is a wildcard route, which sticky-proxy does not implement: register each host name instead"
        }
        if let bad = registration.uris.first(where: { !RouteURI($0).hasValidHost }) {
            return "route \"\(bad)\" does not start with a host name: use letters, digits, '-', '_' and '.', or an IP address"
        }
        if let algorithm = registration.options?.loadBalancing, !algorithm.isEmpty, LoadBalancingAlgorithm(rawValue: algorithm) == nil {
            return "\"options.loadbalancing\" is \"\(algorithm)\": use round-robin or least-connection"
        }
        return nil
    }

    /// Adds or refreshes an endpoint. May resolve the host name (blocking): call it off the event loops.
    public func register(_ registration: RouteRegistration, isStatic: Bool = false, now: NIODeadline = .now(), wallClock: Double? = nil) {
        var resolved: SocketAddress?
        if (try? SocketAddress(ipAddress: registration.host, port: registration.port)) == nil {
            resolved = try? SocketAddress.makeAddressResolvingHost(registration.host, port: registration.port)
            if resolved == nil {
                logger.warning(
                    "cannot resolve the host of a registered instance; requests to it will fail",
                    metadata: ["host": "\(registration.host)", "instance": "\(registration.privateInstanceID ?? "-")"]
                )
            }
        }
        let wall = wallClock ?? WallClockTime.now().secondsSince1970
        let outcomes = table.withLock { table in
            table.register(
                registration,
                now: now,
                wallClock: wall,
                defaultStaleThreshold: defaultStaleThreshold,
                isStatic: isStatic,
                resolvedAddress: resolved
            )
        }
        generationCounter.add(1, ordering: .releasing)
        if let instanceID = registration.privateInstanceID, !instanceID.isEmpty {
            history.withLock { $0.insert(instanceID) }
        }
        if outcomes.contains(.added) {
            logger.info(
                "endpoint registered",
                metadata: [
                    "address": "\(registration.host):\(registration.port)", "uris": "\(registration.uris.joined(separator: ","))",
                    "instance": "\(registration.privateInstanceID ?? "-")", "index": "\(registration.privateInstanceIndex ?? "-")",
                ]
            )
        }
    }

    /// Removes an endpoint; returns how many route entries were removed.
    @discardableResult
    public func unregister(_ registration: RouteRegistration, now: NIODeadline = .now()) -> Int {
        let removed = changeTable { $0.unregister(registration, now: now) }
        generationCounter.add(1, ordering: .releasing)
        logger.info(
            "endpoint unregistered",
            metadata: [
                "address": "\(registration.host):\(registration.port)", "uris": "\(registration.uris.joined(separator: ","))",
                "instance": "\(registration.privateInstanceID ?? "-")", "removed": "\(removed)",
            ]
        )
        return removed
    }

    /// Runs `change` on the table. With empty_pool_timeout, says which routes it left with no endpoint
    /// (kept: 503) and which such routes it deleted (404 from now on), whether an unregister or a prune did.
    private func changeTable<Result: Sendable>(_ change: (inout RoutingTable) -> Result) -> Result {
        let (result, kept, deleted, timeout) = table.withLock { table -> (Result, [String], [String], TimeAmount?) in
            guard let timeout = table.emptyPoolTimeout else { return (change(&table), [], [], nil) }
            let before = table.emptyRoutes
            let result = change(&table)
            let after = table.emptyRoutes
            return (result, after.subtracting(before).sorted(), before.subtracting(after).sorted(), timeout)
        }
        if let timeout, !kept.isEmpty {
            logger.notice(
                "route kept with no instance (empty_pool_timeout): requests for it get 503 no_endpoints until an instance registers, or 404 unknown_route once it has been empty for longer than \(timeout.durationText) at a prune",
                metadata: ["uris": "\(kept.joined(separator: ","))"]
            )
        }
        for uri in deleted {
            logger.notice(
                "route deleted after empty_pool_timeout with no instance: requests for it now get 404 unknown_route", metadata: ["uri": "\(uri)"])
        }
        if !deleted.isEmpty { generationCounter.add(1, ordering: .releasing) }
        return result
    }

    /// Drops registrations older than their stale threshold.
    @discardableResult
    public func prune(now: NIODeadline = .now()) -> [RoutingTable.Pruned] {
        let pruned = changeTable { $0.prune(now: now) }
        if !pruned.isEmpty {
            generationCounter.add(1, ordering: .releasing)
            for item in pruned {
                logger.warning(
                    "pruned a stale endpoint: no register message within its stale threshold",
                    metadata: [
                        "uri": "\(item.uri)", "address": "\(item.endpoint.address)", "instance": "\(item.endpoint.instanceID)",
                        "stale_threshold": "\(item.endpoint.staleThreshold.durationText)",
                    ]
                )
            }
        }
        return pruned
    }
}

/// The instance GUIDs a router has had, bounded: past `limit` distinct GUIDs it stops remembering and
/// answers "cannot tell" rather than grow without end (a cluster restarting an instance every second
/// for hours). Pure.
public struct InstanceHistory: Sendable {
    public static let defaultLimit = 10_000
    private var seen: Set<String> = []
    private var overflowed = false
    public let limit: Int

    public init(limit: Int = Self.defaultLimit) {
        self.limit = limit
    }

    public mutating func insert(_ instanceID: String) {
        guard !overflowed, !seen.contains(instanceID) else { return }
        if seen.count >= limit {
            overflowed = true
            seen = []
        } else {
            seen.insert(instanceID)
        }
    }

    /// True when seen, false when never seen, nil once there were too many to remember.
    public func contains(_ instanceID: String) -> Bool? {
        overflowed ? nil : seen.contains(instanceID)
    }
}
