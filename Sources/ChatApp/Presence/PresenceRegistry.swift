import NIOCore
import RedisClient
import SocketIO

/// Presence in Redis: each instance writes its users to `<prefix>presence:<instance>` (a hash user ->
/// socket count) with a TTL, and its expiry time into the sorted set `<prefix>instances`. One Lua
/// script per heartbeat writes this instance's entry, reaps instances whose time ran out (exactly one
/// live instance reaps each, so one "left" line is published), and returns who is online on the other
/// instances (this one knows its own users better than its last heartbeat does).
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
        /// Users of the other live instances.
        public var onlineElsewhere: Set<String>
        /// Users of reaped instances.
        public var reaped: Set<String>
        public var reapedInstances: [String]
    }

    /// Writes this instance's users, reaps dead instances, reads who is online on the others. `now` in ms (Redis
    /// compares it with the other instances' expiry times, which they computed from their own clocks:
    /// one machine here, so one clock).
    public func heartbeat(users: [(user: String, count: Int)], now: Int64) async throws -> Heartbeat {
        var arguments: [RESPArgument] = [
            RESPArgument(instance), RESPArgument(Int(now)), RESPArgument(Int(ttl.milliseconds)), RESPArgument(keys.presencePrefix),
        ]
        for (user, count) in users { arguments += [RESPArgument(user), RESPArgument(count)] }
        let reply = try await redis.evalScript(Self.heartbeatScript, keys: [keys.instances, keys.presence(instance)], arguments: arguments)
        guard let parts = reply.array, parts.count == 3, let online = parts[0].array, let reaped = parts[1].array, let dead = parts[2].array
        else {
            throw RedisError.unexpectedReply(command: "presence heartbeat script", reply: reply.description)
        }
        return Heartbeat(
            onlineElsewhere: Set(online.compactMap(\.string)),
            reaped: Set(reaped.compactMap(\.string)),
            reapedInstances: dead.compactMap(\.string)
        )
    }

    /// Removes this instance's presence (graceful stop).
    public func remove() async throws {
        _ = try await redis.pipeline([
            ["ZREM", RESPArgument(keys.instances), RESPArgument(instance)],
            ["DEL", RESPArgument(keys.presence(instance))],
        ])
    }

    /// The hash outlives the instance's slot in the sorted set (3 x ttl) so the reaper can still read
    /// who was there. KEYS[1] instances zset, KEYS[2] this instance's hash; ARGV[1] instance, ARGV[2] now ms, ARGV[3]
    /// ttl ms, ARGV[4] presence key prefix, then user/count pairs. The other instances' hashes are
    /// reached through the prefix (a standalone Redis; this script is not meant for Redis Cluster).
    static let heartbeatScript = RedisScript(
        """
        local now = tonumber(ARGV[2])
        local ttl = tonumber(ARGV[3])
        redis.call('DEL', KEYS[2])
        local i = 5
        while i < #ARGV do
          redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
          i = i + 2
        end
        redis.call('PEXPIRE', KEYS[2], ttl * 3)
        redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
        local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
        local reaped = {}
        for _, name in ipairs(dead) do
          if redis.call('ZREM', KEYS[1], name) == 1 then
            local key = ARGV[4] .. name
            for _, user in ipairs(redis.call('HKEYS', key)) do reaped[#reaped + 1] = user end
            redis.call('DEL', key)
          end
        end
        local seen = {}
        local online = {}
        for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
          if name ~= ARGV[1] then
            for _, user in ipairs(redis.call('HKEYS', ARGV[4] .. name)) do
              if not seen[user] then
                seen[user] = true
                online[#online + 1] = user
              end
            end
          end
        end
        return {online, reaped, dead}
        """
    )
}
