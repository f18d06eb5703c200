import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import Metrics
import NIOCore
import Prometheus
import RedisClient
import ServiceLifecycle
import SocketIO

/// One chat-node instance: its Redis connections, the HTTP routes and the Socket.IO server, and the
/// background loops (the single Redis subscription, presence heartbeats). `main(environment:)` is what
/// the executable runs; `start` + `run` let tests run an instance in-process.
public final class ChatNode: Sendable {
    public let configuration: ChatConfiguration
    public let redis: RedisClient
    public let subscriber: RedisSubscriber
    public let metrics: ChatMetrics
    public let assets: ChatAssets
    public let secrets: [String]
    public let logger: Logger
    let keys: ChatKeys

    init(
        configuration: ChatConfiguration, redis: RedisClient, subscriber: RedisSubscriber, metrics: ChatMetrics, assets: ChatAssets,
        secrets: [String], logger: Logger
    ) {
        self.configuration = configuration
        self.redis = redis
        self.subscriber = subscriber
        self.metrics = metrics
        self.assets = assets
        self.secrets = secrets
        self.logger = logger
        self.keys = ChatKeys(prefix: configuration.chatKeyPrefix)
        if configuration.fanout == .local {
            logger.warning(
                "FANOUT=local: messages, history and the online list stay on this instance (keys \(configuration.chatKeyPrefix)*). Users on other instances never see them: the split brain of an in-process pub/sub, reproduced for teaching; use redis (the default) for anything real."
            )
        }
    }

    /// What `chat-node --help` prints after the options.
    public static var helpText: String {
        let width = ChatConfiguration.variables.map(\.name.count).max() ?? 0
        let lines = ChatConfiguration.variables.map { variable in
            "  " + variable.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + variable.meaning
        }
        return """
            Configuration comes from the environment, as on Cloud Foundry or Kubernetes:
            \(lines.joined(separator: "\n"))

            Endpoints: / (login, chat page), /health (200, or 503 when Redis is down),
            /metrics (Prometheus), /socket.io/ (Socket.IO v5), /socket.io/socket.io.js.

            Exit codes: 0 stopped cleanly, 2 invalid configuration, 3 page files
            missing, 4 Redis unreachable at start, 5 cannot listen on the port.
            """
    }

    /// Runs chat-node until SIGTERM or SIGINT; returns the process exit code.
    public static func main(environment: [String: String]) async -> Int32 {
        let level: Logger.Level
        do {
            level = try ChatConfiguration.logLevel(environment)
        } catch {
            FileHandle.standardError.write(Data("chat-node: \(error.description)\n".utf8))
            return 2
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardOutput(label: label)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "chat-node")
        let configuration: ChatConfiguration
        do {
            configuration = try ChatConfiguration(environment: environment)
        } catch {
            FileHandle.standardError.write(Data("chat-node: \(error.description)\n".utf8))
            return 2
        }
        do {
            let node = try await ChatNode.start(configuration, metrics: ChatMetrics(registry: registry), logger: logger)
            try await node.run()
            return 0
        } catch let error as ChatStartupError {
            FileHandle.standardError.write(Data("chat-node: \(error.description)\n".utf8))
            return error.exitCode
        } catch {
            logger.critical("chat-node stopped on an error: \(error)")
            FileHandle.standardError.write(Data("chat-node stopped on an error: \(error)\n".utf8))
            return 1
        }
    }

    /// Connects to Redis (a clear error when it cannot), settles the session secret and loads the page.
    public static func start(
        _ configuration: ChatConfiguration, metrics: ChatMetrics = ChatMetrics(), logger: Logger = Logger(label: "chat-node")
    ) async throws(ChatStartupError) -> ChatNode {
        let assets = try ChatAssets.load(socketIOClientPath: configuration.socketIOClientPath)
        if assets.socketIOClient == nil {
            logger.warning(
                "The socket.io client bundle is missing at \(configuration.socketIOClientPath): the page cannot connect. Run `make deps` or set SOCKETIO_CLIENT_JS."
            )
        }
        let redisConfiguration: RedisConfiguration
        let redis: RedisClient
        let subscriber: RedisSubscriber
        do {
            redisConfiguration = try RedisConfiguration(url: configuration.redisURL)
        } catch {
            throw .redisUnreachable(url: configuration.redisURL, source: configuration.redisSource, reason: error.description)
        }
        do {
            redis = try await RedisClient.connect(redisConfiguration, logger: Logger(label: "chat-node.redis"))
        } catch {
            throw .redisUnreachable(url: redisConfiguration.redactedURL, source: configuration.redisSource, reason: "\(error)")
        }
        do {
            subscriber = try await RedisSubscriber.connect(
                redisConfiguration, logger: Logger(label: "chat-node.subscriber"), bufferLimit: ChatHub.subscriptionBufferLimit)
        } catch {
            await redis.close()
            throw .redisUnreachable(url: redisConfiguration.redactedURL, source: configuration.redisSource, reason: "\(error)")
        }
        let keys = ChatKeys(prefix: configuration.keyPrefix)
        var secrets = configuration.sessionSecrets
        if secrets.isEmpty {
            do {
                secrets = [try await sharedSecret(redis: redis, key: keys.sessionSecret)]
            } catch {
                await subscriber.close()
                await redis.close()
                throw .redisUnreachable(url: redisConfiguration.redactedURL, source: configuration.redisSource, reason: "\(error)")
            }
            logger.warning(
                "SESSION_SECRET is not set: using a random secret shared through Redis (\(keys.sessionSecret)). Set SESSION_SECRET so sessions survive a Redis reset."
            )
        }
        return ChatNode(
            configuration: configuration, redis: redis, subscriber: subscriber, metrics: metrics, assets: assets, secrets: secrets,
            logger: logger)
    }

    /// A random secret created once in Redis (SET NX) and read by every instance.
    static func sharedSecret(redis: RedisClient, key: String) async throws -> String {
        var generator = SystemRandomNumberGenerator()
        let candidate = (0..<32).map { _ in String(UInt8.random(in: 0...255, using: &generator), radix: 16) }.joined()
        try await redis.set(key, to: RESPArgument(candidate), condition: .ifNotExists)
        guard let secret = try await redis.getString(key), !secret.isEmpty else {
            throw RedisError.unexpectedReply(command: "GET \(key)", reply: "nothing")
        }
        return secret
    }

    var sessionCookie: SessionCookie { SessionCookie(name: configuration.cookieName, secrets: secrets) }
    /// Made once per run: with `SESSION_STORE=memory` every user of it must share the one map.
    func makeSessionStore() -> SessionStore {
        switch configuration.sessionStorage {
        case .redis:
            return SessionStore(redis: redis, ttl: configuration.sessionTTL)
        case .memory:
            logger.warning(
                "SESSION_STORE=memory: login sessions live in this instance's memory only. A user whose instance dies, or whose request reaches another instance, is logged out. This reproduces the original sample's bug; use redis (the default) for anything real."
            )
            return SessionStore(memory: InMemorySessions(), ttl: configuration.sessionTTL)
        }
    }

    /// The health report: Redis answers a PING, and the subscription is connected.
    func healthReport(connections: Int) async -> HealthReport {
        var reason: String?
        var redisState = "up"
        do {
            _ = try await redis.ping()
        } catch {
            redisState = "down"
            reason = "\(error)"
        }
        let subscriberState = subscriber.isConnected ? "up" : "down"
        if subscriberState == "down", reason == nil { reason = "the Redis subscription is reconnecting" }
        return HealthReport(
            healthy: redisState == "up" && subscriberState == "up", redis: redisState, subscriber: subscriberState,
            instance: configuration.instance.id, connections: connections, reason: reason,
            pageClient: assets.socketIOClient == nil ? "missing" : "served")
    }

    /// Serves until SIGTERM or SIGINT, then drains within `drainTimeout`: new handshakes are refused,
    /// every Socket.IO session is closed so its client reconnects elsewhere (its session saved for
    /// recovery), messages being stored are stored and acknowledged, then Redis is closed.
    public func run() async throws {
        let configuration = self.configuration
        let logger = self.logger
        let store = RedisRecoveryStore(
            redis: redis, keys: keys, logger: Logger(label: "chat-node.recovery"))
        var socketConfiguration = SocketIOConfiguration()
        socketConfiguration.recovery = .init(maxDisconnectionDuration: configuration.recoveryWindow)
        socketConfiguration.drainTimeout = configuration.drainTimeout * 0.8
        socketConfiguration.writeCoalescing = configuration.writeCoalescing
        if configuration.allowedOrigins.contains("*") {
            socketConfiguration.origins = .any
        } else if !configuration.allowedOrigins.isEmpty {
            socketConfiguration.origins = .allowList(Set(configuration.allowedOrigins))
        }
        let io = SocketIOServer(configuration: socketConfiguration, recoveryStore: store, logger: Logger(label: "chat-node.socket.io"))
        let startID: StreamID?
        do {
            // Subscribe first: every line stored after `startID` was read is then published to this
            // subscription (read first, a line stored in between would be neither history nor live).
            try await subscriber.subscribe(keys.channel, keys.logouts)
            startID = try await ChatLog(redis: redis, keys: keys, historyLimit: configuration.historyLimit).newestID()
        } catch {
            await close()
            throw ChatStartupError.redisUnreachable(url: configuration.redisURL, source: configuration.redisSource, reason: "\(error)")
        }
        let sessionStore = makeSessionStore()
        let hub = ChatHub(
            configuration: configuration, namespace: io.sockets,
            log: ChatLog(redis: redis, keys: keys, historyLimit: configuration.historyLimit),
            store: store, sessions: sessionStore, cookie: sessionCookie, metrics: metrics, logger: logger, startID: startID)
        hub.install()

        let router = Router()
        let http = ChatHTTP(
            configuration: configuration, assets: assets, sessions: sessionStore, cookie: sessionCookie, metrics: metrics, logger: logger,
            health: { [self] in await healthReport(connections: hub.connectionCount) },
            sessionEnded: { sid in await hub.sessionEnded(sid) })
        http.register(on: router)
        io.mount(on: router)
        let app = Application(
            router: router,
            server: .socketIO(io),
            configuration: ApplicationConfiguration(address: .hostname(configuration.bindHost, port: configuration.port), serverName: nil),
            onServerRunning: { channel in
                logger.notice(
                    "chat-node listening on http://\(configuration.bindHost):\(channel.localAddress?.port ?? configuration.port)",
                    metadata: ["instance": "\(configuration.instance.label)", "redis": "\(configuration.redisSource)"])
            },
            logger: logger
        )
        let presence = PresenceRegistry(redis: redis, keys: keys, instance: configuration.instance.id, ttl: configuration.presenceTTL)
        // Started in this order; on SIGTERM stopped in reverse: Socket.IO drains first, then HTTP, then
        // presence leaves, then the subscription closes.
        let services: [any Service] = [
            HubService(hub: hub, subscriber: subscriber),
            PresenceService(hub: hub, registry: presence, interval: configuration.presenceInterval, logger: logger),
            app,
            io,
        ]
        var groupConfiguration = ServiceGroupConfiguration(
            services: services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        groupConfiguration.maximumGracefulShutdownDuration = configuration.drainTimeout
        let group = ServiceGroup(configuration: groupConfiguration)
        do {
            try await group.run()
        } catch {
            await close()
            if "\(error)".contains("Address already in use") {
                throw ChatStartupError.cannotListen(host: configuration.bindHost, port: configuration.port, reason: "\(error)")
            }
            throw error
        }
        await close()
        logger.notice("chat-node stopped", metadata: ["instance": "\(configuration.instance.label)"])
    }

    func close() async {
        await subscriber.close()
        await redis.close()
    }
}
