import CloudFoundry
import Foundation

/// A rolling restart as Cloud Foundry's rolling strategy does it: for each index, a replacement
/// starts while the old process keeps serving, and the old process is stopped once the replacement
/// is routable (`Retirement` decides; this carries it out).
extension ClusterSupervisor {
    /// The old process of `index` in the log: `web.0 (old, pid 4711)`.
    func oldName(_ index: Int) -> String {
        "\(name(index)) (old\(retirements[index]?.pid.map { ", pid \($0)" } ?? ""))"
    }

    /// Starts a replacement for a running instance and keeps its process serving as a retirement.
    /// False when the instance is not running (nothing to keep serving) or its previous old process is
    /// still there: the caller restarts it as before.
    func replace(_ index: Int) -> Bool {
        guard slots[index] != nil, retirements[index] == nil else { return false }
        // A frozen process would only see the later SIGTERM once resumed.
        resumeInstance(index, because: "so that it can be replaced")
        guard let replaced = slots[index]?.lifecycle.replace(now: now), let old = slots[index] else { return false }
        retirements[index] = Retiring(machine: replaced.retirement, pid: old.pid, registration: old.registration)
        slots[index]?.healthTask?.cancel()
        slots[index]?.healthTask = nil
        slots[index]?.registration = nil
        slots[index]?.routable = false
        slots[index]?.pid = nil
        event(
            "\(name(index)) rolling restart: a replacement starts with a new guid; the old process (pid \(old.pid.map(String.init) ?? "-"), "
                + "guid \(replaced.retirement.guid?.value ?? "-")) keeps serving until the replacement is routable",
            index: index)
        perform(replaced.actions, index: index)
        return true
    }

    /// Stops the old process of `index`, if one is serving: its replacement is routable (`replaced`),
    /// or the index is stopped or removed, or the cluster stops.
    func stopRetiring(_ index: Int, replaced: Bool) {
        guard retirements[index] != nil else { return }
        let grace = config.stopGracePeriod
        let time = now
        applyRetirement(index) { $0.stop(now: time, gracePeriod: grace, replaced: replaced) }
    }

    func retiredProcessEnded(index: Int, outcome: ChildProcess.Outcome) {
        let status: InstanceLifecycle.ExitStatus
        switch outcome {
        case .exited(let exit): status = exit
        case .failedToStart: status = .exited(127)
        }
        applyRetirement(index) { $0.exited(status: status) }
    }

    func retirementKillDeadline(index: Int, run: Int) {
        guard retirements[index]?.machine.run == run else { return }
        let grace = config.stopGracePeriod
        applyRetirement(index) { $0.killDeadline(gracePeriod: grace) }
    }

    func applyRetirement(_ index: Int, _ change: (inout Retirement) -> [Retirement.Action]) {
        guard retirements[index] != nil else { return }
        let actions = change(&retirements[index]!.machine)
        for action in actions {
            switch action {
            case .signal(let signal):
                if let pid = retirements[index]?.pid { ProcessGroup.signal(pid, signal) }
            case .scheduleKill(let time):
                let run = retirements[index]?.machine.run ?? 0
                let deadline = instant(time)
                retirements[index]?.timerTask?.cancel()
                retirements[index]?.timerTask = Task {
                    guard (try? await Task.sleep(until: deadline, clock: .continuous)) != nil else { return }
                    self.retirementKillDeadline(index: index, run: run)
                }
            case .cancelTimer:
                retirements[index]?.timerTask?.cancel()
                retirements[index]?.timerTask = nil
            case .unregister:
                guard let registration = retirements[index]?.registration else { continue }
                retirements[index]?.registration = nil
                guard proxyAdmin != nil, proxy.ready else { continue }
                enqueue(.unregister(registration, source: oldName(index), index: index))
            case .event(let retirementEvent):
                describe(retirementEvent, index: index)
            }
        }
        if retirements[index]?.machine.state == .exited { retirements[index] = nil }
    }

    func describe(_ retirementEvent: Retirement.Event, index: Int) {
        let who = oldName(index)
        switch retirementEvent {
        case .stopping(let grace, let replaced):
            let why = replaced ? "its replacement is routable" : "the instance is stopping"
            event("\(who) stopping (\(why)): SIGTERM to its process group, SIGKILL after \(DurationText.format(grace))", index: index)
        case .killedAfterGracePeriod(let grace):
            event("\(who) still running \(DurationText.format(grace)) after SIGTERM: SIGKILL", index: index)
        case .exited(let status):
            event("\(who) stopped (\(status))", index: index)
        }
    }
}
