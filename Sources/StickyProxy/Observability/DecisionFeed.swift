import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// One routing decision, as streamed on `GET /events` (one JSON object per `data:` line).
public struct RoutingEvent: Sendable, Codable, Equatable {
    /// RFC 3339 with nanoseconds.
    public var time: String
    public var vcapRequestID: String
    public var method: String
    public var host: String
    public var path: String
    /// Absent when the request reached no routing decision (a router error such as 404 `unknown_route`).
    public var decision: RoutingDecisionKind?
    public var instanceID: String?
    public var instanceIndex: String?
    public var appID: String?
    /// The backend address (`host:port`).
    public var backend: String?
    /// The instance the request was pinned to, if any.
    public var pinnedInstanceID: String?
    /// 1 for the first attempt.
    public var attempt: Int
    /// 0 when no response was sent (the client went away).
    public var status: Int
    public var responseTime: Double?
    public var routerError: String?
    public var upgrade: Bool

    enum CodingKeys: String, CodingKey {
        case time, method, host, path, decision, backend, attempt, status, upgrade
        case vcapRequestID = "vcap_request_id"
        case instanceID = "instance_id"
        case instanceIndex = "instance_index"
        case appID = "app_id"
        case pinnedInstanceID = "pinned_instance_id"
        case responseTime = "response_time"
        case routerError = "router_error"
    }
}

/// The live feed of routing decisions. Costs one atomic load per request while nobody listens.
public final class DecisionFeed: Sendable {
    private enum Subscriber: Sendable {
        case serverSentEvents(any Channel)
        case stream(AsyncStream<RoutingEvent>.Continuation)
    }

    private let subscribers = Mutex<[Int: Subscriber]>([:])
    private let subscriberCount = Atomic<Int>(0)
    private let nextID = Atomic<Int>(0)
    private let droppedCount = Atomic<Int>(0)

    public init() {}

    public var hasSubscribers: Bool { subscriberCount.load(ordering: .relaxed) > 0 }
    /// Events not delivered to a subscriber that was not reading fast enough.
    public var dropped: Int { droppedCount.load(ordering: .relaxed) }

    /// The events from now on, until the stream is dropped.
    public func events() -> AsyncStream<RoutingEvent> {
        let (stream, continuation) = AsyncStream<RoutingEvent>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        let id = add(.stream(continuation))
        continuation.onTermination = { [weak self] _ in self?.remove(id) }
        return stream
    }

    /// Streams events to an HTTP connection whose response head (text/event-stream) was sent.
    func subscribe(channel: any Channel) -> Int {
        add(.serverSentEvents(channel))
    }

    func remove(_ id: Int) {
        let removed = subscribers.withLock { $0.removeValue(forKey: id) }
        if removed != nil { subscriberCount.subtract(1, ordering: .relaxed) }
    }

    private func add(_ subscriber: Subscriber) -> Int {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        subscribers.withLock { $0[id] = subscriber }
        subscriberCount.add(1, ordering: .relaxed)
        return id
    }

    public func publish(_ event: RoutingEvent) {
        let current = subscribers.withLock { Array($0.values) }
        guard !current.isEmpty else { return }
        var frame: ByteBuffer?
        for subscriber in current {
            switch subscriber {
            case .stream(let continuation):
                continuation.yield(event)
            case .serverSentEvents(let channel):
                if frame == nil { frame = Self.serverSentEventFrame(event) }
                guard let frame else { continue }
                if channel.isWritable {
                    channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(frame)), promise: nil)
                } else {
                    droppedCount.add(1, ordering: .relaxed)
                }
            }
        }
    }

    static func serverSentEventFrame(_ event: RoutingEvent) -> ByteBuffer? {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let json = try? encoder.encode(event) else { return nil }
        var buffer = ByteBuffer()
        buffer.reserveCapacity(json.count + 8)
        buffer.writeStaticString("data: ")
        buffer.writeBytes(json)
        buffer.writeStaticString("\n\n")
        return buffer
    }
}
