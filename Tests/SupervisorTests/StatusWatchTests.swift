import Testing

@testable import Supervisor

@Suite("cluster status --watch: the screens and the changes between two statuses")
struct StatusWatchTests {
    func status(_ instances: [ClusterStatus.Instance], desired: Int? = nil, redis: String = "running") -> ClusterStatus {
        ClusterStatus(
            app: "chat", command: "chat-node", ready: true, desiredInstances: desired ?? instances.count, affinity: "cf", restartPolicy: "diego",
            timeScale: 1, proxy: .init(state: "running", url: "http://localhost:8080/"), redis: .init(state: redis), instances: instances)
    }

    func running(_ index: Int, guid: String, crashes: Int = 0, routable: Bool = true, uptime: Double = 10) -> ClusterStatus.Instance {
        ClusterStatus.Instance(
            index: index, guid: guid, pid: 100 + Int32(index), port: 9000 + index, state: .running, routable: routable, uptimeSeconds: uptime,
            crashes: crashes, requestsPerSecond: 3.5)
    }

    @Test("Nothing but uptime and rates moved: no change")
    func quiet() {
        let before = status([running(0, guid: "aaaaaaaa-1"), running(1, guid: "bbbbbbbb-1")])
        let after = status([running(0, guid: "aaaaaaaa-1", uptime: 11), running(1, guid: "bbbbbbbb-1", uptime: 11)])
        #expect(StatusChanges.between(before, after).isEmpty)
    }

    @Test("A crash restarted at once, a readiness check failing, a freeze, a scale-up, Redis stopped: a line each")
    func changes() {
        var crashed = running(1, guid: "cccccccc-2", crashes: 1, uptime: 0)
        crashed.state = .starting
        crashed.routable = nil
        crashed.lastCrash = "killed by signal 9 (SIGKILL)"
        var frozen = running(2, guid: "dddddddd-1", routable: false)
        frozen.frozenSeconds = 20
        let before = status([running(0, guid: "aaaaaaaa-1"), running(1, guid: "bbbbbbbb-1"), running(2, guid: "dddddddd-1")])
        let after = status(
            [running(0, guid: "aaaaaaaa-1"), crashed, frozen, ClusterStatus.Instance(index: 3, state: .starting)], desired: 4, redis: "stopped")
        #expect(
            StatusChanges.between(before, after) == [
                "scaled from 3 to 4 instances",
                "chat.1 running -> starting, crash count 1, new guid cccccccc: killed by signal 9 (SIGKILL)",
                "chat.2 out of the route pool (readiness check failing), frozen",
                "chat.3 added (starting)",
                "redis running -> stopped",
            ])
        // And back: resumed, in the pool again, the new instance removed.
        #expect(
            StatusChanges.between(after, before) == [
                "scaled from 4 to 3 instances",
                "chat.1 starting -> running, crash count reset, new guid bbbbbbbb",
                "chat.2 back in the route pool, resumed",
                "chat.3 removed",
                "redis stopped -> running",
            ])
    }

    @Test("The front router and the app's router crash and come back: a line each")
    func routers() {
        var before = status([running(0, guid: "aaaaaaaa-1")])
        before.frontRouter = .init(state: "running", url: "http://localhost:8080/")
        var after = before
        after.frontRouter?.state = "crashed"
        after.proxy.state = "starting"
        #expect(StatusChanges.between(before, after) == ["front router running -> crashed", "proxy running -> starting"])
        #expect(StatusChanges.between(after, before) == ["front router crashed -> running", "proxy starting -> running"])
    }

    @Test("A link to Redis cut, then slowed, then healed: a line each; the time left moving is no change")
    func redisLink() {
        var cut = running(1, guid: "bbbbbbbb-1")
        cut.redisLink = ClusterStatus.Instance.RedisLink(fault: .cut, remainingSeconds: 9)
        var later = cut
        later.redisLink?.remainingSeconds = 4
        var slow = cut
        slow.redisLink = ClusterStatus.Instance.RedisLink(fault: .slow(latency: .milliseconds(200), jitter: .zero), remainingSeconds: 60)
        let healthy = status([running(0, guid: "aaaaaaaa-1"), running(1, guid: "bbbbbbbb-1")])
        #expect(StatusChanges.between(healthy, status([running(0, guid: "aaaaaaaa-1"), cut])) == ["chat.1 link to Redis cut"])
        #expect(StatusChanges.between(status([running(0, guid: "aaaaaaaa-1"), cut]), status([running(0, guid: "aaaaaaaa-1"), later])).isEmpty)
        #expect(
            StatusChanges.between(status([running(0, guid: "aaaaaaaa-1"), later]), status([running(0, guid: "aaaaaaaa-1"), slow]))
                == ["chat.1 link to Redis slow (+200ms)"])
        #expect(StatusChanges.between(status([running(0, guid: "aaaaaaaa-1"), slow]), healthy) == ["chat.1 link to Redis healed"])
    }

    @Test("A rolling restart: the old process serving, then gone")
    func rolling() {
        var replacing = running(0, guid: "eeeeeeee-2", uptime: 1)
        replacing.replacing = .init(pid: 99, guid: "aaaaaaaa-1", state: .serving)
        let before = status([running(0, guid: "aaaaaaaa-1")])
        let during = status([replacing])
        let after = status([running(0, guid: "eeeeeeee-2", uptime: 2)])
        #expect(StatusChanges.between(before, during) == ["chat.0 new guid eeeeeeee, replacing its old process (serving)"])
        #expect(StatusChanges.between(during, after) == ["chat.0 old process gone"])
    }

    @Test("The screens: the table, the changes kept under it, the cluster gone and back, redrawn on a terminal only")
    func screens() {
        var watch = StatusWatch(interval: .milliseconds(500), redraw: false)
        let first = status([running(0, guid: "aaaaaaaa-1")])
        let screen = watch.screen(status: first, time: "10:00:00")
        #expect(screen == "cluster status every 500ms, 10:00:00 (Ctrl-C to stop)\n\n\(first.table())\n\n")
        var killed = running(0, guid: "ffffffff-2", crashes: 1, uptime: 0)
        killed.state = .starting
        _ = watch.screen(status: status([killed]), time: "10:00:01")
        let gone = watch.screen(unavailable: "cluster: no cluster is running", time: "10:00:02")
        #expect(
            gone == """
                cluster status every 500ms, 10:00:02 (Ctrl-C to stop)

                cluster: no cluster is running
                waiting for it: the screen comes back when a cluster answers

                changes:
                10:00:01 chat.0 running -> starting, crash count 1, new guid ffffffff
                10:00:02 the cluster stopped answering


                """)
        // Still gone: said once. Back: said, and no change invented against the cluster before.
        _ = watch.screen(unavailable: "cluster: no cluster is running", time: "10:00:03")
        let back = watch.screen(status: first, time: "10:00:04")
        #expect(back.hasSuffix("10:00:02 the cluster stopped answering\n10:00:04 a cluster answers again\n\n"))
        #expect(watch.changes.count == 3)
        // At most keptChanges kept, the oldest dropped.
        for second in 0..<12 {
            _ = watch.screen(status: status([running(0, guid: "g\(second)")]), time: "10:01:\(second)")
        }
        #expect(watch.changes.count == StatusWatch.keptChanges)
        #expect(watch.changes.last?.text == "chat.0 new guid g11")
        // A terminal: home and clear first, in the same write.
        var terminal = StatusWatch(interval: .seconds(1), redraw: true)
        #expect(terminal.screen(status: first, time: "10:00:00").hasPrefix("\u{1B}[H\u{1B}[2Jcluster status every 1s, 10:00:00"))
    }

    @Test("--interval from 200ms to 1m")
    func interval() {
        #expect(StatusWatch.intervalProblem(.milliseconds(200)) == nil)
        #expect(StatusWatch.intervalProblem(.seconds(60)) == nil)
        #expect(StatusWatch.intervalProblem(.milliseconds(50)) == "--interval must be from 200ms to 1m (not 50ms)")
        #expect(StatusWatch.intervalProblem(.seconds(61)) == "--interval must be from 200ms to 1m (not 1m1s)")
    }
}
