import CloudFoundry
import Foundation

/// What changed between two statuses of a cluster, a line per instance (or component) that changed:
/// what `cluster status --watch` lists under its table, so that a crash, a restart or an instance
/// leaving the route pool stays on screen after the table has moved on.
public enum StatusChanges {
    public static func between(_ old: ClusterStatus, _ new: ClusterStatus) -> [String] {
        var lines: [String] = []
        if old.desiredInstances != new.desiredInstances {
            lines.append("scaled from \(old.desiredInstances) to \(new.desiredInstances) instances")
        }
        let before = Dictionary(old.instances.map { ($0.index, $0) }, uniquingKeysWith: { first, _ in first })
        let after = Dictionary(new.instances.map { ($0.index, $0) }, uniquingKeysWith: { first, _ in first })
        for index in Set(before.keys).union(after.keys).sorted() {
            let name = "\(new.app).\(index)"
            switch (before[index], after[index]) {
            case (nil, let added?):
                lines.append("\(name) added (\(added.state.rawValue))")
            case (_?, nil):
                lines.append("\(name) removed")
            case (let was?, let now?):
                if let line = instance(was, now) { lines.append("\(name) \(line)") }
            case (nil, nil):
                break
            }
        }
        if let was = old.frontRouter?.state, let now = new.frontRouter?.state, was != now { lines.append("front router \(was) -> \(now)") }
        if old.proxy.state != new.proxy.state { lines.append("proxy \(old.proxy.state) -> \(new.proxy.state)") }
        if old.redis.state != new.redis.state { lines.append("redis \(old.redis.state) -> \(new.redis.state)") }
        return lines
    }

    /// One instance's changes, nil when none that a watcher cares about (uptime and rates move every time).
    static func instance(_ was: ClusterStatus.Instance, _ now: ClusterStatus.Instance) -> String? {
        var parts: [String] = []
        if was.state != now.state { parts.append("\(was.state.rawValue) -> \(now.state.rawValue)") }
        if now.crashes > was.crashes {
            parts.append("crash count \(now.crashes)")
        } else if now.crashes < was.crashes {
            parts.append("crash count reset")
        }
        if let old = was.guid, let new = now.guid, old != new { parts.append("new guid \(new.prefix(8))") }
        if let old = was.routable, let new = now.routable, old != new {
            parts.append(new ? "back in the route pool" : "out of the route pool (readiness check failing)")
        }
        if was.frozenSeconds == nil, now.frozenSeconds != nil { parts.append("frozen") }
        if was.frozenSeconds != nil, now.frozenSeconds == nil { parts.append("resumed") }
        if was.replacing == nil, let old = now.replacing { parts.append("replacing its old process (\(old.state.rawValue))") }
        if was.replacing != nil, now.replacing == nil { parts.append("old process gone") }
        if was.redisLink?.faultSummary != now.redisLink?.faultSummary {
            parts.append(now.redisLink.map { "link to Redis \($0.faultSummary)" } ?? "link to Redis healed")
        }
        guard !parts.isEmpty else { return nil }
        var line = parts.joined(separator: ", ")
        if now.crashes > was.crashes, let crash = now.lastCrash { line += ": \(crash)" }
        return line
    }
}

/// `cluster status --watch`: the screens it draws, one per status (or per failed attempt to get one),
/// with the changes seen so far. A value without I/O; `run` asks the cluster and writes the screens.
public struct StatusWatch: Sendable {
    /// The changes kept under the table.
    public static let keptChanges = 10
    public static let intervals = Duration.milliseconds(200)...Duration.seconds(60)

    public let interval: Duration
    /// Whether each screen replaces the previous one (a terminal) or follows it (a pipe, a file).
    public let redraw: Bool
    public private(set) var previous: ClusterStatus?
    /// The cluster could not be asked at the last attempt (it stopped, or never started).
    public private(set) var unavailable = false
    /// Time (`HH:MM:SS`) and text of the latest changes, oldest first.
    public private(set) var changes: [(time: String, text: String)] = []

    public init(interval: Duration, redraw: Bool) {
        self.interval = interval
        self.redraw = redraw
    }

    /// What is wrong with `interval` for `--interval` (nil: nothing).
    public static func intervalProblem(_ interval: Duration) -> String? {
        intervals.contains(interval) ? nil : "--interval must be from 200ms to 1m (not \(DurationText.format(interval)))"
    }

    /// The screen for a status read at `time`.
    public mutating func screen(status: ClusterStatus, time: String) -> String {
        if unavailable {
            note("a cluster answers again", at: time)
            unavailable = false
            previous = nil
        }
        if let previous { for line in StatusChanges.between(previous, status) { note(line, at: time) } }
        previous = status
        return frame(time: time, body: status.table())
    }

    /// The screen when the cluster cannot be asked: why, and that the watch goes on.
    public mutating func screen(unavailable reason: String, time: String) -> String {
        if !unavailable, previous != nil { note("the cluster stopped answering", at: time) }
        unavailable = true
        return frame(time: time, body: "\(reason)\nwaiting for it: the screen comes back when a cluster answers")
    }

    mutating func note(_ text: String, at time: String) {
        changes.append((time, text))
        if changes.count > Self.keptChanges { changes.removeFirst(changes.count - Self.keptChanges) }
    }

    func frame(time: String, body: String) -> String {
        var lines = ["cluster status every \(DurationText.format(interval)), \(time) (Ctrl-C to stop)", "", body]
        if !changes.isEmpty {
            lines.append("")
            lines.append("changes:")
            lines += changes.map { "\($0.time) \($0.text)" }
        }
        let text = lines.joined(separator: "\n") + "\n"
        // Home, the screen cleared, then the text: one write, so the screen never shows half of it.
        return redraw ? "\u{1B}[H\u{1B}[2J" + text : text + "\n"
    }

    /// Asks the cluster every `interval` and writes a screen each time (`json`: the status as one line
    /// of JSON instead, for a script), until SIGINT or SIGTERM. A cluster that cannot be asked is said
    /// on the screen (in JSON mode, once per outage to `complain`), and the watch goes on.
    public static func run(
        interval: Duration, json: Bool, redraw: Bool, send: @escaping ChaosRun.Send, write: @escaping @Sendable (String) -> Void,
        complain: @escaping @Sendable (String) -> Void
    ) async {
        _ = try? await cancellingOnInterrupt {
            var watch = StatusWatch(interval: interval, redraw: redraw && !json)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            var said = false
            while !Task.isCancelled {
                let time = LogHub.now()
                do {
                    let response = try await send(ControlRequest(command: .status))
                    guard let status = response.status else {
                        throw ChaosRun.Failure("the cluster did not give its status: \(response.error ?? "no reason given")")
                    }
                    said = false
                    if json {
                        write(String(decoding: (try? encoder.encode(status)) ?? Data(), as: UTF8.self) + "\n")
                    } else {
                        write(watch.screen(status: status, time: time))
                    }
                } catch {
                    if Task.isCancelled { return }
                    if json {
                        if !said { complain("cluster: \(error); waiting for it") }
                        said = true
                    } else {
                        write(watch.screen(unavailable: "cluster: \(error)", time: time))
                    }
                }
                guard (try? await Task.sleep(for: interval)) != nil else { return }
            }
        }
    }
}
