/// The order in which one instance hands chat lines to its sockets, as a value: the lines its single
/// Redis subscription delivered, newest last, in stream order, and the cursor of each socket. It
/// guarantees every socket gets each line once and in order, including the socket that is being
/// recovered while lines keep arriving, and tells when Redis must be asked to fill a gap.
public struct DeliveryLog: Sendable {
    /// Recent lines, oldest first (bounded by `capacity`).
    public private(set) var recent: [StoredLine] = []
    /// The highest id delivered to this instance so far (from the subscription or a gap fill).
    public private(set) var lastID: StreamID?
    /// The newest line evicted from `recent`; a socket behind it cannot be caught up from memory.
    public private(set) var evictedUpTo: StreamID?
    public let capacity: Int

    /// `lastID`: where this instance starts (the stream's newest entry at start-up); lines up to it
    /// were never in memory, so a socket behind it is caught up from Redis.
    public init(capacity: Int = 1_024, lastID: StreamID? = nil) {
        self.capacity = max(1, capacity)
        self.lastID = lastID
        self.evictedUpTo = lastID
    }

    /// A line arrived (subscription or gap fill). Returns false when it is not newer than what was
    /// already delivered (a duplicate after a gap fill): drop it.
    public mutating func accept(_ line: StoredLine) -> Bool {
        if let lastID, line.id <= lastID { return false }
        lastID = line.id
        recent.append(line)
        if recent.count > capacity {
            let overflow = recent.count - capacity
            evictedUpTo = recent[overflow - 1].id
            recent.removeFirst(overflow)
        }
        return true
    }

    /// What a socket whose cursor is `cursor` (the last id it has) still needs from memory, or nil when
    /// memory cannot prove there is no gap (ask Redis from `cursor`).
    public func catchUp(from cursor: StreamID) -> [StoredLine]? {
        if let evictedUpTo, cursor < evictedUpTo { return nil }
        guard let first = recent.firstIndex(where: { $0.id > cursor }) else { return [] }
        return Array(recent[first...])
    }

    /// Whether a line published after `previous` (the stream entry stored just before it) shows that
    /// the subscription missed something: `previous` was never delivered here. Fill the gap first.
    public func missed(before previous: StreamID) -> Bool {
        previous > (lastID ?? .zero)
    }

    /// Where to start a gap fill after the subscription may have missed messages.
    public var gapFillStart: StreamID? { lastID }

    /// What a new socket gets before it joins the live broadcasts, from the `history` read for it
    /// (oldest first): only lines this instance has already delivered (newer ones reach it live), then
    /// what was delivered since the history was read. `missingAfter` is set when memory no longer
    /// reaches back to the history's end: read the stream after it and ask again with the lines added.
    public func newSocketLines(history: [StoredLine]) -> (lines: [StoredLine], missingAfter: StreamID?) {
        let delivered = lastID ?? .zero
        let lines = history.filter { $0.id <= delivered }
        let cursor = lines.last?.id ?? delivered
        guard let more = catchUp(from: cursor) else { return (lines, cursor) }
        return (lines + more, nil)
    }

    /// What a RECOVERED socket (its client has every line up to `offset`) gets before it joins the
    /// live broadcasts: the lines after `offset` this instance has already delivered, from `fetched`
    /// (read from Redis after `offset`, oldest first) and memory. Lines this instance has not delivered
    /// yet reach it live. `missingAfter` as for `newSocketLines`.
    public func recoveredSocketLines(after offset: StreamID, fetched: [StoredLine] = []) -> (lines: [StoredLine], missingAfter: StreamID?) {
        let delivered = lastID ?? .zero
        guard offset < delivered else { return ([], nil) }
        let lines = fetched.filter { $0.id > offset && $0.id <= delivered }
        let cursor = lines.last?.id ?? offset
        guard let more = catchUp(from: cursor) else { return (lines, cursor) }
        return (lines + more, nil)
    }

    /// Whether a recovered socket whose client is at `offset` can join the live broadcasts now: only
    /// once this instance has delivered up to its offset (else it would get those lines twice).
    public func canJoinLive(at offset: StreamID) -> Bool {
        offset <= (lastID ?? .zero)
    }
}

/// One socket's position in the chat: lines at or before `cursor` were sent to it. Pure helper.
public struct DeliveryCursor: Sendable, Hashable {
    public private(set) var cursor: StreamID?

    public init(cursor: StreamID?) {
        self.cursor = cursor
    }

    /// True when `id` is newer than what the socket has: send it and move the cursor.
    public mutating func advance(to id: StreamID) -> Bool {
        if let cursor, id <= cursor { return false }
        cursor = id
        return true
    }
}
