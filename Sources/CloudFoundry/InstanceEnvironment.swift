import Foundation

/// The environment Diego gives one app instance, as a value: written by `cluster` (`variables`) and
/// read back by apps such as chat-node (`init(environment:)`). One definition for both sides.
public struct InstanceEnvironment: Sendable, Hashable {
    public var port: Int
    public var index: Int
    public var guid: InstanceGUID
    public var ip: String
    public var memoryLimitMB: Int
    public var application: VCAPApplication
    public var services: VCAPServices

    public init(
        port: Int,
        index: Int,
        guid: InstanceGUID = InstanceGUID(),
        ip: String = "127.0.0.1",
        memoryLimitMB: Int = 256,
        application: VCAPApplication,
        services: VCAPServices = VCAPServices()
    ) {
        self.port = port
        self.index = index
        self.guid = guid
        self.ip = ip
        self.memoryLimitMB = memoryLimitMB
        self.application = application
        self.services = services
    }

    /// The variables, exactly as Cloud Foundry names them.
    public var variables: [String: String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let application = (try? encoder.encode(self.application)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        let services = (try? encoder.encode(self.services)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return [
            "PORT": String(port),
            "VCAP_APP_PORT": String(port),
            "VCAP_APP_HOST": "0.0.0.0",
            "INSTANCE_INDEX": String(index),
            "CF_INSTANCE_INDEX": String(index),
            "INSTANCE_GUID": guid.value,
            "CF_INSTANCE_GUID": guid.value,
            "CF_INSTANCE_IP": ip,
            "CF_INSTANCE_INTERNAL_IP": ip,
            "CF_INSTANCE_PORT": String(port),
            "CF_INSTANCE_ADDR": "\(ip):\(port)",
            "CF_INSTANCE_PORTS": #"[{"external":\#(port),"internal":\#(port)}]"#,
            "MEMORY_LIMIT": "\(memoryLimitMB)m",
            "VCAP_APPLICATION": application,
            "VCAP_SERVICES": services,
        ]
    }
}

/// What an app reads from its environment, on Cloud Foundry, Kubernetes or a laptop: each field is nil
/// when its variable is absent. Invalid values are errors with the variable's name.
public struct AppEnvironment: Sendable, Hashable {
    public var port: Int?
    public var instanceIndex: Int?
    public var instanceGUID: String?
    public var application: VCAPApplication?
    public var services: VCAPServices?

    public init(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws(CloudFoundryError) {
        // An error names the variable the value came from, so that the user knows what to change.
        if let (name, text) = Self.first(["PORT", "VCAP_APP_PORT"], in: environment) {
            guard let value = Int(text), (0...65535).contains(value) else {
                throw .invalidValue(variable: name, value: text, expected: "a port number from 0 to 65535")
            }
            port = value
        }
        if let (name, text) = Self.first(["CF_INSTANCE_INDEX", "INSTANCE_INDEX"], in: environment) {
            guard let value = Int(text), value >= 0 else {
                throw .invalidValue(variable: name, value: text, expected: "a number >= 0")
            }
            instanceIndex = value
        }
        instanceGUID = environment["CF_INSTANCE_GUID"] ?? environment["INSTANCE_GUID"]
        if let json = environment["VCAP_APPLICATION"], !json.isEmpty {
            do {
                application = try JSONDecoder().decode(VCAPApplication.self, from: Data(json.utf8))
            } catch {
                throw .invalidJSON(variable: "VCAP_APPLICATION", reason: "\(error)")
            }
        }
        if let json = environment["VCAP_SERVICES"], !json.isEmpty {
            services = try VCAPServices(json: json)
        }
    }

    /// The first of `names` that the environment sets, with its value: for variables with aliases
    /// (PORT / VCAP_APP_PORT), so that an error names the one the value came from.
    public static func first(_ names: [String], in environment: [String: String]) -> (name: String, value: String)? {
        for name in names { if let value = environment[name] { return (name, value) } }
        return nil
    }
}
