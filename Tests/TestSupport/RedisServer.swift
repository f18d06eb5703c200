import Foundation
import RedisClient

/// A real redis-server for a test: its own free loopback port and temporary folder. Stop it with
/// `stop()`; `kill()` and `start()` again on the same port simulate a crash and a restart.
public final class RedisServer: @unchecked Sendable {
    public let port: Int
    public let password: String?
    public let directory: URL
    private let lock = NSLock()
    private var process: Process?

    /// Starts redis-server (AOF off unless `appendOnly`) and waits until it answers.
    public init(password: String? = nil, appendOnly: Bool = false) async throws {
        self.port = try FreePort.allocate()
        self.password = password
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("stickylab-redis-\(UUID().uuidString)")
        self.appendOnly = appendOnly
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try await start()
    }

    private let appendOnly: Bool

    public var url: String {
        if let password { return "redis://:\(password)@127.0.0.1:\(port)" }
        return "redis://127.0.0.1:\(port)"
    }

    public var configuration: RedisConfiguration {
        get throws { try RedisConfiguration(url: url) }
    }

    public func start() async throws {
        let process = Process()
        // Through env(1) with SIGTERM reset to its default: a test process may ignore SIGTERM, and
        // children inherit ignored signals, so `stop()` would otherwise do nothing.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var arguments = [
            "--default-signal=TERM", try Self.executable().path,
            "--port", "\(port)", "--bind", "127.0.0.1", "--dir", directory.path, "--save", "",
            "--appendonly", appendOnly ? "yes" : "no", "--daemonize", "no", "--logfile", directory.appendingPathComponent("redis.log").path,
            // Its process title would overwrite its environment, and with it the test run's marker.
            "--set-proc-title", "no",
        ]
        if let password { arguments += ["--requirepass", password] }
        process.arguments = arguments
        process.environment = TestRun.environment()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        lock.withLock { self.process = process }
        try await waitUntil("redis-server to listen on port \(port)") {
            guard process.isRunning else {
                let log = (try? String(contentsOf: directory.appendingPathComponent("redis.log"), encoding: .utf8)) ?? ""
                throw TestSupportError("redis-server exited at start: \(log.suffix(500))")
            }
            return FreePort.isListening(port)
        }
    }

    /// The running server's pid, nil while it is stopped.
    public var processIdentifier: Int32? {
        lock.withLock { process.flatMap { $0.isRunning ? $0.processIdentifier : nil } }
    }

    /// SIGKILL: a crash. Waits until the process is gone.
    public func kill() async throws {
        try await signal(SIGKILL)
    }

    /// SIGTERM and wait: a clean stop.
    public func stop() async throws {
        try await signal(SIGTERM)
    }

    /// Kills the server and starts it again on the same port.
    public func restart() async throws {
        try await kill()
        try await start()
    }

    private func signal(_ signal: Int32) async throws {
        guard let process = lock.withLock({ self.process }) else { return }
        if process.isRunning { Foundation.kill(process.processIdentifier, signal) }
        try await waitUntil("redis-server on port \(port) to exit") { !process.isRunning }
        lock.withLock { self.process = nil }
    }

    deinit {
        if let process, process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }

    static func executable() throws -> URL {
        for path in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] where FileManager.default.isExecutableFile(atPath: path) {
            return URL(fileURLWithPath: path)
        }
        throw TestSupportError("redis-server is not installed; run `make deps`")
    }
}
