import Foundation

/// An instance GUID as Diego makes them: the first 28 characters of a UUID, groups 8-4-4-4-4, lower
/// case. Every start and every restart gets a new one; this is why a crash breaks stickiness.
public struct InstanceGUID: Sendable, Hashable, Codable, CustomStringConvertible, LosslessStringConvertible {
    public let value: String

    /// A fresh GUID.
    public init() {
        value = String(UUID().uuidString.lowercased().prefix(28))
    }

    /// Accepts exactly the 8-4-4-4-4 hex form (any case; stored lower case).
    public init?(_ description: String) {
        let groups = description.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.map(\.count) == [8, 4, 4, 4, 4],
            groups.allSatisfy({ $0.allSatisfy(\.isHexDigit) })
        else { return nil }
        value = description.lowercased()
    }

    public var description: String { value }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let guid = InstanceGUID(text) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "'\(text)' is not an instance GUID (8-4-4-4-4 hex)"))
        }
        self = guid
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}
