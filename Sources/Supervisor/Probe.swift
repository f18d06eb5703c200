import CloudFoundry
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import RedisClient
import Synchronization

/// Small network probes on SwiftNIO: a TCP connect (Diego's `port` check) and a one-shot HTTP/1.1
/// request (the `http` check, and sticky-proxy's admin API). Loopback only, each with a timeout.
public enum Probe {
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    public struct HTTPResponse: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// Connects to host:port and closes; throws with Diego's wording when it cannot.
    public static func tcp(host: String = "127.0.0.1", port: Int, timeout: Duration) async throws {
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.nanoseconds(timeout.nanosecondsClamped))
                .connect(host: host, port: port).get()
            try? await channel.close()
        } catch {
            throw Failure("Failed to make TCP connection to port \(port): \(reason(error))")
        }
    }

    /// One HTTP/1.1 request with `Connection: close`; the whole exchange must finish within `timeout`.
    public static func http(
        method: HTTPMethod = .GET, host: String = "127.0.0.1", port: Int, path: String, headers: [(String, String)] = [],
        body: [UInt8]? = nil, timeout: Duration
    ) async throws -> HTTPResponse {
        do {
            return try await exchange(method: method, host: host, port: port, path: path, headers: headers, body: body, timeout: timeout)
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure("\(method) http://\(host):\(port)\(path) failed: \(reason(error))")
        }
    }

    /// The most of a body an exchange keeps unless told otherwise; the rest is read and dropped.
    public static let defaultBodyLimit = 4 * 1024 * 1024

    /// `authority`: the `Host` header, when it is not `host:port` (a request for a route's name sent
    /// to the proxy's address). `bodyLimit`: how much of the response body to keep (at least that much
    /// when the body is longer; the rest is read and dropped, so that the exchange still completes).
    static func exchange(
        method: HTTPMethod, host: String, port: Int, path: String, headers: [(String, String)], body: [UInt8]?, timeout: Duration,
        authority: String? = nil, bodyLimit: Int = defaultBodyLimit
    ) async throws -> HTTPResponse {
        try await withDeadline(timeout, what: "\(method) \(path) on port \(port)") {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.nanoseconds(timeout.nanosecondsClamped))
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                    }
                }
            return try await channel.executeThenClose { inbound, outbound in
                var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
                head.headers.add(name: "Host", value: authority ?? "\(host):\(port)")
                head.headers.add(name: "Connection", value: "close")
                for (name, value) in headers { head.headers.add(name: name, value: value) }
                if let body {
                    head.headers.add(name: "Content-Length", value: "\(body.count)")
                } else if method == .POST || method == .PUT {
                    head.headers.add(name: "Content-Length", value: "0")
                }
                // The whole request in one write: an app that answers as soon as it has read the head
                // and then closes (any HTTP/1.0 server) must not find a second write still to come.
                var request: [HTTPClientRequestPart] = [.head(head)]
                if let body, !body.isEmpty { request.append(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
                request.append(.end(nil))
                // A failed write is reported only when no complete answer came back: the app may have
                // answered and closed while the request was still being sent.
                var writeError: (any Error)?
                do { try await outbound.write(contentsOf: request) } catch { writeError = error }
                var response = HTTPResponse(status: 0, headers: [], body: [])
                for try await part in inbound {
                    switch part {
                    case .head(let head):
                        response.status = Int(head.status.code)
                        response.headers = head.headers.map { ($0.name, $0.value) }
                    case .body(var buffer):
                        let room = bodyLimit - response.body.count
                        if room > 0 {
                            response.body += buffer.readBytes(length: min(room, buffer.readableBytes)) ?? []
                        }
                    case .end:
                        return response
                    }
                }
                throw writeError.map { Failure("the app closed the connection before the request was sent (\(reason($0)))") }
                    ?? Failure("the connection closed before the response was complete")
            }
        }
    }

    /// Diego's `http` check: healthy only on exactly 200.
    public static func httpCheck(port: Int, path: String, timeout: Duration) async throws {
        let response: HTTPResponse
        do {
            // Only the status counts: the body is read and dropped.
            response = try await exchange(
                method: .GET, host: "127.0.0.1", port: port, path: path, headers: [("User-Agent", "diego-healthcheck")], body: nil, timeout: timeout,
                bodyLimit: 0)
        } catch {
            throw Failure("Failed to make HTTP request to '\(path)' on port \(port): \(reason(error))")
        }
        guard response.status == 200 else {
            throw Failure("Failed to make HTTP request to '\(path)' on port \(port): received status code \(response.status)")
        }
    }

    /// Runs `body`, failing with a timeout error when it takes longer than `timeout`. The body is then
    /// cancelled, and the answer does not wait for it: a body that ignores cancellation (one waiting
    /// on an EventLoopFuture) cannot hold its caller past the deadline.
    public static func withDeadline<T: Sendable>(
        _ timeout: Duration, what: String, _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let work = Task { try await body() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let pending = Once(continuation)
                let timer = Task {
                    guard (try? await Task.sleep(for: timeout)) != nil else { return }
                    pending.take()?.resume(throwing: Failure("timed out after \(DurationText.format(timeout)) (\(what))"))
                    work.cancel()
                }
                Task {
                    let result = await work.result
                    timer.cancel()
                    pending.take()?.resume(with: result)
                }
            }
        } onCancel: {
            work.cancel()
        }
    }

    /// A value that only the first taker gets (the continuation of `withDeadline`: resumed once).
    private final class Once<Value: Sendable>: Sendable {
        private let value: Mutex<Value?>
        init(_ value: Value) { self.value = Mutex(value) }
        func take() -> Value? { value.withLock { $0.take() } }
    }

    static func reason(_ error: any Error) -> String {
        if let failure = error as? Failure { return failure.description }
        if error is HTTPParserError { return "the answer is not HTTP/1.x (\(error))" }
        return SocketErrorText.describe(error) ?? "\(error)"
    }
}

extension Probe {
    /// A free TCP port on 127.0.0.1, chosen at random BELOW the kernel's ephemeral range (32768-60999
    /// by default). A port the kernel hands out for `bind(0)` comes from that range, and so do the
    /// source ports of outgoing connections: one of those could take it between now and the moment its
    /// user binds it. Falls back to the kernel's choice when no such port is free. Never the same port
    /// twice in one process, nor one given to `reserve(port:)` (the `PortLedger`).
    public static func freePort() throws -> Int {
        let ephemeralStart = ephemeralPortRange().lowerBound
        return try ledger.withLock { ledger in
            var generator = SystemRandomNumberGenerator()
            if ephemeralStart > 10_000, let port = ledger.pick(from: 10_000..<ephemeralStart, using: &generator, isFree: { isFree(port: $0) }) {
                return port
            }
            for _ in 0..<10 {
                let port = try kernelChosenPort()
                if !ledger.contains(port) {
                    ledger.record(port)
                    return port
                }
            }
            throw Failure("cannot find a free TCP port on 127.0.0.1: every port tried is in use or already handed out")
        }
    }

    /// A port the user chose (`--port`): `freePort()` does not hand it out for anything else.
    public static func reserve(port: Int) {
        ledger.withLock { $0.record(port) }
    }

    private static let ledger = Mutex(PortLedger())

    /// The kernel's ephemeral port range (/proc/sys/net/ipv4/ip_local_port_range).
    static func ephemeralPortRange() -> ClosedRange<Int> {
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        let numbers = text.split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
        guard numbers.count == 2, numbers[0] <= numbers[1] else { return 32768...60999 }
        return numbers[0]...numbers[1]
    }

    private static func kernelChosenPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("cannot create a socket to find a free port (errno \(errno))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw Failure("cannot bind a socket on 127.0.0.1 to find a free port (errno \(errno))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether 127.0.0.1:port can be bound right now (nobody listens on it).
    public static func isFree(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(clamping: port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}
