import CloudFoundry
import Foundation
import Logging
import Testing

@testable import ChatApp

@Suite struct ConfigurationTests {
    @Test("The client bundle is found from the working directory, else from the executable's folder (cluster up run elsewhere)")
    func theBundleIsFoundNextToTheBuild() throws {
        let project = FileManager.default.temporaryDirectory.appendingPathComponent("chatconf-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: project) }
        let release = project.appendingPathComponent(".build/release")
        try FileManager.default.createDirectory(at: release, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: project.appendingPathComponent(".deps"), withIntermediateDirectories: true)
        let bundle = project.appendingPathComponent(".deps/socket.io.min.js")
        #expect(FileManager.default.createFile(atPath: bundle.path, contents: Data("x".utf8)))
        let found = try ChatConfiguration(environment: [:], workingDirectory: "/tmp", executableDirectory: release.path)
        #expect(found.socketIOClientPath == bundle.standardizedFileURL.path)
        let fromHere = try ChatConfiguration(environment: [:], workingDirectory: release.path, executableDirectory: "/nonexistent")
        #expect(fromHere.socketIOClientPath == bundle.standardizedFileURL.path)
    }

    @Test func defaultsAreLoopbackAndJSESSIONID() throws {
        let configuration = try ChatConfiguration(environment: [:], workingDirectory: "/nonexistent", executableDirectory: "/nonexistent")
        #expect(configuration.bindHost == "127.0.0.1")
        #expect(configuration.port == 8080)
        #expect(configuration.cookieName == "JSESSIONID")
        #expect(configuration.redisURL == "redis://127.0.0.1:6379")
        #expect(configuration.sessionTTL == .seconds(86_400))
        #expect(configuration.historyLimit == 1_000)
        #expect(configuration.sessionSecrets.isEmpty)
        #expect(configuration.sessionStorage == .redis)
        #expect(configuration.instance.label == "port 8080")
        #expect(configuration.socketIOClientPath == "/nonexistent/.deps/socket.io.min.js")
    }

    @Test func readsTheCloudFoundryEnvironment() throws {
        let binding = ServiceBinding.redis(host: "127.0.0.1", port: 7000, password: "p@ss")
        let instance = InstanceEnvironment(
            port: 9001, index: 2, guid: InstanceGUID("aaaaaaaa-bbbb-cccc-dddd-eeee")!,
            application: VCAPApplication(applicationID: "app", applicationName: "chat", uris: ["chat.local"], version: "1"),
            services: VCAPServices(binding: binding))
        var env = instance.variables
        env["SESSION_SECRET"] = "new, old ,"
        let configuration = try ChatConfiguration(environment: env)
        #expect(configuration.port == 9001)
        #expect(configuration.redisURL == "redis://:p%40ss@127.0.0.1:7000")
        #expect(configuration.redisSource == "VCAP_SERVICES binding 'redis'")
        #expect(configuration.sessionSecrets == ["new", "old"])
        #expect(configuration.instance.index == 2)
        #expect(configuration.instance.guid == "aaaaaaaa-bbbb-cccc-dddd-eeee")
        #expect(configuration.instance.label == "#2 · aaaaaaaa-bbbb-cccc-dddd-eeee")
        // REDIS_URL wins over the binding.
        env["REDIS_URL"] = "redis://127.0.0.1:6000"
        #expect(try ChatConfiguration(environment: env).redisURL == "redis://127.0.0.1:6000")
    }

    @Test func sessionStoreIsRedisOrMemory() throws {
        #expect(try ChatConfiguration(environment: ["SESSION_STORE": "memory"], workingDirectory: "/x").sessionStorage == .memory)
        #expect(try ChatConfiguration(environment: ["SESSION_STORE": "Redis"], workingDirectory: "/x").sessionStorage == .redis)
        #expect(throws: ChatConfigurationError.self) {
            try ChatConfiguration(environment: ["SESSION_STORE": "disk"], workingDirectory: "/x")
        }
        #expect(ChatConfiguration.variables.contains { $0.name == "SESSION_STORE" })
    }

    @Test func fanoutIsRedisOrLocalAndLocalScopesTheChatKeysToTheInstance() throws {
        let shared = try ChatConfiguration(environment: ["CF_INSTANCE_GUID": "g1"], workingDirectory: "/x")
        #expect(shared.fanout == .redis)
        #expect(shared.chatKeyPrefix == "chat:")
        let local = try ChatConfiguration(environment: ["FANOUT": "local", "CF_INSTANCE_GUID": "g1"], workingDirectory: "/x")
        #expect(local.fanout == .local)
        #expect(local.chatKeyPrefix == "chat:instance:g1:")
        #expect(throws: ChatConfigurationError.self) {
            try ChatConfiguration(environment: ["FANOUT": "everywhere"], workingDirectory: "/x")
        }
    }

    @Test func logLevelIsOneOfSwiftLogsLevelsAndAnotherNameIsAnError() throws {
        #expect(try ChatConfiguration.logLevel([:]) == .info)
        #expect(try ChatConfiguration.logLevel(["LOG_LEVEL": ""]) == .info)
        #expect(try ChatConfiguration.logLevel(["LOG_LEVEL": "Debug"]) == .debug)
        #expect {
            try ChatConfiguration.logLevel(["LOG_LEVEL": "loud"])
        } throws: { error in
            (error as? ChatConfigurationError)?.description.contains("LOG_LEVEL: 'loud' is not trace or debug or info") == true
        }
    }

    @Test func writeCoalescingDefaultsTo20msAndZeroTurnsItOff() throws {
        #expect(try ChatConfiguration(environment: [:], workingDirectory: "/x").writeCoalescing == .milliseconds(20))
        #expect(try ChatConfiguration(environment: ["WRITE_COALESCING_MS": "0"], workingDirectory: "/x").writeCoalescing == .zero)
        #expect(try ChatConfiguration(environment: ["WRITE_COALESCING_MS": "25"], workingDirectory: "/x").writeCoalescing == .milliseconds(25))
        #expect(ChatConfiguration.variables.contains { $0.name == "WRITE_COALESCING_MS" })
    }

    @Test func positionCheckDefaultsToOneSecondAndZeroTurnsItOff() throws {
        #expect(try ChatConfiguration(environment: [:], workingDirectory: "/x").positionCheckInterval == .seconds(1))
        #expect(try ChatConfiguration(environment: ["POSITION_CHECK_MS": "0"], workingDirectory: "/x").positionCheckInterval == .zero)
        #expect(ChatConfiguration.variables.contains { $0.name == "POSITION_CHECK_MS" })
    }

    @Test func bindAndFileOverrides() throws {
        let configuration = try ChatConfiguration(
            environment: ["BIND": "0.0.0.0", "SOCKETIO_CLIENT_JS": "x/io.js", "COOKIE_NAME": "connect.sid"], workingDirectory: "/w")
        #expect(configuration.bindHost == "0.0.0.0")
        #expect(configuration.socketIOClientPath == "/w/x/io.js")
        #expect(configuration.cookieName == "connect.sid")
        #expect(try ChatConfiguration(environment: ["HOST": "127.0.0.2"]).bindHost == "127.0.0.2")
        #expect(try ChatConfiguration(environment: ["ALLOWED_ORIGINS": "https://a.example, *"]).allowedOrigins == ["https://a.example", "*"])
        #expect(try ChatConfiguration(environment: [:]).allowedOrigins.isEmpty)
    }

    @Test func invalidValuesNameTheVariable() {
        let cases: [([String: String], String)] = [
            (["PORT": "eighty"], "PORT"),
            (["PORT": "70000"], "PORT"),
            (["REDIS_URL": "http://x"], "REDIS_URL"),
            (["VCAP_SERVICES": "{"], "VCAP_SERVICES"),
            (["VCAP_SERVICES": #"{"mysql":[{"label":"mysql","name":"db","credentials":{}}]}"#], "VCAP_SERVICES"),
            (["SESSION_SECRET": " , "], "SESSION_SECRET"),
            (["COOKIE_NAME": "bad name"], "COOKIE_NAME"),
            (["HISTORY_LIMIT": "0"], "HISTORY_LIMIT"),
            (["MAX_MESSAGE_BYTES": "-1"], "MAX_MESSAGE_BYTES"),
            (["SESSION_TTL": "1d"], "SESSION_TTL"),
            (["PRESENCE_INTERVAL": "10", "PRESENCE_TTL": "5"], "PRESENCE_TTL"),
            // Was named PRESENCE_TTL, which the user had not set (found by the `environment` fuzz target).
            (["PRESENCE_INTERVAL": "82"], "PRESENCE_INTERVAL"),
            (["PRESENCE_TTL": "3"], "PRESENCE_TTL"),
            (["CF_INSTANCE_INDEX": "-3"], "CF_INSTANCE_INDEX"),
            (["ALLOWED_ORIGINS": "chat.example.com"], "ALLOWED_ORIGINS"),
            (["WRITE_COALESCING_MS": "-5"], "WRITE_COALESCING_MS"),
            (["WRITE_COALESCING_MS": "5000"], "WRITE_COALESCING_MS"),
            (["POSITION_CHECK_MS": "soon"], "POSITION_CHECK_MS"),
            (["BIND": "a b"], "BIND"),
            // Was named BIND, which the user had not set (found by the `environment` fuzz target).
            (["HOST": "a b"], "HOST"),
            (["BIND": "a b", "HOST": "0.0.0.0"], "BIND"),
            // Were named PORT and CF_INSTANCE_INDEX, which the user had not set.
            (["VCAP_APP_PORT": "eighty"], "VCAP_APP_PORT"),
            (["INSTANCE_INDEX": "-1"], "INSTANCE_INDEX"),
            (["CF_INSTANCE_INDEX": "x", "INSTANCE_INDEX": "1"], "CF_INSTANCE_INDEX"),
        ]
        for (env, variable) in cases {
            do {
                _ = try ChatConfiguration(environment: env)
                Issue.record("\(env) was accepted")
            } catch {
                guard case .invalid(let named, _) = error else { continue }
                #expect(named == variable, "\(env)")
                #expect(error.description.contains(variable))
            }
        }
    }

    @Test func everyVariableIsDocumented() {
        let names = ChatConfiguration.variables.map(\.name).joined(separator: " ")
        for name in ["PORT", "BIND", "HOST", "REDIS_URL", "VCAP_SERVICES", "SESSION_SECRET", "COOKIE_NAME", "CF_INSTANCE_INDEX", "CF_INSTANCE_GUID"] {
            #expect(names.contains(name))
        }
    }
}

@Suite struct PageTests {
    @Test func escapesEverythingItFillsIn() {
        let page = HTML.fill("<p title=\"{{a}}\">{{a}}</p>{{missing}}", ["a": "<script>alert('x')&\"</script>"])
        #expect(
            page
                == "<p title=\"&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;\">&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;</p>{{missing}}"
        )
    }

    @Test func pagesLoadFromTheSourceTreeOrBundle() throws {
        let assets = try ChatAssets.load(socketIOClientPath: "/nonexistent/socket.io.min.js")
        #expect(assets.socketIOClient == nil)
        let chat = assets.chatPage(user: "<b>x</b>", instance: InstanceIdentity(index: 1, guid: nil, port: 1), limits: ChatLimits())
        #expect(chat.contains("&lt;b&gt;x&lt;/b&gt;"))
        #expect(!chat.contains("<b>x</b>"))
        #expect(chat.contains("#1 · port 1"))
        let login = assets.loginPage(error: "Please type a name.", instance: InstanceIdentity(index: nil, guid: nil, port: 1), limits: ChatLimits())
        #expect(login.contains("Please type a name."))
        #expect(!login.contains("{{"))
    }
}
