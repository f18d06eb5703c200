import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Where every line goes: the terminal (coloured on a TTY only), the log file in the state folder, the
/// recent-lines ring that `cluster logs` reads, and any `cluster logs -f` followers. Writing to the
/// terminal and the file happens on one dedicated thread, so a slow terminal never blocks a Task.
public final class LogHub: Sendable {
    private struct State {
        var recent: [LogLine] = []
        var next = 0
        var followers: [Int: (filter: Int?, continuation: AsyncStream<LogLine>.Continuation)] = [:]
        var nextFollower = 0
        var width = 7
    }

    private let state = Mutex(State())
    private let writer: LineWriter
    private let capacity: Int
    private let colour: Bool

    /// The log file's size at which it is rotated (to `<name>.1`): 20 MiB.
    public static let defaultMaxFileBytes = 20 * 1024 * 1024

    /// - Parameters:
    ///   - logFile: the file every line is appended to (plain text), if any; rotated at `maxFileBytes`.
    ///   - echo: whether lines go to standard output.
    public init(logFile: URL?, echo: Bool = true, capacity: Int = 5000, maxFileBytes: Int = LogHub.defaultMaxFileBytes) {
        self.capacity = capacity
        let environment = ProcessInfo.processInfo.environment
        self.colour = echo && isatty(1) != 0 && environment["NO_COLOR"] == nil && environment["TERM"] != "dumb"
        self.writer = LineWriter(logFile: logFile, echo: echo, maxFileBytes: maxFileBytes)
    }

    /// Widens the source column (for example when instance `chat.10` appears).
    public func reserveWidth(for source: String) {
        state.withLock { $0.width = max($0.width, source.count) }
    }

    /// Records one line from `source` (an instance's own output or a cluster event).
    public func emit(source: String, index: Int? = nil, _ text: String) {
        let line = LogLine(time: Self.now(), source: source, index: index, text: text)
        let width = state.withLock { state -> Int in
            if state.recent.count < capacity {
                state.recent.append(line)
            } else {
                state.recent[state.next] = line
                state.next = (state.next + 1) % capacity
            }
            for follower in state.followers.values where follower.filter == nil || follower.filter == index {
                follower.continuation.yield(line)
            }
            return state.width
        }
        writer.write(terminal: colour ? line.coloured(width: width) : line.formatted(width: width), file: line.formatted(width: width))
    }

    /// The last `limit` lines, oldest first; only one instance's when `index` is set.
    public func recent(index: Int? = nil, limit: Int = 200) -> [LogLine] {
        state.withLock { state in
            let ordered = Array(state.recent[state.next...] + state.recent[..<state.next])
            let filtered = index.map { index in ordered.filter { $0.index == index } } ?? ordered
            return Array(filtered.suffix(max(0, limit)))
        }
    }

    /// New lines as they come (only one instance's when `index` is set), until the stream is dropped.
    public func follow(index: Int? = nil) -> AsyncStream<LogLine> {
        let (stream, continuation) = AsyncStream<LogLine>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        let id = state.withLock { state -> Int in
            state.nextFollower += 1
            state.followers[state.nextFollower] = (index, continuation)
            return state.nextFollower
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.followers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Ends every follower and waits until every line is written out.
    public func close() {
        let followers = state.withLock { state in
            defer { state.followers = [:] }
            return state.followers.values.map(\.continuation)
        }
        for continuation in followers { continuation.finish() }
        writer.close()
    }

    static func now() -> String {
        var seconds = time(nil)
        var parts = tm()
        localtime_r(&seconds, &parts)
        return LogLine.clock(hour: Int(parts.tm_hour), minute: Int(parts.tm_min), second: Int(parts.tm_sec))
    }
}

/// A thread that writes queued lines to standard output and a file, so that callers never wait on I/O.
/// The file is rotated when it would grow past `maxFileBytes`: it becomes `<name>.1` (replacing the
/// previous one) and a new file starts, so a cluster left running for days keeps at most twice that.
final class LineWriter: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [(terminal: String, file: String)] = []
    private var closed = false
    private var finished = false
    private let logFile: URL?
    private var file: FileHandle?
    private var rotation: LogRotation
    private let echo: Bool

    init(logFile: URL?, echo: Bool, maxFileBytes: Int = LogHub.defaultMaxFileBytes) {
        self.echo = echo
        self.logFile = logFile
        var size = 0
        if let logFile {
            try? FileManager.default.createDirectory(at: logFile.deletingLastPathComponent(), withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: logFile.path) {
                _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
            }
            file = try? FileHandle(forWritingTo: logFile)
            size = Int((try? file?.seekToEnd()) ?? 0)
        } else {
            file = nil
        }
        rotation = LogRotation(maxBytes: maxFileBytes, currentBytes: size)
        let thread = Thread { [self] in run() }
        thread.name = "cluster-log-writer"
        thread.start()
    }

    func write(terminal: String, file: String) {
        condition.lock()
        if !closed { queue.append((terminal, file)) }
        condition.signal()
        condition.unlock()
    }

    /// Flushes what is queued, then stops the thread.
    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        while !finished { condition.wait() }
        condition.unlock()
        try? file?.close()
    }

    private func run() {
        while true {
            condition.lock()
            while queue.isEmpty && !closed { condition.wait() }
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            let done = closed && batch.isEmpty
            condition.unlock()
            if done { break }
            if echo {
                var text = ""
                for line in batch { text += line.terminal + "\n" }
                // A reader that went away (`cluster up | head`) stops the echo, not the cluster.
                _ = writeFully(STDOUT_FILENO, text)
            }
            if file != nil {
                // Line by line, so that the file never passes the limit by more than one line.
                var chunk = ""
                for line in batch {
                    let text = line.file + "\n"
                    if rotation.append(text.utf8.count) {
                        if !chunk.isEmpty { try? file?.write(contentsOf: Data(chunk.utf8)) }
                        chunk = ""
                        rotate()
                    }
                    chunk += text
                }
                if !chunk.isEmpty { try? file?.write(contentsOf: Data(chunk.utf8)) }
            }
        }
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// `cluster.log` -> `cluster.log.1`, then a new `cluster.log` (on the writer thread).
    private func rotate() {
        guard let logFile else { return }
        try? file?.close()
        let previous = logFile.appendingPathExtension("1")
        try? FileManager.default.removeItem(at: previous)
        try? FileManager.default.moveItem(at: logFile, to: previous)
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        file = try? FileHandle(forWritingTo: logFile)
    }

}

/// When the log file is rotated: before a line that would take it past `maxBytes` (a file that is
/// still empty takes any line, so one huge line never rotates in a loop).
public struct LogRotation: Sendable, Equatable {
    public let maxBytes: Int
    public private(set) var currentBytes: Int

    public init(maxBytes: Int, currentBytes: Int = 0) {
        self.maxBytes = max(1, maxBytes)
        self.currentBytes = currentBytes
    }

    /// Accounts for a line of `bytes`; true: rotate first (the line then starts the new file).
    public mutating func append(_ bytes: Int) -> Bool {
        if currentBytes > 0, currentBytes + bytes > maxBytes {
            currentBytes = bytes
            return true
        }
        currentBytes += bytes
        return false
    }
}
