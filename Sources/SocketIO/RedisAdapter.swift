import Logging
import NIOCore
import RedisClient

/// Shares broadcasts between instances through Redis pub/sub: each broadcast is PUBLISHed once on one
/// channel, and each instance has ONE subscription (whatever the number of sockets, rooms or
/// namespaces). An instance ignores its own messages (it delivered them locally already).
///
/// Like socket.io's Redis adapter, pub/sub is fire-and-forget: what is published while an instance's
/// subscriber is disconnected does not reach it. Use connection state recovery with a shared store
/// (or your own Redis stream) when messages must not be lost.
public final class RedisAdapter: SocketIOAdapter {
    public let channel: String
    /// This instance's id in published messages.
    public let instanceID: String
    private let client: RedisClient
    private let subscriberConfiguration: RedisConfiguration
    private let logger: Logger

    /// - Parameters:
    ///   - client: publishes broadcasts.
    ///   - subscriberConfiguration: for the dedicated subscriber connection (defaults to the client's).
    ///   - channel: the Redis channel every instance of the app shares.
    public init(
        client: RedisClient, subscriberConfiguration: RedisConfiguration? = nil, channel: String = "socket.io#broadcast",
        logger: Logger = Logger(label: "socket.io.redis-adapter")
    ) {
        self.client = client
        self.subscriberConfiguration = subscriberConfiguration ?? client.configuration
        self.channel = channel
        self.instanceID = SocketIOServer.generateID()
        self.logger = logger
    }

    public func run(deliver: @escaping @Sendable (BroadcastMessage) -> Void) async throws {
        var attempt = 0
        var connected: RedisSubscriber?
        while connected == nil {
            do {
                connected = try await RedisSubscriber.connect(subscriberConfiguration, logger: logger)
            } catch {
                let delay = subscriberConfiguration.reconnectBackoff.delay(attempt: attempt, random: Double.random(in: 0..<1))
                logger.warning(
                    "The Socket.IO Redis adapter cannot reach Redis at \(subscriberConfiguration.endpoint) (\(error)); retrying in \(delay)")
                attempt += 1
                try await Task.sleep(for: delay)
            }
        }
        guard let subscriber = connected else { return }
        try await subscriber.subscribe(channel)
        logger.info("Socket.IO Redis adapter subscribed to '\(channel)' as instance \(instanceID)")
        await withTaskCancellationHandler {
            for await event in subscriber.events {
                switch event {
                case .message(let message):
                    guard let decoded = Self.decode(message.payload) else {
                        logger.warning("Ignored a message on '\(channel)' that is not a Socket.IO broadcast")
                        continue
                    }
                    if decoded.instance != instanceID { deliver(decoded.message) }
                case .connectionLost(let reason):
                    logger.warning(
                        "The Socket.IO Redis adapter lost Redis (\(reason)); broadcasts from other instances are missed until it reconnects")
                case .mayHaveMissedMessages(let reason):
                    logger.warning("The Socket.IO Redis adapter may have missed broadcasts (\(reason.rawValue))")
                }
            }
        } onCancel: {
            Task { await subscriber.close() }
        }
        await subscriber.close()
    }

    public func publish(_ message: BroadcastMessage) async throws {
        try await client.publish(RESPArgument(Self.encode(message, instance: instanceID)), to: channel)
    }

    /// The wire form: a JSON object (binary arguments as `{"$binary":"<base64>"}`).
    static func encode(_ message: BroadcastMessage, instance: String) -> String {
        var object = JSONObject()
        object["uid"] = .string(instance)
        object["nsp"] = .string(message.namespace)
        object["rooms"] = .array(message.rooms.sorted().map { .string($0) })
        object["except"] = .array(message.except.sorted().map { .string($0) })
        object["ev"] = .string(message.event)
        object["args"] = .array(message.arguments)
        if let offset = message.offset { object["offset"] = .string(offset) }
        return JSONValue.object(object).jsonText
    }

    static func decode(_ payload: ByteBuffer) -> (instance: String, message: BroadcastMessage)? {
        guard let value = try? JSONValue(parsing: payload.readableBytesView, preservingBinary: true), let instance = value["uid"]?.stringValue,
            let namespace = value["nsp"]?.stringValue, let event = value["ev"]?.stringValue, let arguments = value["args"]?.arrayValue
        else { return nil }
        let rooms = Set((value["rooms"]?.arrayValue ?? []).compactMap(\.stringValue))
        let except = Set((value["except"]?.arrayValue ?? []).compactMap(\.stringValue))
        let message = BroadcastMessage(
            namespace: namespace, rooms: rooms, except: except, event: event, arguments: arguments, offset: value["offset"]?.stringValue)
        return (instance, message)
    }
}
