/// The channels and patterns a subscriber wants, as a value. After a reconnect, `restoreCommands`
/// says what to send so the new connection has them all again.
public struct SubscriptionSet: Sendable, Equatable {
    public private(set) var channels: Set<String> = []
    public private(set) var patterns: Set<String> = []

    public init() {}

    /// Adds names; returns those that were not there (the ones to send).
    public mutating func add(channels names: [String]) -> [String] { Self.insert(names, into: &channels) }
    public mutating func add(patterns names: [String]) -> [String] { Self.insert(names, into: &patterns) }
    /// Removes names; returns those that were there.
    public mutating func remove(channels names: [String]) -> [String] { Self.delete(names, from: &channels) }
    public mutating func remove(patterns names: [String]) -> [String] { Self.delete(names, from: &patterns) }

    public var isEmpty: Bool { channels.isEmpty && patterns.isEmpty }

    /// What a fresh connection must send to have everything again, in a stable order.
    public var restoreCommands: [(kind: SubscriptionKind, names: [String])] {
        var commands: [(SubscriptionKind, [String])] = []
        if !channels.isEmpty { commands.append((.subscribe, channels.sorted())) }
        if !patterns.isEmpty { commands.append((.psubscribe, patterns.sorted())) }
        return commands
    }

    /// What to send so that a connection that has `snapshot` ends up with this set: the changes made
    /// while a reconnect restored `snapshot`, which no connection carried.
    public func changes(since snapshot: SubscriptionSet) -> [(kind: SubscriptionKind, names: [String])] {
        var commands: [(SubscriptionKind, [String])] = []
        let subscribe = channels.subtracting(snapshot.channels).sorted()
        let unsubscribe = snapshot.channels.subtracting(channels).sorted()
        let psubscribe = patterns.subtracting(snapshot.patterns).sorted()
        let punsubscribe = snapshot.patterns.subtracting(patterns).sorted()
        if !subscribe.isEmpty { commands.append((.subscribe, subscribe)) }
        if !unsubscribe.isEmpty { commands.append((.unsubscribe, unsubscribe)) }
        if !psubscribe.isEmpty { commands.append((.psubscribe, psubscribe)) }
        if !punsubscribe.isEmpty { commands.append((.punsubscribe, punsubscribe)) }
        return commands
    }

    private static func insert(_ names: [String], into set: inout Set<String>) -> [String] {
        var added: [String] = []
        for name in names where set.insert(name).inserted { added.append(name) }
        return added
    }

    private static func delete(_ names: [String], from set: inout Set<String>) -> [String] {
        var removed: [String] = []
        for name in names where set.remove(name) != nil { removed.append(name) }
        return removed
    }
}

public enum SubscriptionKind: String, Sendable, Hashable {
    case subscribe, psubscribe, unsubscribe, punsubscribe
}
