import CloudFoundry
import Foundation
import Testing

@Suite("Cloud Foundry contracts")
struct CloudFoundryTests {
    @Test func instanceGUIDsHaveDiegosShapeAndAreNewEachTime() {
        let first = InstanceGUID()
        let second = InstanceGUID()
        #expect(first != second)
        #expect(first.value.count == 28)
        #expect(first.value.split(separator: "-").map(\.count) == [8, 4, 4, 4, 4])
        #expect(InstanceGUID(first.value) == first)
        #expect(InstanceGUID("ABCDEF01-2345-6789-abcd-ef0123456789") == nil)  // a whole UUID is too long
        #expect(InstanceGUID("zzzzzzzz-2345-6789-abcd-ef01") == nil)
        #expect(InstanceGUID("ABCDEF01-2345-6789-ABCD-EF01")?.value == "abcdef01-2345-6789-abcd-ef01")
    }

    @Test func environmentHasEveryVariableDiegoSets() throws {
        let guid = try #require(InstanceGUID("abcdef01-2345-6789-abcd-ef0123456789".prefix(28).description))
        let application = VCAPApplication(applicationID: "app-1", applicationName: "chat", uris: ["localhost"], version: "v-1")
        let services = VCAPServices(binding: .redis(host: "127.0.0.1", port: 6400, password: "p@ss"))
        let environment = InstanceEnvironment(port: 61001, index: 2, guid: guid, application: application, services: services)
        let variables = environment.variables
        #expect(variables["PORT"] == "61001")
        #expect(variables["VCAP_APP_PORT"] == "61001")
        #expect(variables["VCAP_APP_HOST"] == "0.0.0.0")
        #expect(variables["INSTANCE_INDEX"] == "2")
        #expect(variables["CF_INSTANCE_INDEX"] == "2")
        #expect(variables["CF_INSTANCE_GUID"] == guid.value)
        #expect(variables["INSTANCE_GUID"] == guid.value)
        #expect(variables["CF_INSTANCE_IP"] == "127.0.0.1")
        #expect(variables["CF_INSTANCE_PORT"] == "61001")
        #expect(variables["CF_INSTANCE_ADDR"] == "127.0.0.1:61001")
        #expect(variables["MEMORY_LIMIT"] == "256m")

        let app = try JSONSerialization.jsonObject(with: Data(try #require(variables["VCAP_APPLICATION"]).utf8)) as? [String: Any]
        for key in [
            "application_id", "application_name", "application_uris", "uris", "name", "space_name", "space_id", "organization_id",
            "organization_name", "process_id", "process_type", "version", "application_version", "limits", "cf_api",
        ] {
            #expect(app?[key] != nil, "VCAP_APPLICATION lacks \(key)")
        }

        // An app reads back what the supervisor wrote.
        let read = try AppEnvironment(variables)
        #expect(read.port == 61001)
        #expect(read.instanceIndex == 2)
        #expect(read.instanceGUID == guid.value)
        #expect(read.application?.applicationName == "chat")
        #expect(read.services?.redisBinding?.redisURL == "redis://:p%40ss@127.0.0.1:6400")
    }

    @Test func readsRedisBindingsAsBrokersWriteThem() throws {
        let json = #"""
            {"p-redis":[{"label":"p-redis","name":"cache","tags":["pivotal","redis"],"plan":"shared-vm",
              "credentials":{"host":"10.0.0.9","port":"6380","password":"pw"}}],
             "user-provided":[{"label":"user-provided","name":"other","credentials":{"uri":"postgres://x"}}]}
            """#
        let services = try VCAPServices(json: json)
        #expect(services.redisBinding?.name == "cache")
        #expect(services.redisBinding?.redisURL == "redis://:pw@10.0.0.9:6380")
        #expect(throws: CloudFoundryError.self) { try VCAPServices(json: "{not json") }
    }

    @Test func rejectsInvalidEnvironmentValuesByName() {
        #expect(throws: CloudFoundryError.invalidValue(variable: "PORT", value: "eighty", expected: "a port number from 0 to 65535")) {
            try AppEnvironment(["PORT": "eighty"])
        }
        #expect {
            try AppEnvironment(["VCAP_APPLICATION": "[1,2"])
        } throws: { error in
            "\(error)".hasPrefix("VCAP_APPLICATION is not valid JSON")
        }
        #expect(throws: Never.self) { try AppEnvironment([:]) }
    }

    @Test func routeRegistrationUsesGoroutersFieldNames() throws {
        let message = RouteRegistration(
            host: "127.0.0.1", port: 61001, uris: ["localhost", "127.0.0.1/chat"], app: "app-guid",
            privateInstanceID: "abcdef01-2345-6789-abcd-ef01", privateInstanceIndex: "0",
            tags: ["component": "chat-node"], staleThresholdInSeconds: 120,
            options: .init(loadBalancing: "least-connection")
        )
        let object = try JSONSerialization.jsonObject(with: message.json()) as? [String: Any]
        #expect(object?["private_instance_id"] as? String == "abcdef01-2345-6789-abcd-ef01")
        #expect(object?["private_instance_index"] as? String == "0")
        #expect(object?["stale_threshold_in_seconds"] as? Int == 120)
        #expect((object?["options"] as? [String: Any])?["loadbalancing"] as? String == "least-connection")
        let decoded = try JSONDecoder().decode(RouteRegistration.self, from: message.json())
        #expect(decoded == message)
        // gorouter messages carry more fields than we use; they are ignored.
        let foreign = #"{"host":"1.2.3.4","port":80,"uris":["a.example.com"],"protocol":"http1","route_service_url":""}"#
        #expect(try JSONDecoder().decode(RouteRegistration.self, from: Data(foreign.utf8)).uris == ["a.example.com"])
    }

    @Test func routeURIsSplitHostAndContextPath() {
        #expect(RouteURI("Chat.Example.com/api/v1/") == RouteURI("chat.example.com/api/v1"))
        #expect(RouteURI("chat.example.com/api/v1/").contextPath == "/api/v1")
        #expect(RouteURI("localhost").contextPath == "/")
        #expect(RouteURI("localhost:8080").host == "localhost")
        #expect(RouteURI("localhost/x").description == "localhost/x")
    }
}

@Suite("Durations as text")
struct DurationTextTests {
    @Test("Parses config durations")
    func parse() {
        #expect(DurationText.parse("2s") == .seconds(2))
        #expect(DurationText.parse("500ms") == .milliseconds(500))
        #expect(DurationText.parse("1m30s") == .seconds(90))
        #expect(DurationText.parse("16m") == .seconds(960))
        #expect(DurationText.parse("1h") == .seconds(3600))
        #expect(DurationText.parse("1.5s") == .milliseconds(1500))
        #expect(DurationText.parse("30") == .seconds(30))
        #expect(DurationText.parse("") == nil)
        #expect(DurationText.parse("soon") == nil)
        #expect(DurationText.parse("5 parsecs") == nil)
        #expect(DurationText.parse("-1") == nil)
        for bad in ["s", "5x", "-1s", "five", "1m30", "2 s"] { #expect(DurationText.parse(bad) == nil, "\(bad)") }
        // Nanoseconds that overflow an Int64 were a crash (`cluster chaos --every 1e12`).
        #expect(DurationText.parse("1e12") == nil)
        #expect(DurationText.parse("1e300s") == nil)
        #expect(DurationText.parse("999999999") == .seconds(999_999_999))
    }

    @Test("Formats as Go does, for Cloud Foundry's messages")
    func format() {
        #expect(DurationText.format(.seconds(60)) == "1m0s")
        #expect(DurationText.format(.seconds(30)) == "30s")
        #expect(DurationText.format(.milliseconds(1500)) == "1.5s")
        #expect(DurationText.format(.milliseconds(250)) == "250ms")
        #expect(DurationText.format(.seconds(3723)) == "1h2m3s")
        #expect(DurationText.format(.zero) == "0s")
        #expect(DurationText.short(.seconds(245)) == "4m05s")
        #expect(DurationText.short(.milliseconds(850)) == "850ms")
    }
}

@Suite("Coding paths as text")
struct CodingPathTextTests {
    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int?
        init(stringValue: String) { self.stringValue = stringValue }
        init(intValue: Int) {
            self.stringValue = "Index \(intValue)"
            self.intValue = intValue
        }
    }

    @Test("Keys joined with dots, list indices in brackets")
    func text() {
        #expect(CodingPathText.text([Key(stringValue: "app"), Key(stringValue: "routes"), Key(intValue: 1)]) == "app.routes[1]")
        #expect(CodingPathText.text([Key(intValue: 1), Key(stringValue: "host")]) == "[1].host")
        #expect(CodingPathText.text([]) == "")
    }
}

@Suite("Throttled log lines")
struct ThrottledLogTests {
    @Test("The first occurrence is logged, then at most one per interval with the count left out")
    func throttle() {
        var log = ThrottledLog(interval: .seconds(5))
        let start = ContinuousClock.now
        let decisions = [
            log.record(now: start),
            log.record(now: start + .seconds(1)),
            log.record(now: start + .seconds(4)),
            log.record(now: start + .seconds(5)),
            log.record(now: start + .seconds(6)),
            log.record(now: start + .seconds(60)),
        ]
        #expect(decisions == [0, nil, nil, 2, nil, 1])
    }
}
