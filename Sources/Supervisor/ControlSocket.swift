import Foundation
import NIOCore
import NIOExtras
import NIOPosix

/// The control API: a Unix socket in the state folder (owner-only, like the folder), JSON lines. Each
/// connection carries one request; the answer is one line, or a stream of lines for `logs -f`.
public final class ControlServer: Sendable {
    public typealias Handler = @Sendable (ControlRequest, ControlReplies) async -> Void

    private let channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>

    private init(channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>) {
        self.channel = channel
    }

    /// Binds the socket (replacing a stale one left by a killed cluster).
    public static func bind(path: String) async throws -> ControlServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        chmod(path, 0o600)
        return ControlServer(channel: channel)
    }

    /// Serves connections until `close()`.
    public func serve(_ handler: @escaping Handler) async {
        try? await channel.executeThenClose { inbound in
            await withDiscardingTaskGroup { group in
                do {
                    for try await connection in inbound {
                        group.addTask { await Self.handle(connection, handler) }
                    }
                } catch {
                    // The socket was closed: stop accepting.
                }
            }
        }
    }

    public func close() async {
        try? await channel.channel.close()
    }

    private static func handle(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, _ handler: Handler) async {
        try? await connection.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            guard let line = try await iterator.next() else { return }
            let replies = ControlReplies(outbound: outbound)
            let request: ControlRequest
            do {
                request = try JSONDecoder().decode(ControlRequest.self, from: Data(line.readableBytesView))
            } catch {
                await replies.send(.failure("not a valid control request: \(error)"))
                return
            }
            await handler(request, replies)
        }
    }
}

/// Where a handler writes its answer lines.
public struct ControlReplies: Sendable {
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>

    /// Writes one answer line; false when the client has gone away.
    @discardableResult
    public func send(_ response: ControlResponse) async -> Bool {
        guard var data = try? JSONEncoder().encode(response) else { return false }
        data.append(UInt8(ascii: "\n"))
        do {
            try await outbound.write(ByteBuffer(bytes: data))
            return true
        } catch {
            return false
        }
    }
}

/// The client side, used by `cluster status`, `scale`, `logs`, ...
public enum ControlClient {
    public enum Failure: Error, CustomStringConvertible {
        case notRunning(stateDirectory: String)
        case lostConnection
        case badAnswer(String)

        public var description: String {
            switch self {
            case .notRunning(let directory):
                "no cluster is running with the state folder \(directory); start one with `cluster up` (or pass the --state-dir it uses)"
                    + Self.lastLog(directory)
            case .lostConnection: "the cluster closed the control connection before answering (did it stop?)"
            case .badAnswer(let text): "the cluster answered something unreadable: \(text.prefix(200))"
            }
        }

        /// Where the log of the last cluster in `directory` is, when there is one.
        static func lastLog(_ directory: String) -> String {
            let log = StateDirectory(path: directory).logFile
            return FileManager.default.fileExists(atPath: log.path) ? ". The last one's log is in \(log.path)" : ""
        }
    }

    /// Sends one request that has one answer (every command but `logs -f`) and returns it.
    public static func request(_ request: ControlRequest, socket path: String, stateDirectory: String) async throws -> ControlResponse {
        var answer: ControlResponse?
        try await send(request, socket: path, stateDirectory: stateDirectory) { response in
            answer = response
            return false
        }
        guard let answer else { throw Failure.lostConnection }
        return answer
    }

    /// Sends one request and hands every answer line to `onResponse` until the last one (`done`), or
    /// until `onResponse` returns false.
    public static func send(
        _ request: ControlRequest, socket path: String, stateDirectory: String, onResponse: (ControlResponse) -> Bool
    ) async throws {
        guard FileManager.default.fileExists(atPath: path) else { throw Failure.notRunning(stateDirectory: stateDirectory) }
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(unixDomainSocketPath: path) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder()))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw Failure.notRunning(stateDirectory: stateDirectory)
        }
        try await channel.executeThenClose { inbound, outbound in
            var data = try JSONEncoder().encode(request)
            data.append(UInt8(ascii: "\n"))
            try await outbound.write(ByteBuffer(bytes: data))
            for try await line in inbound {
                guard let response = try? JSONDecoder().decode(ControlResponse.self, from: Data(line.readableBytesView)) else {
                    throw Failure.badAnswer(String(buffer: line))
                }
                if !onResponse(response) || response.done == true { return }
            }
            throw Failure.lostConnection
        }
    }
}
