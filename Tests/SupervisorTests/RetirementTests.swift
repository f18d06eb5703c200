import CloudFoundry
import Testing

@testable import Supervisor

@Suite("Rolling restart: the replacement first, then the old process (Cloud Foundry's rolling strategy)")
struct RetirementTests {
    let guids = (0..<4).map { _ in InstanceGUID() }

    func running() -> InstanceLifecycle {
        var lifecycle = InstanceLifecycle(index: 1, policy: RestartPolicy())
        _ = lifecycle.start(now: .zero, guid: guids[0])
        _ = lifecycle.healthCheckPassed(run: 1, now: .seconds(1))
        return lifecycle
    }

    @Test("A running instance is replaced: a new run starts, the old process keeps serving with its registration")
    func replaceKeepsTheOldProcessServing() throws {
        var lifecycle = running()
        _ = lifecycle.exited(run: 1, status: .exited(1), now: .seconds(2), guid: guids[1])
        _ = lifecycle.healthCheckPassed(run: 2, now: .seconds(3))
        #expect(lifecycle.crashCount == 1)
        let result = lifecycle.replace(now: .seconds(10), guid: guids[2])
        let replaced = try #require(result)
        // Nothing is signalled or unregistered: the old process serves on.
        #expect(replaced.actions == [.cancelTimers, .event(.starting(guid: guids[2], crashRestart: false)), .spawn(run: 3, guid: guids[2])])
        #expect(replaced.retirement == Retirement(index: 1, run: 2, guid: guids[1], registered: true))
        #expect(replaced.retirement.state == .serving)
        #expect(lifecycle.state == .starting && lifecycle.run == 3 && lifecycle.guid == guids[2])
        #expect(!lifecycle.registered, "the new run registers once healthy")
        #expect(lifecycle.crashCount == 0, "a restart resets the crash count, as cf restart does")
        // An event of the old run no longer touches the lifecycle.
        let oldExit = lifecycle.exited(run: 2, status: .exited(0), now: .seconds(11))
        #expect(oldExit.isEmpty)
        let healthy = lifecycle.healthCheckPassed(run: 3, now: .seconds(12))
        #expect(healthy == [.event(.healthy(after: .seconds(2))), .register])
    }

    @Test("Only a running instance is replaced; the others are restarted as before")
    func onlyARunningInstanceIsReplaced() {
        var starting = InstanceLifecycle(index: 0, policy: RestartPolicy())
        _ = starting.start(now: .zero)
        let whileStarting = starting.replace(now: .seconds(1))
        #expect(whileStarting == nil)
        var stopped = InstanceLifecycle(index: 0, policy: RestartPolicy())
        let whileStopped = stopped.replace(now: .seconds(1))
        #expect(whileStopped == nil)
        var stopping = running()
        _ = stopping.stop(now: .seconds(2), gracePeriod: .seconds(10))
        let whileStopping = stopping.replace(now: .seconds(3))
        #expect(whileStopping == nil)
    }

    @Test("Once the replacement is routable: SIGTERM, SIGKILL after the grace period; unregistered only after the exit")
    func theOldProcessStopsAfterItsReplacementIsRoutable() {
        var retirement = Retirement(index: 1, run: 2, guid: guids[0], registered: true)
        let stop = retirement.stop(now: .seconds(5), gracePeriod: .seconds(10), replaced: true)
        #expect(stop == [.event(.stopping(gracePeriod: .seconds(10), replaced: true)), .signal(15), .scheduleKill(at: .seconds(15))])
        #expect(!stop.contains(.unregister), "Cloud Foundry unregisters a stopped instance after its exit")
        let again = retirement.stop(now: .seconds(6), gracePeriod: .seconds(10), replaced: false)
        #expect(again.isEmpty, "a second stop changes nothing")
        let deadline = retirement.killDeadline(gracePeriod: .seconds(10))
        #expect(deadline == [.event(.killedAfterGracePeriod(.seconds(10))), .signal(9)])
        let exit = retirement.exited(status: .signaled(9))
        #expect(exit == [.cancelTimer, .unregister, .event(.exited(.signaled(9)))])
        #expect(retirement.state == .exited)
        let secondExit = retirement.exited(status: .signaled(9))
        #expect(secondExit.isEmpty)
        let lateDeadline = retirement.killDeadline(gracePeriod: .seconds(10))
        #expect(lateDeadline.isEmpty)
    }

    @Test("No grace period: SIGKILL at once; an old process out of the pool (readiness) has nothing to unregister")
    func noGraceAndNotRegistered() {
        var retirement = Retirement(index: 0, run: 1, guid: nil, registered: false)
        let stop = retirement.stop(now: .zero, gracePeriod: .zero, replaced: false)
        #expect(stop == [.event(.stopping(gracePeriod: .zero, replaced: false)), .signal(9)])
        let exit = retirement.exited(status: .exited(0))
        #expect(exit == [.cancelTimer, .event(.exited(.exited(0)))])
    }

    @Test("An old process that exits by itself while serving leaves the pool at once and is gone")
    func anOldProcessThatExitsWhileServing() {
        var retirement = Retirement(index: 0, run: 1, guid: guids[0], registered: true)
        let exit = retirement.exited(status: .exited(1))
        #expect(exit == [.cancelTimer, .unregister, .event(.exited(.exited(1)))])
        let stop = retirement.stop(now: .zero, gracePeriod: .seconds(10), replaced: true)
        #expect(stop.isEmpty)
    }
}
