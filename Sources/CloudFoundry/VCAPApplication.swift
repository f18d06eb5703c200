/// The `VCAP_APPLICATION` JSON that Cloud Foundry gives every instance.
public struct VCAPApplication: Sendable, Hashable, Codable {
    public struct Limits: Sendable, Hashable, Codable {
        public var fds: Int
        public var mem: Int
        public var disk: Int

        public init(fds: Int = 16384, mem: Int = 256, disk: Int = 1024) {
            self.fds = fds
            self.mem = mem
            self.disk = disk
        }
    }

    public var applicationID: String
    public var applicationName: String
    public var applicationURIs: [String]
    public var uris: [String]
    public var name: String
    public var spaceName: String
    public var spaceID: String
    public var organizationID: String
    public var organizationName: String
    public var processID: String
    public var processType: String
    public var version: String
    public var applicationVersion: String
    public var limits: Limits
    public var cfAPI: String

    public init(
        applicationID: String,
        applicationName: String,
        uris: [String],
        spaceName: String = "local",
        spaceID: String = "00000000-0000-4000-8000-000000000001",
        organizationName: String = "stickylab",
        organizationID: String = "00000000-0000-4000-8000-000000000002",
        processType: String = "web",
        version: String,
        limits: Limits = Limits(),
        cfAPI: String = "http://127.0.0.1"
    ) {
        self.applicationID = applicationID
        self.applicationName = applicationName
        self.applicationURIs = uris
        self.uris = uris
        self.name = applicationName
        self.spaceName = spaceName
        self.spaceID = spaceID
        self.organizationID = organizationID
        self.organizationName = organizationName
        self.processID = applicationID
        self.processType = processType
        self.version = version
        self.applicationVersion = version
        self.limits = limits
        self.cfAPI = cfAPI
    }

    enum CodingKeys: String, CodingKey {
        case applicationID = "application_id"
        case applicationName = "application_name"
        case applicationURIs = "application_uris"
        case uris, name, limits, version
        case spaceName = "space_name"
        case spaceID = "space_id"
        case organizationID = "organization_id"
        case organizationName = "organization_name"
        case processID = "process_id"
        case processType = "process_type"
        case applicationVersion = "application_version"
        case cfAPI = "cf_api"
    }
}
