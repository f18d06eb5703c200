import CloudFoundry
import Foundation
import NIOCore
import RedisClient
import Synchronization
import TestSupport
import Testing

@testable import Supervisor

#if canImport(Glibc)
    import Glibc
#endif

@Suite("RedisLinkFault and RedisLinkState")
struct RedisLinkStateTests {
    @Test func aDelayIsTheLatencyPlusOrMinusTheJitter() {
        let plain = RedisLinkFault.slow(latency: .milliseconds(200), jitter: .zero)
        #expect(plain.delay(random: 0) == .milliseconds(200))
        #expect(plain.delay(random: .max) == .milliseconds(200))
        let spread = RedisLinkFault.slow(latency: .milliseconds(200), jitter: .milliseconds(50))
        let jitter = UInt64(Duration.milliseconds(50).nanosecondsClamped)
        #expect(spread.delay(random: 0) == .milliseconds(150))
        #expect(spread.delay(random: 2 * jitter) == .milliseconds(250))
        #expect(spread.delay(random: jitter) == .milliseconds(200))
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<1000 {
            let delay = spread.delay(random: generator.next())
            #expect(delay >= .milliseconds(150) && delay <= .milliseconds(250))
        }
        #expect(RedisLinkFault.cut.delay(random: 7) == .zero)
    }

    @Test func theFiguresOfSlowAreChecked() {
        #expect(RedisLinkFault.problem(latency: .milliseconds(200), jitter: .milliseconds(50)) == nil)
        #expect(RedisLinkFault.problem(latency: .milliseconds(200), jitter: .milliseconds(200)) == nil)
        #expect(RedisLinkFault.problem(latency: .zero, jitter: .zero)?.contains("not from 1ms to 10s") == true)
        #expect(RedisLinkFault.problem(latency: .seconds(11), jitter: .zero)?.contains("not from 1ms to 10s") == true)
        #expect(RedisLinkFault.problem(latency: .milliseconds(100), jitter: .milliseconds(101))?.contains("more than --latency") == true)
        // As typed, for the command line and the running cluster alike.
        #expect(RedisLinkFault.slow(latency: "200ms", jitter: "50ms") == .success(.slow(latency: .milliseconds(200), jitter: .milliseconds(50))))
        #expect(RedisLinkFault.slow(latency: "1s", jitter: nil) == .success(.slow(latency: .seconds(1), jitter: .zero)))
        #expect(RedisLinkFault.slow(latency: nil, jitter: nil) == .failure(.init("slow needs --latency (e.g. --latency 200ms)")))
        #expect(RedisLinkFault.slow(latency: "fast", jitter: nil) == .failure(.init("--latency 'fast' is not a duration (e.g. 200ms)")))
        #expect(RedisLinkFault.slow(latency: "200ms", jitter: "some") == .failure(.init("--jitter 'some' is not a duration (e.g. 50ms)")))
        #expect(RedisLinkFault.slow(latency: "20s", jitter: nil) == .failure(.init("--latency 20s is not from 1ms to 10s")))
    }

    @Test func aFaultEndsWithItsOwnTimerOnly() {
        var link = RedisLinkState()
        #expect(link.heal().isEmpty)
        let slow = RedisLinkFault.slow(latency: .milliseconds(100), jitter: .zero)
        #expect(link.impose(slow, for: .seconds(10), now: .seconds(5)) == [.apply(slow), .scheduleEnd(generation: 1, at: .seconds(15))])
        #expect(link.fault == slow)
        #expect(link.remaining(now: .seconds(7)) == .seconds(8))
        // A cut replaces it, and resets the connections at once.
        #expect(
            link.impose(.cut, for: .seconds(2), now: .seconds(6)) == [.apply(.cut), .resetConnections, .scheduleEnd(generation: 2, at: .seconds(8))])
        // The first timer fires: that fault is gone already, so nothing ends.
        #expect(link.expire(generation: 1).isEmpty)
        #expect(link.fault == .cut)
        #expect(link.expire(generation: 2) == [.apply(nil)])
        #expect(link.fault == nil)
        #expect(link.remaining(now: .seconds(9)) == nil)
        // Healed by hand: its timer ends nothing later.
        _ = link.impose(slow, for: .seconds(10), now: .seconds(10))
        #expect(link.heal() == [.apply(nil)])
        #expect(link.expire(generation: 4).isEmpty)
        // A hang keeps the connections: nothing to reset.
        #expect(link.impose(.hang, for: .seconds(1), now: .seconds(20)) == [.apply(.hang), .scheduleEnd(generation: 6, at: .seconds(21))])
    }

    @Test func statusShowsTheFaultAndTheTimeLeft() throws {
        let slow = ClusterStatus.Instance.RedisLink(fault: .slow(latency: .milliseconds(200), jitter: .milliseconds(50)), remainingSeconds: 25)
        #expect(slow.summary == "slow (+200ms ±50ms), heals in 25s")
        let plain = ClusterStatus.Instance.RedisLink(fault: .slow(latency: .seconds(1), jitter: .zero), remainingSeconds: nil)
        #expect(plain.summary == "slow (+1s)")
        let cut = ClusterStatus.Instance.RedisLink(fault: .cut, remainingSeconds: 3)
        #expect(cut.summary == "cut, heals in 3s")
        let hang = ClusterStatus.Instance.RedisLink(fault: .hang, remainingSeconds: 2)
        #expect(hang.summary == "hung, heals in 2s" && hang.fault == "hang")
        #expect(RedisLinkFault.hang.summary == "hung" && RedisLinkFault.hang.delay(random: 9) == .zero)
        let json = String(decoding: try JSONEncoder().encode(slow), as: UTF8.self)
        #expect(json.contains("\"latency_ms\":200") && json.contains("\"jitter_ms\":50") && json.contains("\"remaining_seconds\":25"))
        var status = ClusterStatus(
            app: "web", command: "app", ready: true, desiredInstances: 1, affinity: "cf", restartPolicy: "diego", timeScale: 1,
            proxy: .init(state: "absent"), redis: .init(state: "running"),
            instances: [ClusterStatus.Instance(index: 0, state: .running, redisLink: cut)])
        #expect(status.table().contains("web.0 link to Redis: cut, heals in 3s"))
        status.instances[0].redisLink = nil
        #expect(!status.table().contains("link to Redis"))
    }
}

@Suite("RedisLinkRelay against a real redis-server")
struct RedisLinkRelayTests {
    /// The bytes of a command as RESP sends it: `*2\r\n$4\r\nINCR\r\n$1\r\nh\r\n`.
    private static func encoded(_ command: [String]) -> Int {
        "*\(command.count)\r\n".utf8.count + command.map { "$\($0.utf8.count)\r\n\($0)\r\n".utf8.count }.reduce(0, +)
    }

    /// A real redis-server and a relay to it for `body`; both stopped after it, whatever it did.
    private func withRelay(
        onUpstreamChange: @escaping @Sendable () -> Void = {}, _ body: (RedisServer, RedisLinkRelay) async throws -> Void
    ) async throws {
        let server = try await RedisServer()
        let relay = try await RedisLinkRelay.start(toHost: "127.0.0.1", port: server.port, onUpstreamChange: onUpstreamChange)
        do {
            try await body(server, relay)
        } catch {
            await relay.close()
            try? await server.stop()
            throw error
        }
        await relay.close()
        try await server.stop()
    }

    private func configuration(_ relay: RedisLinkRelay) throws -> RedisConfiguration {
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(relay.port)")
        configuration.reconnectBackoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(100))
        return configuration
    }

    @Test func forwardsCommandsInOrderAndHoldsRepliesWhenSlow() async throws {
        try await withRelay { server, relay in
            let client = try await RedisClient.connect(try configuration(relay))
            #expect(try await client.send("SET", "k", "v") == .simpleString("OK"))
            #expect(try await client.send("GET", "k") == .bulkString(ByteBuffer(string: "v")))
            #expect(relay.connectionCount == 1)

            relay.apply(.slow(latency: .milliseconds(150), jitter: .zero))
            let clock = ContinuousClock()
            let start = clock.now
            #expect(try await client.send("PING") == .simpleString("PONG"))
            // A lower bound only: the reply cannot come before it was released.
            #expect(clock.now - start >= .milliseconds(150))

            // Many replies, each held a random time: they still come in order.
            relay.apply(.slow(latency: .milliseconds(20), jitter: .milliseconds(20)))
            let replies = try await client.pipeline((0..<200).map { _ in ["INCR", "counter"] })
            #expect(replies == (1...200).map { RESPValue.integer($0) })

            relay.apply(nil)
            #expect(try await client.send("GET", "counter") == .bulkString(ByteBuffer(string: "200")))
            await client.close()
        }
    }

    @Test func pubSubMessagesArriveLateButInOrder() async throws {
        try await withRelay { server, relay in
            let subscriber = try await RedisSubscriber.connect(try configuration(relay))
            let publisher = try await RedisClient.connect(try server.configuration)
            try await subscriber.subscribe("chat")
            relay.apply(.slow(latency: .milliseconds(30), jitter: .milliseconds(30)))
            for number in 0..<100 { _ = try await publisher.publish(RESPArgument("\(number)"), to: "chat") }
            let events = subscriber.events
            let received = try await withDeadline(.seconds(20), waitingFor: "100 messages through the slow link") {
                var received: [String] = []
                for await event in events {
                    if case .message(let message) = event { received.append(String(buffer: message.payload)) }
                    if received.count == 100 { break }
                }
                return received
            }
            #expect(received == (0..<100).map(String.init))
            await subscriber.close()
            await publisher.close()
        }
    }

    @Test func aCutResetsConnectionsAndRefusesNewOnesUntilHealed() async throws {
        try await withRelay { server, relay in
            #expect(try RawConnection(port: relay.port).ping() == "+PONG")
            let open = try RawConnection(port: relay.port)
            #expect(try open.ping() == "+PONG")
            try await waitUntil("the relay to count the open connection") { relay.connectionCount == 1 }

            relay.apply(.cut)
            relay.resetConnections()
            // The open one: reset, as from a peer that went away.
            #expect(try open.ping() == nil)
            #expect(relay.connectionCount == 0)
            // A new one: accepted, then reset before anything reaches Redis.
            #expect(try RawConnection(port: relay.port).ping() == nil)
            // A client is not fooled by the accept: it waits for Redis to answer, and says why it could not.
            await #expect {
                _ = try await RedisClient.connect(try configuration(relay))
            } throws: { error in
                guard case RedisError.connectFailed = error else { return false }
                return true
            }
            // Redis itself kept running.
            let direct = try await RedisClient.connect(try server.configuration)
            #expect(try await direct.send("PING") == .simpleString("PONG"))

            relay.apply(nil)
            #expect(try RawConnection(port: relay.port).ping() == "+PONG")
            await direct.close()
        }
    }

    @Test func aHangHoldsEverythingBothWaysAndLetsItGoOnInOrderWhenItEnds() async throws {
        try await withRelay { server, relay in
            var settings = try configuration(relay)
            settings.commandTimeout = .seconds(30)
            let client = try await RedisClient.connect(settings)
            let direct = try await RedisClient.connect(try server.configuration)
            let quitter = try RawConnection(port: relay.port)
            #expect(try quitter.ping() == "+PONG")
            relay.apply(.hang)
            // Sent during the hang: Redis does not see it, nothing answers.
            let pipeline = Task { try await client.pipeline([["INCR", "h"], ["INCR", "h"], ["GET", "h"]]) }
            // A client that gives up during the hang: what it sent still reaches Redis afterwards, as
            // after a real partition (the command runs, though its client never hears so).
            quitter.send("INCR late\r\n")
            quitter.close()
            // Held by the relay: the three commands of the pipeline and the quitter's INCR.
            let sent = [["INCR", "h"], ["INCR", "h"], ["GET", "h"]].map(Self.encoded).reduce(0, +) + "INCR late\r\n".utf8.count
            try await waitUntil("the relay to hold what was sent") { relay.bytesHeldByHang == sent }
            #expect(try await direct.send("GET", "h") == .null)
            #expect(try await direct.send("GET", "late") == .null)
            // A connection made during the hang is accepted (the kernel does) and gets no answer.
            let waiting = try RawConnection(port: relay.port, timeout: 300)
            #expect(throws: TestSupportError.self) { try waiting.ping() }
            #expect(relay.connectionCount == 3)

            relay.apply(nil)
            #expect(try await pipeline.value == [.integer(1), .integer(2), .bulkString(ByteBuffer(string: "2"))])
            try await waitUntil("the quitter's INCR to reach Redis") {
                try await direct.send("GET", "late") == .bulkString(ByteBuffer(string: "1"))
            }
            // The waiting connection reaches Redis now: its PING, held meanwhile, is answered.
            var answer: String?
            for _ in 0..<30 where answer == nil { answer = try? waiting.readLine() }  // 300 ms each
            #expect(answer == "+PONG")
            try await waitUntil("the quitter's connection to be gone") { relay.connectionCount == 2 }
            #expect(relay.bytesHeldByHang == 0)
            await client.close()
            await direct.close()
        }
    }

    @Test func aClientThroughTheRelaySeesRedisGoAndComeBack() async throws {
        let changes = Atomic<Int>(0)
        try await withRelay(onUpstreamChange: { changes.add(1, ordering: .relaxed) }) { server, relay in
            let client = try await RedisClient.connect(try configuration(relay))
            #expect(try await client.send("PING") == .simpleString("PONG"))
            #expect(relay.upstreamProblem == nil && changes.load(ordering: .relaxed) == 0)
            try await server.kill()
            // Redis is down: the relay cannot connect for the client either, and says so by a reset.
            #expect(try RawConnection(port: relay.port).ping() == nil)
            #expect(try RawConnection(port: relay.port).ping() == nil)
            // Told once, however many connections failed (the client retries meanwhile too).
            #expect(relay.upstreamProblem == "connection refused")
            #expect(changes.load(ordering: .relaxed) == 1)
            try await server.start()
            try await waitUntil("the client to reconnect through the relay") { (try? await client.send("PING")) == .simpleString("PONG") }
            #expect(relay.upstreamProblem == nil && changes.load(ordering: .relaxed) == 2)
            await client.close()
        }
    }
}

/// A blocking TCP connection for the relay's edge cases: what a reset looks like to a plain client.
private final class RawConnection {
    let socket: Int32

    init(port: Int, timeout milliseconds: Int = 5000) throws {
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 {
            Glibc.close(socket)
            throw TestSupportError("cannot connect to 127.0.0.1:\(port) (errno \(errno))")
        }
    }

    deinit { close() }

    private var closed = false

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(socket)
    }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Sends PING and returns the first line of the answer, or nil when the connection was reset or
    /// closed instead.
    func ping() throws -> String? {
        send("PING\r\n")
        return try readLine()
    }

    /// The next line, or nil when the connection was reset or closed instead; throws when nothing
    /// came within the receive timeout.
    func readLine() throws -> String? {
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64)
        while !answer.contains(UInt8(ascii: "\n")) {
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { throw TestSupportError("no answer within the timeout") }
            if count <= 0 { return nil }
            answer += buffer[0..<count]
        }
        return String(decoding: answer, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
