import CloudFoundry
import Foundation
import RedisClient

/// The control API's commands, carried out on the running cluster.
extension ClusterSupervisor {
    nonisolated func handle(_ request: ControlRequest, _ replies: ControlReplies) async {
        switch request.command {
        case .logs:
            await streamLogs(request, replies)
        case .down:
            await beginDown()
            _ = await waitUntilFinished()
            await replies.send(.success("cluster stopped"))
            await endDown()
        default:
            let response = await answer(request)
            await replies.send(response)
        }
    }

    func beginDown() {
        downWaiters += 1
        requestShutdown("cluster down")
    }

    func endDown() { downWaiters -= 1 }

    func waitUntilFinished() async -> Bool {
        await waitFor(config.stopGracePeriod + .seconds(60)) { self.finished }
    }

    nonisolated func streamLogs(_ request: ControlRequest, _ replies: ControlReplies) async {
        if let index = request.index, index < 0 {
            await replies.send(.failure("an instance index is 0 or more, not \(index)"))
            return
        }
        let stream = request.follow == true ? logs.follow(index: request.index) : nil
        let recent = logs.recent(index: request.index, limit: request.lines ?? 100)
        // An instance scaled away still has its lines; an index that never had any is a mistake.
        if let index = request.index, recent.isEmpty, logs.recent(index: index, limit: 1).isEmpty,
            case .failure(let failure) = await validate(index: index)
        {
            await replies.send(.failure(failure.message))
            return
        }
        for line in recent {
            guard await replies.send(ControlResponse(ok: true, line: line)) else { return }
        }
        if let stream {
            for await line in stream {
                guard await replies.send(ControlResponse(ok: true, line: line)) else { return }
            }
        }
        await replies.send(ControlResponse(ok: true, done: true))
    }

    func answer(_ request: ControlRequest) async -> ControlResponse {
        if shuttingDown && request.command != .status {
            return .failure("the cluster is stopping; no more changes")
        }
        switch request.command {
        case .status:
            if request.fresh == true { await sampleProxy() }
            return ControlResponse(ok: true, status: status(), done: true)
        case .scale:
            return await scaleCommand(request)
        case .kill, .stop, .start:
            return await instanceCommand(request)
        case .restart:
            return await restartCommand(request)
        case .redis:
            return await redisCommand(request)
        case .freeze:
            return freezeInstance(request)
        case .logs, .down:
            return .failure("internal error: \(request.command) is handled elsewhere")
        }
    }

    /// `index` must name an instance that exists; the error lists the valid ones.
    func validate(index: Int?) -> Result<Int, ControlFailure> {
        guard let index else { return .failure(ControlFailure("this command needs an instance index")) }
        guard slots[index] != nil else {
            let valid = slots.keys.sorted()
            if valid.isEmpty {
                return .failure(ControlFailure("no instance \(index): the cluster has no instances (scale up with `cluster scale N`)"))
            }
            return .failure(ControlFailure("no instance \(index): valid indices are \(valid.map(String.init).joined(separator: ", "))"))
        }
        return .success(index)
    }

    struct ControlFailure: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }

    func scaleCommand(_ request: ControlRequest) async -> ControlResponse {
        let target: Int
        switch ScaleRequest.decide(request.scale, current: desiredCount) {
        case .success(let count): target = count
        case .failure(let refusal): return .failure(refusal.message)
        }
        let before = desiredCount
        let plan = scale(to: target)
        var parts: [String] = []
        if !plan.add.isEmpty { parts.append("starting \(plan.add.map(name).joined(separator: ", "))") }
        if !plan.remove.isEmpty { parts.append("stopping \(plan.remove.map(name).joined(separator: ", ")) (highest index first)") }
        let message =
            "scaling \(config.app.name) from \(before) to \(target)" + (parts.isEmpty ? ": nothing to do" : ": " + parts.joined(separator: "; "))
        event(message)
        if request.wait == true {
            if !(await waitForSettled()) { return .failure(message + "; not every instance is running yet (see `cluster status`)") }
        }
        return .success(message)
    }

    /// Every desired instance running and routable, and every removed one gone.
    func waitForSettled() async -> Bool {
        let timeout = config.healthCheck.startupTimeout + config.stopGracePeriod + .seconds(10)
        return await waitWhileUp(timeout) {
            self.slots.count == self.desiredCount && (0..<self.desiredCount).allSatisfy { self.slots[$0]?.lifecycle.isRoutable == true }
        }
    }

    func instanceCommand(_ request: ControlRequest) async -> ControlResponse {
        let index: Int
        switch validate(index: request.index) {
        case .success(let value): index = value
        case .failure(let failure): return .failure(failure.message)
        }
        let who = name(index)
        guard let slot = slots[index] else { return .failure("no instance \(index)") }
        switch request.command {
        case .kill:
            let pid = slot.pid
            let actions = slots[index]!.lifecycle.kill()
            guard !actions.isEmpty else {
                return .failure("\(who) is not running (it is \(slot.lifecycle.state.rawValue)); there is nothing to kill")
            }
            event("\(who) killed on request (SIGKILL to pid \(pid.map(String.init) ?? "?")'s group): a crash, as Diego sees it", index: index)
            perform(actions, index: index)
            return .success(
                "\(who) (pid \(pid.map(String.init) ?? "?")) killed with SIGKILL; it counts as a crash and restarts per the \(config.restartPolicy.rawValue) policy"
            )
        case .stop:
            if slot.lifecycle.afterStop == .remove { return .failure("\(who) is being removed by a scale-down") }
            let before = slot.lifecycle.state
            if before == .stopped { return .failure("\(who) is already stopped; `cluster start \(index)` starts it again") }
            let grace = config.stopGracePeriod
            apply(index) { $0.stop(now: now, gracePeriod: grace, then: .stay) }
            // An old process a rolling restart kept serving goes too.
            stopRetiring(index, replaced: false)
            if request.wait == true {
                _ = await waitWhileUp(grace + .seconds(5)) {
                    (self.slots[index].map { !$0.lifecycle.processAlive } ?? true) && self.retirements[index] == nil
                }
            }
            let again = "`cluster start \(index)` starts it again"
            switch before {
            case .crashed:
                return .success("\(who) was not running (crashed) and stays stopped: its restart is cancelled; \(again)")
            case .gaveUp:
                return .success("\(who) was not running (it gave up after its crashes) and is not restarted; \(again)")
            case .crashing:
                return .success("\(who) was being killed (its health check failed); it stays stopped instead of restarting; \(again)")
            case .stopping:
                return .success("\(who) was already stopping; it stays stopped; \(again)")
            default:
                return .success("\(who) stopped (SIGTERM, SIGKILL after \(DurationText.format(grace))); \(again)")
            }
        case .start:
            if slot.lifecycle.afterStop == .remove { return .failure("\(who) is being removed by a scale-down; scale up to keep it") }
            if slot.lifecycle.state == .starting || slot.lifecycle.state == .running {
                return .failure("\(who) is already \(slot.lifecycle.state.rawValue); `cluster restart \(index)` restarts it with a new guid")
            }
            apply(index) { $0.start(now: now) }
            if request.wait == true, !(await waitForRunning([index])) {
                return .failure("\(who) did not become healthy (see `cluster logs \(index)`)")
            }
            return .success("\(who) starting with a new guid")
        default:
            return .failure("internal error: \(request.command) is not an instance command")
        }
    }

    /// Waits until each of `indices` runs a later run than `runs` says and is routable. With
    /// `skippingStopped`, an instance someone stopped meanwhile counts as done (a rolling restart
    /// goes on without it).
    func waitForRunning(_ indices: [Int], after runs: [Int: Int] = [:], skippingStopped: Bool = false) async -> Bool {
        let timeout = config.healthCheck.startupTimeout + config.stopGracePeriod + .seconds(10)
        return await waitWhileUp(timeout) {
            indices.allSatisfy { index in
                guard let lifecycle = self.slots[index]?.lifecycle else { return true }
                if skippingStopped && lifecycle.isStoppedOnPurpose { return true }
                // Routable, not only running: a rolling restart waits for each new instance to be in
                // the route pool before it takes the next one out, as Cloud Foundry's does.
                return lifecycle.isRoutable && lifecycle.run > (runs[index] ?? 0)
            }
        }
    }

    func restartCommand(_ request: ControlRequest) async -> ControlResponse {
        let grace = config.stopGracePeriod
        if request.all == true {
            let indices = slots.keys.filter { slots[$0]?.lifecycle.afterStop != .remove }.sorted()
            guard !indices.isEmpty else { return .failure("there are no instances to restart") }
            if request.rolling == true {
                guard !rollingRestartRunning else {
                    return .failure(
                        "a rolling restart is already under way: wait for \"rolling restart done\" in `cluster logs` (two at once would stop each other's replacements)"
                    )
                }
                rollingRestartRunning = true
                let task = Task {
                    defer { self.rollingRestartRunning = false }
                    return await self.rollingRestart(indices)
                }
                if request.wait == true {
                    if let stopped = await task.value { return .failure(stopped) }
                    return .success("rolling restart done: \(indices.count) instances, one at a time")
                }
                return .success(
                    "rolling restart of \(indices.count) instance\(indices.count == 1 ? "" : "s") started: one at a time, "
                        + "each replacement routable before its old process stops")
            }
            let runs = Dictionary(uniqueKeysWithValues: indices.map { ($0, slots[$0]?.lifecycle.run ?? 0) })
            for index in indices { apply(index) { $0.stop(now: now, gracePeriod: grace, then: .start) } }
            event("restarting all \(indices.count) instances at once (every guid changes: a reconnect storm)")
            if request.wait == true, !(await waitForRunning(indices, after: runs)) {
                return .failure("restarted every instance, but not all became healthy (see `cluster status`)")
            }
            return .success("restarting all \(indices.count) instances at once, each with a new guid")
        }
        let index: Int
        switch validate(index: request.index) {
        case .success(let value): index = value
        case .failure(let failure): return .failure(failure.message)
        }
        if slots[index]?.lifecycle.afterStop == .remove {
            return .failure("\(name(index)) is being removed by a scale-down; scale up to keep it")
        }
        let run = slots[index]?.lifecycle.run ?? 0
        apply(index) { $0.stop(now: now, gracePeriod: grace, then: .start) }
        if request.wait == true, !(await waitForRunning([index], after: [index: run])) {
            return .failure("\(name(index)) did not become healthy after the restart (see `cluster logs \(index)`)")
        }
        return .success("\(name(index)) restarting with a new guid")
    }

    /// One instance at a time, as Cloud Foundry's rolling strategy: a replacement starts while the old
    /// process keeps serving; once the replacement is routable the old one is stopped, and the next
    /// index starts its replacement. An instance that is not running is restarted (stop, then start);
    /// one stopped (or scaled away) during its turn is skipped. Nil when done, else why it stopped.
    func rollingRestart(_ indices: [Int]) async -> String? {
        event("rolling restart: \(indices.map(name).joined(separator: ", ")), one at a time, each replacement before its old process stops")
        let grace = config.stopGracePeriod
        var skipped: [Int] = []
        for index in indices {
            guard !shuttingDown, let run = slots[index]?.lifecycle.run else { continue }
            // Not running, or an old process of an earlier rolling restart still serves (its
            // replacement never became routable): this run is restarted, the old one serves on.
            if !replace(index) {
                apply(index) { $0.stop(now: now, gracePeriod: grace, then: .start) }
            }
            if !(await waitForRunning([index], after: [index: run], skippingStopped: true)) {
                let reason =
                    shuttingDown
                    ? "rolling restart stopped: the cluster is stopping"
                    : "rolling restart stopped: \(name(index)) did not become healthy"
                        + (retirements[index] != nil ? "; its old process keeps serving until it does" : "")
                event(reason, index: index)
                return reason
            }
            // A scale-down stops its instance as it removes it: stopped on purpose too, then gone.
            if slots[index]?.lifecycle.isStoppedOnPurpose ?? true {
                event("rolling restart: \(name(index)) was stopped during its turn; skipped (`cluster start \(index)` starts it)", index: index)
                skipped.append(index)
            }
        }
        // Done once the last old process has gone too, as a Cloud Foundry deployment is.
        _ = await waitWhileUp(grace + .seconds(5)) { indices.allSatisfy { self.retirements[$0] == nil } }
        if shuttingDown {
            event("rolling restart stopped: the cluster is stopping")
            return "rolling restart stopped: the cluster is stopping"
        }
        event(
            "rolling restart done"
                + (skipped.isEmpty ? "" : " (\(skipped.map(name).joined(separator: ", ")) skipped: stopped or scaled away during the restart)"))
        return nil
    }

    func redisCommand(_ request: ControlRequest) async -> ControlResponse {
        if let action = request.action, Self.linkActions.contains(action) { return redisLinkCommand(request, action: action) }
        guard redisPort != nil else {
            return .failure("Redis is external (\(Self.redacted(launch.redisURL ?? ""))): cluster does not manage it")
        }
        switch request.action {
        case "stop":
            event("stopping Redis on request (SIGTERM)")
            await stopHelper(.redis)
            return .success("redis stopped; `cluster redis start` starts it again on the same port")
        case "start":
            guard !redis.launched else {
                return .failure("redis is already running (pid \(redis.pid.map(String.init) ?? "not known yet: it is starting"))")
            }
            startRedis()
            return await redisReadyAnswer("redis started")
        case "restart":
            event("restarting Redis on request (SIGTERM, then start on the same port)")
            await stopHelper(.redis)
            startRedis()
            return await redisReadyAnswer("redis restarted")
        case "freeze":
            return freezeRedis(for: request.duration ?? "10s")
        default:
            return .failure("unknown redis action '\(request.action ?? "")': use stop, start, restart, freeze, slow, hang, cut or heal")
        }
    }

    /// `cluster redis freeze --for D`: SIGSTOP now, SIGCONT after D. Redis keeps its connections and
    /// its port (a connect still succeeds) but answers nothing: a long fork, a stalled disk or a
    /// network partition as the apps see it, unlike a crash, which they see at once.
    func freezeRedis(for text: String) -> ControlResponse {
        guard let duration = Self.freezeDuration(text) else { return .failure(Self.badFreezeDuration(text)) }
        guard let pid = redis.pid, redis.ready else { return .failure("redis is not running: nothing to freeze (`cluster redis start`)") }
        if let until = redis.frozenUntil {
            return .failure("redis is already frozen; it resumes in \(DurationText.format(max(.zero, until - now)))")
        }
        let run = redis.run
        let length = DurationText.format(duration)
        ProcessGroup.signal(pid, SIGSTOP)
        redis.frozenUntil = now + duration
        event("freezing Redis for \(length) on request (SIGSTOP): connections stay open, commands get no answer")
        Task {
            try? await Task.sleep(for: duration)
            self.resumeRedis(run: run, after: length)
        }
        return .success("redis frozen for \(length) (SIGSTOP); it resumes by itself (SIGCONT). Watch the instances' logs and `cluster status`")
    }

    public static func freezeDuration(_ text: String) -> Duration? {
        guard let duration = DurationText.parse(text), ControlRequest.freezeRange.contains(duration) else { return nil }
        return duration
    }

    public static func badFreezeDuration(_ text: String) -> String { "--for '\(text)' is not a duration from 100ms to 10m (e.g. 10s)" }

    /// `cluster freeze I --for D`: SIGSTOP to the instance's process group now, SIGCONT after D. A hung
    /// instance: its port still accepts connections (the kernel completes them), so a port check
    /// passes and the proxy keeps routing to it; an http check times out and it is killed.
    func freezeInstance(_ request: ControlRequest) -> ControlResponse {
        let index: Int
        switch validate(index: request.index) {
        case .success(let value): index = value
        case .failure(let failure): return .failure(failure.message)
        }
        let text = request.duration ?? "30s"
        guard let duration = Self.freezeDuration(text) else { return .failure(Self.badFreezeDuration(text)) }
        let who = name(index)
        guard let slot = slots[index], let pid = slot.pid, slot.lifecycle.processAlive else {
            return .failure("\(who) has no running process to freeze (it is \(slots[index]?.lifecycle.state.rawValue ?? "gone"))")
        }
        if let until = slot.frozenUntil {
            return .failure("\(who) is already frozen; it resumes in \(DurationText.format(max(.zero, until - now)))")
        }
        let length = DurationText.format(duration)
        ProcessGroup.signal(pid, SIGSTOP)
        slots[index]?.frozenUntil = now + duration
        event(
            "\(who) frozen for \(length) on request (SIGSTOP to its process group): its port still accepts connections, nothing answers",
            index: index)
        Task {
            try? await Task.sleep(for: duration)
            self.resumeFrozenInstance(index, pid: pid, after: length)
        }
        return .success(
            "\(who) (pid \(pid)) frozen for \(length); it resumes by itself (SIGCONT). A port health check still passes, an http one fails")
    }

    func resumeFrozenInstance(_ index: Int, pid: pid_t, after length: String) {
        guard slots[index]?.pid == pid else { return }
        resumeInstance(index, because: "after \(length)")
    }

    func resumeRedis(run: Int, after length: String) {
        guard redis.run == run, redis.frozenUntil != nil else { return }
        resume(.redis, because: "after \(length)")
    }

    func redisReadyAnswer(_ message: String) async -> ControlResponse {
        if await waitWhileUp(.seconds(30), { self.redis.ready }) {
            return .success("\(message) on \(launch.redisURL ?? "")")
        }
        return .failure("\(message), but it did not answer PING within 30s (see `cluster logs`)")
    }

    func status() -> ClusterStatus {
        let time = now
        let instances = slots.keys.sorted().compactMap { index -> ClusterStatus.Instance? in
            guard let slot = slots[index] else { return nil }
            let lifecycle = slot.lifecycle
            let guid = lifecycle.guid?.value
            let alive = lifecycle.processAlive
            let stat = guid.flatMap { stats[$0] }
            return ClusterStatus.Instance(
                index: index,
                guid: guid,
                pid: alive ? slot.pid : nil,
                port: alive ? slot.port : nil,
                state: lifecycle.state,
                routable: lifecycle.state == .running ? lifecycle.isRoutable : nil,
                uptimeSeconds: lifecycle.uptime(now: time)?.seconds,
                crashes: lifecycle.crashCount,
                nextRestartSeconds: lifecycle.nextRestartAt.map { max(0, ($0 - time).seconds) },
                connections: lifecycle.state == .running ? stat?.connections : nil,
                requestsPerSecond: lifecycle.state == .running ? guid.flatMap { rates[$0] } : nil,
                lastCrash: lifecycle.lastCrash?.description,
                frozenSeconds: alive ? slot.frozenUntil.map { max(0, ($0 - time).seconds) } : nil,
                replacing: retirements[index].map {
                    ClusterStatus.Instance.Replacing(
                        pid: $0.pid, guid: $0.machine.guid?.value, state: $0.machine.state, port: $0.registration?.port)
                },
                listeningHint: slot.listeningHint, redisLink: linkStatus(index))
        }
        let proxyState = proxyCommand == nil ? "absent" : proxy.state
        let redisState =
            redisPort == nil
            ? "external" : redis.frozenUntil.map { "frozen, resumes in \(DurationText.format(max(.zero, $0 - time)))" } ?? redis.state
        return ClusterStatus(
            app: config.app.name, command: config.app.command, ready: isReady, desiredInstances: desiredCount,
            affinity: config.proxy.affinity.rawValue, restartPolicy: config.restartPolicy.rawValue, timeScale: config.timeScale,
            proxy: ClusterStatus.Component(
                state: proxyState, pid: proxy.pid, url: proxyCommand == nil ? nil : "http://localhost:\(appRouterPort)/",
                traceKey: proxyCommand == nil ? nil : proxyAdmin?.traceKey),
            frontRouter: frontRouter.map { _ in ClusterStatus.Component(state: front.state, pid: front.pid, url: "http://localhost:\(proxyPort)/") },
            frontRouterAffinity: frontRouter.map { _ in config.proxy.frontAffinity.rawValue },
            redis: ClusterStatus.Component(state: redisState, pid: redis.pid, url: launch.redisURL.map(Self.redacted)),
            instances: instances, proxyTraffic: proxyCommand == nil ? nil : traffic)
    }
}
