import NIOCore
import RedisClient
import Synchronization
import TestSupport
import Testing

@testable import ChatApp

/// The hub's queue of subscription events is bounded, so a delivery loop that falls behind leaves the
/// subscriber's own bound (drop, then say so) to apply instead of growing memory.
@Suite struct SubscriberBacklogTests {
    @Test func theCountAdmitsUpToItsLimit() {
        var count = BacklogCount(limit: 2)
        let first = count.admit()
        let second = count.admit()
        let third = count.admit()
        #expect(first && second && !third)
        #expect(count.queued == 2)
        count.taken()
        #expect(count.queued == 1)
        let again = count.admit()
        #expect(again)
        count.taken()
        count.taken()
        count.taken()
        #expect(count.queued == 0)
    }

    @Test func aFullQueueHoldsTheForwarderUntilTheLoopTakesAnEvent() async throws {
        let backlog = SubscriberBacklog(limit: 2)
        let (source, feed) = AsyncStream.makeStream(of: Int.self)
        let (queue, queueFeed) = AsyncStream.makeStream(of: Int.self)
        let forwarder = Task {
            await backlog.forward(source) { queueFeed.yield($0) }
            queueFeed.finish()
        }
        for value in 1...5 { feed.yield(value) }
        feed.finish()
        var taken = queue.makeAsyncIterator()
        #expect(await taken.next() == 1)
        #expect(await taken.next() == 2)
        // Two are queued and not taken: the third waits in the source.
        try await waitUntil("the forwarder to hold") { backlog.queued == 2 }
        backlog.taken()
        #expect(await taken.next() == 3)
        backlog.taken()
        backlog.taken()
        #expect(await taken.next() == 4)
        #expect(await taken.next() == 5)
        #expect(await taken.next() == nil)
        await forwarder.value
    }

    @Test func aWaitingForwarderStopsWhenCancelled() async throws {
        let backlog = SubscriberBacklog(limit: 1)
        let (source, feed) = AsyncStream.makeStream(of: Int.self)
        feed.yield(1)
        feed.yield(2)
        let forwarded = Counter()
        let forwarder = Task { await backlog.forward(source) { _ in forwarded.add() } }
        try await waitUntil("the first event to be forwarded") { forwarded.value == 1 }
        forwarder.cancel()
        await forwarder.value
        #expect(forwarded.value == 1)
    }

    /// With a real Redis: the loop stops taking; the forwarder holds `limit` events, the subscriber
    /// buffers up to its bound and drops the rest; when the loop goes on it gets the held events, then
    /// the buffered ones, then the gap (so it reads the stream), then what came after.
    @Test func aLoopThatFallsBehindGetsABoundedQueueAndThenTheGap() async throws {
        let server = try await RedisServer()
        let publisher = try await RedisClient.connect(try server.configuration)
        let subscriber = try await RedisSubscriber.connect(try server.configuration, bufferLimit: 20)
        try await subscriber.subscribe("lines")
        let backlog = SubscriberBacklog(limit: 5)
        let (queue, queueFeed) = AsyncStream.makeStream(of: RedisSubscriberEvent.self)
        let forwarder = Task { await backlog.forward(subscriber.events) { queueFeed.yield($0) } }
        // The first six before the rest: the forwarder holds them (five queued, one in hand) before
        // the subscriber's buffer can fill, however late the forwarder task starts.
        for n in 0..<6 { try await publisher.publish(RESPArgument("\(n)"), to: "lines") }
        try await waitUntil("the queue to fill") { backlog.queued == 5 }
        for n in 6..<200 { try await publisher.publish(RESPArgument("\(n)"), to: "lines") }
        // Everything published has reached the subscriber (PING answers after the messages).
        #expect(try await publisher.ping() == "PONG")

        var events = queue.makeAsyncIterator()
        var received: [Int] = []
        // Five queued, one held by the forwarder, twenty buffered by the subscriber: 26 of 200.
        for _ in 0..<26 {
            guard case .message(let message) = await events.next() else {
                Issue.record("expected a message")
                break
            }
            received.append(Int(String(buffer: message.payload))!)
            backlog.taken()
        }
        #expect(received == Array(0..<26))
        // Messages still on their way to the subscriber when the loop went on may follow; the gap
        // comes before any of them, and some of the 200 were dropped.
        try await publisher.publish("after", to: "lines")
        var sawGap = false
        var later: [Int] = []
        while let event = await events.next() {
            backlog.taken()
            if event == .mayHaveMissedMessages(reason: .bufferOverflow) {
                #expect(!sawGap && later.isEmpty, "one gap, before the messages after the dropped ones")
                sawGap = true
                continue
            }
            guard case .message(let message) = event else {
                Issue.record("unexpected \(event)")
                break
            }
            if String(buffer: message.payload) == "after" { break }
            later.append(Int(String(buffer: message.payload))!)
        }
        #expect(sawGap)
        #expect(later == later.sorted() && later.allSatisfy { $0 >= 26 } && later.count < 174)
        forwarder.cancel()
        await subscriber.close()
        await publisher.close()
    }
}

private final class Counter: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
