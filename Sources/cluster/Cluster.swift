import ArgumentParser
import CloudFoundry
import Foundation
import Supervisor
import Synchronization

/// `cluster`: runs Redis, N instances of an app and sticky-proxy the way Cloud Foundry's Diego does,
/// and controls them from another terminal. All logic lives in the Supervisor library.
@main
struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Run an app as N instances behind sticky-proxy with Redis, supervised like Cloud Foundry's Diego.",
        discussion: """
            Start with `cluster up` (Ctrl-C stops everything), then control it from another terminal in the \
            same folder: status, scale, kill, stop, start, restart, redis, chaos, users, logs, down.
            """,
        subcommands: [
            Up.self, Status.self, Scale.self, Kill.self, Stop.self, Start.self, Restart.self, Freeze.self, Redis.self, Chaos.self, Users.self,
            Logs.self,
            Down.self,
        ]
    )
}

/// Where the running cluster keeps its control socket.
struct StateOption: ParsableArguments {
    @Option(name: .long, parsing: .unconditional, help: "The state folder of the cluster (default: .state in the current folder).")
    var stateDir: String?

    var directory: StateDirectory { StateDirectory(path: stateDir) }

    /// One control request to this cluster, its (last) response: how `chaos` and `users` talk to it.
    var send: ChaosRun.Send {
        let directory = directory
        let socket = directory.controlSocket.path
        let folder = directory.url.path
        return { request in try await ControlClient.request(request, socket: socket, stateDirectory: folder) }
    }
}

/// One line on standard output, at once.
/// A line on standard output (unbuffered; a closed pipe interrupts the command as Ctrl-C would).
@Sendable func printLine(_ line: String) { ConsoleOutput.line(line) }

/// What the simulated users of `cluster chaos --users N` and `cluster users N` do.
struct UsersOptions: ParsableArguments {
    @Option(name: .long, parsing: .unconditional, help: "What each simulated user requests, over and over.")
    var usersPath = "/"
    @Option(name: .long, parsing: .unconditional, help: "The pause between two requests of one simulated user (10ms to 1m).")
    var usersEvery = "500ms"
    @Option(
        name: .long,
        parsing: .unconditional,
        help:
            "Each simulated user logs in first with a form POST of user=<its name> to this path (chat-node: /user), and again after losing its session; a redirect to it is a lost session."
    )
    var usersLogin: String?
    @Option(
        name: .long,
        parsing: .unconditional,
        help: ArgumentHelp(
            "The form the login sends, URL-encoded: {user} stands for the user's name, {field:NAME} for the login page's field NAME.",
            discussion: """
                e.g. 'email={user}%40example.com&password=secret'. With a CSRF token, fetched from the login page (a GET of the \
                --users-login path) before each login: 'username={user}&password=secret&_csrf={field:_csrf}' (Spring Security), \
                {field:csrfmiddlewaretoken} (Django), {field:authenticity_token} (Rails).
                """))
    var usersLoginForm = VirtualUsersOptions.defaultLoginForm
    @Option(
        name: .long,
        parsing: .unconditional,
        help: "Text every page of a logged-in user contains in its first MiB (chat-node: data-user=): a 2xx page without it is a lost session.")
    var usersCheck: String?
    @Option(
        name: .long, parsing: .unconditional,
        help: "The app's session cookie: a new value for it set on a page means the app did not know the session sent.")
    var usersCookie = "JSESSIONID"
    @Option(name: .long, parsing: .unconditional, help: "Exit 1 when the simulated users lost more sessions than this.")
    var maxLostSessions: Int?

    /// The options for `count` users; a ValidationError naming the option when one is wrong.
    func options(count: Int) throws -> VirtualUsersOptions {
        let options = VirtualUsersOptions(
            count: count, path: usersPath, every: try parseDuration(usersEvery, "--users-every"), login: usersLogin, loginForm: usersLoginForm,
            check: usersCheck,
            sessionCookie: usersCookie,
            maxLostSessions: maxLostSessions)
        if let problem = options.problem { throw ValidationError(problem) }
        return options
    }
}

/// A duration option's value (`500ms`, `10s`, `2m`); its range is for the options it goes into to check.
func parseDuration(_ text: String, _ option: String) throws -> Duration {
    guard let value = DurationText.parse(text) else {
        throw ValidationError(DurationText.refusal(of: text, for: option) ?? "\(option) '\(text)' is not a duration")
    }
    return value
}

extension Affinity: ExpressibleByArgument {}
extension RestartPolicy.Name: ExpressibleByArgument {}
extension HealthCheckType: ExpressibleByArgument {}
extension ChaosOptions.RedisFault: ExpressibleByArgument {}

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start Redis, the instances and the proxy; stay in the foreground, printing every log line.")

    @Option(name: .long, parsing: .unconditional, help: "The config file (default: Configs/cluster.yml when it exists).")
    var config: String?
    @Option(name: .long, parsing: .unconditional, help: "How many instances.")
    var instances: Int?
    @Option(name: .long, parsing: .unconditional, help: "The app command (any command; instances get PORT and Cloud Foundry's environment).")
    var app: String?
    @Option(
        name: .long,
        parsing: .unconditional,
        help: "The app's name: instances log as NAME.0, NAME.1 (default: the config's; 'app' for an --app other than chat-node).")
    var name: String?
    @Option(name: .long, parsing: .unconditional, help: "The proxy's port (0: a free one).")
    var port: Int?
    @Option(name: .long, parsing: .unconditional, help: "The proxy's affinity mode.")
    var affinity: Affinity?
    @Option(name: .long, parsing: .unconditional, help: "Use this Redis instead of starting one (redis://host:port).")
    var redisURL: String?
    @Option(name: .long, parsing: .unconditional, help: "The crash restart policy.")
    var restartPolicy: RestartPolicy.Name?
    @Option(name: .long, parsing: .unconditional, help: "Multiplies the restart policy's durations (0.01: a 30s back-off becomes 0.3s).")
    var timeScale: Double?
    @Option(name: .long, parsing: .unconditional, help: "The health check type.")
    var healthCheck: HealthCheckType?
    @Option(
        name: .long,
        parsing: .unconditional,
        help: "The readiness check type: while it fails, an instance is out of the route pool but keeps running (process: none).")
    var readinessCheck: HealthCheckType?
    @Flag(name: .long, help: "Run without sticky-proxy.")
    var noProxy = false
    @Flag(
        name: .long,
        help:
            "Put a second router in front of the app's, on --port: both route with __VCAP_ID__ and overwrite each other's cookie (affinity broken behind a second router)."
    )
    var frontRouter = false
    @Option(
        name: .long,
        parsing: .unconditional,
        help:
            "The front router's affinity mode (implies --front-router; default: the app router's). haproxy in front of cf: its own cookie, and __VCAP_ID__ passes through."
    )
    var frontRouterAffinity: Affinity?
    @OptionGroup var state: StateOption

    func run() async throws {
        let path = config ?? (FileManager.default.fileExists(atPath: "Configs/cluster.yml") ? "Configs/cluster.yml" : nil)
        do {
            let overrides = ClusterOverrides(
                instances: instances, appCommand: app, appName: name, port: port, affinity: affinity, redisURL: redisURL,
                restartPolicy: restartPolicy, timeScale: timeScale, stateDirectory: state.stateDir, proxyEnabled: noProxy ? false : nil,
                healthCheckType: healthCheck, readinessCheckType: readinessCheck, frontRouter: frontRouter ? true : nil,
                frontRouterAffinity: frontRouterAffinity)
            try await ClusterUp.run(config: ClusterConfig.resolve(file: path, overrides: overrides))
        } catch {
            // A flag's value is a usage error, as ArgumentParser's own are (64); a config file's is not.
            var code = ExitCode.failure
            if case ConfigError.invalidFlag = error { code = .validationFailure }
            throw code.printing("cluster: error: \(error)")
        }
    }
}

/// Sends one request to the running cluster and prints the answer; a refused request exits 1.
func control(_ request: ControlRequest, state: StateOption, print handler: ((ControlResponse) -> Void)? = nil) async throws {
    var failure: String?
    let directory = state.directory
    do {
        try await ControlClient.send(request, socket: directory.controlSocket.path, stateDirectory: directory.url.path) { response in
            if !response.ok {
                failure = response.error ?? "the cluster refused the request"
                return false
            }
            if let handler {
                handler(response)
            } else if let message = response.message {
                printLine(message)
            }
            return true
        }
    } catch ControlClient.Failure.lostConnection where request.follow == true {
        // `logs -f` ends when the cluster stops: that is not an error.
        FileHandle.standardError.write(Data("cluster: the cluster stopped\n".utf8))
        return
    } catch ControlClient.Failure.notRunning(let folder) {
        // A cluster killed with -9 cannot be asked, but what it started may still be running.
        let hint = ClusterUp.leftoversHint(directory).map { "\ncluster: \($0)" } ?? ""
        throw ExitCode.failure.printing("cluster: \(ControlClient.Failure.notRunning(stateDirectory: folder))\(hint)")
    } catch {
        throw ExitCode.failure.printing("cluster: \(error)")
    }
    if let failure { throw ExitCode.failure.printing("cluster: \(failure)") }
}

/// `--for` of `freeze` and `redis freeze`, checked before the cluster is asked (the same rule it applies).
func validateFreezeDuration(_ text: String) throws {
    if ClusterSupervisor.freezeDuration(text) == nil { throw ValidationError(ClusterSupervisor.badFreezeDuration(text)) }
}

extension ExitCode {
    /// Prints `message` to standard error and exits with this code.
    func printing(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        return self
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the instances: index, guid, pid, port, state, routable, uptime, crashes, next restart, connections, requests/s.",
        discussion: """
            With --watch, the status again every --interval until Ctrl-C, as `watch` would show it, with the \
            latest changes under the table (a crash, a new guid, an instance out of the route pool, Redis \
            stopped). It goes on while the cluster is down and shows it again once one answers. With --json, \
            one line of JSON per interval instead.
            """)
    @Flag(name: .long, help: "Print the status as JSON.")
    var json = false
    @Flag(name: .shortAndLong, help: "Show the status again every --interval, with what changed, until Ctrl-C.")
    var watch = false
    @Option(name: .long, parsing: .unconditional, help: "With --watch: how often (200ms to 1m; default: 1s).")
    var interval: String?
    @OptionGroup var state: StateOption

    func validate() throws {
        _ = try every()
        if !watch, interval != nil { throw ValidationError("--interval goes with --watch") }
    }

    func every() throws -> Duration {
        let every = try parseDuration(interval ?? "1s", "--interval")
        if let problem = StatusWatch.intervalProblem(every) { throw ValidationError(problem) }
        return every
    }

    func run() async throws {
        if watch {
            await StatusWatch.run(
                interval: try every(), json: json, redraw: isatty(STDOUT_FILENO) == 1, send: state.send,
                write: ConsoleOutput.write,
                complain: { FileHandle.standardError.write(Data(($0 + "\n").utf8)) })
            return
        }
        // Fresh counters from the proxy: what the user just did through it shows at once.
        try await control(ControlRequest(command: .status, fresh: true), state: state) { response in
            guard let status = response.status else { return }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                printLine(String(decoding: (try? encoder.encode(status)) ?? Data(), as: UTF8.self))
            } else {
                printLine(status.table())
            }
        }
    }
}

struct Scale: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the instance count: N, +k or -k (scale-down removes the highest indices first).")
    @Flag(name: .long, help: "Return once every instance is running and routable (or removed).")
    var wait = false
    @OptionGroup var state: StateOption
    // Collected after the options so that `-1` is read as a count, not as an option.
    @Argument(parsing: .allUnrecognized, help: "N, +k or -k.")
    var count: [String] = []

    func validate() throws {
        guard count.count == 1, let text = count.first else {
            throw ValidationError(
                count.isEmpty ? "give the instance count: N, +k or -k (for example 5, +2, -1)" : "give one count, not \(count.joined(separator: " "))"
            )
        }
        guard ScaleRequest(text) != nil else { throw ValidationError("'\(text)' is not a count: give N, +k or -k (for example 5, +2, -1)") }
    }

    func run() async throws {
        try await control(ControlRequest(command: .scale, scale: count.first, wait: wait), state: state)
    }
}

/// An instance index as typed. Collected as text after the options, so that `kill -1` is told what is
/// wrong with it, not "Missing expected argument" (ArgumentParser reads `-1` as an option).
enum InstanceIndexText {
    /// The index in `words`, nil when none was given; throws on anything else.
    static func parse(_ words: [String]) throws -> Int? {
        guard let word = words.first else { return nil }
        if let option = words.first(where: { $0.hasPrefix("-") && Int($0) == nil }) { throw ValidationError("Unknown option '\(option)'") }
        guard words.count == 1 else { throw ValidationError("give one instance index, not \(words.joined(separator: " "))") }
        guard let index = Int(word) else { throw ValidationError("'\(word)' is not an instance index: give 0, 1, 2, ...") }
        guard index >= 0 else { throw ValidationError("an instance index is 0 or more, not \(index)") }
        return index
    }

    /// The usage line of a command that takes an index (the generated one would show `[<index> ...]`).
    static func usage(_ command: String, index: String = "<index>", options: String) -> String {
        "cluster \(command) \(index) \(options)[--state-dir <state-dir>]"
    }
}

/// The instance index of kill, freeze, stop and start (required).
struct InstanceArgument: ParsableArguments {
    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("The instance index (0-based).", valueName: "index"))
    var words: [String] = []

    func validate() throws {
        if try InstanceIndexText.parse(words) == nil { throw ValidationError("give an instance index (0, 1, 2, ...)") }
    }

    /// The index; valid once `validate()` has passed.
    var index: Int { (try? InstanceIndexText.parse(words)) ?? 0 }
}

struct Kill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "SIGKILL one instance's process group: a crash, restarted per the restart policy.",
        usage: InstanceIndexText.usage("kill", options: ""))
    @OptionGroup var instance: InstanceArgument
    @OptionGroup var state: StateOption

    func run() async throws {
        try await control(ControlRequest(command: .kill, index: instance.index), state: state)
    }
}

struct Freeze: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Freeze one instance (SIGSTOP to its process group), and resume it (SIGCONT) after --for.",
        usage: InstanceIndexText.usage("freeze", options: "[--for <duration>] "),
        discussion: """
            A hung instance, not a crashed one: its port still accepts connections, so a port health check \
            passes and the proxy keeps routing its users to it, while nothing answers. An http health check \
            times out and Diego kills it. A stop meanwhile resumes it first, so that it can handle SIGTERM.
            """)
    @OptionGroup var instance: InstanceArgument
    @Option(name: .customLong("for"), parsing: .unconditional, help: "How long (e.g. 30s, 500ms; 100ms to 10m).")
    var duration = "30s"
    @OptionGroup var state: StateOption

    func validate() throws { try validateFreezeDuration(duration) }

    func run() async throws {
        try await control(ControlRequest(command: .freeze, index: instance.index, duration: duration), state: state)
    }
}

struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop one instance gracefully (SIGTERM, SIGKILL after the grace period).",
        usage: InstanceIndexText.usage("stop", options: "[--wait] "))
    @OptionGroup var instance: InstanceArgument
    @Flag(name: .long, help: "Return once it has exited.")
    var wait = false
    @OptionGroup var state: StateOption

    func run() async throws {
        try await control(ControlRequest(command: .stop, index: instance.index, wait: wait), state: state)
    }
}

struct Start: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a stopped or crashed instance (with a new guid and its crash count reset).",
        usage: InstanceIndexText.usage("start", options: "[--wait] "))
    @OptionGroup var instance: InstanceArgument
    @Flag(name: .long, help: "Return once it is healthy and routable.")
    var wait = false
    @OptionGroup var state: StateOption

    func run() async throws {
        try await control(ControlRequest(command: .start, index: instance.index, wait: wait), state: state)
    }
}

struct Restart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restart one instance, or all (--all), optionally one at a time (--rolling).",
        usage: InstanceIndexText.usage("restart", index: "(<index> | --all [--rolling])", options: "[--wait] "))
    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("The instance index (or --all).", valueName: "index"))
    var words: [String] = []
    var index: Int? { try? InstanceIndexText.parse(words) }
    @Flag(name: .long, help: "Restart every instance.")
    var all = false
    @Flag(name: .long, help: "With --all: one at a time, each waiting until the previous one is routable.")
    var rolling = false
    @Flag(name: .long, help: "Return once the restarted instances are healthy and routable (rolling: and their old processes gone).")
    var wait = false
    @OptionGroup var state: StateOption

    func validate() throws {
        let index = try InstanceIndexText.parse(words)
        if all == (index != nil) { throw ValidationError("give an instance index or --all") }
        if rolling && !all { throw ValidationError("--rolling goes with --all") }
    }

    func run() async throws {
        try await control(ControlRequest(command: .restart, index: index, all: all, rolling: rolling, wait: wait), state: state)
    }
}

struct Redis: AsyncParsableCommand {
    enum Action: String, ExpressibleByArgument, CaseIterable { case stop, start, restart, freeze, slow, hang, cut, heal }
    static let configuration = CommandConfiguration(
        abstract: "Stop, start, restart or freeze the embedded Redis (same port; data kept), or slow, hang, cut or heal the instances' links to it.",
        discussion: """
            freeze: SIGSTOP, then SIGCONT after --for. Redis keeps its port and connections but answers \
            nothing, as during a long fork, a stalled disk or a network partition; a crash (stop) is seen \
            at once, a freeze only when commands time out.

            slow, hang, cut and heal act on the network between instances and Redis (each instance reaches \
            Redis, embedded or --redis-url, through a relay of its own), for one instance (--instance I) or all of them, \
            while Redis keeps serving the others: slow --latency 200ms [--jitter 50ms] delays every reply \
            and pub/sub message Redis sends to it (for --for, default 1m); hang lets nothing through, either \
            way, with connections left open (a partition that drops packets: commands wait for their \
            timeouts; what was sent goes on when it heals; --for, default 10s); cut resets its connections \
            and refuses new ones (--for, default 10s); heal ends any of them now.
            """)
    @Argument(help: "stop, start, restart, freeze (Redis itself); slow, hang, cut, heal (the links to it).")
    var action: Action
    @Option(
        name: .customLong("for"),
        parsing: .unconditional, help: "freeze, slow, hang, cut: how long (e.g. 10s, 500ms; 100ms to 10m). Default: 1m for slow, 10s for the others.")
    var duration: String?
    @Option(
        name: [.customShort("i"), .long], parsing: .unconditional,
        help: "slow, hang, cut, heal: the instance whose link it is (default: every instance).")
    var instance: Int?
    @Option(name: .long, parsing: .unconditional, help: "slow: how late each reply and message from Redis arrives (1ms to 10s, e.g. 200ms).")
    var latency: String?
    @Option(name: .long, parsing: .unconditional, help: "slow: a random spread around --latency, at most --latency (e.g. 50ms; default 0).")
    var jitter: String?
    @OptionGroup var state: StateOption

    func validate() throws {
        let timed: Set<Action> = [.freeze, .slow, .hang, .cut]
        let linked: Set<Action> = [.slow, .hang, .cut, .heal]
        if duration != nil && !timed.contains(action) { throw ValidationError("--for goes with freeze, slow, hang and cut only") }
        if let duration { try validateFreezeDuration(duration) }
        if instance != nil && !linked.contains(action) {
            throw ValidationError("--instance goes with slow, hang, cut and heal only; `cluster redis \(action.rawValue)` acts on Redis itself")
        }
        if let instance, instance < 0 { throw ValidationError("an instance index is 0 or more, not \(instance)") }
        if (latency != nil || jitter != nil) && action != .slow { throw ValidationError("--latency and --jitter go with slow only") }
        if action == .slow {
            if case .failure(let error) = RedisLinkFault.slow(latency: latency, jitter: jitter) { throw ValidationError(error.description) }
        }
    }

    func run() async throws {
        try await control(
            ControlRequest(
                command: .redis, index: instance, action: action.rawValue, duration: duration, latency: latency, jitter: jitter),
            state: state)
    }
}

struct Chaos: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Kill, restart or freeze a random running instance at intervals, optionally restart or freeze Redis too, then check that the cluster recovers.",
        discussion: """
            Prints a line per fault, then waits up to --settle for every instance to be running again (and \
            nothing frozen), and exits 1 when the cluster is not ready by then; then it prints what clients \
            got through the proxy meanwhile (responses by status class, router errors, retries, routing \
            decisions), and with --max-5xx N exits 1 when more than N responses were 5xx: \
            `cluster chaos --every 5s --for 2m && ./my-checks`. With --users N, N simulated users browse \
            through the proxy meanwhile, each with its own cookies as in a browser, and it prints what \
            happened to their sessions: moved to another instance, kept, or lost (the app started a new \
            one, redirected to the --users-login path, or with --users-check showed a page of a \
            logged-out user); --max-lost-sessions N exits 1 \
            on more losses: `cluster chaos --users 20 --users-login /user --users-check 'data-user=' \
            --max-lost-sessions 0` for chat-node. Ctrl-C stops it early with what it has done \
            so far and what clients got through the proxy until then (exit 130). The same --seed picks the same instances (and faults) again when they are in \
            the same states. --report FILE writes all of it as JSON at the end, for a CI job to keep or compare.
            """)
    @Option(name: .long, parsing: .unconditional, help: "How often an instance gets a fault (e.g. 10s, 500ms; at least 100ms).")
    var every = "10s"
    @Option(name: .customLong("for"), parsing: .unconditional, help: "How long the faults go on (e.g. 2m; at most 24h).")
    var duration = "1m"
    @Option(
        name: .long,
        parsing: .unconditional,
        help: """
            kill: SIGKILL, a crash restarted per the restart policy; restart: SIGTERM, then a new process; \
            freeze: SIGSTOP for --freeze-for, then SIGCONT (a hang); redis-cut: its link to Redis reset and \
            refused for --freeze-for; redis-hang: nothing through its link to Redis for --freeze-for (a \
            partition of that instance alone, either way). Several, comma-separated (kill,freeze): one at \
            random each time.
            """)
    var fault = "kill"
    @Option(
        name: .long, parsing: .unconditional,
        help: "How long a freeze lasts, of an instance or of Redis, and a redis-cut or redis-hang (100ms to 10m; default 5s).")
    var freezeFor: String?
    @Option(
        name: .long,
        parsing: .unconditional,
        help: "Never take down an instance when this many or fewer are serving (running and routable, not frozen, not cut off from Redis).")
    var keep = 1
    @Option(name: .long, parsing: .unconditional, help: "Also restart (or freeze, see --redis-fault) the embedded Redis this often (e.g. 1m).")
    var redisEvery: String?
    @Option(
        name: .long, parsing: .unconditional,
        help: "What --redis-every does: restart (SIGTERM, then a new Redis) or freeze (SIGSTOP for --freeze-for).")
    var redisFault: ChaosOptions.RedisFault?
    @Option(name: .long, parsing: .unconditional, help: "After the last fault, how long the cluster has to be ready again.")
    var settle = "30s"
    @Option(name: .long, parsing: .unconditional, help: "The seed of the random choices (default: a random one, printed).")
    var seed: UInt64?
    @Option(
        name: .customLong("max-5xx"),
        parsing: .unconditional,
        help: "Exit 1 when clients got more 5xx responses than this through the proxy, from the start of the run to the end of --settle.")
    var maxServerErrors: Int?
    @Option(
        name: .long,
        parsing: .unconditional,
        help: ArgumentHelp(
            "Write what the run did and what clients got to this file as JSON, at the end (also when it fails or is interrupted).",
            valueName: "file"))
    var report: String?
    @Option(
        name: .long, parsing: .unconditional,
        help: "Simulated users who browse the app through the proxy meanwhile, each with its own cookies (at most 1000).")
    var users = 0
    @OptionGroup var simulated: UsersOptions
    @OptionGroup var state: StateOption

    func options() throws -> ChaosOptions {
        let duration = parseDuration
        guard let faults = ChaosOptions.faults(fault) else {
            throw ValidationError("--fault '\(fault)' is not kill, restart, freeze, redis-cut or redis-hang (or several of them, comma-separated)")
        }
        if redisFault != nil && redisEvery == nil { throw ValidationError("--redis-fault goes with --redis-every") }
        if freezeFor != nil && ChaosOptions.timed.isDisjoint(with: faults) && redisFault != .freeze {
            throw ValidationError("--freeze-for goes with --fault freeze, redis-cut or redis-hang, or --redis-fault freeze")
        }
        var generator = SystemRandomNumberGenerator()
        let options = ChaosOptions(
            every: try duration(every, "--every"), duration: try duration(self.duration, "--for"), faults: faults,
            freezeFor: try freezeFor.map { try duration($0, "--freeze-for") } ?? .seconds(5), keep: keep,
            redisEvery: try redisEvery.map { try duration($0, "--redis-every") }, redisFault: redisFault ?? .restart,
            settle: try duration(settle, "--settle"), seed: seed ?? generator.next() % 1_000_000, maxServerErrors: maxServerErrors,
            users: try simulated.options(count: users))
        if let problem = options.problem { throw ValidationError(problem) }
        return options
    }

    func validate() throws { _ = try options() }

    func run() async throws {
        let options = try options()
        // The report's file is made now, so that a path that cannot be written fails before any fault.
        if let report, !FileManager.default.createFile(atPath: report, contents: Data()) {
            throw ExitCode.failure.printing("cluster: cannot write the report to \(report) (does its folder exist, and may you write there?)")
        }
        let written = Shared<ChaosReport?>(nil)
        let outcome: ChaosRun.Outcome
        do {
            outcome = try await ChaosRun.runUntilInterrupted(
                options: options, send: state.send, print: printLine, report: { value in written.value.withLock { $0 = value } })
        } catch {
            throw ExitCode.failure.printing("cluster: \(error)")
        }
        if let report, let value = written.value.withLock({ $0 }) {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            do {
                try encoder.encode(value).write(to: URL(fileURLWithPath: report))
            } catch {
                throw ExitCode.failure.printing("cluster: cannot write the report to \(report): \(error)")
            }
        }
        switch outcome {
        case .ready: return
        case .notReady, .tooManyServerErrors, .sessionsLost: throw ExitCode.failure
        case .interrupted: throw ExitCode(130)
        }
    }
}

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Simulated users who browse the app through the proxy and say, as it happens, when one moves to another instance or loses its session.",
        discussion: """
            Each user has its own cookies, as in a browser, so the router pins it to an instance. Run it in \
            one terminal and kill, scale or restart in another: a line tells each user moved off a gone \
            instance, and whether it kept its session there (the app did not set a new session cookie; \
            with --users-check, the page still shows the user logged in). It runs for --for, or until Ctrl-C, \
            then prints what the users got, and exits 1 when they lost more sessions than \
            --max-lost-sessions. For chat-node: `cluster users 10 --users-login /user --users-check data-user=`. \
            `cluster chaos --users N` runs the same users during a chaos run.
            """)
    @Argument(help: "How many simulated users (1 to 1000).")
    var count = 10
    @Option(name: .customLong("for"), parsing: .unconditional, help: "How long the users browse (e.g. 2m; at most 24h; default: until Ctrl-C).")
    var duration: String?
    @OptionGroup var simulated: UsersOptions
    @OptionGroup var state: StateOption

    func options() throws -> (VirtualUsersOptions, Duration?) {
        guard (1...VirtualUsersOptions.maxCount).contains(count) else {
            throw ValidationError("the number of users must be from 1 to \(VirtualUsersOptions.maxCount) (not \(count))")
        }
        let length = try duration.map { try parseDuration($0, "--for") }
        if let length, let problem = ChaosOptions.runLengthProblem(length) { throw ValidationError(problem) }
        let options = try simulated.options(count: count)
        return (options, length)
    }

    func validate() throws { _ = try options() }

    func run() async throws {
        let (options, duration) = try options()
        let outcome: VirtualUsersRun.Outcome
        do {
            outcome = try await VirtualUsersRun.runUntilInterrupted(options: options, duration: duration, send: state.send, print: printLine)
        } catch {
            throw ExitCode.failure.printing("cluster: \(error)")
        }
        if outcome == .sessionsLost { throw ExitCode.failure }
    }
}

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print recent log lines (of one instance when given), and with -f keep following.",
        usage: InstanceIndexText.usage("logs", index: "[<index>]", options: "[--follow] [--lines <lines>] "))
    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("Only this instance's lines (and the cluster's events about it).", valueName: "index"))
    var words: [String] = []
    var index: Int? { try? InstanceIndexText.parse(words) }
    @Flag(name: .shortAndLong, help: "Keep printing new lines until interrupted.")
    var follow = false
    @Option(name: [.customShort("n"), .long], parsing: .unconditional, help: "How many recent lines.")
    var lines = 100
    @OptionGroup var state: StateOption

    func validate() throws {
        _ = try InstanceIndexText.parse(words)
        if lines < 0 { throw ValidationError("--lines must be 0 or more") }
    }

    func run() async throws {
        try await control(ControlRequest(command: .logs, index: index, follow: follow, lines: lines), state: state) { response in
            // Written at once (not buffered), so that `logs -f | grep` sees each line as it comes.
            if let line = response.line { printLine(line.formatted(width: 7)) }
        }
    }
}

struct Down: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop everything gracefully (instances, proxy, Redis) and return once all have exited.",
        discussion: """
            If the cluster itself was killed (kill -9, a crash), what it started is still running: down \
            stops those processes instead (SIGTERM, SIGKILL after 5s), as the next `cluster up` would.
            """)
    @OptionGroup var state: StateOption

    func run() async throws {
        // A killed cluster cannot be asked: what it left is stopped here, as the next `up` would.
        do {
            if let stopped = try await ClusterUp.stopLeftovers(state.directory, report: { printLine("cluster: \($0)") }), stopped > 0 { return }
        } catch StateError.alreadyRunning {
            // Alive: it stops itself.
        } catch {
            throw ExitCode.failure.printing("cluster: \(error)")
        }
        try await control(ControlRequest(command: .down), state: state)
    }
}
