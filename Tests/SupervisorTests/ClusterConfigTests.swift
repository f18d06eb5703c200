import Foundation
import Testing

@testable import Supervisor

@Suite("Cluster config")
struct ClusterConfigTests {
    @Test("An empty file gives Cloud Foundry's defaults")
    func defaults() throws {
        let config = try ClusterConfig.parse(yaml: "")
        #expect(config == ClusterConfig())
        #expect(config.app.command == "chat-node")
        #expect(config.app.instances == 3)
        #expect(config.app.routes == ["localhost", "127.0.0.1"])
        #expect(config.healthCheck.type == .port)
        #expect(config.healthCheck.startupInterval == .seconds(2))
        #expect(config.healthCheck.startupTimeout == .seconds(60))
        #expect(config.healthCheck.livenessInterval == .seconds(30))
        #expect(config.healthCheck.timeout == .seconds(1))
        #expect(config.stopGracePeriod == .seconds(10))
        #expect(config.restartPolicy == .diego)
        #expect(config.proxy.affinity == .cf)
        #expect(config.redis.url == nil)
        #expect(config.timeScale == 1)
        try config.validate()
    }

    @Test("The project's Configs/cluster.yml parses to the defaults")
    func projectConfig() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Configs/cluster.yml").standardized
        let config = try ClusterConfig.load(path: file.path)
        #expect(config == ClusterConfig())
    }

    @Test("Every scenario in Configs/scenarios parses, validates and sets what its comment promises")
    func scenarios() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Configs/scenarios").standardized
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".yml") }.sorted()
        #expect(
            files == [
                "crash-loop.yml", "deep-health-check.yml", "no-affinity.yml", "reconnect-storm.yml", "second-router.yml", "sessions-in-memory.yml",
                "split-brain.yml", "websocket-before-2024.yml",
            ])
        var configs: [String: ClusterConfig] = [:]
        for file in files {
            let config = try ClusterConfig.load(path: folder.appendingPathComponent(file).path)
            try config.validate()
            configs[file] = config
        }
        #expect(configs["no-affinity.yml"]?.proxy.affinity == Affinity.none)
        #expect(configs["websocket-before-2024.yml"]?.proxy.websocketAffinity == false)
        #expect(configs["websocket-before-2024.yml"]?.proxy.affinity == .cf)
        #expect(configs["second-router.yml"]?.proxy.frontRouter == true && configs["second-router.yml"]?.proxy.affinity == .cf)
        #expect(configs["crash-loop.yml"]?.timeScale == 0.01)
        #expect(configs["crash-loop.yml"]?.healthCheck.type == .process)
        #expect(configs["reconnect-storm.yml"]?.app.instances == 5)
        #expect(configs["deep-health-check.yml"]?.healthCheck.type == .http)
        #expect(configs["deep-health-check.yml"]?.healthCheck.endpoint == "/health")
        #expect(configs["deep-health-check.yml"]?.healthCheck.livenessInterval == .seconds(2))
        // Off unless `--readiness-check http` turns it on, then on the same endpoint, every second.
        #expect(configs["deep-health-check.yml"]?.readinessCheck.isEnabled == false)
        #expect(configs["deep-health-check.yml"]?.readinessCheck.endpoint == "/health")
        #expect(configs["deep-health-check.yml"]?.readinessCheck.interval == .seconds(1))
        #expect(configs["sessions-in-memory.yml"]?.app.environment["SESSION_STORE"] == "memory")
        #expect(configs["split-brain.yml"]?.app.environment["FANOUT"] == "local")
    }

    @Test("Every key is read")
    func everyKey() throws {
        let yaml = """
            app:
              name: web
              command: node server.js
              instances: 5
              memory_mb: 512
              routes: [chat.local]
              env: {FOO: bar}
              session_secret: s3cret
            health_check:
              type: http
              endpoint: /health
              startup_interval: 500ms
              startup_timeout: 1m30s
              liveness_interval: 5
              timeout: 0.25
            readiness_check:
              type: http
              endpoint: /ready
              interval: 250ms
              timeout: 2s
            proxy:
              enabled: off
              command: /opt/proxy
              port: 0
              affinity: ip-hash
              websocket_affinity: off
              vcap_id_meta: off
              sticky_sessions_for_auth_negotiate: on
              empty_pool_timeout: 30s
              front_router: on
              access_log: off
              balancing: least-connection
            redis:
              url: redis://127.0.0.1:6380
              append_only: no
            restart:
              policy: kubernetes
            stop:
              grace_period: 3s
            time_scale: 0.01
            state_dir: /tmp/somewhere
            """
        let config = try ClusterConfig.parse(yaml: yaml)
        #expect(config.app.name == "web")
        #expect(config.app.command == "node server.js")
        #expect(config.app.instances == 5)
        #expect(config.app.memoryMB == 512)
        #expect(config.app.routes == ["chat.local"])
        #expect(config.app.environment == ["FOO": "bar"])
        #expect(config.app.sessionSecret == "s3cret")
        #expect(config.healthCheck.type == .http)
        #expect(config.healthCheck.endpoint == "/health")
        #expect(config.healthCheck.startupInterval == .milliseconds(500))
        #expect(config.healthCheck.startupTimeout == .seconds(90))
        #expect(config.healthCheck.livenessInterval == .seconds(5))
        #expect(config.healthCheck.timeout == .milliseconds(250))
        #expect(config.readinessCheck.type == .http && config.readinessCheck.isEnabled)
        #expect(config.readinessCheck.endpoint == "/ready")
        #expect(config.readinessCheck.interval == .milliseconds(250))
        #expect(config.readinessCheck.timeout == .seconds(2))
        #expect(config.proxy.enabled == false)
        #expect(config.proxy.command == "/opt/proxy")
        #expect(config.proxy.port == 0)
        #expect(config.proxy.affinity == .ipHash)
        #expect(config.proxy.websocketAffinity == false)
        #expect(config.proxy.vcapIDMeta == false)
        #expect(config.proxy.stickySessionsForAuthNegotiate == true)
        #expect(config.proxy.emptyPoolTimeout == .seconds(30))
        #expect(config.proxy.frontRouter == true)
        #expect(config.proxy.accessLog == false)
        #expect(config.proxy.balancing == "least-connection")
        #expect(config.redis.url == "redis://127.0.0.1:6380")
        #expect(config.redis.appendOnly == false)
        #expect(config.restartPolicy == .kubernetes)
        #expect(config.stopGracePeriod == .seconds(3))
        #expect(config.timeScale == 0.01)
        #expect(config.stateDirectory == "/tmp/somewhere")
        try config.validate()
    }

    @Test("A misspelt key is an error that lists the known keys")
    func unknownKey() {
        #expect(throws: ConfigError.self) { try ClusterConfig.parse(yaml: "proxy:\n  afinity: cf\n") }
        do {
            _ = try ClusterConfig.parse(yaml: "proxy:\n  afinity: cf\n", path: "my.yml")
        } catch {
            #expect(error.description.contains("unknown key 'proxy.afinity'"))
            #expect(error.description.contains("affinity"))
            #expect(error.description.hasPrefix("my.yml:2: "))
        }
        #expect(throws: ConfigError.self) { try ClusterConfig.parse(yaml: "instances: 3\n") }
    }

    @Test("Bad values name the key and what is expected")
    func badValues() {
        let cases: [(String, String)] = [
            ("proxy:\n  affinity: sticky\n", "proxy.affinity"),
            ("restart:\n  policy: systemd\n", "restart.policy"),
            ("health_check:\n  type: tcp\n", "health_check.type"),
            ("readiness_check:\n  type: tcp\n", "readiness_check.type"),
            ("readiness_check:\n  interval: often\n", "readiness_check.interval"),
            ("health_check:\n  startup_interval: soon\n", "startup_interval"),
            // A number of seconds whose nanoseconds overflow an Int64 was a crash, not an error.
            ("health_check:\n  startup_interval: 1e12\n", "startup_interval"),
            ("stop:\n  grace_period: 1e300\n", "grace_period"),
            ("proxy:\n  websocket_affinity: maybe\n", "websocket_affinity"),
        ]
        for (yaml, key) in cases {
            let message = Self.error(yaml)
            #expect(message?.contains(key) == true, "\(key): \(message ?? "no error")")
        }
        #expect(throws: ConfigError.self) { try ClusterConfig.parse(yaml: "- a\n- b\n") }
        #expect(throws: ConfigError.self) { try ClusterConfig.parse(yaml: "app: [\n") }
    }

    @Test("A value of the wrong kind is shown as written, with what was expected in plain words")
    func wrongKinds() {
        let cases: [(String, String)] = [
            // Was: app.instances = '?' is not valid: expected Expected to decode Int but found Scalar instead.
            ("app:\n  instances: three\n", "cluster.yml:2: app.instances = 'three' is not valid: expected a whole number"),
            ("proxy:\n  port: 8080.5\n", "cluster.yml:2: proxy.port = '8080.5' is not valid: expected a whole number"),
            ("time_scale: fast\n", "cluster.yml:1: time_scale = 'fast' is not valid: expected a number"),
            (
                "app:\n  routes:\n    - a\n    - {b: 1}\n",
                "cluster.yml:4: app.routes[1] = '{b: 1}' is not valid: expected a single value (text or a number)"
            ),
            ("app:\n  routes: localhost\n", "cluster.yml:2: app.routes = 'localhost' is not valid: expected a list, such as [a, b]"),
            ("app:\n  env: [1, 2]\n", "cluster.yml:2: app.env = '[1, 2]' is not valid: expected names with values, such as {NAME: value}"),
            ("app:\n  name: [a]\n", "cluster.yml:2: app.name = '[a]' is not valid: expected a single value (text or a number)"),
            ("app:\n  env:\n    A.B: [x]\n", "cluster.yml:3: app.env.A.B = '[x]' is not valid: expected a single value (text or a number)"),
            ("proxy:\n  websocket_affinity: Maybe\n", "cluster.yml:2: proxy.websocket_affinity = 'Maybe' is not valid: expected on or off"),
            (
                "proxy:\n  empty_pool_timeout: -5s\n",
                "cluster.yml:2: proxy.empty_pool_timeout = '-5s' is not valid: expected a duration such as 2s, 500ms, 1m30s or a number of seconds"
            ),
        ]
        for (yaml, message) in cases { #expect(Self.error(yaml) == message) }
    }

    @Test("A value that cannot work is named where the user set it: the flag, or the file and line, as written")
    func errorsSayWhere() throws {
        let file = "app:\n  name: web\n  instances: 500\nhealth_check:\n  startup_timeout: 10m\nproxy:\n  port: 99999\n"
        func message(_ yaml: String?, _ overrides: ClusterOverrides = ClusterOverrides()) -> String? {
            do {
                _ = try ClusterConfig.resolve(yaml: yaml, path: "my.yml", overrides: overrides)
                return nil
            } catch {
                return error.description
            }
        }
        // Before: "app.instances = '500' is not valid: expected 0 to 100", with no word of the file.
        #expect(message(file) == "my.yml:3: app.instances = '500' is not valid: expected 0 to 100")
        // The flag overrides the file's wrong value; the next one is the file's, as written (not 10m0s).
        #expect(
            message(file, ClusterOverrides(instances: 2))
                == "my.yml:5: health_check.startup_timeout = '10m' is not valid: expected more than 0s and at most 3m0s (Cloud Foundry's maximum)")
        // A flag's wrong value is the flag's, even when the file has the same key right.
        #expect(message("app:\n  instances: 2\n", ClusterOverrides(instances: 101)) == "--instances '101' is not valid: expected 0 to 100")
        #expect(message(nil, ClusterOverrides(port: 70000)) == "--port '70000' is not valid: expected a port from 1 to 65535, or 0 for a free one")
        #expect(message(nil, ClusterOverrides(appCommand: " ")) == "--app ' ' is not valid: expected a command")
        #expect(message(nil, ClusterOverrides(redisURL: "http://x")) == "--redis-url 'http://x' is not valid: expected a redis://host:port URL")
        #expect(
            message(nil, ClusterOverrides(timeScale: 0))
                == "--time-scale '0' is not valid: expected a factor above 0 and at most 100 (0.01 makes 30s into 0.3s)")
        #expect(message("app:\n  routes: []\n") == "my.yml:2: app.routes = '[]' is not valid: expected at least one route, for example localhost")
        // What the cluster gives each instance cannot be overridden (PORT from the file won over the
        // instance's own port, and the cluster then said the app was not listening on it).
        for name in ["PORT", "VCAP_SERVICES", "CF_INSTANCE_INDEX", "INSTANCE_GUID"] {
            let said = message("app:\n  env:\n    \(name): \"1\"\n") ?? "accepted"
            #expect(
                said.hasSuffix(
                    "app.env.\(name) = '1' is not valid: expected no \(name): the cluster sets PORT, VCAP_*, CF_INSTANCE_* and INSTANCE_* for each instance, as Cloud Foundry does"
                ), "\(said)")
        }
        #expect(message("app:\n  env:\n    REDIS_URL_X: \"1\"\n    PORTAL: x\n") == nil)
        #expect(
            message("time_scale: 1e3\n")
                == "my.yml:1: time_scale = '1e3' is not valid: expected a factor above 0 and at most 100 (0.01 makes 30s into 0.3s)")
        let valid = try ClusterConfig.resolve(
            yaml: file.replacingOccurrences(of: "10m", with: "2m"), path: "my.yml", overrides: ClusterOverrides(instances: 2, port: 0))
        #expect(valid.app.instances == 2 && valid.proxy.port == 0 && valid.app.name == "web")
        do {
            _ = try ClusterConfig.resolve(file: "/nonexistent/c.yml", overrides: ClusterOverrides())
            Issue.record("a missing file was read")
        } catch {
            #expect(error.description.hasPrefix("cannot read the config file /nonexistent/c.yml: "))
        }
    }

    /// The error `ClusterConfig.parse` gives for `yaml`, nil when it gives none.
    static func error(_ yaml: String) -> String? {
        do {
            _ = try ClusterConfig.parse(yaml: yaml)
            return nil
        } catch {
            return error.description
        }
    }

    @Test("validate() refuses values the cluster cannot run with")
    func validation() {
        func invalid(_ change: (inout ClusterConfig) -> Void) -> Bool {
            var config = ClusterConfig()
            change(&config)
            do {
                try config.validate()
                return false
            } catch {
                return true
            }
        }
        #expect(invalid { $0.app.instances = -1 })
        #expect(invalid { $0.app.instances = 101 })
        #expect(invalid { $0.app.command = "  " })
        #expect(invalid { $0.app.name = "my app" })
        #expect(invalid { $0.healthCheck.startupTimeout = .seconds(181) })
        #expect(invalid { $0.healthCheck.startupInterval = .zero })
        #expect(invalid { $0.healthCheck.livenessInterval = .nanoseconds(1) })
        #expect(invalid { $0.healthCheck.endpoint = "health" })
        #expect(invalid { $0.readinessCheck.endpoint = "ready" })
        #expect(invalid { $0.readinessCheck.interval = .milliseconds(9) })
        #expect(invalid { $0.readinessCheck.timeout = .zero })
        #expect(!ClusterConfig().readinessCheck.isEnabled, "no readiness check unless asked for, as on Cloud Foundry")
        #expect(invalid { $0.proxy.port = 70000 })
        #expect(invalid { $0.proxy.balancing = "random" })
        #expect(!invalid { $0.proxy.frontRouter = true })
        #expect(invalid { $0.redis.url = "http://x" })
        #expect(invalid { $0.timeScale = 0 })
        #expect(!invalid { $0.app.instances = 0 })
        #expect(!invalid { $0.proxy.port = 0 })
    }

    @Test("Flags override the file")
    func overrides() {
        var file = ClusterConfig()
        file.app.instances = 5
        file.redis.url = "redis://127.0.0.1:1"
        let overrides = ClusterOverrides(
            instances: 2, appCommand: "python3 app.py", port: 9000, affinity: Affinity.none,
            redisURL: "", restartPolicy: .pm2, timeScale: 0.1, stateDirectory: "/tmp/s", proxyEnabled: false, healthCheckType: .http,
            readinessCheckType: .port)
        let config = overrides.applied(to: file)
        #expect(config.readinessCheck.type == .port)
        #expect(config.app.instances == 2)
        #expect(config.app.command == "python3 app.py")
        #expect(config.proxy.port == 9000)
        #expect(config.proxy.affinity == Affinity.none)
        #expect(config.redis.url == nil, "an empty --redis-url means the embedded Redis")
        #expect(config.restartPolicy == .pm2)
        #expect(config.timeScale == 0.1)
        #expect(config.stateDirectory == "/tmp/s")
        #expect(config.proxy.enabled == false)
        #expect(config.healthCheck.type == .http)
        #expect(ClusterOverrides().applied(to: file) == file)
    }

    @Test("Another app than chat-node is not called chat: 'app', or --name, or the file's own name")
    func appName() {
        let chat = ClusterConfig()
        #expect(ClusterOverrides(appCommand: "python3 -m http.server $PORT").applied(to: chat).app.name == "app")
        #expect(ClusterOverrides(appCommand: "/opt/x/chat-node --verbose").applied(to: chat).app.name == "chat")
        #expect(ClusterOverrides(appCommand: "node server.js", appName: "web").applied(to: chat).app.name == "web")
        #expect(ClusterOverrides(appName: "lobby").applied(to: chat).app.name == "lobby")
        var named = ClusterConfig()
        named.app.name = "api"
        #expect(ClusterOverrides(appCommand: "node server.js").applied(to: named).app.name == "api")
        var message: String?
        do {
            _ = try ClusterConfig.resolve(yaml: nil, path: "", overrides: ClusterOverrides(appName: "my app"))
        } catch {
            message = "\(error)"
        }
        #expect(message == "--name 'my app' is not valid: expected a name without spaces")
    }
}
