import CloudFoundry
import Foundation
import NIOCore
import NIOPosix
import TestSupport
import Testing

@testable import StickyProxy

/// The library's server in process, in front of a real backend process (Tests/proxy/backend.py).
@Suite("StickyProxyServer in process", .serialized)
struct ServerIntegrationTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// backend.py on a free port, stopped when the test ends.
    final class Backend: @unchecked Sendable {
        let port: Int
        let instanceID = String(UUID().uuidString.lowercased().prefix(28))
        private let process = Process()

        init() async throws {
            port = try FreePort.allocate()
            // The python3 on PATH (a machine's may not be /usr/bin's).
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "python3", ServerIntegrationTests.repository.appendingPathComponent("Tests/proxy/backend.py").path, "--port", "\(port)",
                "--instance-id",
                instanceID, "--index", "0",
            ]
            process.environment = TestRun.environment()
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let process = self.process
            let port = self.port
            try await waitUntil("backend.py to listen on \(port)") {
                guard process.isRunning else { throw TestSupportError("backend.py exited") }
                return FreePort.isListening(port)
            }
        }

        func registration(uris: [String] = ["localhost"]) -> RouteRegistration {
            RouteRegistration(
                host: "127.0.0.1", port: port, uris: uris, app: "6e5a3b1c-1d2e-4f30-8a4b-5c6d7e8f9a0b", privateInstanceID: instanceID,
                privateInstanceIndex: "0")
        }

        deinit {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }

    static func startServer(_ configure: (inout ProxyConfiguration) -> Void = { _ in }) async throws -> StickyProxyServer {
        var configuration = ProxyConfiguration(adminToken: "token")
        configuration.port = 0
        configuration.adminPort = 0
        configuration.eventLoopThreads = 1
        configure(&configuration)
        let server = StickyProxyServer(configuration: configuration)
        try await server.start()
        return server
    }

    /// Sends `request` and reads until the server closes the connection.
    static func exchange(port: Int, _ request: String) async throws -> String {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
        }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            var received = ByteBuffer()
            for try await chunk in inbound {
                var chunk = chunk
                received.writeBuffer(&chunk)
            }
            return String(buffer: received)
        }
    }

    @Test func proxiesToARealBackendAndPinsTheSession() async throws {
        let backend = try await Backend()
        let server = try await Self.startServer()
        server.registry.register(backend.registration())
        let port = try #require(server.proxyPort)
        let response = try await Self.exchange(
            port: port, "GET /login?set_cookie=JSESSIONID%3Dabc HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(response.contains("X-Backend-Instance: \(backend.instanceID)\r\n"))
        #expect(response.contains("Set-Cookie: __VCAP_ID__=\(backend.instanceID); Path=/; HttpOnly\r\n"))
        await server.shutdown()
    }

    @Test func adminAPIRegistersOverHTTP() async throws {
        let backend = try await Backend()
        let server = try await Self.startServer()
        let admin = try #require(server.adminPort)
        let body = String(decoding: backend.registration(uris: ["app.local"]).json(), as: UTF8.self)
        let registered = try await Self.exchange(
            port: admin,
            "POST /routes/register HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer token\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        )
        #expect(registered.hasPrefix("HTTP/1.1 204 No Content\r\n"))
        let refused = try await Self.exchange(port: admin, "GET /routes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(refused.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"))
        let proxied = try await Self.exchange(port: try #require(server.proxyPort), "GET / HTTP/1.1\r\nHost: app.local\r\nConnection: close\r\n\r\n")
        #expect(proxied.contains("X-Backend-Instance: \(backend.instanceID)\r\n"))
        await server.shutdown()
    }

    @Test func shutdownLetsAnInFlightRequestFinish() async throws {
        let backend = try await Backend()
        let server = try await Self.startServer { $0.drainTimeout = .seconds(20) }
        server.registry.register(backend.registration())
        let port = try #require(server.proxyPort)
        async let slow = Self.exchange(port: port, "GET /?delay=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try await waitUntil("the slow request to be in flight") {
            server.registry.snapshot().lookup(host: "localhost", path: "/")?.endpoints.first?.stats.inFlight == 1
        }
        await server.shutdown()
        let response = try await slow
        #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(response.contains("Connection: close\r\n"))
        #expect(!FreePort.isListening(port))
    }
}
