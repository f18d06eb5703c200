import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// A socket error in words a user reads in a log line: "connection refused", "connection reset by
/// the peer (ECONNRESET)", not `NIOConnectionError(... SingleConnectionFailure(...))` or
/// `read(descriptor:pointer:size:): Connection reset by peer (errno: 104)`. Used by RedisClient and by
/// cluster's probes and relays; sticky-proxy words its errors as Go's gorouter does instead.
public enum SocketErrorText {
    /// The words for a socket or connection error, or nil for an error of another kind.
    public static func describe(_ error: any Error) -> String? {
        if let error = error as? NIOConnectionError {
            // Each address tried (IPv6 and IPv4 for `localhost`), said once per distinct reason.
            var reasons: [String] = []
            for failure in error.connectionErrors {
                let reason = describe(failure.error) ?? "\(failure.error)"
                if !reasons.contains(reason) { reasons.append(reason) }
            }
            if !reasons.isEmpty { return reasons.joined(separator: "; ") }
            if let resolution = error.dnsAError ?? error.dnsAAAAError {
                return "the host name '\(error.host)' could not be resolved (\(resolution))"
            }
            return "the host name '\(error.host)' has no address"
        }
        if let error = error as? IOError {
            // The system's words, without the name of the NIO call that met them.
            switch error.errnoCode {
            case ECONNREFUSED: return "connection refused"
            case ECONNRESET: return "connection reset by the peer (ECONNRESET)"
            case EPIPE: return "the peer closed the connection (EPIPE)"
            case ETIMEDOUT: return "the connection timed out (ETIMEDOUT)"
            case ENETUNREACH: return "no route to the host (ENETUNREACH)"
            case EHOSTUNREACH: return "no route to the host (EHOSTUNREACH)"
            default: return "\(String(cString: strerror(error.errnoCode))) (errno \(error.errnoCode))"
            }
        }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout(let amount): return "connect timed out after \(Duration.nanoseconds(amount.nanoseconds))"
            case .ioOnClosedChannel, .alreadyClosed, .eof, .outputClosed: return "the connection was closed"
            default: return nil
            }
        }
        // The handlers of a channel that closed a moment ago are gone from its pipeline.
        if error is ChannelPipelineError { return "the connection was closed" }
        return nil
    }
}
