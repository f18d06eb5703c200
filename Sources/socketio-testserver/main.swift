import ArgumentParser
import Hummingbird
import HummingbirdWebSocket
import Logging
import RedisClient
import ServiceLifecycle
import SocketIO

/// A test-only Socket.IO server: the behaviours the protocol test suites and the interop tests expect.
/// Namespaces `/` and `/custom`:
/// - on connection: emits `auth` with the CONNECT auth payload (`{}` when none);
/// - `message` -> emits `message-back` with the same arguments; `message-with-ack` -> acks them;
///   `emit-with-ack` -> emits it back with an ack, then emits `emit-with-ack` with the ack's arguments;
/// - `echo` -> emits `echo` with the arguments; `echo-ack` -> acks them; `broadcast` -> emits
///   `broadcast` to every socket of the namespace; `join` -> joins the room named by the argument;
///   `to-room` (room, args...) -> emits `room-message` to the room but the sender; `burst` (count,
///   size) -> emits `burst-item` (index, size x's) count times as one batch (`emit(batch:)`, a
///   replay's path), then `burst-done` (count) on its own;
/// - the connect hook refuses `{"token":"bad"}` with "not authorized".
@main
struct TestServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "socketio-testserver", abstract: "Socket.IO server for the protocol, interop and benchmark tests.")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0: any free port; the chosen one is printed).") var port = 0
    @Option(help: "Engine.IO ping interval in milliseconds.") var pingInterval = 25_000
    @Option(help: "Engine.IO ping timeout in milliseconds.") var pingTimeout = 20_000
    @Option(help: "Largest message accepted, in bytes.") var maxPayload = 1_000_000
    @Option(help: "Connection state recovery: how long a disconnected session stays recoverable, in seconds (0: off).")
    var recovery = 0
    @Option(help: "Redis URL: share broadcasts with other instances through the Redis adapter.") var redis: String?
    @Option(help: "Cross-origin policy: 'same', 'any', or a comma-separated list of allowed origins.") var origins = "same"
    @Option(help: "Most Engine.IO sessions at once.") var maxSessions = 100_000
    @Option(help: "Drain timeout on SIGTERM, in seconds.") var drainTimeout = 10
    @Option(help: "Bytes queued for one client before it is closed as too slow.") var maxOutboundBuffer = 1 << 20
    @Option(help: "Log level (trace, debug, info, notice, warning, error).") var logLevel = "info"
    @Flag(help: "Serve WebSockets through Hummingbird's .http1WebSocketUpgrade (a task per connection) instead of .socketIO(io).")
    var hummingbirdWebSocket = false

    func run() async throws {
        var logger = Logger(label: "socketio-testserver")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info

        var configuration = SocketIOConfiguration()
        configuration.pingInterval = .milliseconds(pingInterval)
        configuration.pingTimeout = .milliseconds(pingTimeout)
        configuration.maxPayload = maxPayload
        configuration.limits.maxSessions = maxSessions
        configuration.limits.maxOutboundBufferBytes = maxOutboundBuffer
        configuration.drainTimeout = .seconds(drainTimeout)
        if recovery > 0 { configuration.recovery = .init(maxDisconnectionDuration: .seconds(recovery)) }
        switch origins {
        case "same": configuration.origins = .sameOrigin
        case "any": configuration.origins = .any
        default: configuration.origins = .allowList(Set(origins.split(separator: ",").map(String.init)))
        }

        var adapter: any SocketIOAdapter = LocalAdapter()
        if let redis {
            let redisConfiguration = try RedisConfiguration(url: redis)
            adapter = RedisAdapter(client: try await RedisClient.connect(redisConfiguration, logger: logger), logger: logger)
        }
        let io = SocketIOServer(configuration: configuration, adapter: adapter, logger: logger)
        for namespace in [io.of("/"), io.of("/custom")] { TestBehaviour.install(on: namespace, logger: logger) }

        let app = TestBehaviour.application(io: io, host: host, port: port, hummingbirdWebSocket: hummingbirdWebSocket, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [app, io], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// The behaviours of the test server (also used in-process by SocketIOTests).
enum TestBehaviour {
    /// A Hummingbird application serving `io` (long-polling routes, WebSocket upgrade, /health).
    /// `hummingbirdWebSocket`: WebSockets through Hummingbird's upgrade and `io.webSocketUpgrade` (the
    /// path for apps with WebSocket routes of their own) instead of `.socketIO(io)`.
    static func application(
        io: SocketIOServer, host: String, port: Int, hummingbirdWebSocket: Bool = false, logger: Logger,
        onRunning: @escaping @Sendable (Int) -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router()
        router.get("/health") { _, _ in "ok" }
        io.mount(on: router)
        return Application(
            router: router,
            server: hummingbirdWebSocket
                ? .http1WebSocketUpgrade(configuration: io.upgradeChannelConfiguration) { request, channel, logger in
                    io.handlesUpgrade(request) ? io.webSocketUpgrade(for: request, channel: channel, logger: logger) : .dontUpgrade
                } : .socketIO(io),
            configuration: .init(address: .hostname(host, port: port), serverName: "socketio-testserver"),
            onServerRunning: { channel in
                logger.notice("socketio-testserver listening on \(channel.localAddress?.description ?? "?")")
                onRunning(channel.localAddress?.port ?? 0)
            },
            logger: logger
        )
    }

    static func install(on namespace: Namespace, logger: Logger) {
        namespace.use { request in
            if request.auth["token"]?.stringValue == "bad" { return .refuse(message: "not authorized") }
            return .accept
        }
        namespace.onConnection { socket in
            socket.emit("auth", socket.auth)
            socket.on("message") { arguments, _ in socket.emit("message-back", arguments: arguments) }
            socket.on("message-with-ack") { arguments, ack in ack?.send(arguments) }
            socket.on("emit-with-ack") { arguments, _ in
                if let reply = try? await socket.emitWithAck("emit-with-ack", arguments: arguments, timeout: .seconds(10)) {
                    socket.emit("emit-with-ack", arguments: reply)
                }
            }
            socket.on("echo") { arguments, _ in socket.emit("echo", arguments: arguments) }
            socket.on("echo-ack") { arguments, ack in ack?.send(arguments) }
            socket.on("broadcast") { arguments, _ in
                do {
                    try await namespace.emit("broadcast", arguments: arguments)
                } catch {
                    logger.warning("broadcast failed: \(error)")
                }
            }
            socket.on("join") { arguments, ack in
                if let room = arguments.first?.stringValue { socket.join(room) }
                ack?("joined")
            }
            socket.on("burst") { arguments, _ in
                guard arguments.count == 2, let count = arguments[0].intValue, let size = arguments[1].intValue,
                    (0...100_000).contains(count), (0...1_000_000).contains(size)
                else { return }
                let payload = JSONValue.string(String(repeating: "x", count: size))
                socket.emit(batch: (0..<count).map { ("burst-item", [.number(Double($0)), payload]) })
                socket.emit("burst-done", .number(Double(count)))
            }
            socket.on("to-room") { arguments, _ in
                guard let room = arguments.first?.stringValue else { return }
                try? await socket.to(room).emit("room-message", arguments: Array(arguments.dropFirst()))
            }
        }
    }
}
