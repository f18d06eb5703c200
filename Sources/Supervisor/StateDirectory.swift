import Foundation

/// The state folder (`.state/` by default): the pid file, the control socket, the embedded Redis's data,
/// the log file and the identity kept across runs (app GUID, session secret).
public struct StateDirectory: Sendable {
    public let url: URL

    public init(path: String?) {
        let path = path ?? ".state"
        url = URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL
    }

    public var pidFile: URL { url.appendingPathComponent("cluster.json") }
    public var controlSocket: URL { url.appendingPathComponent("control.sock") }
    public var redisDirectory: URL { url.appendingPathComponent("redis") }
    public var logFile: URL { url.appendingPathComponent("logs/cluster.log") }
    public var identityFile: URL { url.appendingPathComponent("identity.json") }

    /// Creates the folder (owner-only) and its subfolders.
    public func prepare() throws(StateError) {
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try FileManager.default.createDirectory(at: redisDirectory, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: logFile.deletingLastPathComponent(), withIntermediateDirectories: true)
        } catch {
            throw .unusable(path: url.path, reason: (error as NSError).localizedDescription)
        }
        // A Unix socket path is limited to 107 bytes.
        if controlSocket.path.utf8.count > 100 {
            throw .unusable(path: url.path, reason: "its path is too long for a control socket; use a shorter --state-dir")
        }
    }

    /// What stays the same across runs in one state folder.
    public struct Identity: Codable, Sendable, Equatable {
        public var appGUID: String
        public var sessionSecret: String
        enum CodingKeys: String, CodingKey {
            case appGUID = "app_guid"
            case sessionSecret = "session_secret"
        }
    }

    /// Reads the identity, creating it (random app GUID and 32-byte session secret) the first time.
    public func identity() throws(StateError) -> Identity {
        if let data = try? Data(contentsOf: identityFile), let identity = try? JSONDecoder().decode(Identity.self, from: data) {
            return identity
        }
        // SystemRandomNumberGenerator is cryptographically secure (getrandom on Linux).
        var generator = SystemRandomNumberGenerator()
        let secret = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
        let identity = Identity(appGUID: UUID().uuidString.lowercased(), sessionSecret: secret)
        try write(identity, to: identityFile)
        return identity
    }

    public func readPidRecord() -> PidRecord? {
        guard let data = try? Data(contentsOf: pidFile) else { return nil }
        return try? JSONDecoder().decode(PidRecord.self, from: data)
    }

    public func writePidRecord(_ record: PidRecord) throws(StateError) {
        try write(record, to: pidFile)
    }

    public func removeRunFiles() {
        try? FileManager.default.removeItem(at: pidFile)
        try? FileManager.default.removeItem(at: controlSocket)
    }

    private func write(_ value: some Encodable, to file: URL) throws(StateError) {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(value)
            let temporary = file.appendingPathExtension("tmp")
            try data.write(to: temporary)
            chmod(temporary.path, 0o600)
            if rename(temporary.path, file.path) != 0 { throw StateError.unusable(path: file.path, reason: "rename failed (errno \(errno))") }
        } catch let error as StateError {
            throw error
        } catch {
            throw .unusable(path: file.path, reason: (error as NSError).localizedDescription)
        }
    }
}

public enum StateError: Error, Sendable, Equatable, CustomStringConvertible {
    case unusable(path: String, reason: String)
    case alreadyRunning(pid: Int32, stateDirectory: String)

    public var description: String {
        switch self {
        case .unusable(let path, let reason): "cannot use the state folder \(path): \(reason)"
        case .alreadyRunning(let pid, let directory):
            "a cluster is already running with the state folder \(directory) (pid \(pid)); "
                + "stop it with `cluster down`, or use another --state-dir"
        }
    }
}

/// The pid file: who the running supervisor is and which processes it started, so that the next
/// `cluster up` can tell a live cluster from a killed one and clean up what a killed one left behind.
public struct PidRecord: Codable, Sendable, Equatable {
    public struct Child: Codable, Sendable, Equatable {
        public var name: String
        public var pid: Int32
        /// The kernel's start time of the process (clock ticks since boot): a pid reused by an
        /// unrelated process has another one.
        public var startTime: UInt64
        enum CodingKeys: String, CodingKey {
            case name, pid
            case startTime = "start_time"
        }
        public init(name: String, pid: Int32, startTime: UInt64) {
            self.name = name
            self.pid = pid
            self.startTime = startTime
        }
    }

    public var pid: Int32
    public var startTime: UInt64
    /// A random id also set in every child's environment as STICKYLAB_CLUSTER_RUN.
    public var runID: String
    public var proxyURL: String?
    public var children: [Child]

    public init(pid: Int32, startTime: UInt64, runID: String, proxyURL: String? = nil, children: [Child] = []) {
        self.pid = pid
        self.startTime = startTime
        self.runID = runID
        self.proxyURL = proxyURL
        self.children = children
    }

    enum CodingKeys: String, CodingKey {
        case pid, children
        case startTime = "start_time"
        case runID = "run_id"
        case proxyURL = "proxy_url"
    }

    /// The environment variable that marks every process a supervisor started.
    public static let markerVariable = "STICKYLAB_CLUSTER_RUN"
}

/// What a killed predecessor left behind, decided from the pid file and a snapshot of the process
/// table (pure: the snapshot is passed in).
public struct Leftovers: Sendable, Equatable {
    /// One process as the kernel shows it.
    public struct Process: Sendable, Equatable {
        public var pid: Int32
        public var processGroup: Int32
        public var startTime: UInt64
        /// The value of STICKYLAB_CLUSTER_RUN in its environment, if any.
        public var marker: String?
        public var command: String
        public init(pid: Int32, processGroup: Int32, startTime: UInt64, marker: String?, command: String) {
            self.pid = pid
            self.processGroup = processGroup
            self.startTime = startTime
            self.marker = marker
            self.command = command
        }
    }

    /// The recorded supervisor is still alive: do not touch anything.
    public var supervisorAlive: Bool
    /// Processes that are verifiably ours: they carry the old run's marker, or are a recorded child
    /// with the recorded start time.
    public var processes: [Process]

    public init(record: PidRecord?, table: [Process], selfPID: Int32) {
        guard let record else {
            supervisorAlive = false
            processes = []
            return
        }
        supervisorAlive = table.contains { $0.pid == record.pid && $0.startTime == record.startTime && $0.pid != selfPID }
        if supervisorAlive {
            processes = []
            return
        }
        let recorded = Set(record.children.map { "\($0.pid)/\($0.startTime)" })
        processes = table.filter { process in
            process.pid != selfPID && (process.marker == record.runID || recorded.contains("\(process.pid)/\(process.startTime)"))
        }
    }

    /// The processes for a message: `redis-server (pid 12), chat-node (pid 14)`.
    public static func describe(_ processes: [Process]) -> String {
        processes.map { "\($0.command) (pid \($0.pid))" }.joined(separator: ", ")
    }

    /// The process groups to signal.
    public var processGroups: [Int32] {
        Array(Set(processes.map(\.processGroup).filter { $0 > 1 })).sorted()
    }
}

/// Reads the process table from /proc (Linux).
public enum ProcessTable {
    /// Every running process we can see, with its group, start time and STICKYLAB_CLUSTER_RUN marker.
    /// A zombie (exited, not yet reaped by its parent) is not running: a supervisor killed a moment ago
    /// is one until its parent reaps it.
    public static func snapshot() -> [Leftovers.Process] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { Int32($0) }.compactMap { pid in
            guard let stat = stat(pid), !stat.zombie else { return nil }
            return Leftovers.Process(pid: pid, processGroup: stat.processGroup, startTime: stat.startTime, marker: marker(pid), command: stat.command)
        }
    }

    /// Fields of /proc/PID/stat: the command name, process group, start time, and whether it is a zombie.
    public static func stat(_ pid: Int32) -> (command: String, processGroup: Int32, startTime: UInt64, zombie: Bool)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return nil }
        return parseStat(text)
    }

    /// Parses a /proc/PID/stat line; the command may contain spaces and parentheses.
    public static func parseStat(_ text: String) -> (command: String, processGroup: Int32, startTime: UInt64, zombie: Bool)? {
        guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")"), open < close else { return nil }
        let command = String(text[text.index(after: open)..<close])
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command: state(0) ppid(1) pgrp(2) ... starttime is field 22 of the line, index 19 here.
        guard fields.count > 19, let group = Int32(fields[2]), let start = UInt64(fields[19]) else { return nil }
        return (command, group, start, fields[0] == "Z")
    }

    public static func startTime(_ pid: Int32) -> UInt64? { stat(pid)?.startTime }

    /// Whether the process `pid` that started at `startTime` is still running (not gone, not a zombie).
    public static func isRunning(_ pid: Int32, startTime: UInt64) -> Bool {
        guard let stat = stat(pid) else { return false }
        return stat.startTime == startTime && !stat.zombie
    }

    static func marker(_ pid: Int32) -> String? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
        let prefix = Array((PidRecord.markerVariable + "=").utf8)
        for entry in data.split(separator: 0) where entry.starts(with: prefix) {
            return String(decoding: entry.dropFirst(prefix.count), as: UTF8.self)
        }
        return nil
    }
}
