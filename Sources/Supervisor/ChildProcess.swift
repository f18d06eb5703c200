import Foundation
import Subprocess

#if canImport(System)
    import System
#else
    import SystemPackage
#endif

/// One child process run with swift-subprocess: its own process group (so a signal reaches everything
/// it started), standard output and error read line by line into the log until the process exits.
/// Stopping is done with signals to the group (`ProcessGroup.signal`), never by cancelling the task:
/// cancelling would close the pipes first and the child would die of SIGPIPE while logging.
public struct ChildProcess: Sendable {
    public var executable: String
    public var arguments: [String]
    /// The complete environment of the child.
    public var environment: [String: String]
    public var workingDirectory: String?
    /// The log source (`chat.1`, `proxy`, `redis`) and instance index.
    public var source: String
    public var index: Int?

    public init(
        executable: String, arguments: [String], environment: [String: String], workingDirectory: String? = nil, source: String, index: Int? = nil
    ) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.source = source
        self.index = index
    }

    /// A shell command, run as `/bin/sh -c COMMAND`, so that `$PORT` and pipes work as in a Procfile.
    /// A simple command is exec'd by the shell, so that the app itself is the process that gets
    /// SIGTERM and whose exit is watched (dash does not do that by itself).
    public static func shell(_ command: String, environment: [String: String], source: String, index: Int? = nil) -> ChildProcess {
        ChildProcess(
            executable: "/bin/sh", arguments: ["-c", ShellCommand.execPrefixed(command)], environment: environment, source: source, index: index)
    }

    public enum Outcome: Sendable, Equatable, CustomStringConvertible {
        case exited(InstanceLifecycle.ExitStatus)
        case failedToStart(String)

        public var description: String {
            switch self {
            case .exited(let status): "\(status)"
            case .failedToStart(let reason): "failed to start: \(reason)"
            }
        }
    }

    /// Runs the process to its end. `started` is called with the pid (= its process group id) as soon
    /// as it runs. Returns once the process has exited and its output is drained, with the last `tail`
    /// lines of its standard error and the last `tail` of its standard output (in that order).
    public func run(
        logs: LogHub, tail: Int = 0, started: @escaping @Sendable (pid_t) async -> Void
    ) async -> (
        outcome: Outcome, tail: [String]
    ) {
        var options = PlatformOptions()
        options.processGroupID = 0
        var environment: [Environment.Key: String] = [:]
        for (name, value) in self.environment {
            if let key = Environment.Key(rawValue: name) { environment[key] = value }
        }
        let source = self.source
        let index = self.index
        do {
            let result = try await Subprocess.run(
                .path(FilePath(executable)),
                arguments: Arguments(arguments),
                environment: .custom(environment),
                workingDirectory: workingDirectory.map { FilePath($0) },
                platformOptions: options,
                input: .none,
                output: .sequence,
                error: .sequence
            ) { execution in
                await started(execution.processIdentifier.value)
                async let output = Self.drain(execution.standardOutput, source: source, index: index, logs: logs, tail: tail)
                async let error = Self.drain(execution.standardError, source: source, index: index, logs: logs, tail: tail)
                return await error + output
            }
            switch result.terminationStatus {
            case .exited(let code): return (.exited(.exited(code)), result.closureResult)
            case .signaled(let signal): return (.exited(.signaled(signal)), result.closureResult)
            }
        } catch {
            return (.failedToStart("\(error)"), [])
        }
    }

    /// Reads a stream to its end, one log line per text line (very long lines are cut at 16 KiB).
    /// Returns its last `tail` lines.
    static func drain(_ stream: SubprocessOutputSequence, source: String, index: Int?, logs: LogHub, tail: Int) async -> [String] {
        var splitter = LineSplitter()
        var last: [String] = []
        func emit(_ line: String) {
            logs.emit(source: source, index: index, line)
            guard tail > 0 else { return }
            if last.count == tail { last.removeFirst() }
            last.append(line)
        }
        do {
            for try await buffer in stream {
                let lines = buffer.withUnsafeBytes { splitter.feed($0) }
                for line in lines { emit(line) }
            }
        } catch {
            // The process exited and its pipe was closed under us: what was read is logged below.
        }
        if let rest = splitter.finish() { emit(rest) }
        return last
    }
}

/// Splits a byte stream into text lines (LF or CRLF), cutting lines longer than `maximum` bytes.
public struct LineSplitter: Sendable {
    private var pending: [UInt8] = []
    public let maximum: Int

    public init(maximum: Int = 16 * 1024) { self.maximum = maximum }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> [String] {
        var lines: [String] = []
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                lines.append(take())
            } else if pending.count < maximum {
                pending.append(byte)
            } else {
                lines.append(take())
                pending.append(byte)
            }
        }
        return lines
    }

    /// The last line when the stream ended without a newline.
    public mutating func finish() -> String? {
        pending.isEmpty ? nil : take()
    }

    private mutating func take() -> String {
        if pending.last == UInt8(ascii: "\r") { pending.removeLast() }
        defer { pending.removeAll(keepingCapacity: true) }
        return String(decoding: pending, as: UTF8.self)
    }
}

/// Signals to a whole process group (a child and everything it started).
public enum ProcessGroup {
    /// Sends `signal` to the group `pgid`; false if no such group exists any more.
    @discardableResult
    public static func signal(_ pgid: pid_t, _ signal: Int32) -> Bool {
        guard pgid > 1 else { return false }
        return kill(-pgid, signal) == 0
    }
}

/// Shell command text.
public enum ShellCommand {
    /// `exec CMD` for a simple command (leading `NAME=value` assignments kept in front); a compound
    /// command (`;`, `&&`, `|`, `&`, a subshell, a keyword) is returned as it is.
    public static func execPrefixed(_ command: String) -> String {
        let trimmed = command.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty, !trimmed.contains(where: { ";&|\n(){}`".contains($0) }) else { return command }
        var words = trimmed.split(separator: " ", omittingEmptySubsequences: true)
        var assignments: [Substring] = []
        while let first = words.first, isAssignment(first) {
            assignments.append(first)
            words.removeFirst()
        }
        guard let program = words.first else { return command }
        let keywords: Set<Substring> = ["exec", "if", "for", "while", "until", "case", "!", "[[", "function", "select", "time"]
        guard !keywords.contains(program), !program.contains(where: { "='\"$\\".contains($0) }) else { return command }
        let rest = trimmed.dropFirst(trimmed.distance(from: trimmed.startIndex, to: program.startIndex))
        return (assignments.map(String.init) + ["exec", String(rest)]).joined(separator: " ")
    }

    static func isAssignment(_ word: Substring) -> Bool {
        guard let equals = word.firstIndex(of: "="), equals != word.startIndex else { return false }
        let name = word[..<equals]
        guard let first = name.first, first.isLetter || first == "_" else { return false }
        return name.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" } && !word[equals...].contains(where: { "\"'$".contains($0) })
    }
}
