import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

private func closeDescriptor(_ descriptor: Int32) {
    _ = close(descriptor)
}

private func writeDescriptor(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}

/// Writes access log batches to a file or standard output on its own thread, so that no event loop
/// ever waits for a disk. Lines are collected per event loop (`LoopAccessLog`) and handed over in
/// batches.
public final class AccessLogWriter: Sendable {
    public enum OpenError: Error, CustomStringConvertible {
        case cannotOpen(path: String, errno: Int32)

        public var description: String {
            switch self {
            case .cannotOpen(let path, let code):
                return
                    "cannot open the access log '\(path)': \(String(cString: strerror(code))); check the folder exists and is writable, or pass --access-log -"
            }
        }
    }

    private let fileDescriptor: Int32
    private let ownsDescriptor: Bool
    private let thread: NIOThreadPool

    public init(destination: AccessLogDestination) throws {
        switch destination {
        case .standardOutput:
            fileDescriptor = STDOUT_FILENO
            ownsDescriptor = false
        case .file(let path):
            let descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else { throw OpenError.cannotOpen(path: path, errno: errno) }
            fileDescriptor = descriptor
            ownsDescriptor = true
        }
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    /// Queues a batch of lines.
    func write(_ batch: ByteBuffer) {
        let descriptor = fileDescriptor
        thread.submit { state in
            guard case .active = state else { return }
            Self.writeFully(descriptor, batch)
        }
    }

    /// Writes what is queued, then stops the thread.
    public func close() async {
        try? await thread.runIfActive {}
        try? await thread.shutdownGracefully()
        if ownsDescriptor { closeDescriptor(fileDescriptor) }
    }

    private static func writeFully(_ descriptor: Int32, _ batch: ByteBuffer) {
        batch.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = writeDescriptor(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }
}

/// One event loop's buffer of access log lines; only touched on its loop. Flushed when it holds 64 KiB
/// or 200 ms after the first line.
final class LoopAccessLog {
    private let writer: AccessLogWriter
    private let eventLoop: any EventLoop
    private var buffer: ByteBuffer
    private var flushScheduled = false
    private static let batchSize = 64 * 1024

    init(writer: AccessLogWriter, eventLoop: any EventLoop) {
        self.writer = writer
        self.eventLoop = eventLoop
        self.buffer = ByteBufferAllocator().buffer(capacity: Self.batchSize + 4096)
    }

    func append(_ record: AccessLogRecord) {
        record.write(into: &buffer)
        if buffer.readableBytes >= Self.batchSize {
            flush()
        } else if !flushScheduled {
            flushScheduled = true
            let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
            eventLoop.scheduleTask(in: .milliseconds(200)) {
                loopBound.value.flushScheduled = false
                loopBound.value.flush()
            }
        }
    }

    func flush() {
        guard buffer.readableBytes > 0 else { return }
        writer.write(buffer)
        buffer = ByteBufferAllocator().buffer(capacity: Self.batchSize + 4096)
    }
}
