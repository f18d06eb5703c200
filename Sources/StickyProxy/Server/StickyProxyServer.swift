import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// sticky-proxy as a service: the proxy listener, the admin API, the pruning of stale routes, and a
/// graceful drain on shutdown (stop accepting, finish in-flight requests, close tunnels after the drain
/// timeout). Run it in a `ServiceGroup`, or call `start()` and `shutdown()` yourself (tests).
public final class StickyProxyServer: Service, Sendable {
    public let configuration: ProxyConfiguration
    public let registry: RouteRegistry
    public let metrics: ProxyMetrics
    public let feed: DecisionFeed
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var group: MultiThreadedEventLoopGroup?
        var core: ProxyCore?
        var quiesce: ServerQuiescingHelper?
        var proxyChannel: (any Channel)?
        var adminChannel: (any Channel)?
        var adminChildren: [ObjectIdentifier: any Channel] = [:]
        var repeatedTasks: [RepeatedTask] = []
        var accessLog: AccessLogWriter?
        var proxyPort: Int?
        var adminPort: Int?
        var stopped = false
    }

    public init(configuration: ProxyConfiguration, logger: Logger = Logger(label: "sticky-proxy")) {
        self.configuration = configuration
        self.logger = logger
        self.registry = RouteRegistry(
            defaultStaleThreshold: configuration.staleThreshold, emptyPoolTimeout: configuration.keepEmptyRoutesFor, logger: logger)
        self.metrics = ProxyMetrics()
        self.feed = DecisionFeed()
    }

    /// The port the proxy listens on (useful with port 0), once started.
    public var proxyPort: Int? { state.withLock { $0.proxyPort } }
    /// The admin API's port, once started (nil when disabled).
    public var adminPort: Int? { state.withLock { $0.adminPort } }

    /// Told to each client connection the drain timeout closes, so that it does not log the request
    /// it cuts off as the client's doing (499).
    struct DrainTimeoutReached {}

    public enum StartError: Error, CustomStringConvertible {
        case invalidConfiguration([String])
        case cannotListen(what: String, address: String, underlying: any Error)

        public var description: String {
            switch self {
            case .invalidConfiguration(let problems):
                return "invalid configuration:\n  " + problems.joined(separator: "\n  ")
            case .cannotListen(let what, let address, let error):
                if let error = error as? IOError, error.errnoCode == EADDRINUSE {
                    return "cannot listen for \(what) on \(address): the port is already in use. Stop the program using it, or pick another port."
                }
                if let error = error as? IOError, error.errnoCode == EACCES {
                    return "cannot listen for \(what) on \(address): permission denied (ports below 1024 need root). Pick a port above 1024."
                }
                if error is SocketAddressError || (error as? IOError)?.errnoCode == EADDRNOTAVAIL {
                    return
                        "cannot listen for \(what) on \(address): that is not an address of this machine (\(error)). Give --bind an IP address of this machine, such as 127.0.0.1."
                }
                return "cannot listen for \(what) on \(address): \(error)."
            }
        }
    }

    /// Binds the listeners and starts serving. Returns once both accept connections.
    public func start() async throws {
        let problems = configuration.validationErrors()
        guard problems.isEmpty else { throw StartError.invalidConfiguration(problems) }
        ResourceLimits.raiseOpenFileLimit(logger: logger)

        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.eventLoopThreads)
        let eventLoops = Array(group.makeIterator())
        let accessLog = try configuration.accessLog.map(AccessLogWriter.init(destination:))
        let core = ProxyCore(
            configuration: configuration,
            registry: registry,
            metrics: metrics,
            feed: feed,
            accessLog: accessLog,
            eventLoops: eventLoops,
            logger: logger
        )
        // Registering may resolve host names (blocking): on the thread pool, not in this task.
        let registry = self.registry
        let staticRoutes = configuration.staticRoutes
        try await NIOThreadPool.singleton.runIfActive {
            for route in staticRoutes { registry.register(route, isStatic: true) }
        }
        state.withLock {
            $0.group = group
            $0.core = core
            $0.accessLog = accessLog
        }

        let proxyAddress = "\(configuration.bindHost):\(configuration.port)"
        let proxyChannel: any Channel
        do {
            proxyChannel = try await bindProxy(group: group, core: core)
        } catch {
            await Self.settleAndShutDown(group)
            throw StartError.cannotListen(what: "requests", address: proxyAddress, underlying: error)
        }
        var adminChannel: (any Channel)?
        if let adminPort = configuration.adminPort {
            do {
                adminChannel = try await makeAdminBootstrap(group: group).bind(host: "127.0.0.1", port: adminPort).get()
            } catch {
                try? await proxyChannel.close()
                state.withLock { $0.quiesce = nil }
                await Self.settleAndShutDown(group)
                throw StartError.cannotListen(what: "the admin API", address: "127.0.0.1:\(adminPort)", underlying: error)
            }
        }

        var tasks: [RepeatedTask] = []
        if configuration.pruneInterval.nanoseconds > 0 {
            tasks.append(
                group.next().scheduleRepeatedTask(initialDelay: configuration.pruneInterval, delay: configuration.pruneInterval) { _ in
                    registry.prune()
                })
        }
        let idleTimeout = configuration.backendIdleTimeout
        let sweep = TimeAmount.seconds(max(1, min(30, idleTimeout.nanoseconds / 3_000_000_000)))
        for eventLoop in eventLoops {
            tasks.append(
                eventLoop.scheduleRepeatedTask(initialDelay: sweep, delay: sweep) { _ in
                    core.loopContext(for: eventLoop)?.backendPool.closeIdle(olderThan: idleTimeout, now: .now())
                })
        }
        state.withLock {
            $0.proxyChannel = proxyChannel
            $0.adminChannel = adminChannel
            $0.repeatedTasks = tasks
            $0.proxyPort = proxyChannel.localAddress?.port
            $0.adminPort = adminChannel?.localAddress?.port
        }
        logger.info(
            "sticky-proxy listening",
            metadata: [
                "proxy": "http://\(configuration.bindHost):\(proxyChannel.localAddress?.port ?? configuration.port)",
                "admin": "\(adminChannel.map { "http://127.0.0.1:\($0.localAddress?.port ?? 0)" } ?? "disabled")",
                "affinity": "\(configuration.affinity.rawValue)", "balancing": "\(configuration.balancing.rawValue)",
            ]
        )
    }

    /// Binds the proxy listener with a quiescing helper for graceful drain, kept only when the bind
    /// succeeds. (The helper fails a promise on an event loop when it goes away: it must go away while
    /// the loops still run.)
    private func bindProxy(group: MultiThreadedEventLoopGroup, core: ProxyCore) async throws -> any Channel {
        let quiesce = ServerQuiescingHelper(group: group)
        let channel = try await makeProxyBootstrap(group: group, core: core, quiesce: quiesce)
            .bind(host: configuration.bindHost, port: configuration.port).get()
        state.withLock { $0.quiesce = quiesce }
        return channel
    }

    /// After a failed bind, NIO still closes the half-made server channel on its loop: let every loop
    /// run what is queued (twice, for the tasks those tasks queue) before shutting the group down, so
    /// nothing is scheduled on a dead loop.
    private static func settleAndShutDown(_ group: MultiThreadedEventLoopGroup) async {
        for _ in 0..<2 {
            for loop in group.makeIterator() { try? await loop.submit {}.get() }
        }
        try? await group.shutdownGracefully()
    }

    /// ServiceLifecycle entry point: serves until graceful shutdown, then drains.
    public func run() async throws {
        if proxyPort == nil { try await start() }
        try? await gracefulShutdown()
        await shutdown()
    }

    /// Stops accepting, lets in-flight requests finish, closes what is left after the drain timeout.
    public func shutdown() async {
        // The quiescing helper is taken out of the state: it fails a promise on one of the loops when
        // it goes away, so the last reference must go before the loops shut down (below).
        var quiesce: ServerQuiescingHelper?
        let snapshot = state.withLock { state -> State? in
            guard !state.stopped else { return nil }
            state.stopped = true
            quiesce = state.quiesce
            state.quiesce = nil
            return state
        }
        guard let snapshot, let group = snapshot.group, let core = snapshot.core else { return }
        core.draining.store(true, ordering: .relaxed)
        logger.info(
            "draining: no new connections; waiting for in-flight requests",
            metadata: ["drain_timeout": "\(configuration.drainTimeout.durationText)"])
        for task in snapshot.repeatedTasks { task.cancel() }

        let drained = group.next().makePromise(of: Void.self)
        if let quiesce, snapshot.proxyChannel != nil {
            quiesce.initiateShutdown(promise: drained)
        } else {
            drained.succeed()
        }
        let logger = self.logger
        let drainTimeout = configuration.drainTimeout
        let timeout = group.next().scheduleTask(in: drainTimeout) {
            logger.warning(
                "drain timeout reached: closing the client connections still open; a request cut off is logged with status - (no response, or part of one), not as the client's 499",
                metadata: ["drain_timeout": "\(drainTimeout.durationText)"])
            for loop in core.allLoopContexts {
                loop.eventLoop.execute {
                    for channel in loop.clientChannels.values {
                        channel.pipeline.fireUserInboundEventTriggered(DrainTimeoutReached())
                        channel.close(promise: nil)
                    }
                }
            }
        }
        try? await drained.futureResult.get()
        timeout.cancel()
        quiesce = nil

        for loop in core.allLoopContexts {
            try? await loop.eventLoop.submit {
                loop.accessLog?.flush()
                loop.backendPool.closeAll()
            }.get()
        }
        try? await snapshot.adminChannel?.close()
        for channel in state.withLock({ Array($0.adminChildren.values) }) { try? await channel.close() }
        await snapshot.accessLog?.close()
        try? await group.shutdownGracefully()
        logger.info("sticky-proxy stopped")
    }

    // MARK: Pipelines

    private func makeProxyBootstrap(group: MultiThreadedEventLoopGroup, core: ProxyCore, quiesce: ServerQuiescingHelper) -> ServerBootstrap {
        let metrics = self.metrics
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let loop = core.loopContext(for: channel.eventLoop) else { throw ChannelError.ioOnClosedChannel }
                    try channel.pipeline.syncOperations.addHandler(ProxyHandler(core: core, loop: loop))
                    let id = ObjectIdentifier(channel)
                    loop.clientChannels[id] = channel
                    metrics.clientConnectionCount.add(1, ordering: .relaxed)
                    channel.closeFuture.assumeIsolated().whenComplete { _ in
                        loop.clientChannels[id] = nil
                        metrics.clientConnectionCount.subtract(1, ordering: .relaxed)
                    }
                }
            }
    }

    private func makeAdminBootstrap(group: MultiThreadedEventLoopGroup) -> ServerBootstrap {
        let api = AdminAPI(token: configuration.adminToken)
        let registry = self.registry
        let metrics = self.metrics
        let feed = self.feed
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(api: api, registry: registry, metrics: metrics, feed: feed))
                    let id = ObjectIdentifier(channel)
                    self.state.withLock { $0.adminChildren[id] = channel }
                    channel.closeFuture.whenComplete { _ in self.state.withLock { _ = $0.adminChildren.removeValue(forKey: id) } }
                }
            }
    }
}
