import NIOCore
import NIOPosix
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
            try await withDeadline(.seconds(10), waitingFor: "a command on a closed connection to fail") {
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
            try await withDeadline(.seconds(10), waitingFor: "a SUBSCRIBE on a closed connection to fail") {
                try await RedisSubscriber.request(.subscribe, ["news"], on: connection.channel, endpoint: configuration.endpoint)
            }
        }
    }
}
