import ArgumentParser
import CloudFoundry
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import StickyProxy

/// `sticky-proxy`: Cloud Foundry's router on one machine. Parses the flags and runs `StickyProxyServer`.
@main
struct StickyProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sticky-proxy",
        abstract: "A reverse proxy that behaves like Cloud Foundry's gorouter (sticky sessions, retries, errors, routing table).",
        discussion: """
            Routes come from the admin API (POST /routes/register with gorouter's register message, \
            re-sent every 20 s, pruned after 120 s without one) or from --routes-file. Durations accept \
            500ms, 5s, 2m. SIGTERM or SIGINT drain: no new connections, in-flight requests finish, \
            what is left is closed after --drain-timeout.
            """
    )

    @Option(parsing: .unconditional, help: "Port for requests (0 picks a free one).") var port = 8080
    @Option(help: "Address to listen on for requests.") var bind = "127.0.0.1"
    @Option(parsing: .unconditional, help: "Port of the admin API on 127.0.0.1; 0 disables it.") var adminPort = 8081
    @Option(help: "Bearer token for the admin API (else $STICKY_PROXY_ADMIN_TOKEN; else a random one is printed).")
    var adminToken: String?
    @Option(help: "Affinity mode: cf (gorouter), none, haproxy (inserted cookie), ip-hash (nginx style).")
    var affinity: AffinityMode = .cf
    @Option(help: "Affinity on WebSocket upgrades: on (Cloud Foundry since 2024) or off (before 2024).")
    var websocketAffinity: Switch = .on
    @Option(
        help:
            "The __VCAP_ID_META__ cookie that keeps __VCAP_ID__'s attributes for a fallback: on (current gorouter) or off (older routers)."
    )
    var vcapIdMeta: Switch = .on
    @Option(help: "Session cookie names that trigger stickiness, comma separated.") var stickyCookieNames = "JSESSIONID"
    @Flag(help: "Always mark __VCAP_ID__ Secure (gorouter's router.secure_cookies).") var secureCookies = false
    @Flag(
        help: """
            Keep Negotiate (Kerberos, NTLM) authentication handshakes on one instance, as gorouter's \
            router.sticky_sessions_for_auth_negotiate: a response with WWW-Authenticate: Negotiate sets a 60 s __VCAP_ID__, \
            and a request with Authorization: Negotiate and __VCAP_ID__ goes to that instance or fails with 502 (no fallback).
            """
    ) var stickySessionsForAuthNegotiate = false
    @Option(help: "Cookie inserted by --affinity haproxy.") var haproxyCookieName = "SERVERID"
    @Option(help: "Balancing algorithm: round-robin or least-connection (a route's registration may choose its own).")
    var balancing: LoadBalancingAlgorithm = .roundRobin
    // Numbers and durations take the next argument whatever it looks like, so that `--port -1` is
    // told it is not a port instead of "missing value".
    @Option(parsing: .unconditional, help: "In-flight requests per backend before it is skipped (0: no limit).")
    var maxConns = 500
    @Option(parsing: .unconditional, help: "Attempts per request, each on another backend.")
    var maxAttempts = 3
    @Option(parsing: .unconditional, help: .duration("How long a backend that failed is skipped by round-robin (0: not skipped)."))
    var retryAfterFailure = ArgumentDuration(.seconds(30))
    @Option(parsing: .unconditional, help: .duration("Time to connect to a backend."))
    var dialTimeout = ArgumentDuration(.seconds(5))
    @Option(parsing: .unconditional, help: .duration("Time for a whole request (0: none). Upgraded WebSockets have none."))
    var requestTimeout = ArgumentDuration(.seconds(900))
    @Option(parsing: .unconditional, help: .duration("Keep-alive idle time of client connections (0: none)."))
    var idleTimeout = ArgumentDuration(.seconds(900))
    @Option(parsing: .unconditional, help: .duration("Time a client may take to send a request head once it started one (0: none)."))
    var headerReadTimeout = ArgumentDuration(.seconds(30))
    @Option(parsing: .unconditional, help: .duration("On SIGTERM, how long in-flight requests and tunnels may go on (0: closed at once)."))
    var drainTimeout = ArgumentDuration(.seconds(10))
    @Option(parsing: .unconditional, help: .duration("An endpoint without a register message for this long is pruned."))
    var staleThreshold = ArgumentDuration(.seconds(120))
    @Option(parsing: .unconditional, help: .duration("How often stale endpoints are pruned (0: never)."))
    var pruneInterval = ArgumentDuration(.seconds(30))
    @Flag(
        name: .customLong("empty-pool-response-code-503"),
        help: """
            Answer 503 no_endpoints instead of 404 unknown_route for a route whose last instance left, for \
            --empty-pool-timeout (gorouter's router.empty_pool_response_code_503; needs the timeout).
            """
    ) var emptyPoolResponseCode503 = false
    @Option(
        parsing: .unconditional,
        help: .duration("With --empty-pool-response-code-503: how long a route with no instance is kept (deleted by the first prune after it).")
    )
    var emptyPoolTimeout = ArgumentDuration(.zero)
    @Option(
        help:
            "gorouter's router.trace_key: a request with X-Vcap-Trace equal to it gets X-Vcap-Router, X-Vcap-Backend and X-Cf-Routeendpoint on its response."
    )
    var traceKey: String?
    @Option(parsing: .unconditional, help: "Largest request header section in bytes (431 above).")
    var maxHeaderBytes = 1 << 20
    @Option(help: "Static routes (YAML or JSON list of register messages), never pruned.") var routesFile: String?
    @Option(help: "Access log in gorouter's format: a file, or - for standard output.") var accessLog: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel = "info"
    @Option(parsing: .unconditional, help: "Event loop threads.")
    var threads = System.coreCount

    func validate() throws {
        if adminToken?.isEmpty == true {
            throw ValidationError("--admin-token is empty: give a token, or leave the flag out for a random one (printed at start)")
        }
        let durations = [
            ("--retry-after-failure", retryAfterFailure), ("--dial-timeout", dialTimeout), ("--request-timeout", requestTimeout),
            ("--idle-timeout", idleTimeout), ("--header-read-timeout", headerReadTimeout), ("--drain-timeout", drainTimeout),
            ("--stale-threshold", staleThreshold), ("--prune-interval", pruneInterval), ("--empty-pool-timeout", emptyPoolTimeout),
        ]
        for (option, value) in durations {
            if let refusal = DurationText.refusal(of: value.text, for: option) { throw ValidationError(refusal) }
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "sticky-proxy")

        var token = adminToken ?? ProcessInfo.processInfo.environment["STICKY_PROXY_ADMIN_TOKEN"] ?? ""
        let generated = token.isEmpty
        if generated { token = Self.randomToken() }

        var configuration = ProxyConfiguration(adminToken: token)
        configuration.port = port
        configuration.bindHost = bind
        configuration.adminPort = adminPort == 0 ? nil : adminPort
        configuration.affinity = affinity
        configuration.webSocketAffinity = websocketAffinity == .on
        configuration.vcapIDMeta = vcapIdMeta == .on
        configuration.stickyCookieNames = stickyCookieNames.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        configuration.secureCookies = secureCookies
        configuration.stickySessionsForAuthNegotiate = stickySessionsForAuthNegotiate
        configuration.haproxyCookieName = haproxyCookieName
        configuration.balancing = balancing
        configuration.maxConnsPerBackend = maxConns
        configuration.maxAttempts = maxAttempts
        configuration.retryAfterFailure = retryAfterFailure.amount
        configuration.dialTimeout = dialTimeout.amount
        configuration.requestTimeout = requestTimeout.amount
        configuration.idleTimeout = idleTimeout.amount
        configuration.headerReadTimeout = headerReadTimeout.amount
        configuration.drainTimeout = drainTimeout.amount
        configuration.staleThreshold = staleThreshold.amount
        configuration.pruneInterval = pruneInterval.amount
        configuration.emptyPoolResponseCode503 = emptyPoolResponseCode503
        configuration.emptyPoolTimeout = emptyPoolTimeout.amount
        configuration.maxHeaderBytes = maxHeaderBytes
        configuration.traceKey = traceKey
        configuration.eventLoopThreads = threads
        configuration.accessLog = accessLog.map(AccessLogDestination.init)
        if let routesFile {
            do {
                // Reading a file blocks: on the thread pool, not in this task.
                configuration.staticRoutes = try await NIOThreadPool.singleton.runIfActive { try RoutesFile.load(path: routesFile) }
            } catch {
                throw ValidationError("\(error)")
            }
        }
        let problems = configuration.validationErrors()
        guard problems.isEmpty else { throw ValidationError(problems.joined(separator: "\n")) }

        let server = StickyProxyServer(configuration: configuration, logger: logger)
        do {
            try await server.start()
        } catch {
            FileHandle.standardError.write(Data("sticky-proxy: \(error)\n".utf8))
            throw ExitCode(1)
        }
        var lines = ["sticky-proxy: proxy on http://\(bind):\(server.proxyPort ?? port)"]
        if let adminPort = server.adminPort { lines.append("sticky-proxy: admin API on http://127.0.0.1:\(adminPort)") }
        if generated && configuration.adminPort != nil { lines.append("sticky-proxy: admin token (generated): \(token)") }
        FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))

        let group = ServiceGroup(
            configuration: .init(services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        try await group.run()
    }

    static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in
            let value = generator.next() as UInt64
            let hex = String(value, radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
    }
}

/// `on` / `off`.
enum Switch: String, ExpressibleByArgument, CaseIterable {
    case on, off
}

extension AffinityMode: ExpressibleByArgument {}
extension LoadBalancingAlgorithm: ExpressibleByArgument {}

/// A duration flag: `500ms`, `5s`, `2m`. Text that is not one is kept, for `validate()` to name the
/// flag and say why (the argument parser would only say "invalid").
struct ArgumentDuration: ExpressibleByArgument, CustomStringConvertible {
    var amount: TimeAmount
    var text: String

    init(_ amount: TimeAmount) {
        self.amount = amount
        self.text = amount.durationText
    }

    init?(argument: String) {
        text = argument
        amount = TimeAmount(durationText: argument) ?? .zero
    }

    var description: String { amount.durationText }
    var defaultValueDescription: String { description }
}

extension ArgumentHelp {
    /// The help of a duration option.
    static func duration(_ text: String) -> ArgumentHelp { ArgumentHelp(text, valueName: "duration") }
}
