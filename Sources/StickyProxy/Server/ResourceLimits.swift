import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Process limits a proxy needs raised.
enum ResourceLimits {
    /// Raises the soft limit on open files to the hard limit (as Go does at start): every client
    /// connection and every backend connection is a file descriptor.
    static func raiseOpenFileLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(resourceNoFile, &limit) == 0 else { return }
        guard limit.rlim_cur < limit.rlim_max else { return }
        let before = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        if setrlimit(resourceNoFile, &limit) != 0 {
            logger.warning("could not raise the open file limit", metadata: ["soft_limit": "\(before)"])
        }
    }

    #if canImport(Glibc)
        private static let resourceNoFile = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
        private static let resourceNoFile = RLIMIT_NOFILE
    #endif
}
