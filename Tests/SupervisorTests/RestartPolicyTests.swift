import Testing

@testable import Supervisor

@Suite("Restart policies")
struct RestartPolicyTests {
    let diego = RestartPolicy(name: .diego)

    /// Crashes `count` times in a row at `at`, each instance having lived `lived` and never been healthy.
    func history(_ policy: RestartPolicy, crashes count: Int, lived: Duration = .seconds(1)) -> RestartPolicy.CrashHistory {
        var history = RestartPolicy.CrashHistory()
        for _ in 0..<count { history = policy.recordCrash(history, lived: lived, healthyFor: nil) }
        return history
    }

    @Test("Diego restarts crash 1 and 2 at once")
    func diegoImmediate() {
        #expect(diego.decision(after: history(diego, crashes: 1), crashedAt: .seconds(7)) == .now)
        #expect(diego.decision(after: history(diego, crashes: 2), crashedAt: .seconds(7)) == .now)
    }

    @Test("Diego backs off 30 s x 2^(n-3) from crash 3, capped at 16 min")
    func diegoBackoff() {
        let expected: [Int: Duration] = [
            3: .seconds(30), 4: .seconds(60), 5: .seconds(120), 6: .seconds(240), 7: .seconds(480), 8: .seconds(960), 9: .seconds(960),
            150: .seconds(960),
        ]
        for (count, backoff) in expected {
            #expect(diego.backoff(crashCount: count) == backoff, "crash count \(count)")
        }
        #expect(diego.backoff(crashCount: 1) == .zero)
    }

    @Test("Diego restarts on the first 30 s convergence tick after the back-off")
    func diegoConvergenceTick() {
        // Crash 3 at 4.5 s: due at 34.5 s, so the tick at 60 s restarts it.
        #expect(diego.decision(after: history(diego, crashes: 3), crashedAt: .milliseconds(4500)) == .at(.seconds(60)))
        // Due exactly on a tick: BBS needs now > due, so the next tick.
        #expect(diego.decision(after: history(diego, crashes: 3), crashedAt: .seconds(30)) == .at(.seconds(90)))
        // Crash 4 at 100 s: due at 160 s, tick 180 s.
        #expect(diego.decision(after: history(diego, crashes: 4), crashedAt: .seconds(100)) == .at(.seconds(180)))
    }

    @Test("Diego never restarts at crash count 200")
    func diegoGivesUp() {
        #expect(diego.decision(after: history(diego, crashes: 199), crashedAt: .zero) != .never)
        #expect(diego.decision(after: history(diego, crashes: 200), crashedAt: .zero) == .never)
    }

    @Test("Diego's crash count starts again at 1 after more than 5 min of running")
    func diegoReset() {
        var crashes = history(diego, crashes: 5)
        crashes = diego.recordCrash(crashes, lived: .seconds(400), healthyFor: .seconds(300))
        #expect(crashes.count == 6, "exactly 5 min is not more than 5 min")
        crashes = diego.recordCrash(crashes, lived: .seconds(400), healthyFor: .seconds(301))
        #expect(crashes.count == 1)
        // Long-lived but never healthy does not reset.
        crashes = diego.recordCrash(history(diego, crashes: 4), lived: .seconds(900), healthyFor: nil)
        #expect(crashes.count == 5)
    }

    @Test("time_scale shrinks the back-off, the tick and the reset window")
    func timeScale() {
        let fast = RestartPolicy(name: .diego, timeScale: 0.01)
        #expect(fast.backoff(crashCount: 3) == .milliseconds(300))
        #expect(fast.backoff(crashCount: 20) == .milliseconds(9600))
        #expect(fast.convergenceTick == .milliseconds(300))
        // Crash 3 at 1 s: due at 1.3 s, next 0.3 s tick after it is 1.5 s.
        #expect(fast.decision(after: history(fast, crashes: 3), crashedAt: .seconds(1)) == .at(.milliseconds(1500)))
        #expect(fast.recordCrash(history(fast, crashes: 4), lived: .seconds(4), healthyFor: .seconds(3.01)).count == 1)
    }

    @Test("PM2: 100 ms x1.5 per crash up to 15 s, reset after 30 s up")
    func pm2Backoff() {
        let pm2 = RestartPolicy(name: .pm2)
        #expect(pm2.backoff(crashCount: 1) == .milliseconds(100))
        #expect(pm2.backoff(crashCount: 2) == .milliseconds(150))
        #expect(pm2.backoff(crashCount: 3) == .milliseconds(225))
        #expect(pm2.backoff(crashCount: 30) == .seconds(15))
        let crashes = history(pm2, crashes: 3, lived: .seconds(5))
        #expect(pm2.decision(after: crashes, crashedAt: .seconds(10)) == .at(.milliseconds(10_225)))
        #expect(pm2.recordCrash(crashes, lived: .seconds(30), healthyFor: nil).count == 1)
    }

    @Test("PM2 gives up after 16 restarts in a row of instances that lived less than 1 s")
    func pm2GivesUp() {
        let pm2 = RestartPolicy(name: .pm2)
        let unstable = history(pm2, crashes: 16, lived: .milliseconds(200))
        #expect(pm2.decision(after: unstable, crashedAt: .zero) != .never)
        let oneMore = pm2.recordCrash(unstable, lived: .milliseconds(200), healthyFor: nil)
        #expect(pm2.decision(after: oneMore, crashedAt: .zero) == .never)
        // A stable run in between starts the unstable count again.
        let stable = pm2.recordCrash(unstable, lived: .seconds(2), healthyFor: nil)
        #expect(stable.unstable == 0)
        #expect(pm2.decision(after: stable, crashedAt: .zero) != .never)
    }

    @Test("Kubernetes: first restart at once, then 10 s doubling to 300 s, reset after 10 min")
    func kubernetes() {
        let kubernetes = RestartPolicy(name: .kubernetes)
        #expect(kubernetes.decision(after: history(kubernetes, crashes: 1), crashedAt: .seconds(5)) == .now)
        #expect(kubernetes.decision(after: history(kubernetes, crashes: 2), crashedAt: .seconds(5)) == .at(.seconds(15)))
        #expect(kubernetes.backoff(crashCount: 3) == .seconds(20))
        #expect(kubernetes.backoff(crashCount: 7) == .seconds(300))
        #expect(kubernetes.backoff(crashCount: 500) == .seconds(300))
        #expect(kubernetes.recordCrash(history(kubernetes, crashes: 6), lived: .seconds(600), healthyFor: nil).count == 1)
        #expect(kubernetes.decision(after: history(kubernetes, crashes: 1000), crashedAt: .zero) != .never)
    }

    @Test("The proxy and Redis restart after 0.5 s, doubling up to 30 s, reset after a minute up")
    func helperBackoff() {
        var backoff = HelperBackoff()
        let delays = (0..<8).map { _ in backoff.crashed(lived: .seconds(1)) }
        #expect(delays == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16), .seconds(30), .seconds(30)])
        #expect(backoff.crashed(lived: .seconds(61)) == .milliseconds(500))
    }

    @Test("A helper's end: an older run changes nothing, a held one stays down, a crash restarts after the back-off")
    func helperEnd() {
        var helper = ClusterSupervisor.Helper()
        helper.run = 2
        helper.pid = 42
        helper.ready = true
        helper.startedAt = .seconds(10)
        #expect(helper.state == "running")
        #expect(helper.ended(run: 1, now: .seconds(11), shuttingDown: false) == .stale)
        #expect(helper.pid == 42 && helper.ready)
        #expect(helper.ended(run: 2, now: .seconds(11), shuttingDown: false) == .restart(after: .milliseconds(500)))
        #expect(helper.pid == nil && !helper.ready && helper.state == "stopped")
        #expect(helper.ended(run: 2, now: .seconds(12), shuttingDown: false) == .restart(after: .seconds(1)))
        #expect(helper.ended(run: 2, now: .seconds(13), shuttingDown: true) == .stopped)
        helper.held = true
        #expect(helper.ended(run: 2, now: .seconds(14), shuttingDown: false) == .stopped)
    }

    @Test("After a helper's crash, the restart happens only if nothing happened meanwhile")
    func helperRestartAfterTheBackoff() {
        var helper = ClusterSupervisor.Helper()
        let first = helper.launch(now: .seconds(1))
        #expect(helper.launched && first == 1)
        #expect(helper.ended(run: first, now: .seconds(2), shuttingDown: false) == .restart(after: .milliseconds(500)))
        #expect(!helper.launched && helper.restartDue(after: first))
        // `cluster redis stop` during the back-off: it stays down (it used to start again).
        var stopped = helper
        stopped.held = true
        #expect(!stopped.restartDue(after: first))
        // `cluster redis start` during the back-off: that run is the one; the restart would have been
        // a second redis-server on the port, untracked.
        var started = helper
        let second = started.launch(now: .seconds(2))
        #expect(!started.restartDue(after: first))
        // Even once the user's run has ended too.
        _ = started.ended(run: second, now: .seconds(3), shuttingDown: false)
        #expect(!started.restartDue(after: first) && started.restartDue(after: second))
    }
}
