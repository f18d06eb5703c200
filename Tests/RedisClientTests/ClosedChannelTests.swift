import NIOCore
import NIOPosix
import Synchronization
import TestSupport
import Testing

@testable import RedisClient

/// A command written in the moment between its connection closing and the client noticing (a
/// command timeout closes the connection; a frozen Redis makes that happen): the write never reaches
/// the handler, which closing took out of the pipeline. Its caller used to wait for ever, so a chat
/// message sent then got no acknowledgement at all.
@Suite("Writes to a connection that just closed")
struct ClosedChannelTests {
    @Test("A command fails with connectionLost instead of waiting for ever")
    func command() async throws {
        let server = try await RedisServer()
        let configuration = try server.configuration
        let connection = try await RedisConnectionFactory.connect(configuration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        #expect(
            try await RedisConnectionFactory.send([["PING"]], on: connection.channel, endpoint: configuration.endpoint) == [.simpleString("PONG")])
        try await connection.channel.close()
        let error = await #expect(throws: RedisError.self) {
            try await outcome(of: "a command on a closed connection") {
                try await RedisConnectionFactory.send([["PING"]], on: connection.channel, endpoint: configuration.endpoint)
            }
        }
        let lost: Bool
        if case .connectionLost(let endpoint, _) = try #require(error) { lost = endpoint == configuration.endpoint } else { lost = false }
        #expect(lost, "expected connectionLost at \(configuration.endpoint), got \(String(describing: error))")
    }

    @Test("A subscription request fails with connectionLost instead of waiting for ever")
    func subscription() async throws {
        let server = try await RedisServer()
        let configuration = try server.configuration
        let connection = try await RedisConnectionFactory.connect(
            configuration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, selectDatabase: false)
        try await connection.channel.close()
        await #expect(throws: RedisError.self) {
            try await outcome(of: "a SUBSCRIBE on a closed connection") {
                try await RedisSubscriber.request(.subscribe, ["news"], on: connection.channel, endpoint: configuration.endpoint)
            }
        }
    }
}

/// Runs `body` in a task of its own and returns (or throws) what it did, or fails after 10 s when it
/// is still waiting. Waiting on an EventLoopFuture cannot be cancelled, so a deadline that cancels
/// the body would wait as long as the body does.
private func outcome<T: Sendable>(of what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    Task {
        let value: Result<T, any Error>
        do { value = .success(try await body()) } catch { value = .failure(error) }
        result.withLock { $0 = value }
    }
    try await waitUntil("\(what) to finish", timeout: .seconds(10)) { result.withLock { $0 != nil } }
    return try result.withLock { $0! }.get()
}
