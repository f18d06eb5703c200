/// What went wrong talking to Redis, in words a user can act on.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Redis answered with an error reply; `message` is the server's text (for example `WRONGTYPE ...`).
    case server(message: String)
    /// No connection right now (Redis is down or the client is reconnecting); the command was not sent.
    case notConnected(endpoint: String, lastError: String?)
    /// The connection closed while the command was in flight; Redis may or may not have executed it.
    case connectionLost(endpoint: String, reason: String)
    /// No reply within the command timeout; the connection was closed because replies can no longer be matched.
    case timeout(endpoint: String, after: Duration)
    /// Could not open a connection (refused, unreachable, connect timeout).
    case connectFailed(endpoint: String, reason: String)
    /// AUTH was refused.
    case authenticationFailed(endpoint: String, message: String)
    /// The server sent bytes that are not RESP; the connection was dropped.
    case protocolError(endpoint: String, reason: String)
    /// The reply did not have the shape the typed helper expected.
    case unexpectedReply(command: String, reply: String)
    /// MULTI/EXEC was aborted (EXEC answered nil or EXECABORT).
    case transactionAborted(message: String)
    /// The client was closed by the application.
    case clientClosed

    public var description: String {
        switch self {
        case .server(let message):
            "Redis replied with an error: \(message)"
        case .notConnected(let endpoint, let lastError):
            "Not connected to Redis at \(endpoint)\(lastError.map { " (\($0))" } ?? ""); the command was not sent. "
                + "The client reconnects by itself; check that redis-server is running."
        case .connectionLost(let endpoint, let reason):
            "Connection to Redis at \(endpoint) was lost while the command was in flight (\(reason)); "
                + "it may or may not have been executed."
        case .timeout(let endpoint, let after):
            "Redis at \(endpoint) did not answer within \(after); the connection was closed and will be reopened."
        case .connectFailed(let endpoint, let reason):
            "Cannot connect to Redis at \(endpoint): \(reason). Is redis-server running there?"
        case .authenticationFailed(let endpoint, let message) where message.hasPrefix("NOAUTH"):
            "Redis at \(endpoint) wants a password, and none was given (\(message)). Put it in the Redis URL: redis://:PASSWORD@host:port."
        case .authenticationFailed(let endpoint, let message):
            "Redis at \(endpoint) refused the password: \(message). Check the password in the Redis URL."
        case .protocolError(let endpoint, let reason):
            "Redis at \(endpoint) sent data that is not RESP (\(reason)); the connection was dropped. "
                + "Is that port really a Redis server?"
        case .unexpectedReply(let command, let reply):
            "Unexpected reply to \(command): \(reply)"
        case .transactionAborted(let message):
            "Redis transaction aborted: \(message)"
        case .clientClosed:
            "The Redis client was closed."
        }
    }
}
