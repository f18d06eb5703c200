import Foundation
import Synchronization
import Testing

@testable import Supervisor

@Suite("cluster chaos: schedule, choices, options")
struct ChaosTests {
    func instance(_ index: Int, _ state: InstanceLifecycle.State) -> ClusterStatus.Instance {
        ClusterStatus.Instance(index: index, state: state)
    }

    /// The instances `picker` hits in 100 draws (a skip is recorded as an issue).
    func picked(by picker: inout ChaosPicker, among instances: [ClusterStatus.Instance]) -> Set<Int> {
        var picked: Set<Int> = []
        for _ in 0..<100 {
            guard case .instance(let index, _) = picker.choose(among: instances) else {
                Issue.record("no instance picked")
                return picked
            }
            picked.insert(index)
        }
        return picked
    }

    @Test("Faults every interval up to the end included, Redis faults between them in time order")
    func schedule() {
        var schedule = ChaosSchedule(ChaosOptions(every: .milliseconds(400), duration: .seconds(2), redisEvery: .seconds(1), seed: 1))
        var events: [(Duration, ChaosSchedule.Event)] = []
        while let next = schedule.next() { events.append((next.at, next.event)) }
        #expect(events.map(\.0) == [400, 800, 1_000, 1_200, 1_600, 2_000, 2_000].map { Duration.milliseconds($0) })
        #expect(
            events.map(\.1) == [.instanceFault, .instanceFault, .redisFault, .instanceFault, .instanceFault, .instanceFault, .redisFault])
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
            guard case .instance(let index, .kill) = choice else {
                Issue.record("no instance picked: \(choice)")
                return
            }
            picked.insert(index)
        }
        #expect(picked == [0, 2, 4])  // every running one, in time; never a crashed or starting one
        var keeping = ChaosPicker(keep: 3, seed: 7)
        #expect(keeping.choose(among: instances) == .skip("3 of 5 instances serving, and --keep 3 leaves them alone"))
        var none = ChaosPicker(keep: 0, seed: 7)
        #expect(none.choose(among: []) == .skip("no instances, and --keep 0 leaves them alone"))
        #expect(none.choose(among: [instance(0, .running)]) == .instance(index: 0, fault: .kill))
    }

    @Test("A frozen instance is neither picked nor counted as running for --keep")
    func frozenInstancesAreLeftAlone() {
        var frozen = instance(1, .running)
        frozen.frozenSeconds = 3
        let instances = [instance(0, .running), frozen, instance(2, .running)]
        var picker = ChaosPicker(keep: 1, seed: 11)
        #expect(picked(by: &picker, among: instances) == [0, 2])
        var keeping = ChaosPicker(keep: 2, seed: 11)
        #expect(keeping.choose(among: instances) == .skip("2 of 3 instances serving (and 1 frozen), and --keep 2 leaves them alone"))
    }

    @Test("An instance out of the route pool (its readiness check fails) is neither picked nor counted as serving")
    func unroutableInstancesAreLeftAlone() {
        // --keep 1 with one routable instance: killing it would leave the app with none (404 everywhere).
        var notReady = instance(0, .running)
        notReady.routable = false
        var routable = instance(1, .running)
        routable.routable = true
        var picker = ChaosPicker(keep: 1, seed: 3)
        #expect(picker.choose(among: [notReady, routable]) == .skip("1 of 2 instances serving (and 1 not routable), and --keep 1 leaves them alone"))
        var keepNone = ChaosPicker(keep: 0, seed: 3)
        for _ in 0..<20 { #expect(keepNone.choose(among: [notReady, routable]) == .instance(index: 1, fault: .kill)) }
    }

    @Test("An instance cut off from Redis (a cut or hung link) is neither picked again nor counted as serving; a slow link still serves")
    func instancesCutOffFromRedisAreLeftAlone() {
        var cut = instance(0, .running)
        cut.redisLink = .init(fault: .cut, remainingSeconds: 4)
        var hung = instance(1, .running)
        hung.redisLink = .init(fault: .hang, remainingSeconds: 2)
        var slow = instance(2, .running)
        slow.redisLink = .init(fault: .slow(latency: .milliseconds(200), jitter: .zero), remainingSeconds: 50)
        let instances = [cut, hung, slow, instance(3, .running)]
        var picker = ChaosPicker(keep: 1, faults: [.kill, .redisCut, .redisHang], seed: 13)
        #expect(picked(by: &picker, among: instances) == [2, 3])
        var keeping = ChaosPicker(keep: 2, seed: 13)
        #expect(keeping.choose(among: instances) == .skip("2 of 4 instances serving (and 2 cut off from Redis), and --keep 2 leaves them alone"))
    }

    @Test("With several faults each is drawn in time, from the seed; with one, the instances drawn are the same whatever the fault")
    func faultsAtRandom() {
        let instances = (0..<4).map { instance($0, .running) }
        var mixed = ChaosPicker(keep: 0, faults: [.kill, .freeze, .restart], seed: 5)
        var again = ChaosPicker(keep: 0, faults: [.kill, .freeze, .restart], seed: 5)
        var drawn: Set<String> = []
        for _ in 0..<200 {
            let choice = mixed.choose(among: instances)
            #expect(choice == again.choose(among: instances))
            if case .instance(_, let fault) = choice { drawn.insert(fault.rawValue) }
        }
        #expect(drawn == ["kill", "freeze", "restart"])
        var kills = ChaosPicker(keep: 0, faults: [.kill], seed: 9)
        var freezes = ChaosPicker(keep: 0, faults: [.freeze], seed: 9)
        for _ in 0..<50 {
            guard case .instance(let killed, .kill) = kills.choose(among: instances),
                case .instance(let frozen, .freeze) = freezes.choose(among: instances)
            else {
                Issue.record("a fault other than the only one given")
                return
            }
            #expect(killed == frozen)
        }
    }

    @Test("--fault takes one or several faults, comma-separated, each once")
    func faultList() {
        #expect(ChaosOptions.faults("kill") == [.kill])
        #expect(ChaosOptions.faults("freeze,kill, freeze") == [.freeze, .kill])
        #expect(ChaosOptions.faults("KILL,Restart") == [.kill, .restart])
        #expect(ChaosOptions.faults("kill,nuke") == nil)
        #expect(ChaosOptions.faults("kill,") == nil)
        #expect(ChaosOptions.faults("") == nil)
    }

    @Test("The first line says what each fault does, for how long a freeze lasts, and what happens to Redis")
    func summary() {
        let options = ChaosOptions(
            every: .seconds(2), duration: .seconds(20), faults: [.kill, .freeze], freezeFor: .milliseconds(1500), keep: 2,
            redisEvery: .seconds(5), redisFault: .freeze, seed: 4)
        #expect(
            options.summary
                == "every 2s for 20s: kill (SIGKILL) or freeze (SIGSTOP for 1.5s, then SIGCONT) one running instance at random, the fault at random too,"
                + " leaving at least 2 running; freeze Redis for 1.5s every 5s; seed 4 (--seed 4 picks the same instances again, given the same states)"
        )
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
        #expect(problem { $0.maxServerErrors = -1 } == "--max-5xx must be 0 or more (not -1)")
        #expect(problem { $0.maxServerErrors = 0 } == nil)
        // A run with no fault in it passed, testing nothing.
        #expect(
            problem { $0.every = .seconds(20) }
                == "--for 10s ends before the first fault (at 20s): nothing would happen; make --for longer or --every shorter")
        #expect(
            problem {
                $0.every = .seconds(20); $0.redisEvery = .seconds(5)
            } == nil)
        #expect(problem { $0.faults = [] } == "--fault needs one or more of kill, restart, freeze, redis-cut, redis-hang")
        // --freeze-for is checked only when something freezes.
        #expect(problem { $0.freezeFor = .zero } == nil)
        #expect(
            problem {
                $0.faults = [.freeze]; $0.freezeFor = .milliseconds(50)
            } == "--freeze-for must be from 100ms to 10m (not 50ms)")
        #expect(
            problem {
                $0.faults = [.kill, .freeze]; $0.freezeFor = .seconds(601)
            } == "--freeze-for must be from 100ms to 10m (not 10m1s)")
        #expect(
            problem {
                $0.redisEvery = .seconds(5)
                $0.redisFault = .freeze
                $0.freezeFor = .seconds(5)
            }
                == "--freeze-for (5s) must be shorter than --redis-every (5s) with --redis-fault freeze: Redis would still be frozen at the next freeze"
        )
        #expect(
            problem {
                $0.redisEvery = .seconds(5); $0.freezeFor = .seconds(9)
            } == nil)  // Redis restarts, instances are killed
    }

    @Test("The closing line counts what happened")
    func tally() {
        var tally = ChaosTally()
        let kill = ChaosOptions(every: .seconds(1), duration: .seconds(2), seed: 1)
        #expect(tally.line(options: kill, elapsed: .seconds(2)) == "0 kills in 2s")
        tally.faults = [.restart: 1]
        tally.redisFaults = 2
        tally.skipped = 1
        tally.refused = 1
        var restart = kill
        restart.faults = [.restart]
        restart.redisEvery = .seconds(1)
        #expect(tally.line(options: restart, elapsed: .seconds(90)) == "1 restart, 2 Redis restarts, 1 skipped, 1 refused by the cluster in 1m30s")
        var mixed = restart
        mixed.faults = [.freeze, .restart, .kill]
        mixed.redisFault = .freeze
        tally.faults[.freeze] = 3
        tally.redisFaults = 1
        #expect(
            tally.line(options: mixed, elapsed: .seconds(4))
                == "3 freezes, 1 restart, 0 kills, 1 Redis freeze, 1 skipped, 1 refused by the cluster in 4s")
    }

    /// A cluster's status with running instances of these pids.
    func status(ready: Bool = true, pids: [Int32], traffic: ProxyTraffic? = nil) -> ClusterStatus {
        ClusterStatus(
            app: "web", command: "app", ready: ready, desiredInstances: pids.count, affinity: "cf", restartPolicy: "diego", timeScale: 1,
            proxy: .init(state: "running"), redis: .init(state: "running"),
            instances: pids.enumerated().map { ClusterStatus.Instance(index: $0.offset, pid: $0.element, state: .running) },
            proxyTraffic: traffic)
    }

    @Test("What clients got through the proxy during the run, and --max-5xx")
    func trafficDuringTheRun() async throws {
        let before = ProxyTraffic(responses: ["2xx": 100], decisions: ["sticky_hit": 100])
        let after = ProxyTraffic(
            responses: ["2xx": 190, "5xx": 4], routerErrors: ["endpoint_failure": 3, "unknown_route": 0],
            decisions: ["sticky_hit": 150, "fallback_instance_gone": 44], retries: 2)
        func statuses() -> [ClusterStatus] {
            [status(pids: [10], traffic: before), status(pids: [10], traffic: before), status(pids: [11], traffic: after)]
        }
        var options = ChaosOptions(every: .milliseconds(100), duration: .milliseconds(100), keep: 0, settle: .seconds(5), seed: 3)
        let (calm, requests, printed) = try await run(options, statuses: statuses(), answer: { _ in "web.0 (pid 10) killed with SIGKILL" })
        #expect(calm == .ready)
        // The first and the last status are read fresh from the proxy.
        #expect(requests.first?.fresh == true && requests.last?.fresh == true && requests[1].fresh == nil)
        #expect(
            printed.last?.hasSuffix(
                "chaos | through the proxy meanwhile: 94 responses (2xx 90, 5xx 4); router errors: endpoint_failure 3; "
                    + "2 retried on another instance; routing: fallback_instance_gone 44, sticky_hit 50") == true)
        options.maxServerErrors = 4
        #expect(try await run(options, statuses: statuses(), answer: { _ in "killed" }).0 == .ready)
        options.maxServerErrors = 3
        let (failed, _, lines) = try await run(options, statuses: statuses(), answer: { _ in "killed" })
        #expect(failed == .tooManyServerErrors)
        #expect(lines.last?.hasSuffix("chaos | FAILED: 4 responses were 5xx (3 from the router: endpoint_failure 3), more than --max-5xx 3") == true)
        // The router's 4xx (unknown_route, a 404) are not among its 5xx.
        let fourOhFours = ProxyTraffic(responses: ["4xx": 9, "5xx": 2], routerErrors: ["unknown_route": 9])
        #expect(options.failure(traffic: fourOhFours) == nil)
        options.maxServerErrors = 1
        #expect(options.failure(traffic: fourOhFours) == "FAILED: 2 responses were 5xx (all from the app), more than --max-5xx 1")
        // Without a proxy there is nothing to count: --max-5xx is refused before any fault.
        await #expect(throws: ChaosRun.Failure.self) {
            _ = try await run(options, statuses: [status(pids: [10])], answer: { _ in "killed" })
        }
    }

    @Test("--report: the faults, the time to be ready again, the proxy's traffic and the failures, as JSON with snake_case keys")
    func report() async throws {
        let before = ProxyTraffic(responses: ["2xx": 100])
        let after = ProxyTraffic(responses: ["2xx": 190, "5xx": 4], routerErrors: ["endpoint_failure": 3], retries: 2)
        let statuses = Mutex([status(pids: [10], traffic: before), status(pids: [10], traffic: before), status(pids: [11], traffic: after)])
        let reports = Mutex<[ChaosReport]>([])
        let options = ChaosOptions(
            every: .milliseconds(100), duration: .milliseconds(100), keep: 0, settle: .seconds(5), seed: 3, maxServerErrors: 3)
        let outcome = try await ChaosRun.run(
            options: options,
            send: { request in
                if request.command == .status {
                    return ControlResponse(ok: true, status: statuses.withLock { $0.count > 1 ? $0.removeFirst() : $0[0] })
                }
                return .success("web.0 (pid 10) killed with SIGKILL")
            },
            print: { _ in }, report: { report in reports.withLock { $0.append(report) } })
        #expect(outcome == .tooManyServerErrors)
        let sent = reports.withLock { $0 }
        #expect(sent.count == 1)
        let report = try #require(sent.first)
        #expect(report.outcome == "too-many-5xx" && report.seed == 3)
        #expect(report.faults == ["kill": 1] && report.redisFaults == 0 && report.skipped == 0 && report.refused == 0)
        #expect(report.faultSeconds >= 0.1 && report.faultSeconds < 5)
        #expect(report.readyAgainSeconds.map { $0 >= 0 && $0 < 5 } == true)
        #expect(report.proxyTraffic == after.since(before))
        #expect(report.users == nil)
        #expect(report.failures == ["FAILED: 4 responses were 5xx (3 from the router: endpoint_failure 3), more than --max-5xx 3"])
        let json = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        for key in ["\"ready_again_seconds\"", "\"fault_seconds\"", "\"proxy_traffic\"", "\"router_errors\"", "\"redis_faults\""] {
            #expect(json.contains(key), "\(key) in \(json)")
        }
        #expect(try JSONDecoder().decode(ChaosReport.self, from: Data(json.utf8)) == report)
        // The users' part: counts by name, response times in milliseconds.
        var tally = VirtualUsersTally()
        tally.record([.answered(200), .sessionStarted, .took(.milliseconds(12))], of: "user-1")
        tally.record([.answered(200), .moved(from: "a", to: "b"), .sessionLost(.loggedOut), .took(.milliseconds(1_500))], of: "user-1")
        tally.record([.noAnswer("connection refused")], of: "user-2")
        let users = ChaosReport.Users(options: VirtualUsersOptions(count: 2), tally: tally)
        #expect(users.count == 2 && users.requests == 3 && users.answers == ["2xx": 2] && users.noAnswer == ["connection refused": 1])
        #expect(users.sessionsStarted == 1 && users.usersMoved == 1 && users.moves == 1 && users.sessionsLost == 1)
        #expect(users.losses == ["logged_out": 1] && users.usersWithLosses == 1)
        #expect(users.responseTimes == ChaosReport.Times(count: 2, p50Ms: 12, p99Ms: 1_500, longestMs: 1_500, oneSecondOrMore: 1))
    }

    @Test("Interrupted, it still says what clients got through the proxy until then")
    func trafficWhenInterrupted() async throws {
        let before = ProxyTraffic(responses: ["2xx": 100])
        let after = ProxyTraffic(responses: ["2xx": 130, "5xx": 1], routerErrors: ["endpoint_failure": 1])
        let options = ChaosOptions(every: .milliseconds(100), duration: .seconds(60), keep: 0, settle: .seconds(5), seed: 3)
        let lines = Mutex<[String]>([])
        let statuses = Mutex([status(pids: [10], traffic: before)])
        let (killed, kill) = AsyncStream<Void>.makeStream()
        let chaos = Task {
            try await ChaosRun.run(
                options: options,
                send: { request in
                    // As the real control client, whose channel ends when its task is cancelled.
                    try Task.checkCancellation()
                    if request.command == .status {
                        // The traffic before the run until the first kill, then the later traffic.
                        return ControlResponse(ok: true, status: statuses.withLock { $0.count > 1 ? $0.removeFirst() : $0[0] })
                    }
                    statuses.withLock { $0 = [self.status(pids: [10], traffic: after)] }
                    kill.yield()
                    return .success("web.0 (pid 10) killed with SIGKILL")
                },
                print: { line in lines.withLock { $0.append(line) } })
        }
        // Interrupted once the first kill was sent.
        for await _ in killed { break }
        chaos.cancel()
        #expect(try await chaos.value == .interrupted)
        let printed = lines.withLock { $0 }
        #expect(printed.contains { $0.contains("chaos | interrupted: ") }, "\(printed)")
        #expect(
            printed.last?.hasSuffix(
                "chaos | through the proxy until interrupted: 31 responses (2xx 30, 5xx 1); router errors: endpoint_failure 1; "
                    + "0 retried on another instance") == true,
            "\(printed)")
    }

    /// A chaos run against a fake cluster: each status request gets the next of `statuses` (the last
    /// one again at the end), any other request `answer`. Returns the outcome, the requests sent and
    /// the lines printed.
    func run(
        _ options: ChaosOptions, statuses: [ClusterStatus], answer: @escaping @Sendable (ControlRequest) -> String
    ) async throws -> (
        ChaosRun.Outcome, [ControlRequest], [String]
    ) {
        let statuses = Mutex(statuses)
        let requests = Mutex<[ControlRequest]>([])
        let lines = Mutex<[String]>([])
        let outcome = try await ChaosRun.run(
            options: options,
            send: { request in
                requests.withLock { $0.append(request) }
                if request.command == .status {
                    return ControlResponse(ok: true, status: statuses.withLock { $0.count > 1 ? $0.removeFirst() : $0[0] })
                }
                return .success(answer(request))
            },
            print: { line in lines.withLock { $0.append(line) } })
        return (outcome, requests.withLock { $0 }, lines.withLock { $0 })
    }

    @Test("Ready again only once the killed process is gone from the status, not while the cluster has yet to notice")
    func readyOnlyAfterTheExitIsSeen() async throws {
        // The status before the fault, one right after the SIGKILL (still listing pid 10, as a
        // supervisor that has not reaped it yet does), then the restarted instance.
        let options = ChaosOptions(every: .milliseconds(100), duration: .milliseconds(100), keep: 0, settle: .seconds(5), seed: 3)
        let (outcome, requests, printed) = try await run(
            options, statuses: [status(pids: [10]), status(pids: [10]), status(pids: [10]), status(pids: [11])],
            answer: { _ in "web.0 (pid 10) killed with SIGKILL" })
        #expect(outcome == .ready)
        #expect(requests.map(\.command) == [.status, .status, .kill, .status, .status])
        #expect(printed.count == 4)
        #expect(printed[1].hasSuffix("chaos | web.0 (pid 10) killed with SIGKILL"))
        #expect(printed[2].contains("chaos | done: 1 kill in "))
        #expect(printed[3].contains("chaos | ready again after ") && printed[3].hasSuffix(": 1/1 running"))
    }

    @Test("A freeze asks for its length, is not waited out of the status like a kill, and the run waits for the cluster to be ready again")
    func freezesAreSentWithTheirLength() async throws {
        // Before the run, at the fault, then twice not ready (frozen), then ready with the same processes.
        let pids: [Int32] = [10, 11]
        let options = ChaosOptions(
            every: .seconds(1), duration: .seconds(1), faults: [.freeze], freezeFor: .milliseconds(300), keep: 0, redisEvery: .seconds(1),
            redisFault: .freeze, settle: .seconds(5), seed: 3)
        let (outcome, requests, printed) = try await run(
            options,
            statuses: [
                status(pids: pids), status(pids: pids), status(ready: false, pids: pids), status(ready: false, pids: pids),
                status(pids: pids),
            ],
            answer: { request in request.command == .redis ? "redis frozen for 300ms" : "web.\(request.index ?? -1) frozen for 300ms" })
        #expect(outcome == .ready)
        let sent = requests.filter { $0.command != .status }
        #expect(sent.count == 2)
        #expect(sent.first?.command == .freeze && sent.first?.duration == "300ms")
        #expect(sent.last == ControlRequest(command: .redis, action: "freeze", duration: "300ms"))
        #expect(requests.filter { $0.command == .status }.count == 5)
        #expect(printed.contains { $0.hasSuffix("chaos | redis freeze: redis frozen for 300ms") })
        #expect(printed.contains { $0.contains("chaos | done: 1 freeze, 1 Redis freeze in ") })
        #expect(printed.last?.hasSuffix(": 2/2 running") == true)
    }
}
