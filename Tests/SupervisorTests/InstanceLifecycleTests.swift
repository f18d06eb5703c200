import CloudFoundry
import Testing

@testable import Supervisor

@Suite("Instance lifecycle (Diego)")
struct InstanceLifecycleTests {
    typealias Action = InstanceLifecycle.Action

    let guids = (0..<10).map { _ in InstanceGUID() }

    /// An instance that was started at 0 s and became healthy at 1 s.
    func running(policy: RestartPolicy = RestartPolicy()) -> InstanceLifecycle {
        var lifecycle = InstanceLifecycle(index: 2, policy: policy)
        _ = lifecycle.start(now: .zero, guid: guids[0])
        _ = lifecycle.healthCheckPassed(run: 1, now: .seconds(1))
        return lifecycle
    }

    func spawns(_ actions: [Action]) -> [Int] {
        actions.compactMap { if case .spawn(let run, _) = $0 { return run } else { return nil } }
    }

    @Test("A start spawns run 1 with a new guid; the startup check passing registers it")
    func startAndHealthy() {
        var lifecycle = InstanceLifecycle(index: 2, policy: RestartPolicy())
        let actions = lifecycle.start(now: .zero, guid: guids[0])
        #expect(actions.contains(.spawn(run: 1, guid: guids[0])))
        #expect(lifecycle.state == .starting)
        #expect(lifecycle.guid == guids[0])
        #expect(!actions.contains(.register), "not registered before it is healthy")
        let healthy = lifecycle.healthCheckPassed(run: 1, now: .milliseconds(400))
        #expect(healthy == [.event(.healthy(after: .milliseconds(400))), .register])
        #expect(lifecycle.state == .running)
        #expect(lifecycle.registered)
    }

    @Test("A crash unregisters at once and restarts immediately with a NEW guid and the same index")
    func crashRestartsWithNewGUID() {
        var lifecycle = running()
        let actions = lifecycle.exited(run: 1, status: .signaled(9), now: .seconds(10), guid: guids[1])
        #expect(actions.contains(.unregister))
        #expect(actions.contains(.event(.crashed(.exited(.signaled(9)), crashCount: 1))))
        #expect(actions.contains(.spawn(run: 2, guid: guids[1])))
        #expect(lifecycle.guid == guids[1])
        #expect(lifecycle.index == 2)
        #expect(lifecycle.state == .starting)
        #expect(lifecycle.crashCount == 1)
        // The unregister comes before the new spawn.
        let unregister = actions.firstIndex(of: .unregister) ?? .max
        let spawn = actions.firstIndex(of: .spawn(run: 2, guid: guids[1])) ?? -1
        #expect(unregister < spawn)
    }

    @Test("The third crash waits for the back-off; the restart timer spawns it")
    func thirdCrashBacksOff() {
        var lifecycle = running()
        _ = lifecycle.exited(run: 1, status: .exited(1), now: .seconds(2), guid: guids[1])
        _ = lifecycle.exited(run: 2, status: .exited(1), now: .seconds(3), guid: guids[2])
        let third = lifecycle.exited(run: 3, status: .exited(1), now: .seconds(4), guid: guids[3])
        #expect(lifecycle.state == .crashed)
        #expect(lifecycle.crashCount == 3)
        #expect(lifecycle.nextRestartAt == .seconds(60))
        #expect(third.contains(.scheduleRestart(at: .seconds(60))))
        #expect(spawns(third).isEmpty)
        #expect(lifecycle.restartDue(now: .seconds(59), guid: guids[4]) == [.scheduleRestart(at: .seconds(60))], "early timer: re-armed")
        let due = lifecycle.restartDue(now: .seconds(60), guid: guids[4])
        #expect(due.contains(.spawn(run: 4, guid: guids[4])))
        #expect(lifecycle.state == .starting)
    }

    @Test("At crash count 200 the instance gives up and stays crashed")
    func givesUp() {
        var lifecycle = running(policy: RestartPolicy(name: .diego, timeScale: 0.0001))
        var now = Duration.seconds(2)
        for _ in 1..<200 {
            _ = lifecycle.exited(run: lifecycle.run, status: .exited(1), now: now)
            now += .seconds(1)
            if lifecycle.state == .crashed { _ = lifecycle.restartDue(now: lifecycle.nextRestartAt ?? now) }
        }
        #expect(lifecycle.crashCount == 199)
        let last = lifecycle.exited(run: lifecycle.run, status: .exited(1), now: now)
        #expect(lifecycle.state == .gaveUp)
        #expect(last.contains(.event(.gaveUp(crashCount: 200))))
        #expect(lifecycle.restartDue(now: now + .seconds(3600)).isEmpty)
        // A user's start brings it back with the count reset.
        #expect(!spawns(lifecycle.start(now: now)).isEmpty)
        #expect(lifecycle.crashCount == 0)
    }

    @Test("Stop: SIGTERM and a kill deadline; the route is unregistered only after the exit")
    func gracefulStop() {
        var lifecycle = running()
        let stop = lifecycle.stop(now: .seconds(5), gracePeriod: .seconds(10))
        #expect(stop == [.event(.stopping(gracePeriod: .seconds(10))), .signal(15), .scheduleKill(at: .seconds(15))])
        #expect(lifecycle.registered, "still routable while it drains")
        let deadline = lifecycle.killDeadline(run: 1, now: .seconds(15), gracePeriod: .seconds(10))
        #expect(deadline == [.event(.killedAfterGracePeriod(.seconds(10))), .signal(9)])
        let exit = lifecycle.exited(run: 1, status: .signaled(9), now: .seconds(15))
        #expect(exit == [.cancelTimers, .unregister, .event(.stopped(.signaled(9)))])
        #expect(lifecycle.state == .stopped)
        #expect(lifecycle.crashCount == 0, "a requested stop is not a crash")
    }

    @Test("A stopped instance that exits in time needs no SIGKILL")
    func stopInTime() {
        var lifecycle = running()
        _ = lifecycle.stop(now: .seconds(5), gracePeriod: .seconds(10))
        _ = lifecycle.exited(run: 1, status: .exited(0), now: .seconds(6))
        #expect(lifecycle.killDeadline(run: 1, now: .seconds(15), gracePeriod: .seconds(10)).isEmpty)
    }

    @Test("Restart = stop then start with a new guid and the crash count reset")
    func restart() {
        var lifecycle = running()
        _ = lifecycle.exited(run: 1, status: .exited(1), now: .seconds(2), guid: guids[1])
        _ = lifecycle.healthCheckPassed(run: 2, now: .seconds(3))
        _ = lifecycle.stop(now: .seconds(4), gracePeriod: .seconds(10), then: .start)
        let exit = lifecycle.exited(run: 2, status: .exited(0), now: .seconds(5), guid: guids[2])
        #expect(exit.contains(.spawn(run: 3, guid: guids[2])))
        #expect(lifecycle.crashCount == 0)
        #expect(lifecycle.state == .starting)
    }

    @Test("Scale-down removal: the slot is removed after the exit")
    func removal() {
        var lifecycle = running()
        _ = lifecycle.stop(now: .seconds(1), gracePeriod: .seconds(10), then: .remove)
        // A later stop or start request does not cancel a removal.
        _ = lifecycle.stop(now: .seconds(2), gracePeriod: .seconds(10), then: .stay)
        #expect(lifecycle.afterStop == .remove)
        let exit = lifecycle.exited(run: 1, status: .exited(0), now: .seconds(3))
        #expect(exit.last == .remove)
        var stopped = InstanceLifecycle(index: 4, policy: RestartPolicy())
        #expect(stopped.stop(now: .zero, gracePeriod: .seconds(1), then: .remove) == [.cancelTimers, .remove])
    }

    @Test("A failed liveness check unregisters at once, kills, and counts as a crash with Diego's words")
    func livenessFailure() {
        var lifecycle = running()
        let failed = lifecycle.healthCheckFailed(
            run: 1, reason: "Failed to make TCP connection to port 4000: connection refused", startup: false, startupTimeout: .seconds(60),
            now: .seconds(31))
        #expect(failed.first == .unregister)
        #expect(failed.last == .signal(9))
        #expect(lifecycle.state == .crashing)
        let exit = lifecycle.exited(run: 1, status: .signaled(9), now: .seconds(31), guid: guids[1])
        let reason = InstanceLifecycle.CrashReason.becameUnhealthy(reason: "Failed to make TCP connection to port 4000: connection refused")
        #expect(exit.contains(.event(.crashed(reason, crashCount: 1))))
        #expect(!exit.contains(.unregister), "already unregistered")
        #expect(reason.description == "Instance became unhealthy: Failed to make TCP connection to port 4000: connection refused")
        #expect(lifecycle.state == .starting)
    }

    @Test("A startup timeout crashes with 'Instance never healthy after 1m0s'")
    func startupTimeout() {
        var lifecycle = InstanceLifecycle(index: 0, policy: RestartPolicy())
        _ = lifecycle.start(now: .zero)
        let failed = lifecycle.healthCheckFailed(run: 1, reason: "connection refused", startup: true, startupTimeout: .seconds(60), now: .seconds(60))
        #expect(!failed.contains(.unregister), "never registered")
        _ = lifecycle.exited(run: 1, status: .signaled(9), now: .seconds(60))
        #expect(lifecycle.lastCrash?.description == "Instance never healthy after 1m0s: connection refused")
    }

    @Test("Events about an older run are ignored")
    func staleRun() {
        var lifecycle = running()
        _ = lifecycle.exited(run: 1, status: .exited(1), now: .seconds(2), guid: guids[1])
        #expect(lifecycle.exited(run: 1, status: .exited(1), now: .seconds(3)).isEmpty)
        #expect(lifecycle.healthCheckPassed(run: 1, now: .seconds(3)).isEmpty)
        #expect(lifecycle.healthCheckFailed(run: 1, reason: "x", startup: false, startupTimeout: .seconds(60), now: .seconds(3)).isEmpty)
        #expect(lifecycle.killDeadline(run: 1, now: .seconds(3), gracePeriod: .seconds(1)).isEmpty)
        #expect(lifecycle.state == .starting)
        #expect(lifecycle.run == 2)
    }

    @Test("kill sends SIGKILL only to a live process; its exit is a crash")
    func killRequest() {
        var lifecycle = running()
        #expect(lifecycle.kill() == [.signal(9)])
        _ = lifecycle.exited(run: 1, status: .signaled(9), now: .seconds(3))
        #expect(lifecycle.crashCount == 1)
        var stopped = InstanceLifecycle(index: 0, policy: RestartPolicy())
        #expect(stopped.kill().isEmpty)
    }

    @Test("A crashed instance waiting for its restart can be stopped: the timer is cancelled")
    func stopWhileCrashed() {
        var lifecycle = running()
        for run in 1...3 { _ = lifecycle.exited(run: run, status: .exited(1), now: .seconds(run)) }
        #expect(lifecycle.state == .crashed)
        #expect(lifecycle.stop(now: .seconds(5), gracePeriod: .seconds(10)) == [.cancelTimers])
        #expect(lifecycle.state == .stopped)
        #expect(lifecycle.restartDue(now: .seconds(600)).isEmpty)
    }

    @Test("A spawn failure is a crash")
    func spawnFailure() {
        var lifecycle = InstanceLifecycle(index: 0, policy: RestartPolicy())
        _ = lifecycle.start(now: .zero)
        let actions = lifecycle.spawnFailed(run: 1, reason: "no such file", now: .seconds(1))
        #expect(actions.contains(.event(.crashed(.failedToStart(reason: "no such file"), crashCount: 1))))
        #expect(!spawns(actions).isEmpty)
    }

    @Test("Uptime counts from the spawn while the process lives")
    func uptime() {
        var lifecycle = running()
        #expect(lifecycle.uptime(now: .seconds(9)) == .seconds(9))
        _ = lifecycle.stop(now: .seconds(9), gracePeriod: .seconds(1))
        _ = lifecycle.exited(run: 1, status: .exited(0), now: .seconds(10))
        #expect(lifecycle.uptime(now: .seconds(11)) == nil)
    }

    // MARK: Readiness (Cloud Foundry's readiness health check)

    /// Started at 0 s with a readiness check; healthy at 1 s.
    func healthyWithReadiness() -> InstanceLifecycle {
        var lifecycle = InstanceLifecycle(index: 1, policy: RestartPolicy(), readinessChecked: true)
        _ = lifecycle.start(now: .zero, guid: guids[0])
        return lifecycle
    }

    @Test("With a readiness check, a healthy instance is routed only once that check passes")
    func readinessGatesTheFirstRegistration() {
        var lifecycle = healthyWithReadiness()
        #expect(lifecycle.healthCheckPassed(run: 1, now: .seconds(1)) == [.event(.healthy(after: .seconds(1)))])
        #expect(lifecycle.state == .running && !lifecycle.isRoutable && lifecycle.ready == nil)
        // Not ready at first: said once, nothing to unregister.
        let first = lifecycle.readinessFailed(run: 1, reason: "received status code 503")
        #expect(first == [.event(.notReady(reason: "received status code 503", wasReady: false))])
        #expect(lifecycle.readinessFailed(run: 1, reason: "received status code 503").isEmpty, "a failure that goes on is said once")
        #expect(lifecycle.readinessPassed(run: 1) == [.event(.ready), .register])
        #expect(lifecycle.isRoutable && lifecycle.ready == true)
        #expect(lifecycle.readinessPassed(run: 1).isEmpty, "already in the route pool")
    }

    @Test("A failing readiness check takes a running instance out of the route pool and back, never restarting it")
    func readinessMovesInAndOutOfThePool() {
        var lifecycle = healthyWithReadiness()
        _ = lifecycle.healthCheckPassed(run: 1, now: .seconds(1))
        _ = lifecycle.readinessPassed(run: 1)
        let failed = lifecycle.readinessFailed(run: 1, reason: "timed out")
        #expect(failed == [.unregister, .event(.notReady(reason: "timed out", wasReady: true))])
        #expect(lifecycle.state == .running && !lifecycle.isRoutable)
        #expect(spawns(failed).isEmpty && !failed.contains(.signal(9)) && lifecycle.crashCount == 0)
        #expect(lifecycle.readinessPassed(run: 1) == [.event(.ready), .register])
        #expect(lifecycle.isRoutable && lifecycle.crashCount == 0 && lifecycle.run == 1)
    }

    @Test("Readiness results of another run, or of an instance not running, change nothing")
    func readinessIsPerRun() {
        var lifecycle = healthyWithReadiness()
        #expect(lifecycle.readinessPassed(run: 1).isEmpty, "still starting: the startup check decides first")
        _ = lifecycle.healthCheckPassed(run: 1, now: .seconds(1))
        _ = lifecycle.readinessPassed(run: 1)
        // The process crashes: unregistered once, by the exit; the new run starts with no readiness.
        let exit = lifecycle.exited(run: 1, status: .exited(1), now: .seconds(5), guid: guids[1])
        #expect(exit.filter { $0 == .unregister }.count == 1)
        #expect(lifecycle.ready == nil && lifecycle.run == 2)
        #expect(lifecycle.readinessFailed(run: 1, reason: "late").isEmpty, "a late result of the old run")
        _ = lifecycle.healthCheckPassed(run: 2, now: .seconds(6))
        #expect(!lifecycle.isRoutable, "the new run waits for its own readiness check")
        // A not-ready instance whose liveness check fails: nothing to unregister, a crash as usual.
        _ = lifecycle.readinessFailed(run: 2, reason: "503")
        let unhealthy = lifecycle.healthCheckFailed(run: 2, reason: "refused", startup: false, startupTimeout: .seconds(60), now: .seconds(40))
        #expect(!unhealthy.contains(.unregister) && unhealthy.last == .signal(9))
    }

    @Test("Without a readiness check, readiness results are ignored and healthy means routable")
    func noReadinessCheck() {
        var lifecycle = running()
        #expect(lifecycle.isRoutable)
        #expect(lifecycle.readinessFailed(run: 1, reason: "503").isEmpty)
        #expect(lifecycle.isRoutable)
    }
}
