/// Who is online, as seen by one instance, as a value: its own users (socket counts), the users online
/// anywhere (from the last heartbeat), and users whose last local socket closed and who have not shown
/// up anywhere since (they get a "left" line after a grace period). Time is passed in (milliseconds).
public struct PresenceState: Sendable, Hashable {
    /// Users with sockets on this instance, and how many.
    public private(set) var local: [String: Int] = [:]
    /// Users online on any instance: the others' as of the last heartbeat, this instance's own now.
    public private(set) var online: Set<String> = []
    /// Users whose last local socket closed, with when.
    public private(set) var leaving: [String: Int64] = [:]
    /// The online list clients were last sent.
    public private(set) var published: Set<String> = []
    /// Users another instance announced ("joined" lines) that no heartbeat has shown yet, with when:
    /// their instance publishes them at its own next heartbeat, so until then this instance's
    /// heartbeats, which read what was published, must not take them off the list again.
    public private(set) var unconfirmed: [String: Int64] = [:]
    /// Heartbeats that took this instance's users to write them (`beginHeartbeat`), and the newest of
    /// them that was written to Redis (one runs at a time, so in order).
    public private(set) var heartbeatsBegun = 0
    public private(set) var heartbeatsWritten = 0
    /// Users a "joined" line went through the chat for (from any instance) since they came online:
    /// another `join` for them (a second tab on another instance) announces nothing.
    public private(set) var joinAnnounced: Set<String> = []
    /// When this instance last failed to write a heartbeat (Redis unreachable). For `confirmWithin`
    /// after it, it reaps no instance: their entries may have expired while they were cut off from
    /// Redis as this one was, alive, and their users would be announced as gone.
    public private(set) var lastHeartbeatFailure: Int64?
    /// How long a user may be gone before a "left" line (a page refresh or a failover takes less).
    public let grace: Int64
    /// How long an announced user counts as online without a heartbeat showing them: the presence
    /// TTL, within which every live instance publishes its users (or is reaped).
    public let confirmWithin: Int64

    public init(graceMilliseconds: Int64, confirmWithinMilliseconds: Int64) {
        self.grace = graceMilliseconds
        self.confirmWithin = confirmWithinMilliseconds
    }

    /// A socket of `user` connected here. Returns true when the user was not known to be online, so a
    /// "joined" line is due (a refresh or a reconnect of an online user announces nothing).
    public mutating func connected(_ user: String) -> Bool {
        let wasOnline = online.contains(user) || local[user] != nil || leaving[user] != nil
        local[user, default: 0] += 1
        leaving[user] = nil
        online.insert(user)
        if !wasOnline { joinAnnounced.remove(user) }
        return !wasOnline
    }

    /// Whether a `join` of `user` is still to be announced: no "joined" line for them went through the
    /// chat since they came online (one did when they joined on another instance first).
    public func joinIsDue(_ user: String) -> Bool { !joinAnnounced.contains(user) }

    /// A heartbeat could not be written at `now`.
    public mutating func heartbeatFailed(now: Int64) {
        lastHeartbeatFailure = now
    }

    /// Whether this instance's heartbeat at `now` may reap the instances whose time ran out: not
    /// until `confirmWithin` after its own last failure (every live instance writes a heartbeat
    /// within that time once Redis is back, and is then no longer expired).
    public func mayReap(now: Int64) -> Bool {
        guard let lastHeartbeatFailure else { return true }
        return now - lastHeartbeatFailure >= confirmWithin
    }

    /// A heartbeat takes this instance's users to write them: its number (for `heartbeatWritten`), the
    /// users with their socket counts, and whether it is the first to be written by this run (none was
    /// yet: the first moves a predecessor's entry aside instead of replacing it, even when an earlier
    /// attempt failed).
    public mutating func beginHeartbeat() -> (number: Int, users: [(user: String, count: Int)], first: Bool) {
        heartbeatsBegun += 1
        return (heartbeatsBegun, localCounts, heartbeatsWritten == 0)
    }

    /// Heartbeat `number` was written to Redis: every user who was here when it began is published.
    public mutating func heartbeatWritten(_ number: Int) {
        heartbeatsWritten = max(heartbeatsWritten, number)
    }

    /// The heartbeat that publishes a user arriving now (one that began already read the users without
    /// them). Their "joined" line waits until it was written: were this instance to die in between,
    /// the reaper would find them in its hash and announce that they left, instead of the other
    /// instances listing them until `confirmWithin` and dropping them without a word.
    public var heartbeatPublishingNewArrivals: Int { heartbeatsBegun + 1 }

    /// Whether heartbeat `number` was written.
    public func written(_ number: Int) -> Bool { heartbeatsWritten >= number }

    /// A socket of `user` closed here at `now`.
    public mutating func disconnected(_ user: String, now: Int64) {
        guard let count = local[user] else { return }
        if count <= 1 {
            local[user] = nil
            leaving[user] = now
        } else {
            local[user] = count - 1
        }
    }

    /// The heartbeat answered with the users with sockets on the other instances (not this one's),
    /// the users the others publish as leaving (their last socket there closed within the grace), by
    /// instance, and the users of instances that died (reaped by this instance). Returns who should
    /// get a "left" line now. `now`: when the heartbeat was sent (users announced after it may be
    /// missing from its answer). `instance`: this instance's name: of the instances a user is leaving
    /// together (their tabs on two instances closed at once), the first by name announces it, once.
    public mutating func heartbeat(
        onlineElsewhere: Set<String>, leavingElsewhere: [String: [String]] = [:], reaped: Set<String>, now: Int64, instance: String = ""
    ) -> [String] {
        var everyone = onlineElsewhere
        everyone.formUnion(local.keys)
        for (user, since) in unconfirmed {
            // Shown by a heartbeat: online, leaving, or in the entry of an instance just reaped.
            if onlineElsewhere.contains(user) || leavingElsewhere[user] != nil || reaped.contains(user) || now - since >= confirmWithin {
                unconfirmed[user] = nil
            } else {
                everyone.insert(user)
            }
        }
        var left: [String] = []
        for (user, since) in leaving {
            if everyone.contains(user) {
                leaving[user] = nil
            } else if now - since >= grace {
                // Leaving on an instance first by name too: that one announces it, and its line ends
                // this leave here (`announced`).
                if leavingElsewhere[user]?.contains(where: { $0 < instance }) == true { continue }
                leaving[user] = nil
                left.append(user)
            }
        }
        // Within the grace a leaving user still counts as online, here or elsewhere: a refresh does not flicker.
        everyone.formUnion(leaving.keys)
        everyone.formUnion(leavingElsewhere.keys)
        for user in reaped where !everyone.contains(user) && !left.contains(user) {
            left.append(user)
        }
        online = everyone
        joinAnnounced.formIntersection(online)
        return left.sorted()
    }

    /// A "joined" or "left" line (from this instance or another) went through the chat at `now`: the
    /// list follows at once instead of at the next heartbeat. A joined user stays listed until a
    /// heartbeat shows them (their instance publishes them at its next one) or `confirmWithin` passes;
    /// from then on the heartbeats have the last word. A user who left according to another instance
    /// but has a socket here stays online; one who left here within the grace too had their leave
    /// announced by that line (tabs on two instances closed together), and gets no second one.
    public mutating func announced(_ user: String, joined: Bool, now: Int64) {
        if joined {
            online.insert(user)
            joinAnnounced.insert(user)
            if local[user] == nil { unconfirmed[user] = now }
        } else if local[user] == nil {
            // Their leave here, if any, is announced: by the instance that closed their last socket
            // together with this one, first by name.
            leaving[user] = nil
            online.remove(user)
            unconfirmed[user] = nil
            joinAnnounced.remove(user)
        }
    }

    /// The online list when it differs from what clients were last sent (then it counts as sent).
    public mutating func takeChangedOnlineList() -> [String]? {
        guard online != published else { return nil }
        published = online
        return online.sorted()
    }

    /// The users to publish for this instance, with their socket counts: 0 for a user whose last
    /// socket closed here within the grace. They still count as online for the other instances, as
    /// they do here, so a page refresh does not make them flicker off everyone else's list.
    public var localCounts: [(user: String, count: Int)] {
        var counts = local
        for user in leaving.keys where counts[user] == nil { counts[user] = 0 }
        return counts.map { ($0.key, $0.value) }.sorted { $0.user < $1.user }
    }

    /// Whether `user` is among the users this instance publishes (`localCounts`): a user who arrives
    /// here and is not must be published at once, for the other instances to see them.
    public func publishes(_ user: String) -> Bool {
        local[user] != nil || leaving[user] != nil
    }
}
