import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What the cluster's commands print on standard output: written at once (unbuffered, so that
/// `cluster logs -f | grep` sees each line as it comes). When the reader has gone (a pipe closed:
/// `cluster status --watch | head -3`), nothing more is written and the command is interrupted as by
/// Ctrl-C: a chaos or users run stops the way it does then, and the others end quietly (exit 130),
/// where Foundation's `FileHandle.write` crashed on the broken pipe.
public enum ConsoleOutput {
    private static let readerGone = Atomic<Bool>(false)

    /// `text` and a line end.
    @Sendable public static func line(_ text: String) {
        write(text + "\n")
    }

    @Sendable public static func write(_ text: String) {
        guard !readerGone.load(ordering: .relaxed) else { return }
        if !writeFully(STDOUT_FILENO, text), !readerGone.exchange(true, ordering: .relaxed) {
            kill(getpid(), SIGINT)
        }
    }
}

/// Writes all of `text` to `descriptor`, again after an interruption; false when the descriptor
/// refuses it (EPIPE: the reader closed the pipe, SIGPIPE being ignored by the event loops' sockets).
func writeFully(_ descriptor: Int32, _ text: String) -> Bool {
    var bytes = Array(text.utf8)[...]
    while !bytes.isEmpty {
        let written = bytes.withUnsafeBytes { systemWrite(descriptor, $0.baseAddress, $0.count) }
        if written >= 0 {
            bytes = bytes.dropFirst(written)
        } else if errno == EAGAIN {
            usleep(1_000)
        } else if errno != EINTR {
            return false
        }
    }
    return true
}

#if canImport(Glibc)
    private let systemWrite = Glibc.write
#elseif canImport(Darwin)
    private let systemWrite = Darwin.write
#endif
