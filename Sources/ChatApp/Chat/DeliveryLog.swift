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

/// What one socket gets before it joins the live broadcasts, worked out in turns between two owners,
/// as a value: the delivery loop, which alone knows what this instance delivered (`plan(_:)` against
/// its `DeliveryLog`), and the socket's own task, which reads the stream when memory does not reach
/// back far enough (`add(page:after:)`). The reads happen outside the loop, so a client that comes
/// back with an old offset, or hundreds of them after a failover to a fresh instance, never hold up
/// delivery to everyone else.
///
/// The turns: the loop plans; when the plan is missing lines after some id and reading may still
/// help (`shouldRead(missingAfter:)`), the socket's task reads the stream after that id, page by
/// page, and hands the value back to the loop, which plans again (lines may have been delivered
/// meanwhile). At most `pageLimit` pages are read; a read that failed, or one that brought nothing
/// the plan can use, ends the turns: the socket gets what there is.
public struct CatchUp: Sendable, Equatable {
    public enum Start: Sendable, Equatable {
        /// A new socket: the recent history, then live. `gap`: its client had an offset the stream
        /// no longer holds (see the `welcome` event).
        case history(gap: Bool)
        /// A socket whose client has every line up to this offset: every line after it, then live.
        case after(StreamID)
    }

    public let start: Start
    /// Lines read from the stream for this socket, oldest first, without duplicates: the recent
    /// history, or what was read after the offset.
    public private(set) var fetched: [StoredLine]
    /// Pages read after a missing point so far, and at most.
    public private(set) var pagesRead = 0
    public let pageLimit: Int
    /// Where the last read started: a plan still missing lines after the same point gains nothing
    /// from reading it again.
    public private(set) var lastReadAfter: StreamID?
    /// A read failed: no more reads.
    public private(set) var failed = false

    public init(start: Start, fetched: [StoredLine] = [], pageLimit: Int) {
        self.start = start
        self.fetched = fetched
        self.pageLimit = max(0, pageLimit)
    }

    /// The lines to send and where lines are missing (nil: none), against what this instance delivered.
    public func plan(_ delivery: DeliveryLog) -> (lines: [StoredLine], missingAfter: StreamID?) {
        switch start {
        case .history: return delivery.newSocketLines(history: fetched)
        case .after(let offset): return delivery.recoveredSocketLines(after: offset, fetched: fetched)
        }
    }

    /// Whether the socket's task should read the stream after `missingAfter` before the loop plans
    /// again: pages are left, no read failed, and the last read did not start at the same point (the
    /// stream no longer holds those lines, or this instance has not delivered what it read).
    public func shouldRead(missingAfter: StreamID?) -> Bool {
        guard let missingAfter else { return false }
        return !failed && pagesRead < pageLimit && lastReadAfter != missingAfter
    }

    /// The socket's task starts reading the stream after the plan's missing point.
    public mutating func beginReading(after missing: StreamID) {
        lastReadAfter = missing
    }

    /// A page read from the stream after `after` (oldest first), `after` being the plan's missing
    /// point or the previous page's last line. Lines fetched before that are newer than `after` are
    /// replaced by the page (they are in it, or were read before this instance delivered them).
    /// Returns whether to read the next page: this one was full (`pageSize`) and pages are left.
    public mutating func add(page: [StoredLine], after: StreamID, pageSize: Int) -> Bool {
        fetched = fetched.filter { $0.id <= after } + page
        pagesRead += 1
        return page.count >= pageSize && pagesRead < pageLimit
    }

    /// A read failed: the socket gets what the loop can plan without it.
    public mutating func readFailed() {
        failed = true
    }
}
