import NIOCore
import RedisClient
import TestSupport
import Testing

@testable import ChatApp

/// The Redis parts against a real redis-server: the append script, history reads, sessions, presence.
@Suite struct RedisIntegrationTests {
    func line(_ text: String, user: String = "ada", id: String? = nil) -> ChatLine {
        ChatLine(action: .message, user: user, msg: text, id: id, time: 1, instance: "test")
    }

    @Test func appendStoresPublishesAndDeduplicatesAtomically() async throws {
        let server = try await RedisServer()
        let redis = try await RedisClient.connect(try server.configuration)
        let subscriber = try await RedisSubscriber.connect(try server.configuration)
        defer {
            Task {
                await subscriber.close(); await redis.close()
            }
        }
        let log = ChatLog(redis: redis, keys: ChatKeys(prefix: "t:"), historyLimit: 100)
        try await subscriber.subscribe(log.keys.channel)

        let first = try await log.append(line("one", id: "m1"), dedupeKey: "ada:m1")
        let again = try await log.append(line("one (resent)", id: "m1"), dedupeKey: "ada:m1")
        let other = try await log.append(line("two", user: "bob", id: "m1"), dedupeKey: "bob:m1")
        let control = try await log.append(
            ChatLine(action: .control, user: "ada", msg: ChatLine.joinedText, id: nil, time: 2, instance: "t"), dedupeKey: nil)
        #expect(first.isNew && !again.isNew && other.isNew && control.isNew)
        #expect(again.id == first.id)
        #expect(first.id < other.id && other.id < control.id)

        var chain: [PublishedLine] = []
        for await event in subscriber.events {
            if case .message(let message) = event, let published = ChatLog.parsePublished(message.payload) { chain.append(published) }
            if chain.count == 3 { break }
        }
        let published = chain.map(\.line)
        #expect(published.map(\.id) == [first.id, other.id, control.id])
        // Each published line names the entry stored before it: the chain a subscriber checks.
        #expect(chain.map(\.previous) == [.zero, first.id, other.id])
        #expect(ChatLine.decode(published[0].json)?.msg == "one")

        let all = try await log.recent(10)
        #expect(all == published)
        #expect(try await log.entries(after: first.id, limit: 10).map(\.id) == [other.id, control.id])
        #expect(try await log.entries(after: control.id, limit: 10).isEmpty)
        #expect(try await log.contains(other.id))
        #expect(try await !log.contains(StreamID(milliseconds: 1, sequence: 0)))
        #expect(try await log.recent(2).map(\.id) == [other.id, control.id])
    }

    @Test func historyIsCapped() async throws {
        let server = try await RedisServer()
        let redis = try await RedisClient.connect(try server.configuration)
        defer { Task { await redis.close() } }
        let log = ChatLog(redis: redis, keys: ChatKeys(prefix: "t:"), historyLimit: 10)
        var first: StreamID?
        for index in 0..<500 {
            let appended = try await log.append(line("m\(index)"), dedupeKey: nil)
            if first == nil { first = appended.id }
        }
        let length = try await redis.xlen(log.keys.history)
        #expect(length >= 10 && length < 500)  // MAXLEN ~ trims whole nodes, approximately
        #expect(try await !log.contains(try #require(first)))
    }

    @Test func sessionsUseTheConnectRedisLayout() async throws {
        let server = try await RedisServer()
        let redis = try await RedisClient.connect(try server.configuration)
        defer { Task { await redis.close() } }
        let store = SessionStore(redis: redis, ttl: .seconds(100))
        try await store.save("abc", SessionRecord(user: "ada"))
        #expect(try await store.load("abc")?.user == "ada")
        let ttl = try await redis.send("TTL", "sess:abc").int ?? -1
        #expect(ttl > 0 && ttl <= 100)
        // A session written by express-session + connect-redis is readable.
        try await redis.set("sess:node", to: #"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":"bob"}"#)
        #expect(try await store.load("node")?.user == "bob")
        #expect(try await store.touch("node"))
        try await redis.set("sess:junk", to: "not json")
        #expect(try await store.load("junk") == nil)
        try await store.destroy("abc")
        #expect(try await store.load("abc") == nil)
        #expect(try await !store.touch("abc"))
    }

    /// Two instances' presence, "a" and "b" (TTL 10 s), on a Redis of their own.
    private func withTwoInstances(
        _ body: (RedisClient, ChatKeys, PresenceRegistry, PresenceRegistry) async throws -> Void
    ) async throws {
        let server = try await RedisServer()
        let redis = try await RedisClient.connect(try server.configuration)
        defer { Task { await redis.close() } }
        let keys = ChatKeys(prefix: "t:")
        try await body(
            redis, keys, PresenceRegistry(redis: redis, keys: keys, instance: "a", ttl: .seconds(10)),
            PresenceRegistry(redis: redis, keys: keys, instance: "b", ttl: .seconds(10)))
    }

    @Test func presenceSeesEveryInstanceAndReapsDeadOnesOnce() async throws {
        try await withTwoInstances { redis, keys, a, b in
            _ = try await a.heartbeat(users: [("ada", 1), ("bob", 2)], now: 1_000)
            // Each sees the other's users, not its own (it knows those better than its last heartbeat).
            let seenByB = try await b.heartbeat(users: [("cy", 1), ("dee", 0)], now: 1_000)
            #expect(seenByB.onlineElsewhere == ["ada", "bob"])
            #expect(seenByB.reaped.isEmpty)
            // dee's last socket on b closed (0: leaving, within the grace): not online there, but said.
            let seenByA = try await a.heartbeat(users: [("ada", 1), ("bob", 2)], now: 1_000)
            #expect(seenByA.onlineElsewhere == ["cy"] && seenByA.leavingElsewhere == ["dee": ["b"]])
            #expect(!seenByA.wasReaped)
            // a stops sending heartbeats; 10 s later b reaps it, exactly once.
            let reaping = try await b.heartbeat(users: [("cy", 1), ("bob", 1)], now: 11_001)
            #expect(reaping.reapedInstances == ["a"])
            #expect(reaping.reaped == ["ada", "bob"])
            #expect(reaping.onlineElsewhere.isEmpty)
            let after = try await b.heartbeat(users: [("cy", 1)], now: 11_002)
            #expect(after.reapedInstances.isEmpty)
            #expect(after.onlineElsewhere.isEmpty)
            // A hash outlives its TTL by far: a whole cluster started again hours later still reaps it.
            #expect((try await redis.send("PTTL", RESPArgument(keys.presence("b"))).int ?? 0) > 86_000_000)
        }
    }

    @Test func aNewRunOfAnInstanceIDHasItsPredecessorReapedNotOverwritten() async throws {
        try await withTwoInstances { redis, keys, a, b in
            _ = try await a.heartbeat(users: [("ada", 1), ("bob", 1)], now: 1_000, first: true)
            // a is killed and started again under the same id (same port); bob comes back to it.
            let restarted = PresenceRegistry(redis: redis, keys: keys, instance: "a", ttl: .seconds(10))
            _ = try await restarted.heartbeat(users: [("bob", 1)], now: 2_000, first: true)
            // Until the old run's expiry (11 s), ada still counts as online, on the old run's entry.
            #expect(try await b.heartbeat(users: [], now: 10_999).onlineElsewhere == ["ada", "bob"])
            let reaping = try await b.heartbeat(users: [], now: 11_001)
            #expect(reaping.reapedInstances == ["a#2000"])
            #expect(reaping.reaped == ["ada", "bob"])  // bob is online on the new run: PresenceState keeps him
            #expect(reaping.onlineElsewhere == ["bob"])
            // Later heartbeats of the new run move nothing aside.
            _ = try await restarted.heartbeat(users: [("bob", 1)], now: 12_000)
            #expect(try await b.heartbeat(users: [], now: 30_000).reapedInstances == ["a"])
        }
        #expect(ChatHub.describe(["a#2000", "b"]) == "a (a previous run), b")
    }

    @Test("Right after an outage an instance reaps nobody, and one that was reaped while alive learns it")
    func reapingPausedAndReapedWhileAlive() async throws {
        try await withTwoInstances { _, _, a, b in
            _ = try await a.heartbeat(users: [("ada", 1)], now: 1_000)
            // Redis was out for both until 20 s: b's first heartbeat back may not reap a, whose time
            // ran out meanwhile, and counts its users as online.
            let paused = try await b.heartbeat(users: [("bob", 1)], now: 20_000, reap: false)
            #expect(paused.reapedInstances.isEmpty && paused.reaped.isEmpty && paused.onlineElsewhere == ["ada"])
            let reaping = try await b.heartbeat(users: [("bob", 1)], now: 30_000)
            #expect(reaping.reapedInstances == ["a"] && reaping.reaped == ["ada"])
            // a was alive, cut off from Redis: its next heartbeat finds its entry gone.
            #expect(try await a.heartbeat(users: [("ada", 1)], now: 30_500).wasReaped)
            #expect(try await !a.heartbeat(users: [("ada", 1)], now: 31_000).wasReaped)
            // A first heartbeat (a new process) is never said to have been reaped.
            #expect(try await !b.heartbeat(users: [("bob", 1)], now: 99_000, first: true).wasReaped)
        }
    }

    @Test func anInstanceThatStopsHandsItsUsersOverForTheGrace() async throws {
        try await withTwoInstances { _, _, a, b in
            _ = try await a.heartbeat(users: [("ada", 1)], now: 1_000)
            // a stops at 2 s: its sockets are closed, ada and grace (arrived since its last heartbeat)
            // are handed over with 0 sockets, for a grace of 4 s.
            try await a.handOver(users: [("ada", 0), ("grace", 0)], now: 2_000, grace: .seconds(4))
            let within = try await b.heartbeat(users: [("bob", 1), ("grace", 1)], now: 5_999)
            #expect(within.onlineElsewhere.isEmpty)
            #expect(within.leavingElsewhere == ["ada": ["a"], "grace": ["a"]])  // the marker is no user
            #expect(within.reaped.isEmpty && within.stoppedInstances.isEmpty)
            let reaping = try await b.heartbeat(users: [("bob", 1), ("grace", 1)], now: 6_001)
            #expect(reaping.stoppedInstances == ["a"])
            #expect(reaping.reapedInstances.isEmpty)
            #expect(reaping.reaped == ["ada", "grace"])  // PresenceState announces only who is online nowhere
            #expect(reaping.onlineElsewhere.isEmpty)
            #expect(try await b.heartbeat(users: [("bob", 1)], now: 6_002).stoppedInstances.isEmpty)
        }
    }
}
