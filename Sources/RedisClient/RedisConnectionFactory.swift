import NIOCore
import NIOPosix

/// Opens a TCP connection to Redis with a command handler on it, then authenticates and selects the
/// database, or without either sends PING: a connection is made only once Redis answers. Used for
/// command connections and, before they switch to pub/sub mode, subscriber ones.
enum RedisConnectionFactory {
    struct Connection: Sendable {
        let channel: any Channel
        let handler: NIOLoopBound<RedisCommandHandler>
    }

    static func connect(
        _ configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup,
        selectDatabase: Bool = true
    ) async throws -> Connection {
        let endpoint = configuration.endpoint
        let bootstrap = ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = try RedisCommandHandler(
                        endpoint: endpoint, commandTimeout: configuration.commandTimeout, maxReplyBytes: configuration.maxReplyBytes)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: configuration.host, port: configuration.port).get()
        } catch {
            throw RedisError.connectFailed(endpoint: endpoint, reason: Self.describe(error))
        }
        do {
            let handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: RedisCommandHandler.self), eventLoop: channel.eventLoop)
            }.get()
            var handshake: [[RESPArgument]] = []
            if let password = configuration.password {
                if let username = configuration.username {
                    handshake.append(["AUTH", RESPArgument(username), RESPArgument(password)])
                } else {
                    handshake.append(["AUTH", RESPArgument(password)])
                }
            }
            if selectDatabase, configuration.database != 0 {
                handshake.append(["SELECT", RESPArgument(configuration.database)])
            }
            // A connection counts as made once Redis has answered: a TCP proxy in front of it (HAProxy,
            // Envoy, Toxiproxy, cluster's relays) accepts even while Redis is down, and resets after.
            if handshake.isEmpty { handshake.append(["PING"]) }
            let replies: [RESPValue]
            do {
                replies = try await send(handshake, on: channel, endpoint: configuration.endpoint)
            } catch RedisError.connectionLost(_, let reason) {
                throw RedisError.connectFailed(
                    endpoint: endpoint,
                    reason:
                        "the connection was accepted, then closed before Redis answered (\(reason)), as a proxy in front of Redis does when it cannot reach it"
                )
            }
            for (command, reply) in zip(handshake, replies) {
                guard case .error(let message) = reply else { continue }
                if command.first == "AUTH" || message.hasPrefix("NOAUTH") {
                    throw RedisError.authenticationFailed(endpoint: endpoint, message: message)
                }
                let name = command.first == "SELECT" ? "SELECT \(configuration.database)" : "PING"
                throw RedisError.server(message: "\(name): \(message)")
            }
            return Connection(channel: channel, handler: handler)
        } catch let error as RedisError {
            channel.close(promise: nil)
            throw error
        } catch {
            // The channel closed before its handler could be reached (a reset right after the accept).
            channel.close(promise: nil)
            throw RedisError.connectFailed(endpoint: endpoint, reason: "the connection closed as soon as it was made (\(Self.describe(error)))")
        }
    }

    /// Writes a batch as one contiguous write and waits for its replies.
    static func send(_ commands: [[RESPArgument]], on channel: any Channel, endpoint: String) async throws -> [RESPValue] {
        try await write(commands, on: channel, endpoint: endpoint).get()
    }

    /// Encodes the batch and writes it; the future completes on the channel's event loop.
    static func write(_ commands: [[RESPArgument]], on channel: any Channel, endpoint: String) -> EventLoopFuture<[RESPValue]> {
        var payload = channel.allocator.buffer(capacity: 64 * commands.count)
        do {
            for command in commands { try RESPEncoder.encode(command, into: &payload) }
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        writeAndFlush(
            RedisRequest(payload: payload, replyCount: commands.count, promise: promise), completing: promise, on: channel, endpoint: endpoint)
        return promise.futureResult
    }

    /// Writes a request whose handler completes `promise`. A request that never reaches its handler
    /// (the channel closed a moment ago, and closing took the handlers out of the pipeline) would
    /// leave `promise` pending for ever, and its caller waiting: a failed write fails it. When the
    /// handler did see the request, it has completed `promise` already and this does nothing.
    static func writeAndFlush<Request: Sendable, Reply: Sendable>(
        _ request: Request, completing promise: EventLoopPromise<Reply>, on channel: any Channel, endpoint: String
    ) {
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { _ in
            promise.fail(RedisError.connectionLost(endpoint: endpoint, reason: "the connection closed as the command was written"))
        }
        channel.writeAndFlush(request, promise: written)
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? RedisError { return error.description }
        return SocketErrorText.describe(error) ?? "\(error)"
    }
}
