import Foundation

/// One service binding in `VCAP_SERVICES`, the way a CF Redis binding looks.
public struct ServiceBinding: Sendable, Hashable, Codable {
    public struct Credentials: Sendable, Hashable, Codable {
        public var host: String?
        public var port: Int?
        public var password: String?
        public var uri: String?

        public init(host: String? = nil, port: Int? = nil, password: String? = nil, uri: String? = nil) {
            self.host = host
            self.port = port
            self.password = password
            self.uri = uri
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            host = try? container.decodeIfPresent(String.self, forKey: .host)
            // Brokers differ: the port may be a number or a string.
            if let number = try? container.decodeIfPresent(Int.self, forKey: .port) {
                port = number
            } else if let text = try? container.decodeIfPresent(String.self, forKey: .port) {
                port = Int(text)
            }
            password = try? container.decodeIfPresent(String.self, forKey: .password)
            uri = (try? container.decodeIfPresent(String.self, forKey: .uri)) ?? (try? container.decodeIfPresent(String.self, forKey: .url))
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encodeIfPresent(host, forKey: .host)
            try container.encodeIfPresent(port, forKey: .port)
            try container.encodeIfPresent(password, forKey: .password)
            try container.encodeIfPresent(uri, forKey: .uri)
        }

        enum CodingKeys: String, CodingKey { case host, port, password, uri, url }
    }

    public var label: String
    public var name: String
    public var plan: String
    public var tags: [String]
    public var credentials: Credentials

    public init(label: String, name: String, plan: String = "local", tags: [String] = [], credentials: Credentials) {
        self.label = label
        self.name = name
        self.plan = plan
        self.tags = tags
        self.credentials = credentials
    }

    enum CodingKeys: String, CodingKey { case label, name, plan, tags, credentials }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        label = try container.decodeIfPresent(String.self, forKey: .label) ?? ""
        name = try container.decodeIfPresent(String.self, forKey: .name) ?? ""
        plan = try container.decodeIfPresent(String.self, forKey: .plan) ?? ""
        tags = try container.decodeIfPresent([String].self, forKey: .tags) ?? []
        credentials = try container.decodeIfPresent(Credentials.self, forKey: .credentials) ?? Credentials()
    }

    /// A Redis binding for the simulator's Redis (label `redis`, tags `redis`, `keyvalue`). Its `uri`
    /// is `uri` when given (a URL with a user name or a database), else built from the rest.
    public static func redis(name: String = "redis", host: String, port: Int, password: String?, uri: String? = nil) -> ServiceBinding {
        var built = "redis://"
        if let password { built += ":\(password.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? password)@" }
        built += "\(host):\(port)"
        let uri = uri ?? built
        return ServiceBinding(
            label: "redis",
            name: name,
            tags: ["redis", "keyvalue"],
            credentials: Credentials(host: host, port: port, password: password, uri: uri)
        )
    }

    /// The Redis URL of this binding: its `uri`, else built from host, port and password.
    public var redisURL: String? {
        if let uri = credentials.uri, !uri.isEmpty { return uri }
        guard let host = credentials.host else { return nil }
        var url = "redis://"
        if let password = credentials.password, !password.isEmpty {
            url += ":\(password.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? password)@"
        }
        return url + "\(host):\(credentials.port ?? 6379)"
    }

    var looksLikeRedis: Bool {
        ([label, name] + tags).contains { $0.lowercased().contains("redis") || $0.lowercased().contains("valkey") }
    }
}

/// `VCAP_SERVICES`: bindings keyed by service label.
public struct VCAPServices: Sendable, Hashable, Codable {
    public var bindings: [String: [ServiceBinding]]

    public init(bindings: [String: [ServiceBinding]] = [:]) {
        self.bindings = bindings
    }

    public init(binding: ServiceBinding) {
        self.bindings = [binding.label: [binding]]
    }

    public init(from decoder: any Decoder) throws {
        bindings = try decoder.singleValueContainer().decode([String: [ServiceBinding]].self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(bindings)
    }

    /// Parses the JSON text of `VCAP_SERVICES`.
    public init(json: String) throws(CloudFoundryError) {
        do {
            self = try JSONDecoder().decode(VCAPServices.self, from: Data(json.utf8))
        } catch {
            throw .invalidJSON(variable: "VCAP_SERVICES", reason: "\(error)")
        }
    }

    /// The first Redis binding (by label, name or tag), in label order so the choice is stable.
    public var redisBinding: ServiceBinding? {
        for label in bindings.keys.sorted() {
            if let binding = bindings[label]?.first(where: \.looksLikeRedis) { return binding }
        }
        return nil
    }
}

public enum CloudFoundryError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidJSON(variable: String, reason: String)
    case invalidValue(variable: String, value: String, expected: String)

    public var description: String {
        switch self {
        case .invalidJSON(let variable, let reason): "\(variable) is not valid JSON: \(reason)"
        case .invalidValue(let variable, let value, let expected): "\(variable)='\(value)' is not valid: expected \(expected)"
        }
    }
}
