import Foundation
import NIOCore
import RedisClient
import TestSupport
import Testing

@Suite("RedisClient against a real redis-server")
struct RedisClientTests {
    @Test func tenThousandPipelinedCommandsAnswerInOrder() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }

        // One batch of 10,000 commands in a single write.
        let commands: [[RESPArgument]] = (0..<10_000).map { _ in ["INCR", "counter"] }
        let replies = try await client.pipeline(commands)
        #expect(replies == (1...10_000).map { RESPValue.integer($0) })

        // 10,000 independent callers in flight at once on the one connection.
        let results = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
            for index in 0..<10_000 {
                group.addTask { (index, try await client.send("ECHO", RESPArgument("v\(index)")).string) }
            }
            return try await group.reduce(into: [Int: String?]()) { $0[$1.0] = $1.1 }
        }
        #expect(results.count == 10_000)
        #expect(results.allSatisfy { $0.value == "v\($0.key)" })
    }

    /// The next test run finds what a killed one left running by this marker (Tests/python/leftovers.py),
    /// so redis-server must keep its environment (no process title written over it).
    @Test func aTestsRedisServerCarriesTheTestRunsMarker() async throws {
        let server = try await RedisServer()
        let pid = try #require(server.processIdentifier)
        let environment = try #require(FileManager.default.contents(atPath: "/proc/\(pid)/environ"))
        let entries = environment.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        #expect(entries.contains("\(TestRun.markerVariable)=\(TestRun.marker)"))
        #expect(TestRun.marker.hasPrefix("\(getpid()):") || ProcessInfo.processInfo.environment[TestRun.markerVariable] != nil)
        try await server.stop()
    }

    @Test func anEmptyBatchIsAnsweredAtOnceAndLeavesTheConnectionUsable() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }
        #expect(try await client.pipelineFuture([]).get().isEmpty)
        #expect(try await client.pipeline([]).isEmpty)
        // It used to queue a request that waits for no reply and took every later caller's: this
        // PING got none and timed out.
        #expect(try await client.send("PING").string == "PONG")
        #expect(try await client.pipelineFuture([["ECHO", "a"], ["ECHO", "b"]]).get().map(\.string) == ["a", "b"])
    }

    @Test func aTaskOnTheConnectionsEventLoopAwaitsRepliesThere() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }
        let loop = client.eventLoop
        // Every step of the task, before and after each awaited reply, runs on the connection's loop.
        let onLoop = try await withTaskExecutorPreference(client.taskExecutor) {
            var always = loop.inEventLoop
            for index in 0..<100 {
                let replies = try await client.pipeline([["INCR", "n"], ["ECHO", RESPArgument("e\(index)")]])
                #expect(replies == [.integer(index + 1), .bulkString(ByteBuffer(string: "e\(index)"))])
                always = always && loop.inEventLoop
            }
            return always
        }
        #expect(onLoop)
        // Without the preference, the same code runs on the cooperative pool, off the event loop.
        let offLoop = try await Task.detached {
            _ = try await client.send("PING")
            return !loop.inEventLoop
        }.value
        #expect(offLoop)
    }

    @Test func binaryValuesRoundTripExactly() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }
        let binary: [UInt8] = [0x00, 0xFF, 0xFE, 0x0D, 0x0A, 0x00, 0xC3, 0x28, 0x80]  // NULs, CRLF, invalid UTF-8
        try await client.set("bin", to: RESPArgument(bytes: binary))
        let value = try #require(try await client.get("bin"))
        #expect(Array(value.readableBytesView) == binary)
        let key: [UInt8] = [0x6B, 0x00, 0xFF]
        try await client.send("SET", RESPArgument(bytes: key), "x")
        #expect(try await client.send("GET", RESPArgument(bytes: key)).string == "x")
        try await client.set("empty", to: "")
        #expect(try await client.get("empty") == ByteBuffer())
        #expect(try await client.get("missing") == nil)
    }

    @Test func errorRepliesAreTypedWithTheServerMessage() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        defer { Task { await client.close() } }
        try await client.set("text", to: "abc")
        await #expect(throws: RedisError.server(message: "ERR value is not an integer or out of range")) {
            try await client.incr("text")
        }
        await #expect {
            try await client.send("NOSUCHCOMMAND")
        } throws: { error in
            guard case RedisError.server(let message) = error else { return false }
            return message.hasPrefix("ERR unknown command")
        }
        // In a pipeline, an error stays in place and the other replies are intact.
        let replies = try await client.pipeline([["INCR", "text"], ["GET", "text"]])
        #expect(replies.count == 2)
        if case .error(let message) = replies[0] { #expect(message.contains("not an integer")) } else { Issue.record("expected an error") }
        #expect(replies[1].string == "abc")
        // The connection is still usable.
        #expect(try await client.ping() == "PONG")
    }

    @Test func authenticatesWithPasswordAndRejectsAWrongOne() async throws {
        let server = try await RedisServer(password: "hunter2")
        let client = try await RedisClient.connect(try server.configuration)
        #expect(try await client.ping() == "PONG")
        await client.close()

        var wrong = try server.configuration
        wrong.password = "wrong"
        await #expect {
            _ = try await RedisClient.connect(wrong)
        } throws: { error in
            guard case RedisError.authenticationFailed(_, let message) = error else { return false }
            return message.contains("WRONGPASS") || message.contains("invalid")
        }

        // Without a password: refused at connect (its PING), with what to do.
        var none = try server.configuration
        none.password = nil
        await #expect {
            _ = try await RedisClient.connect(none)
        } throws: { error in
            guard case RedisError.authenticationFailed(_, let message) = error else { return false }
            return message.hasPrefix("NOAUTH") && "\(error)".contains("wants a password, and none was given")
        }
    }

    @Test("A closed port, reached by a name with two addresses, is one plain 'connection refused', not NIO's error dump")
    func refusedConnectionIsSaidPlainly() async throws {
        let port = try FreePort.allocate()
        var configuration = try RedisConfiguration(url: "redis://localhost:\(port)")
        configuration.connectTimeout = .seconds(2)
        await #expect {
            _ = try await RedisClient.connect(configuration)
        } throws: { error in
            // One "connection refused" for both addresses (a machine without IPv6 on loopback may add
            // a reason of its own for ::1), and none of NIO's error values.
            let text = "\(error)"
            return text.hasPrefix("Cannot connect to Redis at localhost:\(port): ")
                && text.components(separatedBy: "connection refused").count == 2
                && !text.contains("SingleConnectionFailure") && !text.contains("NIOConnectionError") && !text.contains("errno:")
        }
    }

    @Test func selectsTheDatabaseFromTheURL() async throws {
        let server = try await RedisServer()
        let db3 = try await RedisClient.connect(try RedisConfiguration(url: server.url + "/3"))
        let db0 = try await RedisClient.connect(try server.configuration)
        defer {
            Task {
                await db3.close()
                await db0.close()
            }
        }
        try await db3.set("where", to: "three")
        #expect(try await db0.getString("where") == nil)
        #expect(try await db3.getString("where") == "three")
    }

    @Test func connectFailsClearlyWhenNothingListens() async throws {
        let port = try FreePort.allocate()
        await #expect {
            _ = try await RedisClient.connect(try RedisConfiguration(url: "redis://127.0.0.1:\(port)"))
        } throws: { error in
            guard case RedisError.connectFailed(let endpoint, _) = error else { return false }
            return endpoint == "127.0.0.1:\(port)" && "\(error)".contains("Is redis-server running")
        }
    }

    @Test func serverKilledMidUseFailsFastThenRecovers() async throws {
        let server = try await RedisServer()
        var configuration = try server.configuration
        configuration.commandTimeout = .seconds(60)  // so that only the connection loss can fail the command
        configuration.reconnectBackoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(200))
        let client = try await RedisClient.connect(configuration)
        defer { Task { await client.close() } }
        try await client.set("before", to: "1")

        // A command in flight (blocked on the server) when the server dies fails with connectionLost.
        let blocked = Task { try await client.send("BLPOP", "never", "0") }
        let observer = try await RedisClient.connect(configuration)
        try await waitUntil("BLPOP to be blocked on the server") {
            let info = try await observer.send("CLIENT", "LIST").string ?? ""
            return info.contains("cmd=blpop")
        }
        await observer.close()
        try await server.kill()
        await #expect {
            try await blocked.value
        } throws: { error in
            if case RedisError.connectionLost = error { return true }
            return false
        }

        // While it is down, commands fail fast with notConnected (no queue).
        try await waitUntil("the client to notice the loss") { !client.isConnected }
        await #expect {
            try await client.ping()
        } throws: { error in
            if case RedisError.notConnected = error { return true }
            return false
        }

        // After the restart, the client is back by itself.
        try await server.start()
        try await waitUntil("the client to reconnect") { client.isConnected }
        #expect(try await client.ping() == "PONG")
        try await client.set("after", to: "2")
        #expect(try await client.getString("after") == "2")
    }

    /// A fake server answering every PING with `reply`: the PING fails with a protocol error whose
    /// text passes `check`, and the broken connection is dropped.
    func expectProtocolError(reply: [UInt8], maxReplyBytes: Int? = nil, _ check: @escaping (String, any Error) -> Bool) async throws {
        let fake = try await FakeServer.start(reply: reply)
        var configuration = RedisConfiguration(port: fake.port)
        if let maxReplyBytes { configuration.maxReplyBytes = maxReplyBytes }
        configuration.reconnectBackoff = Backoff(initial: .seconds(30), maximum: .seconds(30))
        let client = try await RedisClient.connect(configuration)
        await #expect {
            try await client.ping()
        } throws: { error in
            guard case RedisError.protocolError(_, let reason) = error else { return false }
            return check(reason, error)
        }
        try await waitUntil("the broken connection to be dropped") { !client.isConnected }
        await client.close()
        await fake.stop()
    }

    @Test func garbageFromTheServerDropsTheConnectionWithAClearError() async throws {
        try await expectProtocolError(reply: Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8)) { reason, error in
            !reason.isEmpty && "\(error)".contains("not RESP")
        }
    }

    /// A peer that is not Redis (or a broken one) announcing an endless bulk string: the client used to
    /// keep every byte until the string was complete, growing without bound.
    @Test func anEndlessBulkStringDropsTheConnectionOnceItPassesTheLimit() async throws {
        let reply = Array("$1000000000\r\n".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 2 << 20)
        try await expectProtocolError(reply: reply, maxReplyBytes: 1 << 20) { reason, _ in
            reason.contains("a reply of more than 1048576 bytes") && reason.contains("not a Redis server")
        }
    }

    @Test func aSilentServerTimesOut() async throws {
        let fake = try await FakeServer.start(reply: nil)
        var configuration = RedisConfiguration(port: fake.port)
        configuration.commandTimeout = .milliseconds(200)
        configuration.reconnectBackoff = Backoff(initial: .seconds(30), maximum: .seconds(30))
        let client = try await RedisClient.connect(configuration)
        await #expect(throws: RedisError.timeout(endpoint: configuration.endpoint, after: .milliseconds(200))) {
            try await client.ping()
        }
        try await waitUntil("the timed-out connection to be closed") { !client.isConnected }
        await client.close()
        await fake.stop()
    }

    @Test func closedClientRefusesCommands() async throws {
        let server = try await RedisServer()
        let client = try await RedisClient.connect(try server.configuration)
        await client.close()
        await #expect {
            try await client.ping()
        } throws: { error in
            if case RedisError.notConnected = error { return true }
            return false
        }
    }
}

@Suite("Test support")
struct TestSupportTests {
    @Test func redisServerStopsOnSIGTERMAndRestarts() async throws {
        let server = try await RedisServer()
        try await server.stop()
        #expect(!FreePort.isListening(server.port))
        try await server.start()
        let client = try await RedisClient.connect(try server.configuration)
        #expect(try await client.ping() == "PONG")
        await client.close()
    }
}
