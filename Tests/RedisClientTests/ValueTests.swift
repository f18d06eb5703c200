import NIOCore
import Testing

@testable import RedisClient

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Redis configuration, backoff and state machines (no I/O)")
struct ValueTests {
    @Test func parsesFullURL() throws {
        let config = try RedisConfiguration(url: "redis://:s%40cret@10.0.0.5:6380/3")
        #expect(config.host == "10.0.0.5")
        #expect(config.port == 6380)
        #expect(config.password == "s@cret")
        #expect(config.username == nil)
        #expect(config.database == 3)
        #expect(config.redactedURL == "redis://:***@10.0.0.5:6380/3")
    }

    @Test func parsesUserAndDefaults() throws {
        let config = try RedisConfiguration(url: "redis://alice:pw@localhost")
        #expect(config.username == "alice")
        #expect(config.password == "pw")
        #expect(config.port == 6379)
        #expect(config.database == 0)
        let bare = try RedisConfiguration(url: "redis://127.0.0.1:7000")
        #expect(bare.password == nil)
        #expect(bare.port == 7000)
        let ipv6 = try RedisConfiguration(url: "redis://[::1]:7001/2")
        #expect(ipv6.host == "::1")
        #expect(ipv6.endpoint == "[::1]:7001")
    }

    @Test("A URL pointed elsewhere keeps everything but its host and port")
    func urlReachedElsewhere() throws {
        let cases: [(String, String)] = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:7001"),
            ("redis://localhost", "redis://127.0.0.1:7001"),
            ("redis://:s%40cret@10.0.0.5:6380/3", "redis://:s%40cret@127.0.0.1:7001/3"),
            ("redis://alice:pw@[::1]:6379/2?protocol=3", "redis://alice:pw@127.0.0.1:7001/2?protocol=3"),
            ("redis://host#fragment", "redis://127.0.0.1:7001#fragment"),
        ]
        for (url, expected) in cases {
            let relayed = RedisConfiguration.url(url, reachedAt: "127.0.0.1", port: 7001)
            #expect(relayed == expected)
            let before = try RedisConfiguration(url: url)
            let after = try RedisConfiguration(url: relayed)
            #expect(after.host == "127.0.0.1" && after.port == 7001)
            #expect(after.username == before.username && after.password == before.password && after.database == before.database)
        }
        #expect(RedisConfiguration.url("redis://a:1", reachedAt: "::1", port: 7001) == "redis://[::1]:7001")
    }

    @Test("A socket error is said in words, not as NIO's error value; another error is not a socket error")
    func socketErrorsInWords() {
        #expect(SocketErrorText.describe(IOError(errnoCode: ECONNREFUSED, reason: "connect")) == "connection refused")
        #expect(
            SocketErrorText.describe(IOError(errnoCode: ECONNRESET, reason: "read(descriptor:pointer:size:)"))
                == "connection reset by the peer (ECONNRESET)")
        #expect(SocketErrorText.describe(IOError(errnoCode: EHOSTUNREACH, reason: "connect")) == "no route to the host (EHOSTUNREACH)")
        #expect(SocketErrorText.describe(IOError(errnoCode: EMFILE, reason: "socket")) == "Too many open files (errno 24)")
        #expect(SocketErrorText.describe(ChannelError.connectTimeout(.seconds(5))) == "connect timed out after 5.0 seconds")
        #expect(SocketErrorText.describe(ChannelError.eof) == "the connection was closed")
        // What NIO throws when the handlers of a channel closed a moment ago are already gone.
        #expect(SocketErrorText.describe(ChannelPipelineError.notFound) == "the connection was closed")
        #expect(SocketErrorText.describe(RedisError.server(message: "ERR")) == nil)
        // RedisClient's own errors keep their words; the rest goes through the same text.
        #expect(RedisConnectionFactory.describe(IOError(errnoCode: ECONNREFUSED, reason: "connect")) == "connection refused")
    }

    @Test func urlRoundTripsThroughURLProperty() throws {
        let config = try RedisConfiguration(url: "redis://:p%3Aw%2Fd@127.0.0.1:6390/1")
        let again = try RedisConfiguration(url: config.url)
        #expect(again.password == "p:w/d")
        #expect(again.port == 6390)
        #expect(again.database == 1)
    }

    @Test(arguments: [
        ("http://localhost:6379", "unknown scheme"),
        ("rediss://localhost:6379", "TLS"),
        ("localhost:6379", "must start with redis://"),
        ("redis://localhost:notaport", "port"),
        ("redis://localhost:70000", "port"),
        ("redis://localhost:6379/x", "database"),
    ])
    func rejectsBadURLs(url: String, reason: String) {
        #expect {
            try RedisConfiguration(url: url)
        } throws: { error in
            "\(error)".contains(reason)
        }
    }

    @Test func badURLErrorHidesThePassword() {
        #expect {
            try RedisConfiguration(url: "rediss://:topsecret@host:1")
        } throws: { error in
            !"\(error)".contains("topsecret")
        }
    }

    @Test func backoffGrowsCapsAndJitters() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1), multiplier: 2, jitter: 0.5)
        #expect(backoff.delay(attempt: 0, random: 0.5) == .milliseconds(100))
        #expect(backoff.delay(attempt: 2, random: 0.5) == .milliseconds(400))
        #expect(backoff.delay(attempt: 10, random: 0.5) == .seconds(1))
        #expect(backoff.delay(attempt: 10, random: 0) == .milliseconds(500))
        #expect(backoff.delay(attempt: 10, random: 0.999_999) > .milliseconds(1499))
        #expect(backoff.delay(attempt: 1_000_000, random: 0.5) == .seconds(1))
    }

    @Test func stateMachineReconnectsWithGrowingDelaysUntilClosed() {
        var machine = ConnectionStateMachine(backoff: Backoff(initial: .milliseconds(10), maximum: .seconds(1), jitter: 0))
        #expect(machine.connected() == .useConnection(generation: 1))
        #expect(machine.isConnected)
        #expect(machine.connectionLost(reason: "closed", random: 0) == .retry(after: .milliseconds(10), attempt: 1))
        #expect(!machine.isConnected)
        #expect(machine.lastError == "closed")
        #expect(machine.connectFailed(reason: "refused", random: 0) == .retry(after: .milliseconds(20), attempt: 2))
        #expect(machine.connectFailed(reason: "refused", random: 0) == .retry(after: .milliseconds(40), attempt: 3))
        #expect(machine.lastError == "refused")
        #expect(machine.connected() == .useConnection(generation: 2))
        machine.close()
        #expect(machine.connectionLost(reason: "closed", random: 0) == .stop)
        #expect(machine.connected() == .closeConnectionAndStop)
    }

    @Test func subscriptionSetRestoresEverything() {
        var set = SubscriptionSet()
        #expect(set.add(channels: ["b", "a", "a"]) == ["b", "a"])
        #expect(set.add(channels: ["a"]) == [])
        #expect(set.add(patterns: ["news.*"]) == ["news.*"])
        #expect(set.restoreCommands.map(\.kind) == [.subscribe, .psubscribe])
        #expect(set.restoreCommands.first?.names == ["a", "b"])
        #expect(set.remove(channels: ["a", "zzz"]) == ["a"])
        #expect(set.remove(patterns: ["news.*"]) == ["news.*"])
        #expect(set.restoreCommands.count == 1)
        _ = set.remove(channels: ["b"])
        #expect(set.isEmpty)
        #expect(set.restoreCommands.isEmpty)
    }

    @Test func changesMadeWhileAReconnectRestoredASnapshotAreWhatRemainsToSend() {
        var snapshot = SubscriptionSet()
        _ = snapshot.add(channels: ["keep", "gone"])
        _ = snapshot.add(patterns: ["old.*"])
        var now = snapshot
        _ = now.add(channels: ["late"])  // subscribe() while the reconnect sent the snapshot
        _ = now.remove(channels: ["gone"])
        _ = now.remove(patterns: ["old.*"])
        _ = now.add(patterns: ["new.*"])
        let changes = now.changes(since: snapshot)
        #expect(changes.map(\.kind) == [.subscribe, .unsubscribe, .psubscribe, .punsubscribe])
        #expect(changes.map(\.names) == [["late"], ["gone"], ["new.*"], ["old.*"]])
        #expect(snapshot.changes(since: snapshot).isEmpty)
    }

    @Test func encoderIsBinarySafe() throws {
        var buffer = ByteBuffer()
        try RESPEncoder.encode(["SET", RESPArgument(bytes: [0x00, 0xFF, 0x0D, 0x0A]), ""], into: &buffer)
        let expected: [UInt8] = Array("*3\r\n$3\r\nSET\r\n$4\r\n".utf8) + [0x00, 0xFF, 0x0D, 0x0A] + Array("\r\n$0\r\n\r\n".utf8)
        #expect(Array(buffer.readableBytesView) == expected)
        #expect(throws: RESPCodecError.emptyCommand) { try RESPEncoder.encode([], into: &buffer) }
    }

    @Test func parserHandlesSplitRepliesAndNesting() throws {
        let parser = try RESPParser()
        let wire = "*3\r\n:1\r\n$-1\r\n*2\r\n+OK\r\n-ERR bad\r\n$5\r\nhel"
        try parser.feed(ByteBuffer(string: wire))
        #expect(try parser.next() == .array([.integer(1), .null, .array([.simpleString("OK"), .error("ERR bad")])]))
        #expect(try parser.next() == nil)
        try parser.feed(ByteBuffer(string: "lo\r\n"))
        #expect(try parser.next() == .bulkString(ByteBuffer(string: "hello")))
    }

    @Test("An array that never ends is refused once it has taken more than the limit, though hiredis holds few bytes of it")
    func parserRefusesAnEndlessArray() throws {
        let parser = try RESPParser(maxPendingBytes: 1_024)
        try parser.feed(ByteBuffer(string: "*1000000\r\n"))
        #expect(try parser.next() == nil)
        let chunk = String(repeating: ":1\r\n", count: 25)  // 100 bytes: 25 elements
        var refused: RESPCodecError?
        for _ in 0..<20 {
            try parser.feed(ByteBuffer(string: chunk))
            do {
                #expect(try parser.next() == nil)
            } catch {
                refused = error
                break
            }
        }
        guard case .protocolError(let text) = refused else {
            Issue.record("an endless array was never refused")
            return
        }
        #expect(text.hasPrefix("a reply of more than 1024 bytes (1110 so far and not complete): more than Redis itself sends"))
    }

    @Test("A long stream of small replies, cut anywhere, is not one big reply")
    func parserCountsEachReplyOnItsOwn() throws {
        let parser = try RESPParser(maxPendingBytes: 16)
        let wire = Array(String(repeating: "$5\r\nhello\r\n:42\r\n", count: 2_000).utf8)
        var replies = 0
        for start in stride(from: 0, to: wire.count, by: 7) {
            try parser.feed(ByteBuffer(bytes: wire[start..<min(start + 7, wire.count)]))
            while try parser.next() != nil { replies += 1 }
        }
        #expect(replies == 4_000)
        // A bulk string longer than the limit is refused too.
        try parser.feed(ByteBuffer(string: "$100\r\n" + String(repeating: "x", count: 20)))
        #expect(throws: RESPCodecError.self) { try parser.next() }
    }

    @Test func parserRejectsGarbage() throws {
        let parser = try RESPParser()
        try parser.feed(ByteBuffer(string: "HTTP/1.1 400 Bad Request\r\n"))
        #expect(throws: RESPCodecError.self) { try parser.next() }
    }

    @Test func scriptSHA1MatchesRedis() {
        // redis-cli SCRIPT LOAD "return 1" answers e0e1f9fabfc9d4800c877a703b823ac0578ff8db
        #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }
}
