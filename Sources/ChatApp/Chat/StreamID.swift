/// A Redis Stream entry id, `<milliseconds>-<sequence>`, ordered as Redis orders them. chat-node uses
/// them as Socket.IO recovery offsets and as the one global order of the chat.
public struct StreamID: Sendable, Hashable, Comparable, CustomStringConvertible, LosslessStringConvertible {
    public var milliseconds: UInt64
    public var sequence: UInt64

    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    /// Parses `ms-seq` (digits only, as Redis writes them); nil for anything else, which makes client
    /// offsets safe to use in commands.
    public init?(_ text: String) {
        guard text.utf8.count <= 41 else { return nil }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCIIDigit) }),
            let milliseconds = UInt64(parts[0]), let sequence = UInt64(parts[1])
        else { return nil }
        self.init(milliseconds: milliseconds, sequence: sequence)
    }

    public var description: String { "\(milliseconds)-\(sequence)" }

    public static func < (lhs: StreamID, rhs: StreamID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }

    public static let zero = StreamID(milliseconds: 0, sequence: 0)
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
