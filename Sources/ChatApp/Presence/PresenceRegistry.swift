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
        /// Users with sockets on the other live instances (those stopped within their grace included).
        public var onlineElsewhere: Set<String>
        /// Users the other live instances publish as leaving (0 sockets, within the grace), with
        /// those instances' names.
        public var leavingElsewhere: [String: [String]] = [:]
        /// Users of reaped instances.
        public var reaped: Set<String>
        /// Instances reaped after their heartbeats stopped (killed, or cut off from Redis).
        public var reapedInstances: [String]
        /// Instances reaped at the end of the grace they handed their users over with (stopped).
        public var stoppedInstances: [String] = []
        /// This instance's entry was gone: another instance reaped it (no heartbeat from here for the
        /// TTL: cut off from Redis) and announced its users as gone. Not said of a first heartbeat.
        public var wasReaped = false
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
    /// `reap`: false for a while after this instance could not reach Redis (`PresenceState.mayReap`):
    /// the instances whose time ran out are then neither reaped nor taken for gone (their users count
    /// as online), since they may have been cut off as this one was.
    public func heartbeat(users: [(user: String, count: Int)], now: Int64, first: Bool = false, reap: Bool = true) async throws -> Heartbeat {
        let reply = try await redis.evalScript(
            first ? Self.firstHeartbeatScript : Self.heartbeatScript, keys: [keys.instances, keys.presence(instance)],
            arguments: arguments(users: users, now: now, expiresAt: now + ttl.milliseconds, reap: reap))
        guard let parts = reply.array, parts.count == 6, let online = parts[0].array, let reaped = parts[1].array,
            let dead = parts[2].array, let stopped = parts[3].array, let leaving = parts[4].array, let listed = parts[5].int
        else {
            throw RedisError.unexpectedReply(command: "presence heartbeat script", reply: reply.description)
        }
        var leavingElsewhere: [String: [String]] = [:]
        for pair in stride(from: 0, to: leaving.count - 1, by: 2) {
            if let user = leaving[pair].string, let name = leaving[pair + 1].string { leavingElsewhere[user, default: []].append(name) }
        }
        return Heartbeat(
            onlineElsewhere: Set(online.compactMap(\.string)),
            leavingElsewhere: leavingElsewhere,
            reaped: Set(reaped.compactMap(\.string)),
            reapedInstances: dead.compactMap(\.string),
            stoppedInstances: stopped.compactMap(\.string),
            wasReaped: !first && listed == 1
        )
    }

    /// Graceful stop: writes this instance's users (those whose sockets it just closed among them) and
    /// marks it stopped, live for `grace` more. Until then the others list its users, who reconnect
    /// to them; then the first heartbeat to find it expired reaps it, and "left" lines go out for the
    /// users online nowhere.
    public func handOver(users: [(user: String, count: Int)], now: Int64, grace: Duration) async throws {
        _ = try await redis.evalScript(
            Self.handOverScript, keys: [keys.instances, keys.presence(instance)],
            arguments: arguments(users: users, now: now, expiresAt: now + grace.milliseconds, reap: false))
    }

    /// ARGV of the scripts: instance, now ms, expiry ms, hash lifetime ms, presence key prefix,
    /// whether to reap (1 or 0), then user/count pairs.
    private func arguments(users: [(user: String, count: Int)], now: Int64, expiresAt: Int64, reap: Bool) -> [RESPArgument] {
        var arguments: [RESPArgument] = [
            RESPArgument(instance), RESPArgument(Int(now)), RESPArgument(Int(expiresAt)), RESPArgument(Int(recordLifetime.milliseconds)),
            RESPArgument(keys.presencePrefix), RESPArgument(reap ? 1 : 0),
        ]
        for (user, count) in users { arguments += [RESPArgument(user), RESPArgument(count)] }
        return arguments
    }

    /// Writes this instance's entry: its hash (users, and when stopping the field "", which no user
    /// name can be, with the time) and its expiry. KEYS[1] instances zset, KEYS[2] this instance's
    /// hash; ARGV as in `arguments`.
    private static func writeEntry(stopped: Bool) -> String {
        """
        local reapedWhileAlive = redis.call('DEL', ARGV[5] .. '!reaped:' .. ARGV[1])
        redis.call('DEL', KEYS[2])
        local i = 7
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

    /// Then reaps the instances whose expiry passed (unless ARGV[6] is 0: then none, and all count as
    /// live), and reads the users of the live ones (the others' hashes are reached through the prefix:
    /// a standalone Redis; this script is not meant for Redis Cluster). Returns {users with sockets
    /// elsewhere, reaped users, reaped instances, reaped instances that had stopped gracefully,
    /// user/instance pairs of users leaving elsewhere (0 sockets), 1 when another instance reaped this
    /// one as crashed since its last heartbeat (the reaper leaves a mark for it), else 0}.
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
        local reap = ARGV[6] == '1'
        local reaped = {}
        local crashed = {}
        local stopped = {}
        if reap then
          for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)) do
            if redis.call('ZREM', KEYS[1], name) == 1 then
              local key = ARGV[5] .. name
              if redis.call('HEXISTS', key, '') == 1 then
                stopped[#stopped + 1] = name
              else
                crashed[#crashed + 1] = name
                -- If it was alive after all (cut off from Redis), its next heartbeat learns it.
                redis.call('SET', ARGV[5] .. '!reaped:' .. name, 1, 'PX', tonumber(ARGV[4]))
              end
              for _, user in ipairs(redis.call('HKEYS', key)) do
                if user ~= '' then reaped[#reaped + 1] = user end
              end
              redis.call('DEL', key)
            end
          end
        end
        local seen = {}
        local online = {}
        local leaving = {}
        local from = now
        if not reap then from = '-inf' end
        for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf')) do
          if name ~= ARGV[1] then
            local fields = redis.call('HGETALL', ARGV[5] .. name)
            for f = 1, #fields, 2 do
              local user = fields[f]
              if user ~= '' then
                if (tonumber(fields[f + 1]) or 0) > 0 then
                  if not seen[user] then
                    seen[user] = true
                    online[#online + 1] = user
                  end
                else
                  leaving[#leaving + 1] = user
                  leaving[#leaving + 1] = name
                end
              end
            end
          end
        end
        return {online, reaped, crashed, stopped, leaving, reapedWhileAlive}
        """
}
