import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A message received on a subscribed channel (or a pattern's match).
public struct RedisPubSubMessage: Sendable, Hashable {
    public var channel: String
    /// The pattern that matched, for PSUBSCRIBE deliveries.
    public var pattern: String?
    public var payload: ByteBuffer

    public init(channel: String, pattern: String? = nil, payload: ByteBuffer) {
        self.channel = channel
        self.pattern = pattern
        self.payload = payload
    }
}

/// What a subscriber's `events` sequence yields.
public enum RedisSubscriberEvent: Sendable, Hashable {
    case message(RedisPubSubMessage)
    /// The connection was lost; messages published from now until `.mayHaveMissedMessages` are not seen.
    case connectionLost(reason: String)
    /// Messages may have been missed: after a reconnect (it has re-subscribed to everything by itself)
    /// or after the consumer fell behind and the buffer overflowed. Recover from history.
    case mayHaveMissedMessages(reason: GapReason)
}

public enum GapReason: String, Sendable, Hashable {
    case reconnected
    case bufferOverflow
}

/// A dedicated pub/sub connection. SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE and PUNSUBSCRIBE; messages and
/// connection events arrive on `events`. After a loss it reconnects with backoff, re-subscribes to
/// everything by itself, then yields `.mayHaveMissedMessages(.reconnected)`.
public final class RedisSubscriber: Sendable {
    public let events: AsyncStream<RedisSubscriberEvent>
    public let configuration: RedisConfiguration
    private let sink: EventSink
    private let subscriptions: Mutex<SubscriptionSet>
    private let keeperBox: Mutex<ConnectionKeeper?>
    /// What the last reconnect restored: a change made while it ran (when no connection was there to
    /// carry it) is sent once the new connection is in place.
    private let restored: Mutex<SubscriptionSet?>

    private init(configuration: RedisConfiguration, bufferLimit: Int) {
        self.configuration = configuration
        let (stream, continuation) = AsyncStream.makeStream(of: RedisSubscriberEvent.self, bufferingPolicy: .bufferingOldest(bufferLimit))
        self.events = stream
        self.sink = EventSink(continuation: continuation)
        self.subscriptions = Mutex(SubscriptionSet())
        self.keeperBox = Mutex(nil)
        self.restored = Mutex(nil)
    }

    /// Connects now; throws if Redis cannot be reached. `bufferLimit` bounds the events waiting to be
    /// read; past it, messages are dropped and `.mayHaveMissedMessages(.bufferOverflow)` follows.
    public static func connect(
        _ configuration: RedisConfiguration,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis.subscriber"),
        bufferLimit: Int = 100_000
    ) async throws -> RedisSubscriber {
        let subscriber = RedisSubscriber(configuration: configuration, bufferLimit: bufferLimit)
        let sink = subscriber.sink
        let keeper = ConnectionKeeper(
            role: "subscriber",
            configuration: configuration,
            eventLoopGroup: eventLoopGroup,
            logger: logger,
            makeConnection: { [weak subscriber] in
                let connection = try await RedisConnectionFactory.connect(configuration, eventLoopGroup: eventLoopGroup, selectDatabase: false)
                do {
                    try await Self.switchToPubSub(connection, configuration: configuration, sink: sink)
                    let snapshot = subscriber?.subscriptions.withLock { $0 } ?? SubscriptionSet()
                    for (kind, names) in snapshot.restoreCommands {
                        try await Self.request(kind, names, on: connection.channel, endpoint: configuration.endpoint)
                    }
                    subscriber?.restored.withLock { $0 = snapshot }
                } catch {
                    connection.channel.close(promise: nil)
                    throw error
                }
                return connection
            },
            onEvent: { [weak subscriber] event in
                switch event {
                case .lost(let reason): sink.yield(.connectionLost(reason: reason))
                case .restored:
                    sink.yield(.mayHaveMissedMessages(reason: .reconnected))
                    Task { await subscriber?.applyChangesMadeWhileRestoring() }
                }
            }
        )
        try await keeper.start()
        subscriber.keeperBox.withLock { $0 = keeper }
        return subscriber
    }

    public func subscribe(_ channels: [String]) async throws {
        let added = subscriptions.withLock { $0.add(channels: channels) }
        try await sendIfConnected(.subscribe, added)
    }

    public func subscribe(_ channels: String...) async throws { try await subscribe(channels) }

    public func psubscribe(_ patterns: [String]) async throws {
        let added = subscriptions.withLock { $0.add(patterns: patterns) }
        try await sendIfConnected(.psubscribe, added)
    }

    public func unsubscribe(_ channels: [String]) async throws {
        let removed = subscriptions.withLock { $0.remove(channels: channels) }
        try await sendIfConnected(.unsubscribe, removed)
    }

    public func punsubscribe(_ patterns: [String]) async throws {
        let removed = subscriptions.withLock { $0.remove(patterns: patterns) }
        try await sendIfConnected(.punsubscribe, removed)
    }

    /// What this subscriber is subscribed to (and will re-subscribe to after a reconnect).
    public var currentSubscriptions: SubscriptionSet { subscriptions.withLock { $0 } }

    public var isConnected: Bool { keeperBox.withLock { $0 }?.isConnected ?? false }

    /// Closes the connection and finishes `events`.
    public func close() async {
        await keeperBox.withLock { $0 }?.close()
        sink.finish()
    }

    /// While disconnected the change is recorded and applied on reconnect; the call does not fail.
    /// A name Redis refuses (an ACL's NOPERM) is forgotten again: kept, it would fail every reconnect.
    private func sendIfConnected(_ kind: SubscriptionKind, _ names: [String]) async throws {
        guard !names.isEmpty, let connection = keeperBox.withLock({ $0 })?.connection else { return }
        do {
            try await Self.request(kind, names, on: connection.channel, endpoint: configuration.endpoint)
        } catch RedisError.connectionLost {
            // The keeper reconnects and restores the whole set, this change included.
        } catch {
            subscriptions.withLock { set in
                switch kind {
                case .subscribe: _ = set.remove(channels: names)
                case .psubscribe: _ = set.remove(patterns: names)
                case .unsubscribe, .punsubscribe: break
                }
            }
            throw error
        }
    }

    /// The new connection is in place: sends what changed since the reconnect took its snapshot.
    private func applyChangesMadeWhileRestoring() async {
        guard
            let snapshot = restored.withLock({ state -> SubscriptionSet? in
                defer { state = nil }; return state
            })
        else { return }
        for (kind, names) in subscriptions.withLock({ $0 }).changes(since: snapshot) {
            try? await sendIfConnected(kind, names)
        }
    }

    static func request(_ kind: SubscriptionKind, _ names: [String], on channel: any Channel, endpoint: String) async throws {
        var payload = channel.allocator.buffer(capacity: 64)
        try RESPEncoder.encode([RESPArgument(kind.rawValue.uppercased())] + names.map { RESPArgument($0) }, into: &payload)
        let promise = channel.eventLoop.makePromise(of: Void.self)
        let requestKind = PubSubRequest.Kind(rawValue: kind.rawValue) ?? .subscribe
        RedisConnectionFactory.writeAndFlush(
            PubSubRequest(payload: payload, kind: requestKind, confirmations: names.count, promise: promise), completing: promise, on: channel,
            endpoint: endpoint)
        try await promise.futureResult.get()
    }

    private static func switchToPubSub(
        _ connection: RedisConnectionFactory.Connection, configuration: RedisConfiguration, sink: EventSink
    ) async throws {
        let channel = connection.channel
        try await channel.eventLoop.flatSubmit {
            let pipeline = channel.pipeline.syncOperations
            do {
                let handler = try RedisPubSubHandler(
                    endpoint: configuration.endpoint,
                    pingInterval: configuration.subscriberPingInterval,
                    maxReplyBytes: configuration.maxReplyBytes,
                    deliver: { sink.yield($0) }
                )
                let commandHandler = connection.handler.value
                return pipeline.removeHandler(commandHandler).assumeIsolated().flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(handler)
                }.nonisolated()
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
        }.get()
    }
}

/// Yields events to the stream; when the consumer has fallen behind and a message was dropped, the next
/// successful yield is preceded by a gap event so nothing is lost silently.
final class EventSink: Sendable {
    private let continuation: AsyncStream<RedisSubscriberEvent>.Continuation
    private let overflowed = Mutex(false)

    init(continuation: AsyncStream<RedisSubscriberEvent>.Continuation) {
        self.continuation = continuation
    }

    func yield(_ event: RedisSubscriberEvent) {
        overflowed.withLock { overflowed in
            if overflowed {
                guard case .enqueued = continuation.yield(.mayHaveMissedMessages(reason: .bufferOverflow)) else { return }
                overflowed = false
            }
            if case .dropped = continuation.yield(event) { overflowed = true }
        }
    }

    func finish() { continuation.finish() }
}
