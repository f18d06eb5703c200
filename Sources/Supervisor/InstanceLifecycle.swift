import CloudFoundry

/// One instance index's life, as Diego runs it: a value with pure methods. Each event (a start request,
/// the process exiting, a health check result, a timer) changes the state and returns the actions the
/// supervisor must carry out (spawn, signal, register with the proxy, schedule a timer, log an event).
/// Time is the duration since the supervisor started; nothing here touches a clock or a process.
///
/// Every spawn is a new "run" with a NEW instance GUID (the index stays): events about an older run
/// are ignored, so a late exit can never be mistaken for the current process's.
///
/// With a readiness check (`readinessChecked`), a running instance is routable only while that check
/// passes, as on Cloud Foundry: its result moves the instance in or out of the route pool, and never
/// restarts it.
public struct InstanceLifecycle: Sendable, Equatable {
    public enum State: String, Sendable, Equatable, Codable {
        /// Spawned; the startup health check has not passed yet.
        case starting
        /// Healthy: routable, unless a readiness check says it is not ready (`isRoutable`).
        case running
        /// A health check failed; the process is being killed and will count as a crash when it exits.
        case crashing
        /// Exited unexpectedly; waiting for its restart (see `nextRestartAt`).
        case crashed
        /// SIGTERM sent; waiting for the exit (SIGKILL at the end of the grace period).
        case stopping
        /// Not running, by request.
        case stopped
        /// Crashed too often: never restarted again (Diego's CRASHED for ever).
        case gaveUp = "gave-up"
    }

    /// What happens once a stopping instance has exited.
    public enum AfterStop: Sendable, Equatable {
        case stay
        case start
        case remove
    }

    public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        public var description: String {
            switch self {
            case .exited(let code): "exited with code \(code)"
            case .signaled(let signal): "killed by signal \(signal) (\(Self.signalName(signal)))"
            }
        }

        static func signalName(_ signal: Int32) -> String {
            switch signal {
            case 1: "SIGHUP"
            case 2: "SIGINT"
            case 3: "SIGQUIT"
            case 6: "SIGABRT"
            case 9: "SIGKILL"
            case 11: "SIGSEGV"
            case 13: "SIGPIPE"
            case 15: "SIGTERM"
            default: "signal \(signal)"
            }
        }
    }

    public enum CrashReason: Sendable, Equatable, CustomStringConvertible {
        case exited(ExitStatus)
        case neverHealthy(after: Duration, reason: String)
        case becameUnhealthy(reason: String)
        case failedToStart(reason: String)

        /// Worded as Cloud Foundry words them.
        public var description: String {
            switch self {
            case .exited(let status): "\(status)"
            case .neverHealthy(let after, let reason): "Instance never healthy after \(DurationText.format(after)): \(reason)"
            case .becameUnhealthy(let reason): "Instance became unhealthy: \(reason)"
            case .failedToStart(let reason): "failed to start: \(reason)"
            }
        }
    }

    public enum Event: Sendable, Equatable {
        case starting(guid: InstanceGUID, crashRestart: Bool)
        case healthy(after: Duration)
        /// The readiness check passed: the instance joins the route pool.
        case ready
        /// The readiness check failed: out of the route pool (`wasReady`: it was in it), still running.
        case notReady(reason: String, wasReady: Bool)
        case killingUnhealthy(CrashReason)
        case crashed(CrashReason, crashCount: Int)
        case restartScheduled(in: Duration, crashCount: Int)
        case gaveUp(crashCount: Int)
        case stopping(gracePeriod: Duration)
        case killedAfterGracePeriod(Duration)
        case stopped(ExitStatus)
    }

    public enum Action: Sendable, Equatable {
        /// Start a process for this run with this GUID (and a fresh port).
        case spawn(run: Int, guid: InstanceGUID)
        /// Tell the proxy this instance is routable.
        case register
        /// Tell the proxy to stop routing to it.
        case unregister
        /// Send this signal to the current run's whole process group.
        case signal(Int32)
        case scheduleKill(at: Duration)
        case scheduleRestart(at: Duration)
        /// Cancel any pending kill or restart timer.
        case cancelTimers
        /// Scale-down finished: forget this index.
        case remove
        case event(Event)
    }

    public let index: Int
    public private(set) var state: State = .stopped
    /// Increments on every spawn; 0 before the first.
    public private(set) var run = 0
    public private(set) var guid: InstanceGUID?
    public private(set) var crashes = RestartPolicy.CrashHistory()
    public private(set) var spawnedAt: Duration?
    public private(set) var healthyAt: Duration?
    public private(set) var crashedAt: Duration?
    public private(set) var nextRestartAt: Duration?
    public private(set) var lastCrash: CrashReason?
    public private(set) var lastExit: ExitStatus?
    /// Whether the current run's process may still be alive (spawned and not yet reported exited).
    public private(set) var processAlive = false
    /// Whether the proxy was told to route to this instance (and not yet told to stop).
    public private(set) var registered = false
    public private(set) var afterStop: AfterStop = .stay
    private var pendingCrash: CrashReason?
    /// The last readiness result of this run; nil before the first.
    public private(set) var ready: Bool?

    public var policy: RestartPolicy
    /// Whether a readiness check decides when a running instance is routable.
    public let readinessChecked: Bool

    public init(index: Int, policy: RestartPolicy, readinessChecked: Bool = false) {
        self.index = index
        self.policy = policy
        self.readinessChecked = readinessChecked
    }

    public var crashCount: Int { crashes.count }

    /// Running and in the route pool (what `cf app` shows as routable).
    public var isRoutable: Bool { state == .running && registered }

    /// Stopped, or stopping to stay stopped or be removed: someone asked for it (a `stop`, a
    /// scale-down), and nothing will start it again by itself.
    public var isStoppedOnPurpose: Bool {
        state == .stopped || (state == .stopping && afterStop != .start)
    }

    /// How long the current process has been up, if it is.
    public func uptime(now: Duration) -> Duration? {
        guard processAlive, let spawnedAt else { return nil }
        return now - spawnedAt
    }

    // MARK: Requests

    /// Start the instance (a user's `start`, a scale-up, the first start). A crashed or gave-up instance
    /// starts at once with its crash count reset, as `cf restart` does.
    public mutating func start(now: Duration, guid: InstanceGUID = InstanceGUID()) -> [Action] {
        switch state {
        case .starting, .running:
            return []
        case .stopping, .crashing:
            afterStop = .start
            if state == .crashing { state = .stopping }
            return []
        case .crashed, .stopped, .gaveUp:
            crashes = RestartPolicy.CrashHistory()
            return [.cancelTimers] + spawn(now: now, guid: guid, crashRestart: false)
        }
    }

    /// Graceful stop: SIGTERM to the group, SIGKILL after the grace period; `then` says what follows
    /// the exit (stay stopped, start again with a new GUID, or be removed by a scale-down).
    public mutating func stop(now: Duration, gracePeriod: Duration, then next: AfterStop = .stay, guid: InstanceGUID = InstanceGUID()) -> [Action] {
        switch state {
        case .starting, .running:
            state = .stopping
            afterStop = next
            if gracePeriod <= .zero {
                return [.event(.stopping(gracePeriod: gracePeriod)), .signal(9)]
            }
            return [.event(.stopping(gracePeriod: gracePeriod)), .signal(15), .scheduleKill(at: now + gracePeriod)]
        case .crashing:
            state = .stopping
            afterStop = next
            return []
        case .stopping:
            // A removal wins over anything; otherwise the latest request wins.
            if afterStop != .remove || next == .remove { afterStop = next }
            return []
        case .crashed, .stopped, .gaveUp:
            if state == .crashed {
                state = .stopped
                nextRestartAt = nil
            }
            switch next {
            case .stay: return [.cancelTimers]
            case .remove: return [.cancelTimers, .remove]
            case .start:
                crashes = RestartPolicy.CrashHistory()
                return [.cancelTimers] + spawn(now: now, guid: guid, crashRestart: false)
            }
        }
    }

    /// A rolling restart of a running instance, as Cloud Foundry's: a new run (new GUID, crash count
    /// reset) starts while the current process keeps serving. Returns that process as a `Retirement`
    /// (it keeps its route registration; the new run registers its own once healthy), and the actions
    /// that start the new run. nil when the instance is not running: it is restarted as before (stop,
    /// then start).
    public mutating func replace(now: Duration, guid: InstanceGUID = InstanceGUID()) -> (retirement: Retirement, actions: [Action])? {
        guard state == .running, processAlive else { return nil }
        let retirement = Retirement(index: index, run: run, guid: self.guid, registered: registered)
        registered = false
        crashes = RestartPolicy.CrashHistory()
        return (retirement, [.cancelTimers] + spawn(now: now, guid: guid, crashRestart: false))
    }

    /// SIGKILL now (`cluster kill I`): the exit counts as a crash, as a real crash would. Returns no
    /// action when no process is running.
    public mutating func kill() -> [Action] {
        guard processAlive, state == .starting || state == .running else { return [] }
        return [.signal(9)]
    }

    // MARK: Events

    /// The process could not be started at all: a crash.
    public mutating func spawnFailed(run: Int, reason: String, now: Duration, guid: InstanceGUID = InstanceGUID()) -> [Action] {
        guard run == self.run, processAlive else { return [] }
        pendingCrash = .failedToStart(reason: reason)
        return exited(run: run, status: .exited(127), now: now, guid: guid)
    }

    /// The startup check passed (or, for the `process` type, the process started). Without a readiness
    /// check the instance is routable now; with one, once that check passes.
    public mutating func healthCheckPassed(run: Int, now: Duration) -> [Action] {
        guard run == self.run, processAlive, state == .starting else { return [] }
        state = .running
        healthyAt = now
        let healthy = Action.event(.healthy(after: now - (spawnedAt ?? now)))
        guard !readinessChecked else { return [healthy] }
        registered = true
        return [healthy, .register]
    }

    /// A readiness check of a running instance passed: it joins the route pool (if it was not in it).
    public mutating func readinessPassed(run: Int) -> [Action] {
        guard readinessChecked, run == self.run, processAlive, state == .running, ready != true else { return [] }
        ready = true
        registered = true
        return [.event(.ready), .register]
    }

    /// A readiness check of a running instance failed: it leaves the route pool and keeps running.
    /// Only a change is reported: a check that keeps failing says so once.
    public mutating func readinessFailed(run: Int, reason: String) -> [Action] {
        guard readinessChecked, run == self.run, processAlive, state == .running, ready != false else { return [] }
        let wasReady = ready == true
        ready = false
        var actions: [Action] = []
        if registered {
            registered = false
            actions.append(.unregister)
        }
        return actions + [.event(.notReady(reason: reason, wasReady: wasReady))]
    }

    /// A startup check timed out (`startup: true`) or a liveness check failed: the instance is killed
    /// and counts as crashed when it exits. It leaves the routing table at once.
    public mutating func healthCheckFailed(run: Int, reason: String, startup: Bool, startupTimeout: Duration, now: Duration) -> [Action] {
        guard run == self.run, processAlive else { return [] }
        guard (startup && state == .starting) || (!startup && state == .running) else { return [] }
        let crash: CrashReason = startup ? .neverHealthy(after: startupTimeout, reason: reason) : .becameUnhealthy(reason: reason)
        pendingCrash = crash
        state = .crashing
        var actions: [Action] = []
        if registered {
            registered = false
            actions.append(.unregister)
        }
        return actions + [.event(.killingUnhealthy(crash)), .signal(9)]
    }

    /// Whether the process ending now would be a crash: it runs and is not being stopped (a kill after a
    /// failed health check counts as one).
    public var exitIsCrash: Bool {
        processAlive && (state == .starting || state == .running || state == .crashing)
    }

    /// The process of `run` exited (its output is drained). Unexpected exits are crashes, restarted as
    /// the policy says; expected ones finish a stop.
    public mutating func exited(run: Int, status: ExitStatus, now: Duration, guid: InstanceGUID = InstanceGUID()) -> [Action] {
        guard run == self.run, processAlive else { return [] }
        let crashed = exitIsCrash
        processAlive = false
        lastExit = status
        var actions: [Action] = [.cancelTimers]
        if registered {
            registered = false
            actions.append(.unregister)
        }
        if crashed {
            let reason = pendingCrash ?? .exited(status)
            pendingCrash = nil
            lastCrash = reason
            crashedAt = now
            let lived = now - (spawnedAt ?? now)
            let healthyFor = healthyAt.map { now - $0 }
            crashes = policy.recordCrash(crashes, lived: lived, healthyFor: healthyFor)
            actions.append(.event(.crashed(reason, crashCount: crashes.count)))
            switch policy.decision(after: crashes, crashedAt: now) {
            case .now:
                return actions + spawn(now: now, guid: guid, crashRestart: true)
            case .at(let time):
                state = .crashed
                nextRestartAt = time
                return actions + [.event(.restartScheduled(in: time - now, crashCount: crashes.count)), .scheduleRestart(at: time)]
            case .never:
                state = .gaveUp
                nextRestartAt = nil
                return actions + [.event(.gaveUp(crashCount: crashes.count))]
            }
        }
        switch state {
        case .stopping:
            pendingCrash = nil
            actions.append(.event(.stopped(status)))
            let next = afterStop
            afterStop = .stay
            state = .stopped
            switch next {
            case .stay: return actions
            case .remove: return actions + [.remove]
            case .start:
                crashes = RestartPolicy.CrashHistory()
                return actions + spawn(now: now, guid: guid, crashRestart: false)
            }
        case .starting, .running, .crashing, .crashed, .stopped, .gaveUp:
            return actions
        }
    }

    /// A restart timer fired.
    public mutating func restartDue(now: Duration, guid: InstanceGUID = InstanceGUID()) -> [Action] {
        guard state == .crashed, let due = nextRestartAt else { return [] }
        guard now >= due else { return [.scheduleRestart(at: due)] }
        return spawn(now: now, guid: guid, crashRestart: true)
    }

    /// The grace period of a stop ran out.
    public mutating func killDeadline(run: Int, now: Duration, gracePeriod: Duration) -> [Action] {
        guard run == self.run, processAlive, state == .stopping else { return [] }
        return [.event(.killedAfterGracePeriod(gracePeriod)), .signal(9)]
    }

    private mutating func spawn(now: Duration, guid: InstanceGUID, crashRestart: Bool) -> [Action] {
        run += 1
        self.guid = guid
        state = .starting
        spawnedAt = now
        healthyAt = nil
        ready = nil
        nextRestartAt = nil
        processAlive = true
        afterStop = .stay
        pendingCrash = nil
        return [.event(.starting(guid: guid, crashRestart: crashRestart)), .spawn(run: run, guid: guid)]
    }
}
