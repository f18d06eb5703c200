import Logging
import NIOCore
import Synchronization

/// Keeps one connection to Redis open until closed: after a loss it reconnects with exponential backoff
/// and jitter, runs `prepare` on the new connection (the subscriber re-subscribes there), and only then
/// hands it out. Shared by `RedisClient` and `RedisSubscriber`.
final class ConnectionKeeper: Sendable {
    enum Event: Sendable {
        case lost(reason: String)
        case restored
    }

    typealias Connection = RedisConnectionFactory.Connection

    private struct Locked {
        var machine: ConnectionStateMachine
        var connection: Connection?
        var task: Task<Void, Never>?
    }

    private let locked: Mutex<Locked>
    private let configuration: RedisConfiguration
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let role: String
    private let makeConnection: @Sendable () async throws -> Connection
    private let onEvent: @Sendable (Event) -> Void

    init(
        role: String,
        configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        makeConnection: @escaping @Sendable () async throws -> Connection,
        onEvent: @escaping @Sendable (Event) -> Void = { _ in }
    ) {
        self.role = role
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.makeConnection = makeConnection
        self.onEvent = onEvent
        self.locked = Mutex(Locked(machine: ConnectionStateMachine(backoff: configuration.reconnectBackoff)))
    }

    /// Opens the first connection; throws if Redis cannot be reached now.
    func start() async throws {
        let connection = try await makeConnection()
        let action = locked.withLock { $0.machine.connected() }
        guard case .useConnection = action else {
            connection.channel.close(promise: nil)
            throw RedisError.clientClosed
        }
        let task = Task { await self.watch(connection) }
        locked.withLock {
            $0.connection = connection
            $0.task = task
        }
    }

    /// The open connection, or nil while reconnecting.
    var connection: Connection? { locked.withLock { $0.machine.isConnected ? $0.connection : nil } }

    var lastError: String? { locked.withLock { $0.machine.lastError } }

    var isConnected: Bool { locked.withLock { $0.machine.isConnected } }

    func close() async {
        let (connection, task) = locked.withLock { state -> (Connection?, Task<Void, Never>?) in
            state.machine.close()
            defer {
                state.connection = nil
                state.task = nil
            }
            return (state.connection, state.task)
        }
        task?.cancel()
        if let connection { try? await connection.channel.close() }
        await task?.value
    }

    private func watch(_ first: Connection) async {
        var current = first
        while true {
            try? await current.channel.closeFuture.get()
            let reason = "the connection closed"
            var action = locked.withLock { state in
                state.connection = nil
                return state.machine.connectionLost(reason: reason, random: .random(in: 0..<1))
            }
            if case .stop = action { return }
            logger.warning(
                "Redis \(role) connection to \(configuration.endpoint) lost; reconnecting with backoff",
                metadata: ["redis": "\(configuration.redactedURL)"]
            )
            onEvent(.lost(reason: reason))
            reconnect: while true {
                guard case .retry(let delay, let attempt) = action else { return }
                try? await Task.sleep(for: delay)
                if Task.isCancelled { return }
                do {
                    let connection = try await makeConnection()
                    let decision = locked.withLock { state in
                        let decision = state.machine.connected()
                        if case .useConnection = decision { state.connection = connection }
                        return decision
                    }
                    guard case .useConnection = decision else {
                        try? await connection.channel.close()
                        return
                    }
                    logger.notice("Redis \(role) connection to \(configuration.endpoint) restored after \(attempt) attempt(s)")
                    onEvent(.restored)
                    current = connection
                    break reconnect
                } catch {
                    let reason = RedisConnectionFactory.describe(error)
                    action = locked.withLock { $0.machine.connectFailed(reason: reason, random: .random(in: 0..<1)) }
                    if case .retry(let next, _) = action {
                        logger.info("Redis \(role) reconnect attempt \(attempt) failed: \(reason); next try in \(Int(next.seconds * 1000)) ms")
                    }
                }
            }
        }
    }
}
