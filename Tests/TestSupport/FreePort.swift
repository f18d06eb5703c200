import Foundation
import Supervisor

/// Free TCP ports on loopback: the supervisor's choice (`Probe.freePort`, below the ephemeral range).
public enum FreePort {
    public static func allocate() throws -> Int {
        try Probe.freePort()
    }

    /// True when something accepts TCP connections on 127.0.0.1:port.
    public static func isListening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}

public struct TestSupportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Polls `condition` until it holds or `timeout` passes; throws with `what` on timeout. For waiting on
/// an outside event (a port opening, a process exiting) where no notification exists.
public func waitUntil(
    _ what: String,
    timeout: Duration = .seconds(10),
    every interval: Duration = .milliseconds(20),
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: interval)
    }
    if try await condition() { return }
    throw TestSupportError("timed out after \(timeout) waiting for \(what)")
}

/// Runs `body`, throwing when it has not finished within `timeout` (the supervisor's
/// `Probe.withDeadline`, which does not wait for a body that ignores cancellation): for a test step
/// that would otherwise hang on a server that never answers.
public func withDeadline<T: Sendable>(
    _ timeout: Duration, waitingFor what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await Probe.withDeadline(timeout, what: what, body)
}
