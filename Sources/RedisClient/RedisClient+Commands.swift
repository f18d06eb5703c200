import NIOCore

/// Expiration for SET.
public enum RedisExpiration: Sendable, Hashable {
    case seconds(Int)
    case milliseconds(Int)
}

/// Condition for SET.
public enum RedisSetCondition: Sendable, Hashable {
    case always
    /// Only if the key does not exist (NX).
    case ifNotExists
    /// Only if the key exists (XX).
    case ifExists
}

/// One entry of a Redis Stream.
public struct RedisStreamEntry: Sendable, Hashable {
    public var id: String
    public var fields: [(name: String, value: ByteBuffer)]

    public init(id: String, fields: [(name: String, value: ByteBuffer)]) {
        self.id = id
        self.fields = fields
    }

    public subscript(field: String) -> ByteBuffer? { fields.first { $0.name == field }?.value }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.id == rhs.id && lhs.fields.map(\.name) == rhs.fields.map(\.name) && lhs.fields.map(\.value) == rhs.fields.map(\.value)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(id)
        for field in fields {
            hasher.combine(field.name)
            hasher.combine(field.value)
        }
    }

    static func parse(_ reply: RESPValue, command: String) throws -> RedisStreamEntry {
        guard case .array(let parts) = reply, parts.count == 2, let id = parts[0].string, case .array(let flat) = parts[1] else {
            throw RedisError.unexpectedReply(command: command, reply: reply.description)
        }
        var fields: [(name: String, value: ByteBuffer)] = []
        fields.reserveCapacity(flat.count / 2)
        var index = 0
        while index + 1 < flat.count {
            fields.append((flat[index].string ?? "", flat[index + 1].buffer ?? ByteBuffer(string: flat[index + 1].string ?? "")))
            index += 2
        }
        return RedisStreamEntry(id: id, fields: fields)
    }
}

extension RedisClient {
    public func ping() async throws -> String {
        try await send("PING").string ?? ""
    }

    /// GET: the value's bytes, or nil when the key does not exist.
    public func get(_ key: String) async throws -> ByteBuffer? {
        let reply = try await send("GET", RESPArgument(key))
        if reply.isNull { return nil }
        guard let buffer = reply.buffer else { throw RedisError.unexpectedReply(command: "GET", reply: reply.description) }
        return buffer
    }

    /// GET as text (invalid UTF-8 repaired).
    public func getString(_ key: String) async throws -> String? {
        try await get(key).map { String(buffer: $0) }
    }

    /// SET with optional expiration and condition; false when the condition stopped it.
    @discardableResult
    public func set(
        _ key: String,
        to value: RESPArgument,
        expiration: RedisExpiration? = nil,
        condition: RedisSetCondition = .always
    ) async throws -> Bool {
        var command: [RESPArgument] = ["SET", RESPArgument(key), value]
        switch expiration {
        case .seconds(let seconds): command += ["EX", RESPArgument(seconds)]
        case .milliseconds(let milliseconds): command += ["PX", RESPArgument(milliseconds)]
        case nil: break
        }
        switch condition {
        case .always: break
        case .ifNotExists: command.append("NX")
        case .ifExists: command.append("XX")
        }
        return try await !send(command).isNull
    }

    /// DEL: how many keys were removed.
    @discardableResult
    public func del(_ keys: [String]) async throws -> Int {
        try await integer(["DEL"] + keys.map { RESPArgument($0) }, command: "DEL")
    }

    @discardableResult
    public func del(_ keys: String...) async throws -> Int { try await del(keys) }

    /// EXPIRE: true when the timeout was set.
    @discardableResult
    public func expire(_ key: String, seconds: Int) async throws -> Bool {
        try await integer(["EXPIRE", RESPArgument(key), RESPArgument(seconds)], command: "EXPIRE") == 1
    }

    public func incr(_ key: String) async throws -> Int {
        try await integer(["INCR", RESPArgument(key)], command: "INCR")
    }

    /// PUBLISH: how many subscribers received it.
    @discardableResult
    public func publish(_ message: RESPArgument, to channel: String) async throws -> Int {
        try await integer(["PUBLISH", RESPArgument(channel), message], command: "PUBLISH")
    }

    /// XADD with an optional approximate cap (`MAXLEN ~ n`); returns the new entry's id.
    @discardableResult
    public func xadd(
        _ key: String,
        id: String = "*",
        fields: [(String, RESPArgument)],
        maxLength: Int? = nil,
        approximate: Bool = true
    ) async throws -> String {
        var command: [RESPArgument] = ["XADD", RESPArgument(key)]
        if let maxLength {
            command += ["MAXLEN"] + (approximate ? ["~"] : []) + [RESPArgument(maxLength)]
        }
        command.append(RESPArgument(id))
        for (name, value) in fields { command += [RESPArgument(name), value] }
        let reply = try await send(command)
        guard let entryID = reply.string else { throw RedisError.unexpectedReply(command: "XADD", reply: reply.description) }
        return entryID
    }

    /// XRANGE from `start` to `end` (ids, `-`, `+`, or `(id` for exclusive).
    public func xrange(_ key: String, from start: String = "-", to end: String = "+", count: Int? = nil) async throws -> [RedisStreamEntry] {
        try await streamRange(["XRANGE", RESPArgument(key), RESPArgument(start), RESPArgument(end)], count: count, command: "XRANGE")
    }

    /// XREVRANGE from `end` down to `start`.
    public func xrevrange(_ key: String, from end: String = "+", to start: String = "-", count: Int? = nil) async throws -> [RedisStreamEntry] {
        try await streamRange(["XREVRANGE", RESPArgument(key), RESPArgument(end), RESPArgument(start)], count: count, command: "XREVRANGE")
    }

    public func xlen(_ key: String) async throws -> Int {
        try await integer(["XLEN", RESPArgument(key)], command: "XLEN")
    }

    /// ZADD: how many members were added.
    @discardableResult
    public func zadd(_ key: String, members: [(score: Double, member: RESPArgument)]) async throws -> Int {
        var command: [RESPArgument] = ["ZADD", RESPArgument(key)]
        for (score, member) in members { command += [RESPArgument(score), member] }
        return try await integer(command, command: "ZADD")
    }

    /// ZRANGEBYSCORE min max (`-inf`, `+inf`, `(x` exclusive accepted as text).
    public func zrangebyscore(_ key: String, min: String, max: String, limit: (offset: Int, count: Int)? = nil) async throws -> [ByteBuffer] {
        var command: [RESPArgument] = ["ZRANGEBYSCORE", RESPArgument(key), RESPArgument(min), RESPArgument(max)]
        if let limit { command += ["LIMIT", RESPArgument(limit.offset), RESPArgument(limit.count)] }
        let reply = try await send(command)
        guard let items = reply.array else { throw RedisError.unexpectedReply(command: "ZRANGEBYSCORE", reply: reply.description) }
        return items.compactMap(\.buffer)
    }

    /// ZREMRANGEBYSCORE: how many members were removed.
    @discardableResult
    public func zremrangebyscore(_ key: String, min: String, max: String) async throws -> Int {
        try await integer(["ZREMRANGEBYSCORE", RESPArgument(key), RESPArgument(min), RESPArgument(max)], command: "ZREMRANGEBYSCORE")
    }

    /// HSET: how many fields were added.
    @discardableResult
    public func hset(_ key: String, fields: [(String, RESPArgument)]) async throws -> Int {
        var command: [RESPArgument] = ["HSET", RESPArgument(key)]
        for (name, value) in fields { command += [RESPArgument(name), value] }
        return try await integer(command, command: "HSET")
    }

    public func hgetall(_ key: String) async throws -> [String: ByteBuffer] {
        let reply = try await send("HGETALL", RESPArgument(key))
        guard let flat = reply.array else { throw RedisError.unexpectedReply(command: "HGETALL", reply: reply.description) }
        var result: [String: ByteBuffer] = [:]
        var index = 0
        while index + 1 < flat.count {
            if let name = flat[index].string { result[name] = flat[index + 1].buffer ?? ByteBuffer() }
            index += 2
        }
        return result
    }

    /// Runs a Lua script by its SHA1 (EVALSHA); when the server does not know it yet (NOSCRIPT, for
    /// example after a restart), loads it with SCRIPT LOAD and runs it again.
    public func evalScript(_ script: RedisScript, keys: [String] = [], arguments: [RESPArgument] = []) async throws -> RESPValue {
        let tail: [RESPArgument] = [RESPArgument(keys.count)] + keys.map { RESPArgument($0) } + arguments
        do {
            return try await send(["EVALSHA", RESPArgument(script.sha1)] + tail)
        } catch RedisError.server(let message) where message.hasPrefix("NOSCRIPT") {
            let loaded = try await send("SCRIPT", "LOAD", RESPArgument(script.source))
            guard loaded.string?.lowercased() == script.sha1 else {
                throw RedisError.unexpectedReply(command: "SCRIPT LOAD", reply: loaded.description)
            }
            return try await send(["EVALSHA", RESPArgument(script.sha1)] + tail)
        }
    }

    private func integer(_ command: [RESPArgument], command name: String) async throws -> Int {
        let reply = try await send(command)
        guard case .integer(let value) = reply else { throw RedisError.unexpectedReply(command: name, reply: reply.description) }
        return value
    }

    private func streamRange(_ base: [RESPArgument], count: Int?, command: String) async throws -> [RedisStreamEntry] {
        var arguments = base
        if let count { arguments += ["COUNT", RESPArgument(count)] }
        let reply = try await send(arguments)
        guard let items = reply.array else { throw RedisError.unexpectedReply(command: command, reply: reply.description) }
        return try items.map { try RedisStreamEntry.parse($0, command: command) }
    }
}
