import CloudFoundry
import Foundation
import RedisClient

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
            config = try ClusterConfig.resolve(yaml: text, path: "cluster.yml", overrides: ClusterOverrides())
        } catch {
            // A wrong value is named by the key the file has it under, and its line, so that the user
            // finds it.
            if case .invalidValueInFile(_, let line, let key, _, _) = error {
                precondition(line != nil, "an error names \(key), which the file does not have: \(error)")
            }
            if case .invalidValue = error { preconditionFailure("a refused value does not say where it was set: \(error)") }
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
        let schedule = HealthCheckSchedule(config)
        _ = schedule.nextStartup(spawnedAt: .seconds(5), after: .seconds(6))
        _ = schedule.nextLiveness(after: .seconds(70))
        _ = schedule.nextReadiness(healthyAt: .seconds(6), after: .seconds(70))
        let policy = config.restart
        var history = RestartPolicy.CrashHistory()
        for crash in 0..<12 {
            history = policy.recordCrash(history, lived: .seconds(1), healthyFor: crash.isMultiple(of: 3) ? .seconds(400) : nil)
            _ = policy.decision(after: history, crashedAt: .seconds(crash * 10))
        }
        _ = policy.convergenceTick
        if let url = config.redis.url { _ = try? RedisConfiguration(url: url) }
        for duration in [
            config.healthCheck.startupTimeout, config.healthCheck.livenessInterval, config.readinessCheck.interval, config.stopGracePeriod,
        ] {
            _ = (DurationText.format(duration), DurationText.short(duration))
        }
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

    /// A page of the app that a simulated user reads its login form's fields from (`{field:NAME}`),
    /// and the same text as a `--users-login-form`: parsed as `cluster users` parses them. Every
    /// field's value, form-encoded as the login sends it, reads back as itself and holds only what a
    /// form body may; a template keeps its text; a user given the page asks for a login next, or the
    /// page again when a field is missing.
    package static func loginPage(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        let fields = HTMLFormFields.values(in: text)
        for (_, value) in fields.prefix(16) {
            let encoded = LoginFormTemplate.formEncoded(value)
            precondition(
                encoded.utf8.allSatisfy { $0 < 0x80 && ($0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") || !"&=#; ".utf8.contains($0)) },
                "a form-encoded value holds a character a form body must not: \(encoded)")
            let decoded = encoded.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
            precondition(decoded == value, "a field's value does not read back once form-encoded: \(value)")
        }
        if let template = LoginFormTemplate(text) {
            let body = template.body(user: "user-1", fields: fields)
            if template.pageFields.isEmpty, !text.contains("{") { precondition(body == text, "a form without placeholders was changed") }
        } else {
            precondition(LoginFormTemplate.problem(text) != nil, "a refused login form does not say why")
        }
        let needed = Array(fields.keys.sorted().prefix(2)) + ["_csrf"]
        var user = VirtualUser(name: "user-1", login: "/login", check: "x", loginFields: needed)
        precondition(user.next == .loginPage, "a user whose login form needs the page's fields does not fetch the page first")
        let events = user.answered(.loginPage, status: 200, setCookies: [], body: text)
        let missing = fields["_csrf"] == nil
        precondition(user.next == (missing ? .loginPage : .logIn), "a login page with the fields (or without) leads to the wrong step")
        precondition(events.contains(.loginFieldsMissing(["_csrf"])) == missing, "a missing field is not said, or one present is")
        let options = VirtualUsersOptions(count: 1, login: "/login", loginForm: "u={user}&t={field:_csrf}")
        _ = user.request(options)
    }
}
