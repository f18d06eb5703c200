import NIOCore
import TestSupport
import Testing

@testable import RedisClient

@Suite("RedisSubscriber against a real redis-server")
struct SubscriberTests {
    @Test func receivesChannelAndPatternMessagesBinarySafe() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        let subscriber = try await RedisSubscriber.connect(try server.configuration)
        try await subscriber.subscribe("chat")
        try await subscriber.psubscribe(["news.*"])
        #expect(subscriber.currentSubscriptions.channels == ["chat"])
        #expect(try await client.publish("hello", to: "chat") == 1)
        #expect(try await client.publish(RESPArgument(bytes: [0, 0xFF, 0x0A]), to: "news.sport") == 1)
        var iterator = subscriber.events.makeAsyncIterator()
        #expect(await iterator.next() == .message(RedisPubSubMessage(channel: "chat", pattern: nil, payload: ByteBuffer(string: "hello"))))
        #expect(
            await iterator.next()
                == .message(RedisPubSubMessage(channel: "news.sport", pattern: "news.*", payload: ByteBuffer(bytes: [0, 0xFF, 0x0A])))
        )
        try await subscriber.unsubscribe(["chat"])
        #expect(try await client.publish("unheard", to: "chat") == 0)
        await subscriber.close()
        await client.close()
        #expect(await iterator.next() == nil)
    }

    @Test func keepsReceivingAfterARestartAndSignalsTheGap() async throws {
        let server = try await RedisServer()
        var configuration = try server.configuration
        configuration.reconnectBackoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(200))
        let publisher = try await RedisClient.connect(configuration)
        let subscriber = try await RedisSubscriber.connect(configuration)
        try await subscriber.subscribe(["a", "b"])
        try await subscriber.psubscribe(["p.*"])
        var events = subscriber.events.makeAsyncIterator()
        try await publisher.publish("1", to: "a")
        #expect(await events.next() == .message(RedisPubSubMessage(channel: "a", pattern: nil, payload: ByteBuffer(string: "1"))))

        try await server.restart()

        if case .connectionLost = await events.next() {} else { Issue.record("expected connectionLost first") }
        #expect(await events.next() == .mayHaveMissedMessages(reason: .reconnected))
        #expect(subscriber.isConnected)
        // Re-subscribed to everything by itself: the server counts one subscriber on each.
        // The publisher may not have noticed the restart yet: wait until a command really goes through.
        try await waitUntil("the publisher to reconnect") { (try? await publisher.ping()) == "PONG" }
        #expect(try await publisher.publish("2", to: "a") == 1)
        #expect(try await publisher.publish("3", to: "b") == 1)
        #expect(try await publisher.publish("4", to: "p.x") == 1)
        #expect(await events.next() == .message(RedisPubSubMessage(channel: "a", pattern: nil, payload: ByteBuffer(string: "2"))))
        #expect(await events.next() == .message(RedisPubSubMessage(channel: "b", pattern: nil, payload: ByteBuffer(string: "3"))))
        #expect(await events.next() == .message(RedisPubSubMessage(channel: "p.x", pattern: "p.*", payload: ByteBuffer(string: "4"))))
        await subscriber.close()
        await publisher.close()
    }

    @Test func subscriptionsMadeWhileDownAreAppliedOnReconnect() async throws {
        let server = try await RedisServer()
        var configuration = try server.configuration
        configuration.reconnectBackoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(200))
        let subscriber = try await RedisSubscriber.connect(configuration)
        var events = subscriber.events.makeAsyncIterator()
        try await server.kill()
        if case .connectionLost = await events.next() {} else { Issue.record("expected connectionLost") }
        try await subscriber.subscribe("late")  // recorded, not lost
        try await server.start()
        #expect(await events.next() == .mayHaveMissedMessages(reason: .reconnected))
        let publisher = try await RedisClient.connect(configuration)
        #expect(try await publisher.publish("x", to: "late") == 1)
        #expect(await events.next() == .message(RedisPubSubMessage(channel: "late", pattern: nil, payload: ByteBuffer(string: "x"))))
        await subscriber.close()
        await publisher.close()
    }

    @Test func aChannelRedisRefusesIsForgottenSoThatReconnectsStillWork() async throws {
        let server = try await RedisServer()
        var configuration = try server.configuration
        configuration.reconnectBackoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(200))
        let admin = try await RedisClient.connect(configuration)
        let subscriber = try await RedisSubscriber.connect(configuration)
        try await subscriber.subscribe("ok.1")
        // An ACL that allows only ok.* channels: SUBSCRIBE refused gets -NOPERM.
        _ = try await admin.send("ACL", "SETUSER", "default", "resetchannels", "&ok.*")
        await #expect(throws: (any Error).self) { try await subscriber.subscribe("refused") }
        // It used to stay in the set, and every reconnect then failed on it, for ever.
        #expect(subscriber.currentSubscriptions.channels == ["ok.1"])
        try await subscriber.subscribe("ok.2")
        #expect(subscriber.currentSubscriptions.channels == ["ok.1", "ok.2"])
        await subscriber.close()
        await admin.close()
    }

    @Test func aSlowConsumerIsToldItMissedMessages() async throws {
        // The buffer holds 2 events; 5 arrive before the consumer reads any.
        let (stream, continuation) = AsyncStream.makeStream(of: RedisSubscriberEvent.self, bufferingPolicy: .bufferingOldest(2))
        let sink = EventSink(continuation: continuation)
        func message(_ text: String) -> RedisSubscriberEvent {
            .message(RedisPubSubMessage(channel: "c", payload: ByteBuffer(string: text)))
        }
        for index in 0..<5 { sink.yield(message("\(index)")) }
        var events = stream.makeAsyncIterator()
        #expect(await events.next() == message("0"))
        #expect(await events.next() == message("1"))
        // The next delivery is preceded by the gap, so the loss of 2, 3 and 4 is never silent.
        sink.yield(message("5"))
        #expect(await events.next() == .mayHaveMissedMessages(reason: .bufferOverflow))
        #expect(await events.next() == message("5"))
        sink.finish()
        #expect(await events.next() == nil)
    }

    @Test func garbageOnTheSubscriberConnectionIsAProtocolError() async throws {
        let fake = try await FakeServer.start(reply: Array("not resp at all\r\n".utf8))
        var configuration = RedisConfiguration(port: fake.port)
        configuration.reconnectBackoff = Backoff(initial: .seconds(30), maximum: .seconds(30))
        let subscriber = try await RedisSubscriber.connect(configuration)
        var events = subscriber.events.makeAsyncIterator()
        // The garbage answer breaks the connection; the caller gets a clear error, nothing crashes.
        await #expect {
            try await subscriber.subscribe("x")
        } throws: { error in
            if case RedisError.protocolError = error { return true }
            return false
        }
        if case .connectionLost = await events.next() {} else { Issue.record("expected connectionLost") }
        #expect(!subscriber.isConnected)
        await subscriber.close()
        await fake.stop()
    }
}
