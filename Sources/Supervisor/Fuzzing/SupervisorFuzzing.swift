import CloudFoundry
import Foundation
import RedisClient
import Yams

/// Entry points for coverage-guided fuzzing (`make fuzz`, docs/fuzzing.md) and for replaying its
/// corpus in the tests (FuzzCorpusTests): what a user writes in a cluster config or sends to a
/// running cluster's control socket. Each must return without crashing: a crash in `cluster up` is a
/// crash at start, and a crash in the running supervisor takes every instance, the proxy and Redis
/// with it. A violated property stops the process with `preconditionFailure`.
package enum SupervisorFuzzing {
    /// A cluster config file: parsed and checked; when valid, turned into what the cluster starts
    /// from (each instance's environment and route registration, the health checks' times, the
    /// restart policy's waits, the Redis URL).
    package static func clusterConfig(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        let config: ClusterConfig
        do {
            config = try ClusterConfig.parse(yaml: text)
            try config.validate()
        } catch {
            // A wrong value is named by the key the file has it under, so that the user finds it.
            if case .invalidValue(let key, _, _) = error, let root = try? Yams.compose(yaml: text) {
                precondition(value(at: key[...], in: root) != nil, "an error names \(key), which the file does not have: \(error)")
            }
            return
        }
        let launch = InstanceLaunch(
            appName: config.app.name, appGUID: "6e5a3b1c-0000-4000-8000-000000000001", version: "run", routes: config.app.routes,
            memoryMB: config.app.memoryMB, redisURL: config.redis.url ?? "redis://127.0.0.1:6379",
            redisBinding: .redis(host: "127.0.0.1", port: 6379, password: nil), sessionSecret: config.app.sessionSecret ?? "secret",
            runID: "run", binDirectory: "/bin", baseEnvironment: ["PATH": "/usr/bin"], extraEnvironment: config.app.environment)
        let guid = InstanceGUID("0a1b2c3d-0000-4000-8000-0000")!
        for index in 0..<min(config.app.instances, 2) {
            let environment = launch.environment(index: index, guid: guid, port: 61_000 + index)
            precondition(environment["CF_INSTANCE_INDEX"] == "\(index)", "an instance's environment does not say its index")
            _ = launch.registration(index: index, guid: guid, port: 61_000 + index).json()
        }
        _ = launch.helperEnvironment()
        let schedule = HealthCheckSchedule(config.healthCheck)
        _ = schedule.nextStartup(spawnedAt: .seconds(5), after: .seconds(6))
        _ = schedule.nextLiveness(after: .seconds(70))
        let policy = config.restart
        var history = RestartPolicy.CrashHistory()
        for crash in 0..<12 {
            history = policy.recordCrash(history, lived: .seconds(1), healthyFor: crash.isMultiple(of: 3) ? .seconds(400) : nil)
            _ = policy.decision(after: history, crashedAt: .seconds(crash * 10))
        }
        _ = policy.convergenceTick
        if let url = config.redis.url { _ = try? RedisConfiguration(url: url) }
        for duration in [config.healthCheck.startupTimeout, config.healthCheck.livenessInterval, config.stopGracePeriod] {
            _ = (DurationText.format(duration), DurationText.short(duration))
        }
    }

    /// The YAML value under a key as errors write it (`app.routes[1]`, `app.env.A.B` for a name with
    /// dots), nil when there is none.
    static func value(at key: Substring, in node: Node) -> Node? {
        if key.isEmpty { return node }
        if key.first == "[" {
            guard let close = key.firstIndex(of: "]"), let index = Int(key[key.index(after: key.startIndex)..<close]),
                let sequence = node.sequence, sequence.indices.contains(index)
            else { return nil }
            let rest = key[key.index(after: close)...]
            return value(at: rest.first == "." ? rest.dropFirst() : rest, in: sequence[index])
        }
        for (name, child) in node.mapping ?? [:] {
            guard let name = name.string, key.hasPrefix(name) else { continue }
            let rest = key.dropFirst(name.count)
            guard rest.isEmpty || rest.first == "." || rest.first == "[" else { continue }
            if let found = value(at: rest.first == "." ? rest.dropFirst() : rest, in: child) { return found }
        }
        return nil
    }

    /// One line sent to the control socket (by `cluster`, or by anyone who can reach the socket):
    /// decoded as the supervisor decodes it, then the decisions it takes on the values before
    /// touching any process: the scale target, the freeze length, the durations.
    package static func controlRequest(_ data: UnsafeRawBufferPointer) {
        guard let request = try? JSONDecoder().decode(ControlRequest.self, from: Data(data)) else { return }
        for current in [0, 1, 3, ClusterConfig.maximumInstances] {
            guard case .success(let target) = ScaleRequest.decide(request.scale, current: current) else { continue }
            precondition((0...ClusterConfig.maximumInstances).contains(target), "a scale target beyond the limit was accepted")
            let plan = ScalePlan(current: Array(0..<current), target: target)
            precondition(current + plan.add.count - plan.remove.count == target, "a scale plan does not reach its target")
        }
        if let text = request.duration {
            if let duration = ClusterSupervisor.freezeDuration(text) {
                precondition(ControlRequest.freezeRange.contains(duration), "a freeze length out of range was accepted")
            }
            if let duration = DurationText.parse(text) {
                let again = DurationText.parse(DurationText.format(duration))
                precondition(
                    again.map { ($0 - duration) < .milliseconds(1) && (duration - $0) < .milliseconds(1) } ?? false,
                    "a duration does not read back: \(text)")
                _ = DurationText.short(duration)
            }
        }
        guard let encoded = try? JSONEncoder().encode(request), let again = try? JSONDecoder().decode(ControlRequest.self, from: encoded) else {
            preconditionFailure("a decoded control request does not encode and decode again")
        }
        precondition(again == request, "a control request reads back as another")
    }
}
