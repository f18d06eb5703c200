import CloudFoundry

/// The old process of an instance index that a rolling restart replaces, as Cloud Foundry's rolling
/// strategy (`cf restart --strategy rolling`) does: the replacement starts first, and the old process
/// keeps serving, in the route pool, until the replacement is routable. Then it is stopped like any
/// instance (SIGTERM to its group, SIGKILL after the grace period), and it leaves the route pool only
/// once it has exited. A value with pure methods, like `InstanceLifecycle`: each event returns the
/// actions the supervisor carries out.
public struct Retirement: Sendable, Equatable {
    public enum State: String, Sendable, Equatable, Codable {
        /// Still serving: its replacement is not routable yet.
        case serving
        /// SIGTERM sent; waiting for the exit.
        case stopping
        /// Gone: nothing more to do.
        case exited
    }

    public enum Event: Sendable, Equatable {
        /// The replacement is routable (or the index is being stopped): the old process stops.
        case stopping(gracePeriod: Duration, replaced: Bool)
        case killedAfterGracePeriod(Duration)
        case exited(InstanceLifecycle.ExitStatus)
    }

    public enum Action: Sendable, Equatable {
        /// To the old process's whole group.
        case signal(Int32)
        case scheduleKill(at: Duration)
        case cancelTimer
        /// Take the old process's route registration out of the proxy.
        case unregister
        case event(Event)
    }

    public let index: Int
    /// The run and GUID of the old process.
    public let run: Int
    public let guid: InstanceGUID?
    /// Whether the old process is in the route pool (it was not when a readiness check failed).
    public private(set) var registered: Bool
    public private(set) var state = State.serving

    public init(index: Int, run: Int, guid: InstanceGUID?, registered: Bool) {
        self.index = index
        self.run = run
        self.guid = guid
        self.registered = registered
    }

    /// The replacement is routable (`replaced`), or the index is stopped, removed or the cluster shuts
    /// down: SIGTERM, SIGKILL after the grace period (at once with no grace period).
    public mutating func stop(now: Duration, gracePeriod: Duration, replaced: Bool) -> [Action] {
        guard state == .serving else { return [] }
        state = .stopping
        let event = Action.event(.stopping(gracePeriod: gracePeriod, replaced: replaced))
        if gracePeriod <= .zero { return [event, .signal(9)] }
        return [event, .signal(15), .scheduleKill(at: now + gracePeriod)]
    }

    /// The grace period ran out.
    public mutating func killDeadline(gracePeriod: Duration) -> [Action] {
        guard state == .stopping else { return [] }
        return [.event(.killedAfterGracePeriod(gracePeriod)), .signal(9)]
    }

    /// The old process exited, whether stopped or by itself: out of the route pool now (Cloud Foundry
    /// unregisters a stopped instance only after its exit).
    public mutating func exited(status: InstanceLifecycle.ExitStatus) -> [Action] {
        guard state != .exited else { return [] }
        state = .exited
        var actions: [Action] = [.cancelTimer]
        if registered {
            registered = false
            actions.append(.unregister)
        }
        return actions + [.event(.exited(status))]
    }
}
