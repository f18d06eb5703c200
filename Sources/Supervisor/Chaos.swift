import CloudFoundry
import Foundation
import UnixSignals

/// `cluster chaos`: faults on a schedule against a running cluster, the way a team chaos-tests
/// instance restarts before production: every `every`, one running instance, picked at random, is
/// killed (a crash, restarted by the restart policy) or restarted gracefully; optionally the embedded
/// Redis is restarted every `redisEvery`; at least `keep` instances are left running; then the
/// cluster gets `settle` to be ready again.
public struct ChaosOptions: Sendable, Equatable {
    public enum Fault: String, Sendable, CaseIterable {
        /// SIGKILL (`cluster kill`): a crash, restarted per the restart policy.
        case kill
        /// SIGTERM, then a new process (`cluster restart`).
        case restart
    }

    public var every: Duration
    public var duration: Duration
    public var fault: Fault
    public var keep: Int
    public var redisEvery: Duration?
    public var settle: Duration
    public var seed: UInt64

    public init(
        every: Duration, duration: Duration, fault: Fault = .kill, keep: Int = 1, redisEvery: Duration? = nil, settle: Duration = .seconds(30),
        seed: UInt64
    ) {
        self.every = every
        self.duration = duration
        self.fault = fault
        self.keep = keep
        self.redisEvery = redisEvery
        self.settle = settle
        self.seed = seed
    }

    /// What is wrong with these options, for the command line (nil: nothing).
    public var problem: String? {
        if every < .milliseconds(100) { return "--every must be at least 100ms (not \(DurationText.format(every)))" }
        if duration <= .zero { return "--for must be more than 0s" }
        if duration > .seconds(86_400) { return "--for must be at most 24h (not \(DurationText.format(duration)))" }
        if keep < 0 { return "--keep must be 0 or more (not \(keep))" }
        if let redisEvery, redisEvery < .seconds(1) { return "--redis-every must be at least 1s (not \(DurationText.format(redisEvery)))" }
        if settle < .zero { return "--settle must be 0s or more" }
        return nil
    }

    /// One line saying what the run will do.
    public var summary: String {
        let fault = self.fault == .kill ? "kill (SIGKILL)" : "restart (SIGTERM, then a new process)"
        var text = "every \(DurationText.format(every)) for \(DurationText.format(duration)): \(fault) one running instance at random"
        text += keep > 0 ? ", leaving at least \(keep) running" : ""
        if let redisEvery { text += "; restart Redis every \(DurationText.format(redisEvery))" }
        return text + "; seed \(seed) (--seed \(seed) picks the same instances again, given the same states)"
    }
}

/// The times of a chaos run's events, from its start, in order: an instance fault every `every` and
/// a Redis restart every `redisEvery`, up to `duration` included (an instance fault first when both
/// fall at the same time). Produced one at a time: a long run at a short interval holds no list.
public struct ChaosSchedule: Sendable, Equatable {
    public enum Event: Sendable, Equatable {
        case instanceFault
        case redisRestart
    }

    private let options: ChaosOptions
    private var faults = 1
    private var restarts = 1

    public init(_ options: ChaosOptions) { self.options = options }

    /// The next event and when it is due, nil when the run is over.
    public mutating func next() -> (at: Duration, event: Event)? {
        let fault = options.every * faults
        let restart = options.redisEvery.map { $0 * restarts }
        let faultDue = fault <= options.duration
        let restartDue = restart.map { $0 <= options.duration } ?? false
        if faultDue, !restartDue || fault <= restart! {
            faults += 1
            return (fault, .instanceFault)
        }
        if restartDue, let restart {
            restarts += 1
            return (restart, .redisRestart)
        }
        return nil
    }
}

/// Which instance a fault hits: one of the running ones (healthy and routable), at random from the
/// seed, as long as more than `keep` are running. A value: the states come in, the choice goes out.
public struct ChaosPicker: Sendable {
    public enum Choice: Sendable, Equatable {
        case instance(index: Int)
        /// No fault this time, and why.
        case skip(String)
    }

    private let keep: Int
    private var random: SplitMix64

    public init(keep: Int, seed: UInt64) {
        self.keep = keep
        self.random = SplitMix64(seed: seed)
    }

    public mutating func choose(among instances: [ClusterStatus.Instance]) -> Choice {
        let running = instances.filter { $0.state == .running }.map(\.index).sorted()
        guard running.count > keep else {
            let states = instances.isEmpty ? "no instances" : "\(running.count) of \(instances.count) instances running"
            return .skip("\(states), and --keep \(keep) leaves them alone")
        }
        return .instance(index: running[Int(random.next() % UInt64(running.count))])
    }
}

/// The tally of a chaos run, and the line that ends it.
public struct ChaosTally: Sendable, Equatable {
    public var faults = 0
    public var skipped = 0
    public var redisRestarts = 0
    public var refused = 0

    public init() {}

    public func line(fault: ChaosOptions.Fault, elapsed: Duration) -> String {
        var parts = ["\(faults) \(fault == .kill ? "kill" : "restart")\(faults == 1 ? "" : "s")"]
        if redisRestarts > 0 { parts.append("\(redisRestarts) Redis restart\(redisRestarts == 1 ? "" : "s")") }
        if skipped > 0 { parts.append("\(skipped) skipped") }
        if refused > 0 { parts.append("\(refused) refused by the cluster") }
        return parts.joined(separator: ", ") + " in \(DurationText.format(elapsed))"
    }
}

/// Runs a chaos schedule against a running cluster through its control socket, printing a line per
/// event; then waits up to `settle` for the cluster to be ready again.
public enum ChaosRun {
    public typealias Send = @Sendable (ControlRequest) async throws -> ControlResponse

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    public enum Outcome: Sendable, Equatable {
        /// Every fault done and the cluster ready again within `settle`.
        case ready
        /// Not ready `settle` after the last fault.
        case notReady
        /// Stopped early (Ctrl-C, SIGTERM, or the task cancelled), after printing what it had done.
        case interrupted
    }

    /// `run`, stopped early by SIGINT or SIGTERM (then `.interrupted`).
    public static func runUntilInterrupted(
        options: ChaosOptions, send: @escaping Send, print: @escaping @Sendable (String) -> Void
    )
        async throws -> Outcome
    {
        try await withThrowingTaskGroup(of: Outcome?.self) { group in
            group.addTask { try await run(options: options, send: send, print: print) }
            group.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) { return nil }
                return nil
            }
            while let result = try await group.next() {
                group.cancelAll()
                if let result { return result }
            }
            return .interrupted
        }
    }

    /// `send`: one control request, its (last) response. `print`: one line of output (`HH:MM:SS chaos | ...`).
    public static func run(options: ChaosOptions, send: Send, print: @Sendable (String) -> Void) async throws -> Outcome {
        let clock = ContinuousClock()
        let start = clock.now
        var schedule = ChaosSchedule(options)
        var picker = ChaosPicker(keep: options.keep, seed: options.seed)
        var tally = ChaosTally()
        // The processes taken down: the cluster counts as ready again only once none of them is
        // listed any more (right after a SIGKILL it may not have noticed the exit yet).
        var downed: Set<Int32> = []
        func say(_ text: String) { print(LogLine(time: LogHub.now(), source: "chaos", text: text).formatted()) }
        /// The faults of the schedule, one at a time at their times.
        func faults() async throws {
            while let (at, event) = schedule.next() {
                try await clock.sleep(until: start + at)
                switch event {
                case .instanceFault:
                    let current = try await status(send)
                    switch picker.choose(among: current.instances) {
                    case .skip(let reason):
                        tally.skipped += 1
                        say("skip: \(reason)")
                    case .instance(let index):
                        let command: ControlRequest.Command = options.fault == .kill ? .kill : .restart
                        let response = try await send(ControlRequest(command: command, index: index))
                        if response.ok {
                            tally.faults += 1
                            if let pid = current.instances.first(where: { $0.index == index })?.pid { downed.insert(pid) }
                            say(response.message ?? "\(options.fault.rawValue) \(current.app).\(index)")
                        } else {
                            tally.refused += 1
                            say("\(options.fault.rawValue) \(current.app).\(index) refused: \(response.error ?? "no reason given")")
                        }
                    }
                case .redisRestart:
                    let response = try await send(ControlRequest(command: .redis, action: "restart"))
                    if response.ok {
                        tally.redisRestarts += 1
                        say("redis restart: \(response.message ?? "done")")
                    } else {
                        tally.refused += 1
                        say("redis restart refused: \(response.error ?? "no reason given")")
                    }
                }
            }
        }
        let first = try await status(send)
        if options.redisEvery != nil, first.redis.state == "external" {
            throw Failure("this cluster uses an external Redis (\(first.redis.url ?? "?")), which it cannot restart: drop --redis-every")
        }
        say(options.summary)
        do {
            try await faults()
        } catch  where Task.isCancelled {
            say("interrupted: \(tally.line(fault: options.fault, elapsed: clock.now - start))")
            return .interrupted
        }
        say("done: \(tally.line(fault: options.fault, elapsed: clock.now - start))")
        let settleStart = clock.now
        do {
            while true {
                let current = try await status(send)
                let running = current.instances.filter { $0.state == .running }.count
                if current.ready, !current.instances.contains(where: { $0.pid.map(downed.contains) ?? false }) {
                    say("ready again after \(DurationText.format(clock.now - settleStart)): \(running)/\(current.desiredInstances) running")
                    return .ready
                }
                if clock.now - settleStart >= options.settle {
                    say(
                        "NOT ready \(DurationText.format(options.settle)) after the last fault: \(running)/\(current.desiredInstances) running"
                            + " (see `cluster status` and `cluster logs`)")
                    return .notReady
                }
                try await clock.sleep(for: .milliseconds(200))
            }
        } catch  where Task.isCancelled {
            say("interrupted while waiting for the cluster to be ready again")
            return .interrupted
        }
    }

    private static func status(_ send: Send) async throws -> ClusterStatus {
        let response = try await send(ControlRequest(command: .status))
        guard response.ok, let status = response.status else {
            throw Failure("the cluster did not give its status: \(response.error ?? "no reason given")")
        }
        return status
    }
}
