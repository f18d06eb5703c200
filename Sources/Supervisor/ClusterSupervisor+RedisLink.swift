import CloudFoundry
import RedisClient

/// `cluster redis slow|hang|cut|heal`: faults on the network between instances and Redis (embedded or
/// external), carried out on each index's `RedisLinkRelay` as its `RedisLinkState` decides.
extension ClusterSupervisor {
    /// The actions `cluster redis` takes on the links, not on Redis itself.
    static let linkActions: Set<String> = ["slow", "hang", "cut", "heal"]

    /// The relay port for an instance index's next process (opening the relay at its first start), or
    /// nil to give it Redis's own address: the relay could not open.
    func redisLinkPort(for index: Int) async -> Int? {
        guard let endpoint = launch.redisEndpoint else { return nil }
        if let relay = links[index] { return relay.port }
        do {
            let relay = try await RedisLinkRelay.start(toHost: endpoint.host, port: endpoint.port) {
                Task { await self.linkUpstreamChanged(index) }
            }
            // Another start of the same index may have opened one meanwhile.
            if let existing = links[index] {
                await relay.close()
                return existing.port
            }
            links[index] = relay
            return relay.port
        } catch {
            event(
                "\(name(index)) reaches Redis directly: its relay could not open (\(error)), so `cluster redis slow|hang|cut` cannot reach it",
                index: index)
            return nil
        }
    }

    func redisLinkCommand(_ request: ControlRequest, action: String) -> ControlResponse {
        let indices: [Int]
        if let index = request.index {
            switch validate(index: index) {
            case .success(let value): indices = [value]
            case .failure(let failure): return .failure(failure.message)
            }
            guard links[index] != nil else {
                return .failure("\(name(index)) has not started yet, so it has no link to Redis to act on; try again once it runs")
            }
        } else {
            indices = slots.keys.sorted().filter { links[$0] != nil }
            guard !indices.isEmpty else { return .failure("no instance has started yet, so there is no link to Redis to act on") }
        }
        let who = Self.names(indices.map(name))
        switch action {
        case "heal":
            let healed = indices.filter { linkStates[$0]?.fault != nil }
            guard !healed.isEmpty else { return .success("nothing to heal: the link to Redis of \(who) has no fault") }
            for index in healed {
                carryOut(linkStates[index, default: RedisLinkState()].heal(), index: index)
                event("\(name(index))'s link to Redis healed on request: replies come as they are sent", index: index)
            }
            return .success("healed the link to Redis of \(Self.names(healed.map(name)))")
        case "slow":
            switch RedisLinkFault.slow(latency: request.latency, jitter: request.jitter) {
            case .success(let fault): return impose(fault, on: indices, for: request.duration ?? "1m")
            case .failure(let error): return .failure(error.description)
            }
        case "cut":
            return impose(.cut, on: indices, for: request.duration ?? "10s")
        case "hang":
            return impose(.hang, on: indices, for: request.duration ?? "10s")
        default:
            return .failure("unknown redis action '\(action)'")
        }
    }

    private func impose(_ fault: RedisLinkFault, on indices: [Int], for text: String) -> ControlResponse {
        guard let duration = Self.freezeDuration(text) else { return .failure(Self.badFreezeDuration(text)) }
        let length = DurationText.format(duration)
        let effect =
            switch fault {
            case .slow(let latency, let jitter):
                "every reply and pub/sub message from Redis reaches it \(DurationText.format(latency)) late"
                    + (jitter > .zero ? " (more or less, at random)" : "")
            case .cut: "its connections to Redis are reset and new ones are refused; Redis keeps running for the others"
            case .hang:
                "nothing gets through between it and Redis, either way: its connections stay open and its commands wait for an answer "
                    + "(or their timeout); what was sent goes on when the link heals"
            }
        for index in indices {
            carryOut(linkStates[index, default: RedisLinkState()].impose(fault, for: duration, now: now), index: index)
            event("\(name(index))'s link to Redis \(fault.summary) for \(length) on request: \(effect)", index: index)
        }
        return .success(
            "the link to Redis of \(Self.names(indices.map(name))) is \(fault.summary) for \(length); it heals by itself (or `cluster redis heal`). "
                + "Watch the instances' logs and `cluster status`")
    }

    func carryOut(_ actions: [RedisLinkState.Action], index: Int) {
        guard let relay = links[index] else { return }
        for action in actions {
            switch action {
            case .apply(let fault): relay.apply(fault)
            case .resetConnections: relay.resetConnections()
            case .scheduleEnd(let generation, let time):
                let wait = time - now
                Task {
                    try? await Task.sleep(for: wait)
                    self.linkFaultEnded(index, generation: generation)
                }
            }
        }
    }

    /// A relay's connections to Redis started failing, or work again: said once per change, since
    /// the instance's own log shows only the relay's address and a reset where Redis would refuse.
    func linkUpstreamChanged(_ index: Int) {
        guard let relay = links[index] else { return }
        let problem = relay.upstreamProblem
        // The relay tells each change, but the tasks that carry them may arrive out of order.
        guard (problem != nil) != linksCutOffFromRedis.contains(index) else { return }
        if problem != nil { linksCutOffFromRedis.insert(index) } else { linksCutOffFromRedis.remove(index) }
        let redis = launch.redisEndpoint?.endpoint ?? "?"
        if let problem {
            event(
                "\(name(index))'s link (127.0.0.1:\(relay.port)) cannot reach Redis at \(redis): \(problem); \(name(index)) sees each connection it opens there "
                    + "accepted, then reset, until Redis answers",
                index: index)
        } else {
            event("\(name(index))'s link (127.0.0.1:\(relay.port)) reaches Redis at \(redis) again", index: index)
        }
    }

    func linkFaultEnded(_ index: Int, generation: Int) {
        guard let fault = linkStates[index]?.fault else { return }
        let actions = linkStates[index, default: RedisLinkState()].expire(generation: generation)
        guard !actions.isEmpty else { return }
        carryOut(actions, index: index)
        event("\(name(index))'s link to Redis healed (it was \(fault.summary))", index: index)
    }

    /// The link's fault for `cluster status`.
    func linkStatus(_ index: Int) -> ClusterStatus.Instance.RedisLink? {
        guard let state = linkStates[index], let fault = state.fault else { return nil }
        return ClusterStatus.Instance.RedisLink(fault: fault, remainingSeconds: state.remaining(now: now)?.seconds)
    }

    /// `web.0`, `web.0 and web.1`, `web.0, web.1 and web.2`.
    static func names(_ names: [String]) -> String {
        guard names.count > 1, let last = names.last else { return names.first ?? "" }
        return names.dropLast().joined(separator: ", ") + " and " + last
    }
}
