import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import Supervisor

/// The probes against real sockets on loopback: a tiny server that answers each connection the way
/// the test says, then closes it, as an HTTP/1.0 app does (Python's http.server, for one).
@Suite("Health check probes")
struct ProbeTests {
    @Test("An app that answers and closes at once is healthy, every time")
    func answerThenClose() async throws {
        try await withServer(.afterRequest(status: 200)) { port in
            // The app's close races the probe's own writes. Tasks that keep Swift's cooperative
            // threads busy delay the probe between its writes, as a loaded machine does, while NIO's
            // threads go on reading the answer and the close.
            try await withBusyCooperativeThreads {
                for _ in 0..<200 {
                    try await Probe.httpCheck(port: port, path: "/health", timeout: .seconds(5))
                }
            }
        }
    }

    @Test("A status other than 200 fails with Diego's wording")
    func unhealthyStatus() async throws {
        try await withServer(.afterRequest(status: 503)) { port in
            let error = await #expect(throws: Probe.Failure.self) {
                try await Probe.httpCheck(port: port, path: "/health", timeout: .seconds(5))
            }
            #expect(error?.description == "Failed to make HTTP request to '/health' on port \(port): received status code 503")
        }
    }

    @Test("A connection closed without an answer says so, in words")
    func closedWithoutAnswer() async throws {
        try await withServer(.closeAfterRequest) { port in
            let error = await #expect(throws: Probe.Failure.self) {
                try await Probe.httpCheck(port: port, path: "/health", timeout: .seconds(5))
            }
            let text = error?.description ?? ""
            #expect(text.hasPrefix("Failed to make HTTP request to '/health' on port \(port): "))
            #expect(!text.contains("I/O on closed channel"), "NIO's own wording leaked: \(text)")
        }
    }

    @Test("An answer that is not HTTP says so")
    func notHTTP() async throws {
        try await withServer(.afterRequest(raw: "SSH-2.0-OpenSSH_9.2\r\n")) { port in
            let error = await #expect(throws: Probe.Failure.self) {
                try await Probe.httpCheck(port: port, path: "/health", timeout: .seconds(5))
            }
            #expect(error?.description.hasPrefix("Failed to make HTTP request to '/health' on port \(port): the answer is not HTTP/1.x (") == true)
        }
    }

    @Test("An app that never answers times out")
    func silent() async throws {
        try await withServer(.silent) { port in
            let error = await #expect(throws: Probe.Failure.self) {
                try await Probe.httpCheck(port: port, path: "/health", timeout: .milliseconds(300))
            }
            #expect(
                error?.description == "Failed to make HTTP request to '/health' on port \(port): timed out after 300ms (GET /health on port \(port))")
        }
    }

    @Test("A long body is read to its end and only the first bodyLimit bytes are kept")
    func bodyLimit() async throws {
        let page = String(repeating: "0123456789abcdef", count: 200_000)  // 3.2 MB, in many reads
        let raw = "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: \(page.utf8.count)\r\n\r\n\(page)"
        try await withServer(.afterRequest(raw: raw)) { port in
            for limit in [0, 1, 100_000, 5_000_000] {
                let response = try await Probe.exchange(
                    method: .GET, host: "127.0.0.1", port: port, path: "/", headers: [], body: nil, timeout: .seconds(10), bodyLimit: limit)
                #expect(response.status == 200)
                #expect(response.body.count == min(limit, page.utf8.count), "limit \(limit)")
                #expect(response.text == String(page.prefix(limit)), "limit \(limit)")
            }
            // The health check keeps none of it, and still sees the status.
            try await Probe.httpCheck(port: port, path: "/health", timeout: .seconds(10))
        }
    }

    @Test("Nothing listening: connection refused, for both checks")
    func refused() async throws {
        let port = try Probe.freePort()
        let http = await #expect(throws: Probe.Failure.self) {
            try await Probe.httpCheck(port: port, path: "/health", timeout: .seconds(2))
        }
        #expect(http?.description == "Failed to make HTTP request to '/health' on port \(port): connection refused")
        let tcp = await #expect(throws: Probe.Failure.self) {
            try await Probe.tcp(port: port, timeout: .seconds(2))
        }
        #expect(tcp?.description == "Failed to make TCP connection to port \(port): connection refused")
    }
}

/// How the test server treats each connection.
private enum Behaviour: Sendable {
    /// Reads up to the end of the request head, writes `raw`, closes.
    case afterRequest(raw: String)
    /// Reads the request head, then closes without a word.
    case closeAfterRequest
    /// Reads and never answers.
    case silent

    /// A complete HTTP/1.0 response with this status.
    static func afterRequest(status: Int) -> Behaviour {
        .afterRequest(raw: "HTTP/1.0 \(status) Whatever\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
    }

    func response() -> ByteBuffer? {
        guard case .afterRequest(let raw) = self else { return nil }
        return ByteBuffer(string: raw)
    }
}

private final class AnsweringHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let behaviour: Behaviour
    // One handler per connection, used on its event loop only.
    private var received = ByteBuffer()

    init(_ behaviour: Behaviour) { self.behaviour = behaviour }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        received.writeBuffer(&buffer)
        guard received.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) != nil else { return }
        switch behaviour {
        case .afterRequest: answer(context: context)
        case .closeAfterRequest: context.close(promise: nil)
        case .silent: break
        }
    }

    private func answer(context: ChannelHandlerContext) {
        guard let response = behaviour.response() else { return }
        context.writeAndFlush(wrapOutboundOut(response)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// Runs `body` while other tasks spin on the cooperative pool, so that every `await` in `body` waits
/// its turn behind them.
private func withBusyCooperativeThreads(_ body: () async throws -> Void) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<4 {
            group.addTask {
                while !Task.isCancelled {
                    let start = ContinuousClock.now
                    while ContinuousClock.now - start < .milliseconds(2) {}
                    await Task.yield()
                }
            }
        }
        defer { group.cancelAll() }
        try await body()
    }
}

private func withServer(_ behaviour: Behaviour, _ body: (Int) async throws -> Void) async throws {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(AnsweringHandler(behaviour)) }
        }
        .bind(host: "127.0.0.1", port: 0).get()
    let port = try #require(channel.localAddress?.port)
    do {
        try await body(port)
    } catch {
        try? await channel.close()
        throw error
    }
    try await channel.close()
}
