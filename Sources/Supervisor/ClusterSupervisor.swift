import CloudFoundry
import Foundation
import RedisClient
import UnixSignals

/// The running cluster: Redis, N instances of the app and sticky-proxy, supervised the way Diego
/// does it. Decisions are taken by the value types (`InstanceLifecycle`, `RestartPolicy`,
/// `HealthCheckSchedule`, `ScalePlan`); this actor only carries them out: processes, timers, health
/// probes, the proxy's admin API and the control socket.
public actor ClusterSupervisor {
    /// One instance index and what runs for it now.
    struct Slot {
        var lifecycle: InstanceLifecycle
        var pid: pid_t?
        var port: Int?
        /// The signal to deliver once the pid is known (a stop or kill raced the spawn).
        var pendingSignal: Int32?
        var healthTask: Task<Void, Never>?
        var timerTask: Task<Void, Never>?
        /// What the proxy was told, to unregister exactly that.
        var registration: RouteRegistration?
        /// The proxy confirmed `registration` (since the proxy last started).
        var routable = false
        /// Frozen with SIGSTOP (`cluster freeze`) until then; SIGCONT resumes it.
        var frozenUntil: Duration?
        /// Where the app listens instead of its port (`ListeningPorts.hint`), or why it could not
        /// listen (`ListeningPorts.addressInUseHint`), until it is healthy.
        var listeningHint: String?
        /// The address-in-use hint was given (once per instance: a crash loop repeats it otherwise).
        var addressInUseExplained = false
    }

    /// A helper process (the proxy or the embedded Redis).
    struct Helper {
        var pid: pid_t?
        var run = 0
        /// A run was launched and has not ended (its pid may not be known yet).
        var launched = false
        var ready = false
        /// Stopped on purpose (`cluster redis stop`, shutdown): no restart when it exits.
        var held = false
        var startedAt: Duration?
        var backoff = HelperBackoff()
        /// Frozen with SIGSTOP (`cluster redis freeze`) until then; SIGCONT resumes it.
        var frozenUntil: Duration?

        /// running, starting or stopped, as `cluster status` shows it.
        var state: String {
            if ready { return "running" }
            return pid == nil ? "stopped" : "starting"
        }

        /// Records an unexpected exit; returns how long to wait before starting it again.
        mutating func crashed(now: Duration) -> Duration {
            backoff.crashed(lived: now - (startedAt ?? now))
        }

        /// What the end of a run of the helper means.
        enum End: Equatable {
            /// An older run: nothing changes.
            case stale
            /// Stopped on purpose (held, or the cluster is shutting down): stays down.
            case stopped
            /// Crashed: start it again after this back-off.
            case restart(after: Duration)
        }

        /// A new run starts; returns its number.
        mutating func launch(now: Duration) -> Int {
            run += 1
            launched = true
            ready = false
            held = false
            startedAt = now
            return run
        }

        /// The back-off after run `crashedRun` crashed is over: start again only if nothing happened
        /// meanwhile (a user's stop holds it; a user's start or restart launched a newer run).
        func restartDue(after crashedRun: Int) -> Bool {
            run == crashedRun && !launched && !held
        }

        /// The process of `run` ended.
        mutating func ended(run: Int, now: Duration, shuttingDown: Bool) -> End {
            guard run == self.run else { return .stale }
            launched = false
            pid = nil
            ready = false
            frozenUntil = nil
            if held || shuttingDown { return .stopped }
            return .restart(after: crashed(now: now))
        }
    }

    let config: ClusterConfig
    let stateDirectory: StateDirectory
    let logs: LogHub
    let launch: InstanceLaunch
    let epoch = ContinuousClock.now
    let appSource: String
    let proxyAdmin: ProxyAdmin?
    let proxyCommand: String?
    /// The port users open: the app's router, or the front router in front of it.
    let proxyPort: Int
    /// A second router in front of the app's (`proxy.front_router`).
    let frontRouter: FrontRouter?
    let redisPort: Int?
    let redisCommand: String?

    var slots: [Int: Slot] = [:]
    /// Each instance index's relay to Redis, opened at the index's first start and kept
    /// for its later processes (`cluster redis slow|hang|cut|heal`), with the state of its link.
    var links: [Int: RedisLinkRelay] = [:]
    var linkStates: [Int: RedisLinkState] = [:]
    /// The links the log last said cannot reach Redis.
    var linksCutOffFromRedis: Set<Int> = []
    /// The old process of an index a rolling restart is replacing, until it has exited (`Retirement`).
    struct Retiring {
        var machine: Retirement
        var pid: pid_t?
        /// Its route registration, taken out once it has exited.
        var registration: RouteRegistration?
        var timerTask: Task<Void, Never>?
    }
    var retirements: [Int: Retiring] = [:]
    var desiredCount: Int
    var proxy = Helper()
    var front = Helper()
    var redis = Helper()
    var pidRecord: PidRecord
    var childRecords: [String: PidRecord.Child] = [:]
    var shuttingDown = false
    /// A rolling restart is under way (a second one is refused: the two would stop each other's replacements).
    var rollingRestartRunning = false
    var finished = false
    var announcedReady = false
    var proxyFailing = false
    var stats: [String: EndpointStats] = [:]
    var traffic: ProxyTraffic?
    var rates: [String: Double] = [:]
    /// The sample the next requests-per-second figures are counted from, taken at `statsTakenAt`.
    var rateBaseline: [String: EndpointStats] = [:]
    var statsTakenAt: Duration?
    var backgroundTasks: [Task<Void, Never>] = []
    /// Registrations queued for the proxy and not yet answered.
    var pendingProxyOperations = 0
    /// Unregisters the proxy did not take: sent again with the next heartbeat, unless the same
    /// registration was sent since (an instance back in the pool).
    var failedUnregisters: [(registration: RouteRegistration, source: String, index: Int)] = []
    let proxyQueue: AsyncStream<ProxyOperation>.Continuation
    let proxyOperations: AsyncStream<ProxyOperation>
    let shutdownRequests: AsyncStream<String>.Continuation
    let shutdownStream: AsyncStream<String>

    enum ProxyOperation: Sendable {
        case register(RouteRegistration, source: String, index: Int)
        case unregister(RouteRegistration, source: String, index: Int)
    }

    init(
        config: ClusterConfig, stateDirectory: StateDirectory, logs: LogHub, launch: InstanceLaunch, pidRecord: PidRecord, proxyCommand: String?,
        proxyPort: Int, proxyAdmin: ProxyAdmin?, frontRouter: FrontRouter? = nil, redisPort: Int?, redisCommand: String?
    ) {
        self.config = config
        self.stateDirectory = stateDirectory
        self.logs = logs
        self.launch = launch
        self.pidRecord = pidRecord
        self.proxyCommand = proxyCommand
        self.proxyPort = proxyPort
        self.proxyAdmin = proxyAdmin
        self.frontRouter = frontRouter
        self.redisPort = redisPort
        self.redisCommand = redisCommand
        self.desiredCount = config.app.instances
        self.appSource = config.app.name
        (proxyOperations, proxyQueue) = AsyncStream<ProxyOperation>.makeStream()
        (shutdownStream, shutdownRequests) = AsyncStream<String>.makeStream()
    }

    var now: Duration { ContinuousClock.now - epoch }

    func instant(_ time: Duration) -> ContinuousClock.Instant { epoch + time }

    nonisolated func name(_ index: Int) -> String { "\(appSource).\(index)" }

    func event(_ text: String, index: Int? = nil) {
        logs.emit(source: "cluster", index: index, text)
    }

    // MARK: - Running

    /// Starts everything, serves the control socket, and returns once the cluster has been stopped
    /// (Ctrl-C, SIGTERM or `cluster down`) and every process it started has exited.
    func run(control: ControlServer) async {
        let controlTask = Task { await control.serve { request, replies in await self.handle(request, replies) } }
        let signalTask = Task {
            let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm, .sighup)
            var stops = StopSignals()
            for await signal in signals {
                switch stops.received(at: self.now) {
                case .stop: self.requestShutdown("received \(signal)")
                case .ignoreEcho:
                    self.event(
                        "received \(signal) again within \(DurationText.format(stops.echo)): the same stop request (timeout and process managers signal a process and its group); send another to kill everything at once"
                    )
                case .killEverything: self.forceKill("received \(signal) again")
                }
            }
        }
        backgroundTasks.append(Task { await self.runProxyQueue() })

        if redisPort != nil {
            startRedis()
            if !(await waitFor(.seconds(30), { self.redis.ready })) {
                event("Redis did not become ready within 30s on port \(redisPort ?? 0); instances will start anyway (see the redis lines above)")
            }
        } else if let url = launch.redisURL {
            await checkExternalRedis(url)
        }
        if proxyCommand != nil {
            startProxy()
            if frontRouter != nil { startFrontRouter() }
        }
        scale(to: desiredCount)
        backgroundTasks.append(Task { await self.heartbeatLoop() })
        backgroundTasks.append(Task { await self.statsLoop() })

        for await reason in shutdownStream {
            event("stopping (\(reason)): instances first, then the proxy, then Redis")
            break
        }
        await shutdown()
        signalTask.cancel()
        // Let a `cluster down` client read its answer before the socket goes.
        _ = await waitFor(.seconds(2)) { self.downWaiters == 0 }
        await control.close()
        controlTask.cancel()
        _ = await controlTask.value
        stateDirectory.removeRunFiles()
    }

    var downWaiters = 0

    func requestShutdown(_ reason: String) {
        guard !shuttingDown else { return }
        shutdownRequests.yield(reason)
    }

    /// The second Ctrl-C: SIGKILL every process group now.
    func forceKill(_ reason: String) {
        event("\(reason): killing every process now (SIGKILL)")
        for slot in slots.values { if let pid = slot.pid { ProcessGroup.signal(pid, SIGKILL) } }
        for retiring in retirements.values { if let pid = retiring.pid { ProcessGroup.signal(pid, SIGKILL) } }
        if let pid = proxy.pid { ProcessGroup.signal(pid, SIGKILL) }
        if let pid = redis.pid { ProcessGroup.signal(pid, SIGKILL) }
    }

    func shutdown() async {
        shuttingDown = true
        let grace = config.stopGracePeriod
        for index in slots.keys.sorted() {
            apply(index) { $0.stop(now: now, gracePeriod: grace, then: .stay) }
        }
        for index in retirements.keys.sorted() { stopRetiring(index, replaced: false) }
        let allExited = { self.slots.values.allSatisfy { !$0.lifecycle.processAlive } && self.retirements.isEmpty }
        if !(await waitFor(grace + .seconds(5), allExited)) {
            forceKill("instances still running \(DurationText.format(grace + .seconds(5))) after SIGTERM")
            _ = await waitFor(.seconds(5), allExited)
        }
        // The last unregisters reach the proxy before it stops.
        _ = await waitFor(.seconds(5)) { self.pendingProxyOperations == 0 }
        if frontRouter != nil { await stopHelper(.front) }
        await stopHelper(.proxy)
        for relay in links.values { await relay.close() }
        await stopHelper(.redis)
        for task in backgroundTasks { task.cancel() }
        proxyQueue.finish()
        let left = childRecords.values.filter { ProcessTable.startTime($0.pid) == $0.startTime }
        if left.isEmpty {
            event("cluster stopped: every process it started has exited")
        } else {
            event("cluster stopped, but these processes did not exit: \(left.map { "\($0.name) (pid \($0.pid))" }.joined(separator: ", "))")
        }
        finished = true
    }

    enum HelperKind: String {
        case proxy, front, redis

        /// How the log names it (the raw value tags its lines).
        var displayName: String { self == .front ? "the front router" : rawValue }
    }

    func helper(_ kind: HelperKind) -> Helper {
        switch kind {
        case .proxy: proxy
        case .front: front
        case .redis: redis
        }
    }

    func updateHelper(_ kind: HelperKind, _ change: (inout Helper) -> Void) {
        switch kind {
        case .proxy: change(&proxy)
        case .front: change(&front)
        case .redis: change(&redis)
        }
    }

    /// SIGTERM to a helper's group, SIGKILL after the grace period; returns once it has exited.
    func stopHelper(_ kind: HelperKind) async {
        updateHelper(kind) { $0.held = true }
        guard helper(kind).launched else { return }
        if let pid = helper(kind).pid {
            // A frozen process would only see SIGTERM once resumed.
            if helper(kind).frozenUntil != nil { resume(kind, because: "so that it can stop") }
            ProcessGroup.signal(pid, SIGTERM)
        }  // else its launch is in flight: `helperStarted` sends the SIGTERM.
        if !(await waitFor(config.stopGracePeriod, { !self.helper(kind).launched })) {
            event("\(kind.displayName) did not exit within \(DurationText.format(config.stopGracePeriod)) of SIGTERM: SIGKILL")
            if let pid = helper(kind).pid { ProcessGroup.signal(pid, SIGKILL) }
            _ = await waitFor(.seconds(5)) { !self.helper(kind).launched }
        }
    }

    /// SIGCONT to an instance that `cluster freeze` stopped.
    func resumeInstance(_ index: Int, because reason: String) {
        guard let pid = slots[index]?.pid, slots[index]?.frozenUntil != nil else { return }
        slots[index]?.frozenUntil = nil
        ProcessGroup.signal(pid, SIGCONT)
        event("\(name(index)) resumed (SIGCONT) \(reason)", index: index)
    }

    /// SIGCONT to a helper that `cluster redis freeze` stopped.
    func resume(_ kind: HelperKind, because reason: String) {
        guard let pid = helper(kind).pid, helper(kind).frozenUntil != nil else { return }
        updateHelper(kind) { $0.frozenUntil = nil }
        ProcessGroup.signal(pid, SIGCONT)
        event("\(kind.displayName) resumed (SIGCONT) \(reason)")
    }

    /// Polls `condition` on the actor until it holds or `timeout` passes. A cancelled caller gets the
    /// condition's answer at once (its sleep would fail at once, and the loop would spin a core).
    func waitFor(_ timeout: Duration, _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            if ContinuousClock.now >= deadline { return false }
            guard (try? await Task.sleep(for: .milliseconds(20))) != nil else { return condition() }
        }
        return true
    }

    /// `waitFor` for a command that waits on the cluster (`--wait`, a rolling restart, a Redis start):
    /// it gives up (false) as soon as the cluster stops, instead of holding `cluster up` open until
    /// its own deadline.
    func waitWhileUp(_ timeout: Duration, _ condition: () -> Bool) async -> Bool {
        let met = await waitFor(timeout) { self.shuttingDown || condition() }
        return met && !shuttingDown
    }

    // MARK: - Instances

    /// Runs a lifecycle method on one slot and carries out the actions it returns.
    func apply(_ index: Int, _ change: (inout InstanceLifecycle) -> [InstanceLifecycle.Action]) {
        guard slots[index] != nil else { return }
        let actions = change(&slots[index]!.lifecycle)
        perform(actions, index: index)
    }

    func perform(_ actions: [InstanceLifecycle.Action], index: Int) {
        for action in actions {
            switch action {
            case .spawn(let run, let guid):
                spawn(index: index, run: run, guid: guid)
            case .register:
                register(index)
            case .unregister:
                unregister(index)
            case .signal(let signal):
                guard slots[index] != nil else { continue }
                if let pid = slots[index]?.pid {
                    // A frozen process would only see SIGTERM once resumed.
                    if signal != SIGKILL { resumeInstance(index, because: "so that it can stop") }
                    ProcessGroup.signal(pid, signal)
                } else {
                    slots[index]?.pendingSignal = signal
                }
            case .scheduleKill(let time):
                let run = slots[index]?.lifecycle.run ?? 0
                schedule(index, at: time) { supervisor in await supervisor.killDeadline(index: index, run: run) }
            case .scheduleRestart(let time):
                schedule(index, at: time) { supervisor in await supervisor.restartDue(index: index) }
            case .cancelTimers:
                slots[index]?.timerTask?.cancel()
                slots[index]?.timerTask = nil
            case .remove:
                slots[index]?.timerTask?.cancel()
                slots[index]?.healthTask?.cancel()
                slots[index] = nil
                event("\(name(index)) removed (scale-down)", index: index)
            case .event(let lifecycleEvent):
                describe(lifecycleEvent, index: index)
            }
        }
        checkReady()
    }

    func schedule(_ index: Int, at time: Duration, _ body: @escaping @Sendable (ClusterSupervisor) async -> Void) {
        slots[index]?.timerTask?.cancel()
        let deadline = instant(time)
        slots[index]?.timerTask = Task {
            do {
                try await Task.sleep(until: deadline, clock: .continuous)
            } catch {
                return
            }
            await body(self)
        }
    }

    func killDeadline(index: Int, run: Int) {
        let grace = config.stopGracePeriod
        apply(index) { $0.killDeadline(run: run, now: now, gracePeriod: grace) }
    }

    func restartDue(index: Int) {
        guard !shuttingDown else { return }
        apply(index) { $0.restartDue(now: now) }
    }

    func spawn(index: Int, run: Int, guid: InstanceGUID) {
        guard slots[index] != nil else { return }
        slots[index]?.healthTask?.cancel()
        slots[index]?.pid = nil
        slots[index]?.pendingSignal = nil
        let port: Int
        do {
            port = try Probe.freePort()
        } catch {
            apply(index) { $0.spawnFailed(run: run, reason: "\(error)", now: now) }
            return
        }
        slots[index]?.port = port
        let logs = self.logs
        Task {
            let relayPort = await self.redisLinkPort(for: index)
            let child = ChildProcess.shell(
                self.config.app.command, environment: self.launch.environment(index: index, guid: guid, port: port, redisRelayPort: relayPort),
                source: self.name(index), index: index)
            let (outcome, tail) = await child.run(logs: logs, tail: 10) { pid in
                await self.processStarted(index: index, run: run, pid: pid)
            }
            self.processEnded(index: index, run: run, outcome: outcome, lastLines: tail)
        }
    }

    func processStarted(index: Int, run: Int, pid: pid_t) {
        recordChild("\(name(index))#\(run)", pid: pid)
        guard let slot = slots[index], slot.lifecycle.run == run else {
            // The slot moved on while this process was being spawned: it is not wanted.
            ProcessGroup.signal(pid, SIGKILL)
            return
        }
        slots[index]?.pid = pid
        let link = links[index].map { ", Redis through its link 127.0.0.1:\($0.port)" } ?? ""
        event("\(name(index)) started: pid \(pid), port \(slot.port ?? 0), guid \(slot.lifecycle.guid?.value ?? "-")\(link)", index: index)
        if let signal = slot.pendingSignal {
            slots[index]?.pendingSignal = nil
            ProcessGroup.signal(pid, signal)
        }
        if config.healthCheck.type == .process {
            apply(index) { $0.healthCheckPassed(run: run, now: now) }
            guard config.readinessCheck.isEnabled else { return }
        }
        let spawnedAt = slot.lifecycle.spawnedAt ?? now
        let port = slot.port ?? 0
        slots[index]?.healthTask = Task { await self.healthLoop(index: index, run: run, port: port, spawnedAt: spawnedAt) }
    }

    func processEnded(index: Int, run: Int, outcome: ChildProcess.Outcome, lastLines: [String]) {
        forgetChild("\(name(index))#\(run)")
        if retirements[index]?.machine.run == run {
            retiredProcessEnded(index: index, outcome: outcome)
            return
        }
        guard let slot = slots[index], slot.lifecycle.run == run else { return }
        slots[index]?.healthTask?.cancel()
        slots[index]?.healthTask = nil
        slots[index]?.pid = nil
        slots[index]?.frozenUntil = nil
        switch outcome {
        case .exited(let status):
            if slot.lifecycle.exitIsCrash {
                // Said before the crash line and the restart.
                explainAddressInUse(index: index, port: slot.port ?? 0, lastLines: lastLines)
            }
            apply(index) { $0.exited(run: run, status: status, now: now) }
        case .failedToStart(let reason):
            apply(index) { $0.spawnFailed(run: run, reason: reason, now: now) }
        }
    }

    /// Diego's startup check, then liveness checks and (when configured) readiness checks side by side,
    /// for one run. Runs off the actor; cancelled when the run ends.
    nonisolated func healthLoop(index: Int, run: Int, port: Int, spawnedAt: Duration) async {
        let schedule = HealthCheckSchedule(config)
        let liveness = config.healthCheck
        if liveness.type != .process {
            var lastAttempt: Duration?
            var lastReason = "no check could run"
            var lastDiagnosis: Duration?
            var diagnosed = false
            startup: while true {
                switch schedule.nextStartup(spawnedAt: spawnedAt, after: lastAttempt) {
                case .attempt(let time):
                    guard (try? await Task.sleep(until: epoch + time, clock: .continuous)) != nil else { return }
                    lastAttempt = time
                    do {
                        try await Self.check(liveness.type, endpoint: liveness.endpoint, timeout: liveness.timeout, port: port)
                        await healthCheckPassed(index: index, run: run)
                        break startup
                    } catch {
                        lastReason = "\(error)"
                        if !diagnosed, schedule.portDiagnosisDue(spawnedAt: spawnedAt, attemptAt: time, lastDiagnosis: lastDiagnosis) {
                            lastDiagnosis = time
                            diagnosed = await diagnoseListeningPorts(index: index, run: run, port: port)
                        }
                    }
                case .timeout(let time):
                    guard (try? await Task.sleep(until: epoch + time, clock: .continuous)) != nil else { return }
                    await healthCheckFailed(index: index, run: run, reason: lastReason, startup: true)
                    return
                }
            }
        }
        let healthyAt = ContinuousClock.now - epoch
        await withTaskGroup(of: Void.self) { group in
            if liveness.type != .process {
                group.addTask { await self.livenessLoop(index: index, run: run, port: port, schedule: schedule, from: healthyAt) }
            }
            if config.readinessCheck.isEnabled {
                group.addTask { await self.readinessLoop(index: index, run: run, port: port, schedule: schedule, healthyAt: healthyAt) }
            }
        }
    }

    /// Says where the instance listens when it is not where the startup check connects (an app that
    /// ignores `$PORT`). True once something was said: once per run is enough.
    nonisolated func diagnoseListeningPorts(index: Int, run: Int, port: Int) async -> Bool {
        guard let pid = await pid(index: index, run: run) else { return false }
        guard let hint = ListeningPorts.hint(instance: name(index), port: port, listeners: ListeningPorts.ofProcessGroup(pid)) else {
            return false
        }
        await listeningHintFound(hint, index: index, run: run)
        return true
    }

    func listeningHintFound(_ hint: String, index: Int, run: Int) {
        guard slots[index]?.lifecycle.run == run else { return }
        slots[index]?.listeningHint = hint
        event(hint, index: index)
    }

    /// An instance that crashed saying an address is in use: the other instances took a fixed port it
    /// wants too (or, in a rolling restart, the old process it replaces did). Says so once per
    /// instance, naming where the others listen beyond their own ports.
    func explainAddressInUse(index: Int, port: Int, lastLines: [String]) {
        guard let slot = slots[index], !slot.addressInUseExplained, let line = ListeningPorts.addressInUseLine(in: lastLines) else { return }
        // The other processes of the app: name, process group, own port.
        var processes: [(name: String, pid: pid_t, port: Int?)] = []
        for (other, otherSlot) in slots where other != index {
            if let pid = otherSlot.pid { processes.append((name(other), pid, otherSlot.port)) }
        }
        for (other, old) in retirements {
            if let pid = old.pid { processes.append(("\(name(other)) (old)", pid, old.registration?.port)) }
        }
        let listening = ListeningPorts.ofProcessGroups(Set(processes.map(\.pid)))
        let others = processes.map { process in
            (name: process.name, listeners: (listening[process.pid] ?? []).filter { $0.port != process.port })
        }
        let hint = ListeningPorts.addressInUseHint(instance: name(index), port: port, line: line, others: others)
        slots[index]?.addressInUseExplained = true
        slots[index]?.listeningHint = hint
        event(hint, index: index)
    }

    /// The process of run `run` of instance `index` (the leader of its process group), if it is running.
    func pid(index: Int, run: Int) -> pid_t? {
        guard let slot = slots[index], slot.lifecycle.run == run else { return nil }
        return slot.pid
    }

    /// Once healthy, a liveness check every interval; the first failure is a crash.
    nonisolated func livenessLoop(index: Int, run: Int, port: Int, schedule: HealthCheckSchedule, from healthyAt: Duration) async {
        let liveness = config.healthCheck
        var lastCheck = healthyAt
        while !Task.isCancelled {
            let next = schedule.nextLiveness(after: lastCheck)
            guard (try? await Task.sleep(until: epoch + next, clock: .continuous)) != nil else { return }
            lastCheck = next
            do {
                try await Self.check(liveness.type, endpoint: liveness.endpoint, timeout: liveness.timeout, port: port)
            } catch {
                await healthCheckFailed(index: index, run: run, reason: "\(error)", startup: false)
                return
            }
        }
    }

    /// Once healthy, a readiness check at once and then every interval, for as long as the run lasts.
    nonisolated func readinessLoop(index: Int, run: Int, port: Int, schedule: HealthCheckSchedule, healthyAt: Duration) async {
        let readiness = config.readinessCheck
        var lastCheck: Duration?
        while !Task.isCancelled {
            let next = schedule.nextReadiness(healthyAt: healthyAt, after: lastCheck)
            guard (try? await Task.sleep(until: epoch + next, clock: .continuous)) != nil else { return }
            lastCheck = next
            do {
                try await Self.check(readiness.type, endpoint: readiness.endpoint, timeout: readiness.timeout, port: port)
                await readinessChecked(index: index, run: run, failure: nil)
            } catch {
                guard !Task.isCancelled else { return }
                await readinessChecked(index: index, run: run, failure: "\(error)")
            }
        }
    }

    /// One check of `type` against the instance's port, with Diego's wording when it fails.
    static func check(_ type: HealthCheckType, endpoint: String, timeout: Duration, port: Int) async throws {
        switch type {
        case .port: try await Probe.tcp(port: port, timeout: timeout)
        case .http: try await Probe.httpCheck(port: port, path: endpoint, timeout: timeout)
        case .process: return
        }
    }

    func healthCheckPassed(index: Int, run: Int) {
        if slots[index]?.lifecycle.run == run { slots[index]?.listeningHint = nil }
        apply(index) { $0.healthCheckPassed(run: run, now: now) }
    }

    func healthCheckFailed(index: Int, run: Int, reason: String, startup: Bool) {
        let timeout = config.healthCheck.startupTimeout
        apply(index) { $0.healthCheckFailed(run: run, reason: reason, startup: startup, startupTimeout: timeout, now: now) }
    }

    func readinessChecked(index: Int, run: Int, failure: String?) {
        if let failure {
            apply(index) { $0.readinessFailed(run: run, reason: failure) }
        } else {
            apply(index) { $0.readinessPassed(run: run) }
        }
    }

    func describe(_ lifecycleEvent: InstanceLifecycle.Event, index: Int) {
        let who = name(index)
        let slot = slots[index]
        switch lifecycleEvent {
        case .starting(_, let crashRestart):
            if crashRestart {
                event("\(who) restarting now with a new guid (crash count \(slot?.lifecycle.crashCount ?? 0))", index: index)
            }
        case .healthy(let after):
            let check = config.healthCheck.type == .process ? "process check" : "\(config.healthCheck.type.rawValue) check"
            let readiness = config.readinessCheck
            let waiting =
                readiness.isEnabled
                ? "; routed once its readiness check passes (\(readiness.type.rawValue)\(readiness.type == .http ? " " + readiness.endpoint : ""))"
                : ""
            event("\(who) healthy after \(DurationText.format(after)) (\(check))\(waiting)", index: index)
        case .ready:
            event("\(who) passed its readiness check: marked ready and added to the route pool", index: index)
        case .notReady(let reason, let wasReady):
            let outcome =
                wasReady
                ? "marked not ready and removed from the route pool" : "not ready: it gets no traffic until its readiness check passes"
            event("\(who) failed its readiness check: \(reason); \(outcome) (it keeps running; nothing is restarted)", index: index)
        case .killingUnhealthy(let reason):
            event("\(who) \(reason); killing it (SIGKILL)", index: index)
        case .crashed(let reason, let count):
            event("\(who) crashed: \(reason) (crash count \(count))", index: index)
        case .restartScheduled(let delay, let count):
            event(
                "\(who) restart in \(DurationText.format(delay)) (crash count \(count), \(config.restartPolicy.rawValue) back-off)", index: index)
        case .gaveUp(let count):
            event("\(who) gave up after \(count) crashes: it stays crashed; `cluster start \(index)` starts it again", index: index)
        case .stopping(let grace):
            event("\(who) stopping: SIGTERM to its process group, SIGKILL after \(DurationText.format(grace))", index: index)
        case .killedAfterGracePeriod(let grace):
            event("\(who) still running \(DurationText.format(grace)) after SIGTERM: SIGKILL", index: index)
        case .stopped(let status):
            event("\(who) stopped (\(status))", index: index)
        }
    }

    /// Starts or removes instances so that indices 0..<target exist (highest removed first).
    @discardableResult
    func scale(to target: Int) -> ScalePlan {
        let plan = ScalePlan(current: slots.keys.filter { slots[$0]?.lifecycle.afterStop != .remove }, target: target)
        desiredCount = target
        for index in plan.add {
            logs.reserveWidth(for: name(index))
            if slots[index] == nil {
                slots[index] = Slot(
                    lifecycle: InstanceLifecycle(index: index, policy: config.restart, readinessChecked: config.readinessCheck.isEnabled))
            }
            apply(index) { $0.start(now: now) }
        }
        let grace = config.stopGracePeriod
        for index in plan.remove {
            apply(index) { $0.stop(now: now, gracePeriod: grace, then: .remove) }
            stopRetiring(index, replaced: false)
        }
        return plan
    }

    // MARK: - Proxy registration

    func register(_ index: Int) {
        guard let slot = slots[index], let guid = slot.lifecycle.guid, let port = slot.port else { return }
        let registration = launch.registration(index: index, guid: guid, port: port)
        slots[index]?.registration = registration
        guard proxyAdmin != nil else {
            // No proxy: healthy is routable, so an old process this one replaces can go now.
            stopRetiring(index, replaced: true)
            return
        }
        guard proxy.ready else {
            event("\(name(index)) is healthy; it will be registered once the proxy is healthy", index: index)
            return
        }
        enqueue(.register(registration, source: name(index), index: index))
    }

    func unregister(_ index: Int) {
        guard let registration = slots[index]?.registration else { return }
        slots[index]?.registration = nil
        slots[index]?.routable = false
        guard proxyAdmin != nil, proxy.ready else { return }
        enqueue(.unregister(registration, source: name(index), index: index))
    }

    func enqueue(_ operation: ProxyOperation) {
        pendingProxyOperations += 1
        proxyQueue.yield(operation)
    }

    /// The proxy confirmed a registration: log it the first time, and count the instance as routable.
    func registered(_ registration: RouteRegistration, index: Int) {
        guard let slot = slots[index], slot.registration == registration, !slot.routable else { return }
        slots[index]?.routable = true
        event(
            "\(name(index)) registered with the proxy: \(registration.host):\(registration.port) for \(registration.uris.joined(separator: ", "))",
            index: index)
        // Routable: the old process it replaces (a rolling restart) can go now.
        stopRetiring(index, replaced: true)
        checkReady()
    }

    /// Sends registrations to the proxy one at a time, in order (an unregister never overtakes the
    /// register before it).
    func runProxyQueue() async {
        guard let admin = proxyAdmin else { return }
        for await operation in proxyOperations {
            defer { pendingProxyOperations -= 1 }
            do {
                switch operation {
                case .register(let registration, _, let index):
                    try await admin.register(registration)
                    registered(registration, index: index)
                case .unregister(let registration, let source, let index):
                    try await admin.unregister(registration)
                    event("\(source) unregistered from the proxy", index: index)
                }
                if proxyFailing {
                    proxyFailing = false
                    event("the proxy's admin API answers again")
                }
            } catch {
                if case .unregister(let registration, let source, let index) = operation {
                    // Not taken: the proxy would route to it until its stale prune (120 s).
                    failedUnregisters.append((registration, source, index))
                }
                if !proxyFailing {
                    proxyFailing = true
                    let what: String
                    switch operation {
                    case .register(_, let source, _): what = "register \(source)"
                    case .unregister(_, let source, _): what = "unregister \(source)"
                    }
                    event(
                        "could not \(what) with the proxy on 127.0.0.1:\(admin.port): \(error)"
                            + (shuttingDown
                                ? " (the cluster is stopping, the proxy too)"
                                : ". The cluster keeps running; registrations and unregistrations are retried every 20s"))
                }
            }
        }
    }

    /// gorouter needs routes re-sent every 20 s (it prunes them after 120 s).
    func heartbeatLoop() async {
        while !Task.isCancelled {
            guard (try? await Task.sleep(for: .seconds(20))) != nil else { return }
            registerAll()
        }
    }

    func registerAll() {
        guard proxyAdmin != nil, proxy.ready else { return }
        let retries = failedUnregisters
        failedUnregisters = []
        let current = slots.values.compactMap(\.registration) + retirements.values.compactMap(\.registration)
        // One registered again since (an instance back in the pool) is not taken out again.
        for item in retries where !current.contains(item.registration) {
            enqueue(.unregister(item.registration, source: item.source, index: item.index))
        }
        for index in slots.keys.sorted() {
            guard let registration = slots[index]?.registration else { continue }
            enqueue(.register(registration, source: name(index), index: index))
        }
        // An old process still serving while its replacement starts (one that never becomes healthy
        // keeps it serving): kept in the route pool, or the proxy would prune it after 120 s.
        for index in retirements.keys.sorted() {
            guard let registration = retirements[index]?.registration else { continue }
            enqueue(.register(registration, source: oldName(index), index: index))
        }
    }

    /// Samples the proxy's counters for `cluster status` (connections, requests/s, traffic) every 2 s.
    func statsLoop() async {
        while !Task.isCancelled {
            await sampleProxy()
            guard (try? await Task.sleep(for: .seconds(2))) != nil else { return }
        }
    }

    /// Reads the proxy's per-instance counters and its traffic counters, when it is up.
    func sampleProxy() async {
        guard let admin = proxyAdmin, proxy.ready else { return }
        if let sample = try? await admin.endpointStats() { recordStats(sample) }
        if let sample = try? await admin.traffic() { traffic = sample }
    }

    /// Keeps the sample (connections, totals) and, at most once a second, the requests per second
    /// since the previous rate's sample: a `cluster status` asking for fresh counters right after the
    /// periodic sample must not turn a tenth of a second's requests into a rate.
    func recordStats(_ sample: [String: EndpointStats]) {
        let time = now
        stats = sample
        guard let previous = statsTakenAt else {
            rateBaseline = sample
            statsTakenAt = time
            return
        }
        let elapsed = (time - previous).seconds
        guard elapsed >= 1 else { return }
        rates = sample.reduce(into: [:]) { result, entry in
            let before = rateBaseline[entry.key]?.requestsTotal ?? entry.value.requestsTotal
            result[entry.key] = Double(max(0, entry.value.requestsTotal - before)) / elapsed
        }
        rateBaseline = sample
        statsTakenAt = time
    }

    // MARK: - Helper processes: sticky-proxy and the embedded Redis

    func startHelper(_ kind: HelperKind) {
        switch kind {
        case .proxy: startProxy()
        case .front: startFrontRouter()
        case .redis: startRedis()
        }
    }

    /// What the front router does to stickiness, for the log.
    var frontRouterEffect: String {
        if config.proxy.routersShareACookie {
            let cookie = config.proxy.affinity == .cf ? "__VCAP_ID__" : "SERVERID"
            return "both routers pin with \(cookie) and overwrite each other's, so stickiness flips"
        }
        switch config.proxy.frontAffinity {
        case .haproxy: return "the front router pins with a cookie of its own, SERVERID, and the app router's cookie passes through"
        case .cf: return "the front router pins with __VCAP_ID__ and the app's router does not, so nothing overwrites it"
        case .none, .ipHash: return "the front router pins with no cookie, and the app router's cookie passes through"
        }
    }

    /// The port the app's router listens on: the one users open, unless a front router has it.
    var appRouterPort: Int { frontRouter?.appRouterPort ?? proxyPort }

    /// The settings both routers run with (a second router like the first).
    func routerArguments(affinity: Affinity) -> [String] {
        [
            "--bind", "127.0.0.1", "--affinity", affinity.rawValue, "--websocket-affinity",
            config.proxy.websocketAffinity ? "on" : "off",
            "--vcap-id-meta", config.proxy.vcapIDMeta ? "on" : "off", "--balancing", config.proxy.balancing,
        ] + (config.proxy.accessLog ? ["--access-log", "-"] : [])
            + (config.proxy.stickySessionsForAuthNegotiate ? ["--sticky-sessions-for-auth-negotiate"] : [])
            + (config.proxy.emptyPoolTimeout > .zero
                ? ["--empty-pool-response-code-503", "--empty-pool-timeout", DurationText.format(config.proxy.emptyPoolTimeout)] : [])
    }

    func startProxy() {
        guard let command = proxyCommand, let admin = proxyAdmin, !shuttingDown else { return }
        // The trace key only to the app's router: behind a front router, its trace headers pass through.
        let arguments =
            ["--port", "\(appRouterPort)", "--admin-port", "\(admin.port)"] + routerArguments(affinity: config.proxy.affinity)
            + (admin.traceKey.isEmpty ? [] : ["--trace-key", admin.traceKey])
        // The token in the environment, not on the command line, where `ps` shows it to every user.
        launchHelper(.proxy, command: ([command] + arguments).joined(separator: " "), environment: ["STICKY_PROXY_ADMIN_TOKEN": admin.token])
    }

    /// The front router: no admin API, its one route (to the app's router) from a static file.
    func startFrontRouter() {
        guard let command = proxyCommand, let frontRouter, !shuttingDown else { return }
        let file = stateDirectory.url.appendingPathComponent("front-router-routes.json")
        do {
            try frontRouter.routesFile(uris: launch.routes).write(to: file, options: .atomic)
        } catch {
            event("the front router cannot start: cannot write its routes file \(file.path): \(error)")
            return
        }
        let arguments =
            ["--port", "\(proxyPort)", "--admin-port", "0", "--routes-file", shellQuote(file.path)]
            + routerArguments(affinity: config.proxy.frontAffinity)
        launchHelper(.front, command: ([command] + arguments).joined(separator: " "))
    }

    func startRedis() {
        guard let port = redisPort, let command = redisCommand, !shuttingDown else { return }
        let arguments = [
            command, "--port", "\(port)", "--bind", "127.0.0.1", "--dir", shellQuote(stateDirectory.redisDirectory.path), "--appendonly",
            config.redis.appendOnly ? "yes" : "no", "--save", "''", "--daemonize", "no", "--logfile", "''",
        ]
        launchHelper(.redis, command: arguments.joined(separator: " "))
    }

    /// Starts a new run of a helper: `command` through the shell, its lines tagged with the helper's
    /// name (`environment`: added to the helpers' environment). Once it runs, its readiness is polled;
    /// when it ends, its restart policy decides.
    func launchHelper(_ kind: HelperKind, command: String, environment: [String: String] = [:]) {
        let time = now
        var launched = 0
        updateHelper(kind) { launched = $0.launch(now: time) }
        let run = launched
        let child = ChildProcess.shell(
            command, environment: launch.helperEnvironment().merging(environment) { _, added in added }, source: kind.rawValue)
        let logs = self.logs
        Task {
            let (outcome, _) = await child.run(logs: logs) { pid in await self.helperStarted(kind, run: run, pid: pid) }
            self.helperExited(kind, run: run, outcome: outcome)
        }
    }

    func helperStarted(_ kind: HelperKind, run: Int, pid: pid_t) {
        recordChild("\(kind.rawValue)#\(run)", pid: pid)
        guard run == helper(kind).run else { return }
        updateHelper(kind) { $0.pid = pid }
        if helper(kind).held {
            // Stopped while its launch was in flight.
            ProcessGroup.signal(pid, SIGTERM)
            return
        }
        switch kind {
        case .proxy where frontRouter != nil:
            event(
                "proxy started: pid \(pid), the app's router on 127.0.0.1:\(appRouterPort), behind the front router (affinity \(config.proxy.affinity.rawValue))"
            )
        case .proxy:
            event("proxy started: pid \(pid), http://localhost:\(proxyPort)/ (affinity \(config.proxy.affinity.rawValue))")
        case .front:
            event(
                "front router started: pid \(pid), http://localhost:\(proxyPort)/ -> the app's router on 127.0.0.1:\(appRouterPort), "
                    + "its one instance, as \(frontRouter?.instanceID.value ?? "-") (a second router in front, as another foundation's router "
                    + "or an API gateway on the app's route would be; affinity \(config.proxy.frontAffinity.rawValue): \(frontRouterEffect))")
        case .redis:
            break
        }
        Task { await self.waitUntilReady(kind, run: run) }
    }

    /// Polls the helper while this run is the current one (every 25 ms, every second after 30 s):
    /// the proxy's GET /health on its admin port, Redis's PING. A helper slow to answer (a loaded
    /// machine, a long AOF to load) is said to be slow once, and marked ready whenever it answers.
    nonisolated func waitUntilReady(_ kind: HelperKind, run: Int) async {
        let patience = ContinuousClock.now + .seconds(30)
        var toldSlow = false
        while true {
            guard await helperRunMatches(kind, run) else { return }
            if await answers(kind) {
                await helperReady(kind, run: run)
                if toldSlow { await event("\(kind.displayName) answers now") }
                return
            }
            if !toldSlow && ContinuousClock.now >= patience {
                toldSlow = true
                switch kind {
                case .proxy:
                    await event(
                        "the proxy has not answered GET /health on 127.0.0.1:\(proxyAdmin?.port ?? 0) for 30s; instances are routed through it once it does"
                    )
                case .front:
                    await event("the front router has not accepted connections on 127.0.0.1:\(proxyPort) for 30s; see its lines above")
                case .redis:
                    await event("redis has not answered PING on 127.0.0.1:\(redisPort ?? 0) for 30s; see its lines above (`cluster logs`)")
                }
            }
            guard (try? await Task.sleep(for: toldSlow ? .seconds(1) : .milliseconds(25))) != nil else { return }
        }
    }

    nonisolated func answers(_ kind: HelperKind) async -> Bool {
        switch kind {
        case .proxy:
            return await proxyAdmin?.isHealthy() ?? false
        case .front:
            return (try? await Probe.tcp(port: proxyPort, timeout: .seconds(1))) != nil
        case .redis:
            guard let port = redisPort else { return false }
            return await Self.ping(url: "redis://127.0.0.1:\(port)") == nil
        }
    }

    func helperRunMatches(_ kind: HelperKind, _ run: Int) -> Bool { run == helper(kind).run && helper(kind).pid != nil }

    func helperReady(_ kind: HelperKind, run: Int) {
        guard helperRunMatches(kind, run) else { return }
        updateHelper(kind) { $0.ready = true }
        switch kind {
        case .proxy:
            event("proxy healthy: admin API on 127.0.0.1:\(proxyAdmin?.port ?? 0)")
            registerAll()
        case .front:
            event("front router healthy: http://localhost:\(proxyPort)/")
        case .redis:
            let aof = config.redis.appendOnly ? "on" : "off"
            event("redis ready: \(launch.redisURL ?? "") (data in \(stateDirectory.redisDirectory.path), AOF \(aof))")
        }
        checkReady()
    }

    /// A run of a helper ended: its pid record goes, its restart policy decides (`Helper.ended`), the
    /// log says what happened, and a crashed helper starts again after the back-off.
    func helperExited(_ kind: HelperKind, run: Int, outcome: ChildProcess.Outcome) {
        forgetChild("\(kind.rawValue)#\(run)")
        let time = now
        let stopping = shuttingDown
        var end = Helper.End.stale
        updateHelper(kind) { end = $0.ended(run: run, now: time, shuttingDown: stopping) }
        if end != .stale, kind == .proxy {
            for index in slots.keys { slots[index]?.routable = false }
        }
        switch end {
        case .stale:
            return
        case .stopped:
            event("\(kind.displayName) stopped (\(outcome))")
        case .restart(let delay):
            event("\(kind.displayName) crashed (\(outcome)); restarting it in \(DurationText.format(delay))")
            Task {
                try? await Task.sleep(for: delay)
                self.restartHelper(kind, after: run)
            }
        }
    }

    /// The back-off after a helper's crash is over. A `cluster redis stop` meanwhile keeps it down, and
    /// a `redis start` or `restart` meanwhile already started a newer run: starting another would put
    /// a second redis-server on the port, untracked.
    func restartHelper(_ kind: HelperKind, after crashedRun: Int) {
        guard !shuttingDown else { return }
        guard helper(kind).restartDue(after: crashedRun) else {
            let meanwhile = helper(kind).held ? "it was stopped on request" : "it was started again on request"
            event("\(kind.displayName) is not restarted after its crash: \(meanwhile) during the back-off")
            return
        }
        startHelper(kind)
    }

    func checkExternalRedis(_ url: String) async {
        if let error = await Self.ping(url: url) {
            let said = "\(error)"
            event(
                "the Redis at \(Self.redacted(url)) does not answer: \(said)\(said.hasSuffix("?") || said.hasSuffix(".") ? "" : ".")"
                    + " Instances start anyway; chat-node reports unhealthy until it does")
        } else {
            event(
                "using the Redis at \(Self.redacted(url)) (external: `cluster redis stop|start|restart|freeze` do not manage it; "
                    + "`cluster redis slow|hang|cut` act on each instance's link to it)")
        }
    }

    /// nil when Redis answers PING; else the reason.
    static func ping(url: String) async -> String? {
        do {
            var configuration = try RedisConfiguration(url: url)
            configuration.connectTimeout = .seconds(1)
            configuration.commandTimeout = .seconds(1)
            let client = try await RedisClient.connect(configuration)
            defer { Task { await client.close() } }
            let reply = try await client.ping()
            return reply == "PONG" ? nil : "it answered \(reply) to PING"
        } catch {
            return "\(error)"
        }
    }

    static func redacted(_ url: String) -> String {
        (try? RedisConfiguration(url: url).redactedURL) ?? url
    }

    // MARK: - Bookkeeping

    /// A child process ended: anything it started and left in its process group goes with it, and
    /// it leaves the pid record.
    func forgetChild(_ key: String) {
        guard let record = childRecords.removeValue(forKey: key) else { return }
        ProcessGroup.signal(record.pid, SIGKILL)
        writePidRecord()
    }

    func recordChild(_ key: String, pid: pid_t) {
        childRecords[key] = PidRecord.Child(name: key, pid: pid, startTime: ProcessTable.startTime(pid) ?? 0)
        writePidRecord()
    }

    func writePidRecord() {
        pidRecord.children = childRecords.values.sorted { $0.name < $1.name }
        do {
            try stateDirectory.writePidRecord(pidRecord)
        } catch {
            event("could not update the pid file: \(error)")
        }
    }

    /// Every desired instance running and routable (registered, when there is a proxy) and not frozen, the proxy
    /// ready, and the embedded Redis ready and not frozen.
    var isReady: Bool {
        let routed = proxyCommand == nil
        let instancesReady =
            (0..<desiredCount).allSatisfy {
                slots[$0]?.lifecycle.isRoutable == true && (routed || slots[$0]?.routable == true) && slots[$0]?.frozenUntil == nil
            }
            && slots.count == desiredCount
        let proxyReady = proxyCommand == nil || (proxy.ready && (frontRouter == nil || front.ready))
        let redisReady = redisPort == nil || (redis.ready && redis.frozenUntil == nil)
        return instancesReady && proxyReady && redisReady
    }

    func checkReady() {
        guard !announcedReady, !shuttingDown, isReady else { return }
        announcedReady = true
        let stateFlag = config.stateDirectory.map { " --state-dir \(shellQuote($0))" } ?? ""
        let redisText =
            redisPort != nil
            ? "Redis \(launch.redisURL ?? "") (embedded, data in \(stateDirectory.redisDirectory.path))"
            : "Redis \(Self.redacted(launch.redisURL ?? "")) (external)"
        event("cluster is up: \(desiredCount) instance\(desiredCount == 1 ? "" : "s") of \(config.app.name), \(redisText)")
        if proxyCommand != nil {
            if frontRouter != nil {
                event(
                    "open http://localhost:\(proxyPort)/ (a front router with affinity \(config.proxy.frontAffinity.rawValue), then sticky-proxy "
                        + "with affinity \(config.proxy.affinity.rawValue): \(frontRouterEffect))")
            } else {
                event("open http://localhost:\(proxyPort)/ (sticky-proxy, affinity \(config.proxy.affinity.rawValue))")
            }
        } else if let port = slots[0]?.port {
            event("open http://127.0.0.1:\(port)/ (no proxy: each instance answers on its own port)")
        }
        // An index that exists: the second instance, or the only one (none: scale up first).
        let victim = desiredCount > 1 ? 1 : 0
        // An external Redis is not cluster's to restart; its links to the instances are.
        let restartRedis = redisPort == nil ? "" : "redis restart, "
        let then =
            desiredCount == 0
            ? "scale 3, restart --all --rolling, \(restartRedis)logs -f, down"
            : "kill \(victim), scale 5, restart --all --rolling, \(restartRedis)redis cut -i \(victim) --for 10s, "
                + "chaos --every 10s --for 1m, logs -f \(victim), down"
        event("try from another terminal: \(Self.invocation) status\(stateFlag) (then: \(then); Ctrl-C here stops everything)")
    }
}

extension ClusterSupervisor {
    /// How the user ran this program, so that the hints can be pasted: the path they typed (for
    /// example `.build/release/cluster`), or `cluster` when it came from PATH.
    static var invocation: String {
        guard let first = CommandLine.arguments.first, first.contains("/") else { return "cluster" }
        return shellQuote(first)
    }
}

func shellQuote(_ text: String) -> String {
    let safe = text.allSatisfy { $0.isLetter || $0.isNumber || "/._-:@%+=,".contains($0) }
    return safe && !text.isEmpty ? text : "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
