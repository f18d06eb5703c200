import NIOCore
import RedisClient
import TestSupport
import Testing

@Suite("Typed command helpers against a real redis-server")
struct CommandTests {
    @Test func setOptionsAndKeys() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }
        #expect(try await client.set("k", to: "v", condition: .ifNotExists))
        #expect(try await client.set("k", to: "w", condition: .ifNotExists) == false)
        #expect(try await client.getString("k") == "v")
        #expect(try await client.set("nokey", to: "x", condition: .ifExists) == false)
        try await client.set("ex", to: "1", expiration: .seconds(100))
        #expect(try await client.send("TTL", "ex").int.map { (1...100).contains($0) } == true)
        try await client.set("px", to: "1", expiration: .milliseconds(100_000))
        #expect(try await client.send("PTTL", "px").int.map { (1...100_000).contains($0) } == true)
        #expect(try await client.expire("k", seconds: 50))
        #expect(try await client.expire("missing", seconds: 50) == false)
        #expect(try await client.incr("n") == 1)
        #expect(try await client.incr("n") == 2)
        #expect(try await client.del("k", "n", "missing") == 2)
    }

    @Test func streams() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }
        var ids: [String] = []
        for index in 0..<5 {
            ids.append(try await client.xadd("s", fields: [("n", RESPArgument(index)), ("bin", RESPArgument(bytes: [0, 255]))]))
        }
        #expect(try await client.xlen("s") == 5)
        let all = try await client.xrange("s")
        #expect(all.map(\.id) == ids)
        #expect(all.first?["n"] == ByteBuffer(string: "0"))
        #expect(all.first?["bin"].map { Array($0.readableBytesView) } == [0, 255])
        let after = try await client.xrange("s", from: "(" + ids[2])
        #expect(after.map(\.id) == Array(ids[3...]))
        let newest = try await client.xrevrange("s", count: 2)
        #expect(newest.map(\.id) == [ids[4], ids[3]])
        // MAXLEN = exact trimming keeps the newest entries.
        try await client.xadd("s", fields: [("n", "5")], maxLength: 3, approximate: false)
        #expect(try await client.xlen("s") == 3)
        // MAXLEN ~ is accepted (approximate trimming works on whole nodes).
        for index in 0..<300 { try await client.xadd("big", fields: [("n", RESPArgument(index))], maxLength: 100) }
        let length = try await client.xlen("big")
        #expect(length >= 100 && length < 300)
    }

    @Test func sortedSetsAndHashes() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }
        #expect(try await client.zadd("z", members: [(1, "a"), (2, "b"), (3.5, "c")]) == 3)
        #expect(try await client.zrangebyscore("z", min: "2", max: "+inf").map { String(buffer: $0) } == ["b", "c"])
        #expect(try await client.zrangebyscore("z", min: "-inf", max: "+inf", limit: (1, 1)).map { String(buffer: $0) } == ["b"])
        #expect(try await client.zremrangebyscore("z", min: "-inf", max: "(3") == 2)
        #expect(try await client.zrangebyscore("z", min: "-inf", max: "+inf").map { String(buffer: $0) } == ["c"])
        #expect(try await client.hset("h", fields: [("name", "bob"), ("bin", RESPArgument(bytes: [0, 1]))]) == 2)
        let hash = try await client.hgetall("h")
        #expect(hash["name"] == ByteBuffer(string: "bob"))
        #expect(hash["bin"].map { Array($0.readableBytesView) } == [0, 1])
        #expect(try await client.hgetall("none").isEmpty)
    }

    @Test func publishCountsSubscribers() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }
        #expect(try await client.publish("hi", to: "nobody") == 0)
    }

    @Test func scriptsLoadThemselvesWhenTheServerDoesNotKnowThem() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }
        let script = RedisScript("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])")
        #expect(try await client.evalScript(script, keys: ["a", "b"], arguments: ["x"]) == .integer(1))
        #expect(try await client.getString("a") == "x")
        try await client.send("SCRIPT", "FLUSH")  // as after a Redis restart
        #expect(try await client.evalScript(script, keys: ["a", "b"], arguments: ["y"]) == .integer(2))
        let failing = RedisScript("return redis.error_reply('MYERR custom failure')")
        await #expect(throws: RedisError.server(message: "MYERR custom failure")) {
            try await client.evalScript(failing)
        }
    }

    @Test func transactionsAreAtomicAndReportAborts() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }
        let results = try await client.transaction([["SET", "t", "1"], ["INCR", "t"], ["GET", "t"]])
        #expect(results == [.simpleString("OK"), .integer(2), .bulkString(ByteBuffer(string: "2"))])
        // A command error inside EXEC is returned in place; a queueing error aborts the whole transaction.
        let mixed = try await client.transaction([["SET", "u", "x"], ["INCR", "u"]])
        if case .error = mixed[1] {} else { Issue.record("expected the INCR error in place, got \(mixed)") }
        await #expect {
            try await client.transaction([["SET", "v", "1"], ["NOSUCHCOMMAND"]])
        } throws: { error in
            guard case RedisError.transactionAborted(let message) = error else { return false }
            return message.contains("EXECABORT")
        }
        #expect(try await client.getString("v") == nil)
        // Concurrent transactions do not interleave on the shared connection.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<200 {
                group.addTask {
                    let replies = try await client.transaction([["SET", "same", RESPArgument(index)], ["GET", "same"]])
                    #expect(replies.last?.string == "\(index)")
                }
            }
            try await group.waitForAll()
        }
    }
}
