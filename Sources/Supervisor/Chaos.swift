import CloudFoundry
import Foundation
import RedisClient

/// `cluster chaos`: faults on a schedule against a running cluster, the way a team chaos-tests
/// instance restarts before production: every `every`, one running instance, picked at random, is
/// killed (a crash, restarted by the restart policy), restarted gracefully or frozen (a hang);
/// optionally the embedded Redis is restarted or frozen every `redisEvery`; at least `keep`
/// instances are left serving; then the cluster gets `settle` to be ready again.
public struct ChaosOptions: Sendable, Equatable {
    public enum Fault: String, Sendable, CaseIterable {
        /// SIGKILL (`cluster kill`): a crash, restarted per the restart policy.
        case kill
        /// SIGTERM, then a new process (`cluster restart`).
        case restart
        /// SIGSTOP for `freezeFor`, then SIGCONT (`cluster freeze`): a hang, not a crash.
        case freeze
        /// Its link to Redis cut for `freezeFor` (`cluster redis cut -i I`): the instance runs on,
        /// partitioned from Redis, while the others keep it.
        case redisCut = "redis-cut"
        /// Its link to Redis hung for `freezeFor` (`cluster redis hang -i I`): its commands wait.
        case redisHang = "redis-hang"

        /// The `cluster redis` action of a fault on an instance's link to Redis (nil for the others).
        var linkAction: String? {
            switch self {
            case .redisCut: "cut"
            case .redisHang: "hang"
            default: nil
            }
        }

        /// The noun of the tally (`3 kills`, `2 link cuts`).
        var noun: String {
            switch self {
            case .redisCut: "link cut"
            case .redisHang: "link hang"
            default: rawValue
            }
        }
    }

    /// What happens to the embedded Redis every `redisEvery`.
    public enum RedisFault: String, Sendable, CaseIterable {
        /// SIGTERM, then a new Redis on the same port (`cluster redis restart`).
        case restart
        /// SIGSTOP for `freezeFor`, then SIGCONT (`cluster redis freeze`).
        case freeze
    }

    public var every: Duration
    public var duration: Duration
    /// The instance faults; with several, each event picks one of them at random.
    public var faults: [Fault]
    /// How long a freeze lasts (instances and Redis), and a cut of an instance's link to Redis.
    public var freezeFor: Duration
    public var keep: Int
    public var redisEvery: Duration?
    public var redisFault: RedisFault
    public var settle: Duration
    public var seed: UInt64
    /// `--max-5xx`: the run fails when the proxy answered more 5xx responses than this from the start
    /// of the run to the end of the settling (nil: no limit, the count is only printed).
    public var maxServerErrors: Int?
    /// Simulated users browsing through the proxy meanwhile (`--users`; none by default).
    public var users: VirtualUsersOptions

    public init(
        every: Duration, duration: Duration, faults: [Fault] = [.kill], freezeFor: Duration = .seconds(5), keep: Int = 1,
        redisEvery: Duration? = nil, redisFault: RedisFault = .restart, settle: Duration = .seconds(30), seed: UInt64,
        maxServerErrors: Int? = nil, users: VirtualUsersOptions = VirtualUsersOptions()
    ) {
        self.every = every
        self.duration = duration
        self.faults = faults
        self.freezeFor = freezeFor
        self.keep = keep
        self.redisEvery = redisEvery
        self.redisFault = redisFault
        self.settle = settle
        self.seed = seed
        self.maxServerErrors = maxServerErrors
        self.users = users
    }

    /// Parses `kill`, `kill,freeze`, ...: each fault once, in the order given. Nil when a name is unknown.
    public static func faults(_ text: String) -> [Fault]? {
        var faults: [Fault] = []
        for name in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let fault = Fault(rawValue: name.trimmingCharacters(in: .whitespaces).lowercased()) else { return nil }
            if !faults.contains(fault) { faults.append(fault) }
        }
        return faults
    }

    /// What is wrong with a run's `--for` (of `cluster chaos` or `cluster users`): more than 0s, at most 24h.
    public static func runLengthProblem(_ duration: Duration) -> String? {
        if duration <= .zero { return "--for must be more than 0s" }
        if duration > .seconds(86_400) { return "--for must be at most 24h (not \(DurationText.format(duration)))" }
        return nil
    }

    var freezes: Bool { !Self.timed.isDisjoint(with: faults) || (redisEvery != nil && redisFault == .freeze) }

    /// Faults that come back by themselves after `freezeFor`.
    public static let timed: Set<Fault> = [.freeze, .redisCut, .redisHang]

    /// What is wrong with these options, for the command line (nil: nothing).
    public var problem: String? {
        if every < .milliseconds(100) { return "--every must be at least 100ms (not \(DurationText.format(every)))" }
        if let problem = Self.runLengthProblem(duration) { return problem }
        if faults.isEmpty { return "--fault needs one or more of kill, restart, freeze, redis-cut, redis-hang" }
        if keep < 0 { return "--keep must be 0 or more (not \(keep))" }
        if let redisEvery, redisEvery < .seconds(1) { return "--redis-every must be at least 1s (not \(DurationText.format(redisEvery)))" }
        if freezes, !ControlRequest.freezeRange.contains(freezeFor) {
            return "--freeze-for must be from 100ms to 10m (not \(DurationText.format(freezeFor)))"
        }
        if let redisEvery, redisFault == .freeze, freezeFor >= redisEvery {
            return "--freeze-for (\(DurationText.format(freezeFor))) must be shorter than --redis-every (\(DurationText.format(redisEvery)))"
                + " with --redis-fault freeze: Redis would still be frozen at the next freeze"
        }
        if settle < .zero { return "--settle must be 0s or more" }
        if every > duration && (redisEvery.map { $0 > duration } ?? true) {
            // A run of no fault passed, and a CI gate built on it tested nothing.
            let first = DurationText.format(redisEvery.map { min($0, every) } ?? every)
            return
                "--for \(DurationText.format(duration)) ends before the first fault (at \(first)): nothing would happen; make --for longer or --every shorter"
        }
        if let maxServerErrors, maxServerErrors < 0 { return "--max-5xx must be 0 or more (not \(maxServerErrors))" }
        return users.problem
    }

    /// Why the run fails on what clients got through the proxy meanwhile (`traffic`), nil when it
    /// does not: more 5xx responses than `--max-5xx`.
    public func failure(traffic: ProxyTraffic) -> String? {
        guard let maxServerErrors, traffic.serverErrors > maxServerErrors else { return nil }
        let errors = traffic.routerServerErrors
        let byRouter = errors.values.reduce(0, +)
        let listed = errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        let detail = byRouter == 0 ? "all from the app" : "\(byRouter) from the router: \(listed)"
        return "FAILED: \(traffic.serverErrors) responses were 5xx (\(detail)), more than --max-5xx \(maxServerErrors)"
    }

    func describe(_ fault: Fault) -> String {
        switch fault {
        case .kill: "kill (SIGKILL)"
        case .restart: "restart (SIGTERM, then a new process)"
        case .freeze: "freeze (SIGSTOP for \(DurationText.format(freezeFor)), then SIGCONT)"
        case .redisCut: "cut from Redis (its link reset for \(DurationText.format(freezeFor)), Redis up for the others)"
        case .redisHang: "hang its link to Redis (nothing through for \(DurationText.format(freezeFor)), Redis up for the others)"
        }
    }

    /// One line saying what the run will do.
    public var summary: String {
        let what = faults.map(describe).joined(separator: " or ")
        var text = "every \(DurationText.format(every)) for \(DurationText.format(duration)): \(what) one running instance at random"
        text += faults.count > 1 ? ", the fault at random too" : ""
        text += keep > 0 ? ", leaving at least \(keep) running" : ""
        if let redisEvery {
            switch redisFault {
            case .restart: text += "; restart Redis every \(DurationText.format(redisEvery))"
            case .freeze: text += "; freeze Redis for \(DurationText.format(freezeFor)) every \(DurationText.format(redisEvery))"
            }
        }
        return text + "; seed \(seed) (--seed \(seed) picks the same instances again, given the same states)"
    }
}

/// The times of a chaos run's events, from its start, in order: an instance fault every `every` and
/// a Redis fault every `redisEvery`, up to `duration` included (an instance fault first when both
/// fall at the same time). Produced one at a time: a long run at a short interval holds no list.
public struct ChaosSchedule: Sendable, Equatable {
    public enum Event: Sendable, Equatable {
        case instanceFault
        case redisFault
    }

    private let options: ChaosOptions
    private var faults = 1
    private var redisFaults = 1

    public init(_ options: ChaosOptions) { self.options = options }

    /// The next event and when it is due, nil when the run is over.
    public mutating func next() -> (at: Duration, event: Event)? {
        let fault = options.every * faults
        let redis = options.redisEvery.map { $0 * redisFaults }
        let faultDue = fault <= options.duration
        let redisDue = redis.map { $0 <= options.duration } ?? false
        if faultDue, !redisDue || fault <= redis! {
            faults += 1
            return (fault, .instanceFault)
        }
        if redisDue, let redis {
            redisFaults += 1
            return (redis, .redisFault)
        }
        return nil
    }
}

/// Which instance a fault hits, and which fault: one of the serving instances (running, routable,
/// not frozen and not cut off from Redis by a cut or hung link; a slow link still serves), at random
/// from the seed, as long as more than `keep` are serving; the fault at
/// random among several (with one, no draw, so a seed picks the same instances whatever the fault).
/// A value: the states come in, the choice goes out.
public struct ChaosPicker: Sendable {
    public enum Choice: Sendable, Equatable {
        case instance(index: Int, fault: ChaosOptions.Fault)
        /// No fault this time, and why.
        case skip(String)
    }

    private let keep: Int
    private let faults: [ChaosOptions.Fault]
    private var random: SplitMix64

    public init(keep: Int, faults: [ChaosOptions.Fault] = [.kill], seed: UInt64) {
        self.keep = keep
        self.faults = faults.isEmpty ? [.kill] : faults
        self.random = SplitMix64(seed: seed)
    }

    public mutating func choose(among instances: [ClusterStatus.Instance]) -> Choice {
        let running = instances.filter { $0.state == .running }
        // Serving: not frozen, in the route pool (a readiness check may keep a running instance out),
        // and able to reach Redis (an app cut off from it answers, but cannot do its work).
        let cutOff = { (instance: ClusterStatus.Instance) in instance.redisLink?.cutsOffRedis == true }
        let serving = running.filter { $0.frozenSeconds == nil && $0.routable != false && !cutOff($0) }.map(\.index).sorted()
        guard serving.count > keep else {
            let frozen = running.filter { $0.frozenSeconds != nil }.count
            let unroutable = running.filter { $0.frozenSeconds == nil && $0.routable == false }.count
            let isolated = running.filter { $0.frozenSeconds == nil && $0.routable != false && cutOff($0) }.count
            var others: [String] = []
            if frozen > 0 { others.append("\(frozen) frozen") }
            if unroutable > 0 { others.append("\(unroutable) not routable") }
            if isolated > 0 { others.append("\(isolated) cut off from Redis") }
            let states =
                instances.isEmpty
                ? "no instances"
                : "\(serving.count) of \(instances.count) instances serving" + (others.isEmpty ? "" : " (and \(others.joined(separator: ", ")))")
            return .skip("\(states), and --keep \(keep) leaves them alone")
        }
        let index = serving[Int(random.next() % UInt64(serving.count))]
        let fault = faults.count == 1 ? faults[0] : faults[Int(random.next() % UInt64(faults.count))]
        return .instance(index: index, fault: fault)
    }
}

/// The tally of a chaos run, and the line that ends it.
public struct ChaosTally: Sendable, Equatable {
    public var faults: [ChaosOptions.Fault: Int] = [:]
    public var skipped = 0
    public var redisFaults = 0
    public var refused = 0

    public init() {}

    public func line(options: ChaosOptions, elapsed: Duration) -> String {
        let count = { (number: Int, noun: String) in CountText.count(number, noun) }
        var parts = options.faults.map { count(faults[$0, default: 0], $0.noun) }
        if redisFaults > 0 { parts.append(count(redisFaults, "Redis \(options.redisFault.rawValue)")) }
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
        /// Ready again, but clients got more 5xx responses through the proxy than `--max-5xx`.
        case tooManyServerErrors
        /// Ready again, but the simulated users lost more sessions than `--max-lost-sessions`.
        case sessionsLost
        /// Stopped early (Ctrl-C, SIGTERM, or the task cancelled), after printing what it had done.
        case interrupted
    }

    /// `run`, stopped early by SIGINT or SIGTERM (then `.interrupted`).
    public static func runUntilInterrupted(
        options: ChaosOptions, send: @escaping Send, print: @escaping @Sendable (String) -> Void,
        report: (@Sendable (ChaosReport) -> Void)? = nil
    )
        async throws -> Outcome
    {
        try await cancellingOnInterrupt { try await run(options: options, send: send, print: print, report: report) }
    }

    /// `send`: one control request, its (last) response. `print`: one line of output (`HH:MM:SS chaos | ...`).
    /// `report`: told what the run did and what clients got, once, when a run that started ends
    /// (ready, failed or interrupted).
    public static func run(
        options: ChaosOptions, send: @escaping Send, print: @Sendable (String) -> Void, report sink: (@Sendable (ChaosReport) -> Void)? = nil
    ) async throws -> Outcome {
        let clock = ContinuousClock()
        let start = clock.now
        var report = ChaosReport(seed: options.seed)
        func finish(_ outcome: Outcome) -> Outcome {
            report.outcome = outcome.name
            sink?(report)
            return outcome
        }
        var schedule = ChaosSchedule(options)
        var picker = ChaosPicker(keep: options.keep, faults: options.faults, seed: options.seed)
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
                    case .instance(let index, let fault):
                        let request: ControlRequest
                        switch fault {
                        case .kill: request = ControlRequest(command: .kill, index: index)
                        case .restart: request = ControlRequest(command: .restart, index: index)
                        case .freeze: request = ControlRequest(command: .freeze, index: index, duration: DurationText.format(options.freezeFor))
                        case .redisCut, .redisHang:
                            request = ControlRequest(
                                command: .redis, index: index, action: fault.linkAction, duration: DurationText.format(options.freezeFor))
                        }
                        let response = try await send(request)
                        if response.ok {
                            tally.faults[fault, default: 0] += 1
                            // A frozen process, or a cut link, comes back by itself: it is not waited out of the status.
                            if !ChaosOptions.timed.contains(fault), let pid = current.instances.first(where: { $0.index == index })?.pid {
                                downed.insert(pid)
                            }
                            say(response.message ?? "\(fault.rawValue) \(current.app).\(index)")
                        } else {
                            tally.refused += 1
                            say("\(fault.rawValue) \(current.app).\(index) refused: \(response.error ?? "no reason given")")
                        }
                    }
                case .redisFault:
                    let action = options.redisFault.rawValue
                    let duration = options.redisFault == .freeze ? DurationText.format(options.freezeFor) : nil
                    let response = try await send(ControlRequest(command: .redis, action: action, duration: duration))
                    if response.ok {
                        tally.redisFaults += 1
                        say("redis \(action): \(response.message ?? "done")")
                    } else {
                        tally.refused += 1
                        say("redis \(action) refused: \(response.error ?? "no reason given")")
                    }
                }
            }
        }
        let first = try await status(send, fresh: true)
        if options.maxServerErrors != nil, first.proxyTraffic == nil {
            throw Failure("--max-5xx counts the proxy's responses, and this cluster has no proxy answering (\(first.proxy.state)): drop --max-5xx")
        }
        if options.redisEvery != nil, first.redis.state == "external" {
            throw Failure(
                "this cluster uses an external Redis (\(first.redis.url ?? "?")), which it cannot \(options.redisFault.rawValue): drop --redis-every")
        }
        /// What clients got through the proxy since the run began, said and returned; nil without a
        /// proxy. Once interrupted, this task is cancelled: the proxy's counts are then read by a task
        /// of its own, for at most 2 s, and nothing is said if they cannot be read.
        func trafficMeanwhile(interrupted: Bool) async throws -> ProxyTraffic? {
            guard let before = first.proxyTraffic else { return nil }
            let now: ClusterStatus?
            if interrupted {
                let reading = Task { try await status(send, fresh: true) }
                let deadline = Task {
                    try await Task.sleep(for: .seconds(2))
                    reading.cancel()
                }
                now = try? await reading.value
                deadline.cancel()
            } else {
                now = try await status(send, fresh: true)
            }
            guard let traffic = now?.proxyTraffic?.since(before) else { return nil }
            say("through the proxy \(interrupted ? "until interrupted" : "meanwhile"): \(traffic.summary)")
            report.proxyTraffic = traffic
            return traffic
        }
        if options.users.count > 0, first.entry.url == nil {
            throw Failure(
                "--users sends its requests through the proxy, and this cluster has no proxy running (\(first.entry.state)): drop --users")
        }
        if options.redisEvery == nil, first.desiredInstances <= options.keep {
            throw Failure(
                "--keep \(options.keep) leaves all \(first.desiredInstances) instances alone: no fault could happen; scale up (`cluster scale \(options.keep + 1)`) or lower --keep"
            )
        }
        // The simulated users browse from now until the cluster is ready again (or the run ends).
        var users: VirtualUsers.Running?
        if options.users.count > 0, let url = first.entry.url {
            users = VirtualUsers.Running(options.users, proxyURL: url, traceKey: first.proxy.traceKey)
            say(options.users.summary(proxyURL: url))
        }
        defer { users?.cancel() }
        /// What the simulated users got, said and returned; nil without users.
        func usersMeanwhile(interrupted: Bool) async -> VirtualUsersTally? {
            guard let users else { return nil }
            let tally = await users.stop(say: say)
            say("simulated users \(interrupted ? "until interrupted" : "meanwhile"): \(tally.summary(options: options.users))")
            report.users = ChaosReport.Users(options: options.users, tally: tally)
            return tally
        }
        say(options.summary)
        do {
            try await faults()
        } catch  where Task.isCancelled {
            report.record(tally, faultTime: clock.now - start)
            say("interrupted: \(tally.line(options: options, elapsed: clock.now - start))")
            _ = try? await trafficMeanwhile(interrupted: true)
            _ = await usersMeanwhile(interrupted: true)
            return finish(.interrupted)
        }
        report.record(tally, faultTime: clock.now - start)
        say("done: \(tally.line(options: options, elapsed: clock.now - start))")
        let settleStart = clock.now
        let settled: Outcome
        do {
            while true {
                let current = try await status(send)
                let running = current.instances.filter { $0.state == .running }.count
                if current.ready, !current.instances.contains(where: { $0.pid.map(downed.contains) ?? false }) {
                    report.readyAgainSeconds = (clock.now - settleStart).seconds
                    say("ready again after \(DurationText.format(clock.now - settleStart)): \(running)/\(current.desiredInstances) running")
                    settled = .ready
                    break
                }
                if clock.now - settleStart >= options.settle {
                    // Diego's back-off after the third crash of an instance outlasts a short --settle: say so.
                    let waiting = current.instances.compactMap { instance -> String? in
                        guard let seconds = instance.nextRestartSeconds, let wait = DurationText.seconds(seconds.rounded(.up)) else { return nil }
                        return "\(current.app).\(instance.index) crashed \(instance.crashes) times and restarts in \(DurationText.format(wait))"
                    }
                    say(
                        "NOT ready \(DurationText.format(options.settle)) after the last fault: \(running)/\(current.desiredInstances) running"
                            + (waiting.isEmpty
                                ? " (see `cluster status` and `cluster logs`)"
                                : ": \(waiting.joined(separator: "; ")) (the restart policy's back-off; a longer --settle waits for it)"))
                    settled = .notReady
                    break
                }
                try await clock.sleep(for: .milliseconds(200))
            }
        } catch  where Task.isCancelled {
            say("interrupted while waiting for the cluster to be ready again")
            _ = try? await trafficMeanwhile(interrupted: true)
            _ = await usersMeanwhile(interrupted: true)
            return finish(.interrupted)
        }
        // What the app's users got meanwhile, as the proxy counted it, and what the simulated ones saw.
        let traffic = try await trafficMeanwhile(interrupted: false)
        let usersGot = await usersMeanwhile(interrupted: false)
        guard settled == .ready else { return finish(settled) }
        var outcome = Outcome.ready
        if let traffic, let failure = options.failure(traffic: traffic) {
            say(failure)
            report.failures.append(failure)
            outcome = .tooManyServerErrors
        }
        if let usersGot, let failure = usersGot.failure(options: options.users) {
            say(failure)
            report.failures.append(failure)
            if outcome == .ready { outcome = .sessionsLost }
        }
        return finish(outcome)
    }

    private static func status(_ send: Send, fresh: Bool = false) async throws -> ClusterStatus {
        let response = try await send(ControlRequest(command: .status, fresh: fresh ? true : nil))
        guard response.ok, let status = response.status else {
            throw Failure("the cluster did not give its status: \(response.error ?? "no reason given")")
        }
        return status
    }
}
