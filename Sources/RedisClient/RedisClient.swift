import Logging
import NIOCore
import NIOPosix

/// A Redis client on one multiplexed connection: many commands in flight at once (pipelining), replies
/// matched in order. When the connection is lost, commands in flight fail at once, commands issued
/// while it is down fail fast with `RedisError.notConnected`, and the client reconnects by itself.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    private let keeper: ConnectionKeeper
    let logger: Logger

    private init(configuration: RedisConfiguration, keeper: ConnectionKeeper, logger: Logger) {
        self.configuration = configuration
        self.keeper = keeper
        self.logger = logger
    }

    /// Connects now; throws a clear `RedisError` if Redis cannot be reached or refuses the password.
    public static func connect(
        _ configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis")
    ) async throws -> RedisClient {
        let keeper = ConnectionKeeper(
            role: "command",
            configuration: configuration,
            eventLoopGroup: eventLoopGroup,
            logger: logger,
            makeConnection: {
                try await RedisConnectionFactory.connect(configuration, eventLoopGroup: eventLoopGroup)
            }
        )
        try await keeper.start()
        return RedisClient(configuration: configuration, keeper: keeper, logger: logger)
    }

    /// Closes the connection and stops reconnecting. Commands in flight fail with `connectionLost`.
    public func close() async {
        await keeper.close()
    }

    /// The event loop of the current connection (an actor pinned to it avoids thread hops per command).
    public var eventLoop: any EventLoop {
        keeper.connection?.channel.eventLoop ?? MultiThreadedEventLoopGroup.singleton.any()
    }

    /// Whether a connection is open right now.
    public var isConnected: Bool { keeper.isConnected }

    /// Sends one command; an error reply is thrown as `RedisError.server`.
    @discardableResult
    public func send(_ arguments: [RESPArgument]) async throws -> RESPValue {
        let reply = try await pipeline([arguments])[0]
        if case .error(let message) = reply { throw RedisError.server(message: message) }
        return reply
    }

    @discardableResult
    public func send(_ arguments: RESPArgument...) async throws -> RESPValue {
        try await send(arguments)
    }

    /// Sends commands in one write and returns their replies in order. Error replies are returned in
    /// place (as `.error`), so one failing command does not hide the others' results.
    public func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        guard let connection = keeper.connection else {
            throw RedisError.notConnected(endpoint: configuration.endpoint, lastError: keeper.lastError)
        }
        return try await RedisConnectionFactory.send(commands, on: connection.channel, endpoint: configuration.endpoint)
    }

    /// The same as `pipeline`, for code that lives on NIO's event loops: no Swift Concurrency task and
    /// no thread hop; the future completes on the connection's event loop.
    public func pipelineFuture(_ commands: [[RESPArgument]]) -> EventLoopFuture<[RESPValue]> {
        // No command, no reply: a request waiting for none would take the next caller's replies.
        guard !commands.isEmpty else {
            return (keeper.connection?.channel.eventLoop ?? MultiThreadedEventLoopGroup.singleton.any()).makeSucceededFuture([])
        }
        guard let connection = keeper.connection else {
            return MultiThreadedEventLoopGroup.singleton.any().makeFailedFuture(
                RedisError.notConnected(endpoint: configuration.endpoint, lastError: keeper.lastError)
            )
        }
        return RedisConnectionFactory.write(commands, on: connection.channel, endpoint: configuration.endpoint)
    }

    /// Runs the commands inside MULTI/EXEC, written as one batch so no other caller's command can land
    /// in between. Returns EXEC's replies. Throws `transactionAborted` if Redis discarded it.
    public func transaction(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
        let replies = try await pipeline([["MULTI"]] + commands + [["EXEC"]])
        guard let exec = replies.last else { throw RedisError.unexpectedReply(command: "EXEC", reply: "nothing") }
        switch exec {
        case .array(let results):
            return results
        case .error(let message):
            let queued = replies.dropFirst().dropLast().compactMap { reply -> String? in
                if case .error(let text) = reply { return text }
                return nil
            }
            throw RedisError.transactionAborted(message: ([message] + queued).joined(separator: "; "))
        case .null:
            throw RedisError.transactionAborted(message: "EXEC returned nil (a watched key changed)")
        default:
            throw RedisError.unexpectedReply(command: "EXEC", reply: exec.description)
        }
    }
}
