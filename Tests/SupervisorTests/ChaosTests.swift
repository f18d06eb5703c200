import Synchronization
import Testing

@testable import Supervisor

@Suite("cluster chaos: schedule, choices, options")
struct ChaosTests {
    func instance(_ index: Int, _ state: InstanceLifecycle.State) -> ClusterStatus.Instance {
        ClusterStatus.Instance(index: index, state: state)
    }

    @Test("Faults every interval up to the end included, Redis restarts between them in time order")
    func schedule() {
        var schedule = ChaosSchedule(ChaosOptions(every: .milliseconds(400), duration: .seconds(2), redisEvery: .seconds(1), seed: 1))
        var events: [(Duration, ChaosSchedule.Event)] = []
        while let next = schedule.next() { events.append((next.at, next.event)) }
        #expect(events.map(\.0) == [400, 800, 1_000, 1_200, 1_600, 2_000, 2_000].map { Duration.milliseconds($0) })
        #expect(
            events.map(\.1) == [.instanceFault, .instanceFault, .redisRestart, .instanceFault, .instanceFault, .instanceFault, .redisRestart])
        #expect(schedule.next() == nil)  // and stays over
    }

    @Test("Without Redis restarts, only faults; a run shorter than the interval has none")
    func onlyFaults() {
        var schedule = ChaosSchedule(ChaosOptions(every: .seconds(10), duration: .seconds(30), seed: 1))
        var count = 0
        while let next = schedule.next() {
            count += 1
            #expect(next.event == .instanceFault && next.at == .seconds(10 * count))
        }
        #expect(count == 3)
        var short = ChaosSchedule(ChaosOptions(every: .seconds(10), duration: .seconds(5), seed: 1))
        #expect(short.next() == nil)
    }

    @Test("Only running instances are picked, never below --keep, the same seed picks the same ones")
    func picker() {
        let instances = [instance(0, .running), instance(1, .crashed), instance(2, .running), instance(3, .starting), instance(4, .running)]
        var picker = ChaosPicker(keep: 1, seed: 7)
        var again = ChaosPicker(keep: 1, seed: 7)
        var picked: Set<Int> = []
        for _ in 0..<200 {
            let choice = picker.choose(among: instances)
            #expect(choice == again.choose(among: instances))
            guard case .instance(let index) = choice else {
                Issue.record("no instance picked: \(choice)")
                return
            }
            picked.insert(index)
        }
        #expect(picked == [0, 2, 4])  // every running one, in time; never a crashed or starting one
        var keeping = ChaosPicker(keep: 3, seed: 7)
        #expect(keeping.choose(among: instances) == .skip("3 of 5 instances running, and --keep 3 leaves them alone"))
        var none = ChaosPicker(keep: 0, seed: 7)
        #expect(none.choose(among: []) == .skip("no instances, and --keep 0 leaves them alone"))
        #expect(none.choose(among: [instance(0, .running)]) == .instance(index: 0))
    }

    @Test("Options out of range are refused with the option's name")
    func problems() {
        func problem(_ change: (inout ChaosOptions) -> Void) -> String? {
            var options = ChaosOptions(every: .seconds(1), duration: .seconds(10), seed: 1)
            change(&options)
            return options.problem
        }
        #expect(problem { _ in } == nil)
        #expect(problem { $0.every = .milliseconds(99) } == "--every must be at least 100ms (not 99ms)")
        #expect(problem { $0.duration = .zero } == "--for must be more than 0s")
        #expect(problem { $0.duration = .seconds(86_401) } == "--for must be at most 24h (not 24h0m1s)")
        #expect(problem { $0.keep = -1 } == "--keep must be 0 or more (not -1)")
        #expect(problem { $0.redisEvery = .milliseconds(500) } == "--redis-every must be at least 1s (not 500ms)")
        #expect(problem { $0.settle = .seconds(-1) } == "--settle must be 0s or more")
    }

    @Test("The closing line counts what happened")
    func tally() {
        var tally = ChaosTally()
        #expect(tally.line(fault: .kill, elapsed: .seconds(2)) == "0 kills in 2s")
        tally.faults = 1
        tally.redisRestarts = 2
        tally.skipped = 1
        tally.refused = 1
        #expect(tally.line(fault: .restart, elapsed: .seconds(90)) == "1 restart, 2 Redis restarts, 1 skipped, 1 refused by the cluster in 1m30s")
    }

    @Test("Ready again only once the killed process is gone from the status, not while the cluster has yet to notice")
    func readyOnlyAfterTheExitIsSeen() async throws {
        func status(pid: Int32) -> ClusterStatus {
            ClusterStatus(
                app: "web", command: "app", ready: true, desiredInstances: 1, affinity: "cf", restartPolicy: "diego", timeScale: 1,
                proxy: .init(state: "running"), redis: .init(state: "running"),
                instances: [ClusterStatus.Instance(index: 0, pid: pid, state: .running)])
        }
        // The status before the fault, one right after the SIGKILL (still listing pid 10, as a
        // supervisor that has not reaped it yet does), then the restarted instance.
        let statuses = Mutex([status(pid: 10), status(pid: 10), status(pid: 10), status(pid: 11)])
        let requests = Mutex<[ControlRequest.Command]>([])
        let lines = Mutex<[String]>([])
        let options = ChaosOptions(every: .milliseconds(100), duration: .milliseconds(100), keep: 0, settle: .seconds(5), seed: 3)
        let outcome = try await ChaosRun.run(
            options: options,
            send: { request in
                requests.withLock { $0.append(request.command) }
                if request.command == .status {
                    return ControlResponse(ok: true, status: statuses.withLock { $0.count > 1 ? $0.removeFirst() : $0[0] })
                }
                return .success("web.0 (pid 10) killed with SIGKILL")
            },
            print: { line in lines.withLock { $0.append(line) } })
        #expect(outcome == .ready)
        #expect(requests.withLock { $0 } == [.status, .status, .kill, .status, .status])
        let printed = lines.withLock { $0 }
        #expect(printed.count == 4)
        #expect(printed[1].hasSuffix("chaos | web.0 (pid 10) killed with SIGKILL"))
        #expect(printed[2].contains("chaos | done: 1 kill in "))
        #expect(printed[3].contains("chaos | ready again after ") && printed[3].hasSuffix(": 1/1 running"))
    }
}
