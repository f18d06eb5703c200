import CloudFoundry
import NIOCore
import Testing

@testable import StickyProxy

@Suite("Routing table")
struct RoutingTableTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    func registration(port: Int, uris: [String] = ["localhost"], id: String? = nil, index: String = "0", stale: Int? = 120) -> RouteRegistration {
        RouteRegistration(
            host: "127.0.0.1", port: port, uris: uris, app: "app-guid", privateInstanceID: id ?? "instance-\(port)",
            privateInstanceIndex: index, staleThresholdInSeconds: stale)
    }

    @Test func registerAddsAnEndpointToEachURI() {
        var table = RoutingTable()
        let outcomes = table.register(registration(port: 9001, uris: ["localhost", "127.0.0.1"]), now: t0, wallClock: 0)
        #expect(outcomes == [.added, .added])
        #expect(table.lookup(host: "localhost", path: "/")?.endpoints.map(\.address) == ["127.0.0.1:9001"])
        #expect(table.lookup(host: "127.0.0.1", path: "/x")?.endpoints.count == 1)
        #expect(table.endpointCount == 2)
    }

    @Test func reRegisteringRefreshesAndKeepsTheCounters() {
        var table = RoutingTable()
        table.register(registration(port: 9001), now: t0, wallClock: 0)
        let stats = table.lookup(host: "localhost", path: "/")!.endpoints[0].stats
        stats.requestStarted()
        let outcomes = table.register(registration(port: 9001), now: t0 + .seconds(20), wallClock: 20)
        #expect(outcomes == [.refreshed])
        let endpoint = table.lookup(host: "localhost", path: "/")!.endpoints[0]
        #expect(endpoint.stats === stats)
        #expect(endpoint.updatedAt == t0 + .seconds(20))
    }

    /// A retry chooses from the route as it is now: the tried endpoints are found again in a later
    /// snapshot by identity, an instance registered meanwhile is a candidate, one unregistered is not.
    @Test func triedEndpointsCarryOverToTheRouteAsItIsAtARetry() {
        var table = RoutingTable()
        table.register(registration(port: 9001), now: t0, wallClock: 0)
        table.register(registration(port: 9002), now: t0, wallClock: 0)
        let before = table.lookup(host: "localhost", path: "/")!.endpoints
        var tried = TriedEndpoints()
        tried.insert(before.firstIndex { $0.port == 9002 }!)
        // Meanwhile: 9003 registered, 9001 unregistered, 9002 refreshed (a new Endpoint, the same counters).
        table.register(registration(port: 9003), now: t0 + .seconds(1), wallClock: 1)
        table.unregister(registration(port: 9001), now: t0)
        table.register(registration(port: 9002), now: t0 + .seconds(2), wallClock: 2)
        let now = table.lookup(host: "localhost", path: "/")!.endpoints
        #expect(now.map(\.port).sorted() == [9002, 9003])
        let carried = TriedEndpoints(tried, of: before, in: now)
        #expect(carried.count == 1)
        #expect(now.indices.filter(carried.contains).map { now[$0].port } == [9002])
        // Nothing tried, or the tried endpoint gone: nothing carried.
        #expect(TriedEndpoints(TriedEndpoints(), of: before, in: now).count == 0)
        table.unregister(registration(port: 9002), now: t0)
        #expect(TriedEndpoints(tried, of: before, in: table.lookup(host: "localhost", path: "/")!.endpoints).count == 0)
    }

    @Test func aNewInstanceOnTheSameAddressStartsWithFreshCounters() {
        var table = RoutingTable()
        table.register(registration(port: 9001, id: "old"), now: t0, wallClock: 0)
        let old = table.lookup(host: "localhost", path: "/")!.endpoints[0].stats
        table.register(registration(port: 9001, id: "new"), now: t0, wallClock: 0)
        let endpoints = table.lookup(host: "localhost", path: "/")!.endpoints
        #expect(endpoints.count == 1)
        #expect(endpoints[0].instanceID == "new")
        #expect(endpoints[0].stats !== old)
    }

    @Test func anInstanceSharesItsCountersAcrossRoutes() {
        var table = RoutingTable()
        table.register(registration(port: 9001, uris: ["localhost", "127.0.0.1"]), now: t0, wallClock: 0)
        let a = table.lookup(host: "localhost", path: "/")!.endpoints[0].stats
        let b = table.lookup(host: "127.0.0.1", path: "/")!.endpoints[0].stats
        #expect(a === b)
    }

    @Test func unregisterRemovesTheEndpointAndAnEmptyRouteAtOnce() {
        var table = RoutingTable()
        table.register(registration(port: 9001), now: t0, wallClock: 0)
        table.register(registration(port: 9002), now: t0, wallClock: 0)
        #expect(table.unregister(registration(port: 9001), now: t0) == 1)
        #expect(table.lookup(host: "localhost", path: "/")?.endpoints.map(\.port) == [9002])
        #expect(table.unregister(registration(port: 9002), now: t0) == 1)
        #expect(table.lookup(host: "localhost", path: "/") == nil)
        #expect(table.isEmpty)
    }

    @Test("empty_pool_timeout: a route whose last endpoint left is kept empty, then deleted by the first prune past it")
    func emptyPoolTimeoutKeepsAnEmptyRoute() {
        var table = RoutingTable(emptyPoolTimeout: .seconds(10))
        table.register(registration(port: 9001), now: t0, wallClock: 0)
        table.register(registration(port: 9002, stale: 30), now: t0, wallClock: 0)
        #expect(table.unregister(registration(port: 9001), now: t0 + .seconds(5)) == 1)
        // The last endpoint pruned: the route stays, empty, from that moment (t0 + 31 s).
        #expect(table.prune(now: t0 + .seconds(31)).map(\.endpoint.port) == [9002])
        #expect(table.lookup(host: "localhost", path: "/")?.endpoints.isEmpty == true)
        #expect(!table.isEmpty && table.endpointCount == 0)
        #expect(table.emptyRoutes == ["localhost"])
        #expect(table.prune(now: t0 + .seconds(41)).isEmpty)
        #expect(table.lookup(host: "localhost", path: "/") != nil, "kept for 10 s, not less")
        // An instance registering meanwhile fills it again, and it is not deleted while it has one.
        table.register(registration(port: 9003), now: t0 + .seconds(41), wallClock: 0)
        #expect(table.prune(now: t0 + .seconds(100)).isEmpty)
        #expect(table.lookup(host: "localhost", path: "/")?.endpoints.map(\.port) == [9003])
        // Emptied by an unregister: kept at once (its last change is now), deleted past 10 s.
        #expect(table.unregister(registration(port: 9003), now: t0 + .seconds(110)) == 1)
        #expect(table.lookup(host: "localhost", path: "/")?.endpoints.isEmpty == true)
        _ = table.prune(now: t0 + .seconds(120))
        #expect(table.lookup(host: "localhost", path: "/") != nil)
        _ = table.prune(now: t0 + .seconds(121))
        #expect(table.lookup(host: "localhost", path: "/") == nil)
        #expect(table.isEmpty)
        // Without the timeout (or with 0) the route goes with its last endpoint, as by default.
        var zero = RoutingTable(emptyPoolTimeout: .zero)
        zero.register(registration(port: 9001), now: t0, wallClock: 0)
        zero.unregister(registration(port: 9001), now: t0)
        #expect(zero.isEmpty)
    }

    @Test func unregisterOfAnotherInstanceOnTheSameAddressIsIgnored() {
        var table = RoutingTable()
        table.register(registration(port: 9001, id: "successor"), now: t0, wallClock: 0)
        #expect(table.unregister(registration(port: 9001, id: "crashed-predecessor"), now: t0) == 0)
        #expect(table.lookup(host: "localhost", path: "/")?.endpoints.count == 1)
    }

    @Test func pruneDropsEndpointsPastTheirStaleThreshold() {
        var table = RoutingTable()
        table.register(registration(port: 9001), now: t0, wallClock: 0)
        table.register(registration(port: 9002, stale: 30), now: t0, wallClock: 0)
        #expect(table.prune(now: t0 + .seconds(30)).isEmpty)
        #expect(table.prune(now: t0 + .seconds(31)).map(\.endpoint.port) == [9002])
        #expect(table.prune(now: t0 + .seconds(120)).isEmpty)
        #expect(table.prune(now: t0 + .seconds(121)).map(\.endpoint.port) == [9001])
        #expect(table.isEmpty)
    }

    @Test func staleThresholdIsCappedAtTheRouterDefault() {
        var table = RoutingTable()
        table.register(registration(port: 9001, stale: 600), now: t0, wallClock: 0, defaultStaleThreshold: .seconds(120))
        table.register(registration(port: 9002, stale: nil), now: t0, wallClock: 0, defaultStaleThreshold: .seconds(120))
        // Seconds that overflow once turned into nanoseconds: capped too, not a crash.
        table.register(registration(port: 9003, stale: 10_000_000_000), now: t0, wallClock: 0, defaultStaleThreshold: .seconds(120))
        table.register(registration(port: 9004, stale: Int.max), now: t0, wallClock: 0, defaultStaleThreshold: .seconds(120))
        table.register(registration(port: 9005, stale: 1), now: t0, wallClock: 0, defaultStaleThreshold: .milliseconds(1500))
        let thresholds = table.lookup(host: "localhost", path: "/")!.endpoints.map(\.staleThreshold)
        #expect(thresholds == [.seconds(120), .seconds(120), .seconds(120), .seconds(120), .seconds(1)])
    }

    @Test func staticEndpointsAreNeverPruned() {
        var table = RoutingTable()
        table.register(registration(port: 9001), now: t0, wallClock: 0, isStatic: true)
        #expect(table.prune(now: t0 + .hours(24)).isEmpty)
    }

    @Test func lookupIgnoresThePortAndCaseOfTheHost() {
        var table = RoutingTable()
        table.register(registration(port: 9001), now: t0, wallClock: 0)
        #expect(table.lookup(host: "localhost:8080", path: "/") != nil)
        #expect(table.lookup(host: "LocalHost", path: "/") != nil)
        #expect(table.lookup(host: "other", path: "/") == nil)
    }

    @Test func lookupTakesTheLongestContextPathOnSegmentBoundaries() {
        var table = RoutingTable()
        table.register(registration(port: 1, uris: ["app.local"]), now: t0, wallClock: 0)
        table.register(registration(port: 2, uris: ["app.local/api"]), now: t0, wallClock: 0)
        table.register(registration(port: 3, uris: ["app.local/api/v2/"]), now: t0, wallClock: 0)
        func port(_ path: String) -> Int? { table.lookup(host: "app.local", path: path)?.endpoints.first?.port }
        #expect(port("/") == 1)
        #expect(port("/api") == 2)
        #expect(port("/API/users") == 2)
        #expect(port("/api?x=1") == 2)
        #expect(port("/apiary") == 1)
        #expect(port("/api/v2") == 3)
        #expect(port("/api/v2/x") == 3)
        #expect(table.lookup(host: "app.local", path: "/api")?.uri.contextPath == "/api")
    }

    @Test func aRouteCanChooseItsBalancingAlgorithm() {
        var table = RoutingTable()
        var message = registration(port: 9001)
        message.options = .init(loadBalancing: "least-connection")
        table.register(message, now: t0, wallClock: 0)
        #expect(table.lookup(host: "localhost", path: "/")?.loadBalancing == .leastConnection)
    }

    @Test func registryChecksMessages() {
        #expect(RouteRegistry.problem(with: registration(port: 9001)) == nil)
        #expect(RouteRegistry.problem(with: registration(port: 0))?.contains("not a TCP port") == true)
        #expect(RouteRegistry.problem(with: registration(port: 1, uris: []))?.contains("empty") == true)
        for host in ["a b", "10.0.0.1\u{0}", "\t"] {
            var spaced = registration(port: 1)
            spaced.host = host
            #expect(RouteRegistry.problem(with: spaced)?.contains("spaces or control characters") == true, "\(host)")
        }
        var bad = registration(port: 1)
        bad.options = .init(loadBalancing: "random")
        #expect(RouteRegistry.problem(with: bad)?.contains("round-robin or least-connection") == true)
    }

    @Test func poolCursorCyclesThroughEveryIndex() {
        let cursor = PoolCursor(start: Int.max - 1)
        let indices = (0..<6).map { _ in cursor.next(count: 3) }
        #expect(Set(indices) == [0, 1, 2])
        #expect(indices[0] != indices[1])
    }
}
