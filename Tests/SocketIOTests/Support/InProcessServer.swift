import Logging
import ServiceLifecycle
import SocketIO

@testable import socketio_testserver

/// A Socket.IO server in this process on a free loopback port: the test server's application and
/// behaviours (namespaces `/` and `/custom`), with the configuration a test needs.
final class InProcessServer: Sendable {
    let io: SocketIOServer
    let port: Int
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    private init(io: SocketIOServer, port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.io = io
        self.port = port
        self.group = group
        self.task = task
    }

    static func start(
        adapter: any SocketIOAdapter = LocalAdapter(),
        recoveryStore: (any RecoveryStore)? = nil,
        installBehaviour: Bool = true,
        hummingbirdWebSocket: Bool = false,
        configure: (inout SocketIOConfiguration) -> Void = { _ in }
    ) async throws -> InProcessServer {
        var logger = Logger(label: "test.socketio")
        logger.logLevel = .warning
        var configuration = SocketIOConfiguration()
        // The test WebSocket client sends `Origin: ws://127.0.0.1` (no port); origin tests set their policy.
        configuration.origins = .any
        configure(&configuration)
        let io = SocketIOServer(configuration: configuration, adapter: adapter, recoveryStore: recoveryStore, logger: logger)
        if installBehaviour {
            for namespace in [io.of("/"), io.of("/custom")] { TestBehaviour.install(on: namespace, logger: logger) }
        }
        // Port 0: the kernel picks a free port as the server binds it (no race with parallel tests).
        let bound = Inbox<Int>()
        let app = TestBehaviour.application(
            io: io, host: "127.0.0.1", port: 0, hummingbirdWebSocket: hummingbirdWebSocket, logger: logger
        ) { bound.append($0) }
        let group = ServiceGroup(configuration: .init(services: [app, io], logger: logger))
        let task = Task { try await group.run() }
        let port = try await bound.next(timeout: .seconds(30))
        return InProcessServer(io: io, port: port, group: group, task: task)
    }

    /// Graceful shutdown, as on SIGTERM; returns when the server has stopped.
    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }

    var url: String { "http://127.0.0.1:\(port)" }
}

/// Runs `body` against a fresh server, stopping it afterwards whatever happens.
func withServer<T>(
    adapter: any SocketIOAdapter = LocalAdapter(),
    recoveryStore: (any RecoveryStore)? = nil,
    hummingbirdWebSocket: Bool = false,
    configure: (inout SocketIOConfiguration) -> Void = { _ in },
    _ body: (InProcessServer) async throws -> T
) async throws -> T {
    let server = try await InProcessServer.start(
        adapter: adapter, recoveryStore: recoveryStore, hummingbirdWebSocket: hummingbirdWebSocket, configure: configure)
    do {
        let result = try await body(server)
        try await server.stop()
        return result
    } catch {
        try? await server.stop()
        throw error
    }
}
