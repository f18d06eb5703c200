import Foundation
import HTTPTypes
import HummingbirdTesting
import HummingbirdWSClient
import Logging
import NIOCore
import NIOPosix
import NIOWebSocket
import SocketIO
import Synchronization
import TestSupport

/// An HTTP response as the tests look at it.
struct HTTPResult: Sendable {
    var status: Int
    var body: String
    var headers: HTTPFields
}

/// One HTTP/1.1 request on its own connection (so requests can run concurrently, like a browser's).
func http(
    _ method: HTTPRequest.Method, port: Int, _ path: String, body: String? = nil, headers: HTTPFields = [:]
) async throws -> HTTPResult {
    try await TestClient.withClient(host: "127.0.0.1", port: port, configuration: .init(timeout: .seconds(30))) { client in
        let request = TestClient.Request(
            path, method: method, authority: "127.0.0.1:\(port)", headers: headers, body: body.map { ByteBuffer(string: $0) })
        let response = try await client.execute(request)
        return HTTPResult(status: Int(response.status.code), body: response.body.map { String(buffer: $0) } ?? "", headers: response.headers)
    }
}

/// Sends `request` as it is on a new connection and returns everything the server sends until it
/// closes the connection; throws when it has not closed within `timeout`.
func rawExchange(port: Int, _ request: [UInt8], timeout: Duration = .seconds(10)) async throws -> String {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
        }
    return try await withDeadline(timeout, waitingFor: "the server to answer and close the connection") {
        try await channel.executeThenClose { inbound, outbound in
            // The server may answer and close before it has read everything.
            try? await outbound.write(ByteBuffer(bytes: request))
            var reply = ""
            do {
                for try await buffer in inbound { reply += String(buffer: buffer) }
            } catch let error as IOError where error.errnoCode == ECONNRESET {
                // A close with unread input is a reset; what came before it counts.
            }
            return reply
        }
    }
}

/// The sid of a new long-polling session.
func openPollingSession(port: Int) async throws -> String {
    let response = try await http(.get, port: port, "/socket.io/?EIO=4&transport=polling")
    let open = try JSONValue(parsing: String(response.body.dropFirst()))
    guard let sid = open["sid"]?.stringValue else { throw TestFailure("no sid in the handshake: \(response.body)") }
    return sid
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A WebSocket client for tests: reads messages one by one with a timeout, sends text and binary,
/// and reports how the connection closed.
final class TestWebSocket: Sendable {
    enum Event: Sendable {
        case message(WebSocketMessage)
        case closed(code: WebSocketErrorCode?)
        case failed(String)
    }

    private let inbox = Inbox<Event>()
    private let commands: AsyncStream<Command>.Continuation
    private let task: Task<Void, Never>

    enum Command: Sendable {
        case text(String)
        case binary([UInt8])
        /// One text message in several frames (text without FIN, continuations, the last with FIN).
        case fragmented([String])
        case close
    }

    init(url: String) {
        let (stream, continuation) = AsyncStream<Command>.makeStream()
        self.commands = continuation
        let inbox = self.inbox
        self.task = Task {
            var logger = Logger(label: "test.websocket")
            logger.logLevel = .critical
            do {
                let close = try await WebSocketClient.connect(
                    url: url, configuration: .init(maxFrameSize: 1 << 24, autoPing: .disabled), logger: logger
                ) { inbound, outbound, _ in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for try await message in inbound.messages(maxSize: 1 << 24) { inbox.append(.message(message)) }
                        }
                        group.addTask {
                            for await command in stream {
                                switch command {
                                case .text(let text): try await outbound.write(.text(text))
                                case .binary(let bytes): try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
                                case .fragmented(let parts):
                                    for (index, part) in parts.enumerated() {
                                        let frame = WebSocketFrame(
                                            fin: index == parts.count - 1, opcode: index == 0 ? .text : .continuation, data: ByteBuffer(string: part))
                                        try await outbound.write(.custom(frame))
                                    }
                                case .close:
                                    try await outbound.close(.normalClosure, reason: nil)
                                    return
                                }
                            }
                        }
                        try await group.next()
                        group.cancelAll()
                    }
                }
                inbox.append(.closed(code: close?.closeCode))
            } catch {
                inbox.append(.failed("\(error)"))
            }
        }
    }

    deinit {
        commands.finish()
        task.cancel()
    }

    func send(_ text: String) { commands.yield(.text(text)) }
    func send(binary: [UInt8]) { commands.yield(.binary(binary)) }
    func send(fragments: [String]) { commands.yield(.fragmented(fragments)) }
    func close() { commands.yield(.close) }

    /// The next event (message or end).
    func nextEvent(timeout: Duration = .seconds(10)) async throws -> Event {
        try await inbox.next(timeout: timeout)
    }

    /// The next text message; fails if the connection ends first.
    func nextText(timeout: Duration = .seconds(10), skippingPings: Bool = false) async throws -> String {
        while true {
            switch try await nextEvent(timeout: timeout) {
            case .message(.text(let text)):
                if skippingPings, text == "2" { continue }
                return text
            case .message(.binary(let buffer)): throw TestFailure("expected text, got binary \(Array(buffer.readableBytesView))")
            case .closed(let code): throw TestFailure("closed (\(code.map { "\($0)" } ?? "no code")) while waiting for text")
            case .failed(let error): throw TestFailure("failed while waiting for text: \(error)")
            }
        }
    }

    /// The next message, text or binary (pings skipped when asked).
    func nextMessage(timeout: Duration = .seconds(10), skippingPings: Bool = true) async throws -> WebSocketMessage {
        while true {
            switch try await nextEvent(timeout: timeout) {
            case .message(let message):
                if skippingPings, case .text("2") = message { continue }
                return message
            case .closed(let code): throw TestFailure("closed (\(code.map { "\($0)" } ?? "no code")) while waiting for a message")
            case .failed(let error): throw TestFailure("failed while waiting for a message: \(error)")
            }
        }
    }

    /// Waits for the connection to end (skipping messages); the close code, nil when refused or reset.
    func waitForClose(timeout: Duration = .seconds(10)) async throws -> WebSocketErrorCode? {
        while true {
            switch try await nextEvent(timeout: timeout) {
            case .message: continue
            case .closed(let code): return code
            case .failed: return nil
            }
        }
    }

    /// Opens an Engine.IO WebSocket session and returns it with its sid (the open packet consumed).
    static func openSession(port: Int, query: String = "") async throws -> (TestWebSocket, String) {
        let socket = TestWebSocket(url: "ws://127.0.0.1:\(port)/socket.io/?EIO=4&transport=websocket\(query)")
        let open = try await socket.nextText()
        guard open.first == "0", let sid = try JSONValue(parsing: String(open.dropFirst()))["sid"]?.stringValue else {
            throw TestFailure("expected an open packet, got \(open)")
        }
        return (socket, sid)
    }

    /// Opens a session and joins namespace `/`; returns after the CONNECT reply and the `auth` event.
    static func connectSocketIO(port: Int) async throws -> TestWebSocket {
        let (socket, _) = try await openSession(port: port)
        socket.send("40")
        let connect = try await socket.nextText(skippingPings: true)
        guard connect.hasPrefix("40") else { throw TestFailure("expected CONNECT, got \(connect)") }
        _ = try await socket.nextText(skippingPings: true)
        return socket
    }
}

/// A queue of events with waiting readers.
final class Inbox<Element: Sendable>: Sendable {
    private struct State {
        var buffer: [Element] = []
        var waiter: (id: Int, continuation: CheckedContinuation<Element?, Never>)?
        var nextID = 0
    }

    private let state = Mutex(State())

    func append(_ element: Element) {
        let waiter = state.withLock { state -> CheckedContinuation<Element?, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter.continuation
            }
            state.buffer.append(element)
            return nil
        }
        waiter?.resume(returning: element)
    }

    func next(timeout: Duration) async throws -> Element {
        let id = state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        let timer = Task {
            try await Task.sleep(for: timeout)
            let waiter = state.withLock { state -> CheckedContinuation<Element?, Never>? in
                guard let waiter = state.waiter, waiter.id == id else { return nil }
                state.waiter = nil
                return waiter.continuation
            }
            waiter?.resume(returning: nil)
        }
        defer { timer.cancel() }
        let element = await withCheckedContinuation { (continuation: CheckedContinuation<Element?, Never>) in
            let ready = state.withLock { state -> Element? in
                if !state.buffer.isEmpty { return state.buffer.removeFirst() }
                state.waiter = (id, continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
        guard let element else { throw TestFailure("nothing arrived within \(timeout)") }
        return element
    }
}
