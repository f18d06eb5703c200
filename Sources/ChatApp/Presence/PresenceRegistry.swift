import NIOCore
import RedisClient
import SocketIO

/// Presence in Redis: each instance writes its users to `<prefix>presence:<instance>` (a hash user ->
/// socket count) and its expiry time into the sorted set `<prefix>instances`. One Lua script per
/// heartbeat writes this instance's entry, reaps instances whose time ran out (exactly one live
/// instance reaps each, so one "left" line is published), and returns who is online on the other
/// instances (this one knows its own users better than its last heartbeat does).
///
/// An instance that stops gracefully hands its users over instead of leaving without a word
/// (`handOver`): its entry stays, marked as stopped, until a grace has passed, for its clients to
/// reconnect elsewhere; then the reaper announces the users who did not come back. Each hash lives
/// `recordLifetime` (a day), so a cluster stopped or killed as a whole and started again within it
/// still announces who left.
public struct PresenceRegistry: Sendable {
    public let redis: RedisClient
    public let keys: ChatKeys
    public let instance: String
    public let ttl: Duration

    public init(redis: RedisClient, keys: ChatKeys, instance: String, ttl: Duration) {
        self.redis = redis
        self.keys = keys
        self.instance = instance
        self.ttl = ttl
    }

    public struct Heartbeat: Sendable, Hashable {
        /// Users of the other live instances (those stopped within their grace included).
        public var onlineElsewhere: Set<String>
        /// Users of reaped instances.
        public var reaped: Set<String>
        /// Instances reaped after their heartbeats stopped (killed, or cut off from Redis).
        public var reapedInstances: [String]
        /// Instances reaped at the end of the grace they handed their users over with (stopped).
        public var stoppedInstances: [String] = []
    }

    /// How long an instance's hash is kept without a heartbeat, for a reaper to read: a day, or three
    /// TTLs if longer. Long enough for a whole cluster that was stopped or killed to be started again.
    public var recordLifetime: Duration { max(ttl * 3, .seconds(86_400)) }

    /// Writes this instance's users, reaps dead instances, reads who is online on the others. `now` in ms (Redis
    /// compares it with the other instances' expiry times, which they computed from their own clocks:
    /// one machine here, so one clock).
    /// `first`: this process's first heartbeat. An entry under its instance id is then a previous
    /// run's (chat-node restarted on the same port, or with the same CF_INSTANCE_GUID): it is moved
    /// aside, under `<instance>#<now>`, with its expiry, and reaped like any other instance's, instead
    /// of being overwritten with its users unannounced.
    public func heartbeat(users: [(user: String, count: Int)], now: Int64, first: Bool = false) async throws -> Heartbeat {
        let reply = try await redis.evalScript(
            first ? Self.firstHeartbeatScript : Self.heartbeatScript, keys: [keys.instances, keys.presence(instance)],
            arguments: arguments(users: users, now: now, expiresAt: now + ttl.milliseconds))
        guard let parts = reply.array, parts.count == 4, let online = parts[0].array, let reaped = parts[1].array,
            let dead = parts[2].array, let stopped = parts[3].array
        else {
            throw RedisError.unexpectedReply(command: "presence heartbeat script", reply: reply.description)
        }
        return Heartbeat(
            onlineElsewhere: Set(online.compactMap(\.string)),
            reaped: Set(reaped.compactMap(\.string)),
            reapedInstances: dead.compactMap(\.string),
            stoppedInstances: stopped.compactMap(\.string)
        )
    }

    /// Graceful stop: writes this instance's users (those whose sockets it just closed among them) and
    /// marks it stopped, live for `grace` more. Until then the others list its users, who reconnect
    /// to them; then the first heartbeat to find it expired reaps it, and "left" lines go out for the
    /// users online nowhere.
    public func handOver(users: [(user: String, count: Int)], now: Int64, grace: Duration) async throws {
        _ = try await redis.evalScript(
            Self.handOverScript, keys: [keys.instances, keys.presence(instance)],
            arguments: arguments(users: users, now: now, expiresAt: now + grace.milliseconds))
    }

    /// ARGV of both scripts: instance, now ms, expiry ms, hash lifetime ms, presence key prefix, then
    /// user/count pairs.
    private func arguments(users: [(user: String, count: Int)], now: Int64, expiresAt: Int64) -> [RESPArgument] {
        var arguments: [RESPArgument] = [
            RESPArgument(instance), RESPArgument(Int(now)), RESPArgument(Int(expiresAt)), RESPArgument(Int(recordLifetime.milliseconds)),
            RESPArgument(keys.presencePrefix),
        ]
        for (user, count) in users { arguments += [RESPArgument(user), RESPArgument(count)] }
        return arguments
    }

    /// Writes this instance's entry: its hash (users, and when stopping the field "", which no user
    /// name can be, with the time) and its expiry. KEYS[1] instances zset, KEYS[2] this instance's
    /// hash; ARGV as in `arguments`.
    private static func writeEntry(stopped: Bool) -> String {
        """
        redis.call('DEL', KEYS[2])
        local i = 6
        while i < #ARGV do
          redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
          i = i + 2
        end
        \(stopped ? "redis.call('HSET', KEYS[2], '', ARGV[2])" : "")
        redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
        redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
        """
    }

    static let handOverScript = RedisScript(writeEntry(stopped: true))

    /// Then reaps the instances whose expiry passed, and reads the users of the live ones (the
    /// others' hashes are reached through the prefix: a standalone Redis; this script is not meant for
    /// Redis Cluster). Returns {online elsewhere, reaped users, reaped instances, reaped instances
    /// that had stopped gracefully}.
    static let heartbeatScript = RedisScript(writeEntry(stopped: false) + "\n" + reapAndRead)

    /// The same, after moving a previous run's entry aside (see `heartbeat(users:now:first:)`).
    static let firstHeartbeatScript = RedisScript(
        """
        local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if expiry and redis.call('EXISTS', KEYS[2]) == 1 then
          local aside = ARGV[1] .. '#' .. ARGV[2]
          redis.call('RENAME', KEYS[2], ARGV[5] .. aside)
          redis.call('ZADD', KEYS[1], expiry, aside)
        end
        """ + "\n" + writeEntry(stopped: false) + "\n" + reapAndRead)

    private static let reapAndRead = """
        local now = tonumber(ARGV[2])
        local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
        local reaped = {}
        local crashed = {}
        local stopped = {}
        for _, name in ipairs(dead) do
          if redis.call('ZREM', KEYS[1], name) == 1 then
            local key = ARGV[5] .. name
            if redis.call('HEXISTS', key, '') == 1 then
              stopped[#stopped + 1] = name
            else
              crashed[#crashed + 1] = name
            end
            for _, user in ipairs(redis.call('HKEYS', key)) do
              if user ~= '' then reaped[#reaped + 1] = user end
            end
            redis.call('DEL', key)
          end
        end
        local seen = {}
        local online = {}
        for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
          if name ~= ARGV[1] then
            for _, user in ipairs(redis.call('HKEYS', ARGV[5] .. name)) do
              if user ~= '' and not seen[user] then
                seen[user] = true
                online[#online + 1] = user
              end
            end
          end
        end
        return {online, reaped, crashed, stopped}
        """
}
