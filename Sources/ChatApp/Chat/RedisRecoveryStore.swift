import Logging
import NIOCore
import RedisClient
import SocketIO

/// The SocketIO library's recovery store, backed by Redis so that a client recovers on ANY instance:
/// sessions under `<prefix>sio:<pid>` (written when a socket connects, refreshed while it lives, saved
/// again when it disconnects), missed messages from the history stream after the client's offset.
/// Offsets are stream ids, supplied by chat-node itself (`record` answers nil).
public struct RedisRecoveryStore: RecoveryStore {
    public let redis: RedisClient
    public let keys: ChatKeys
    public let historyLimit: Int
    let logger: Logger

    public init(redis: RedisClient, keys: ChatKeys, historyLimit: Int, logger: Logger) {
        self.redis = redis
        self.keys = keys
        self.historyLimit = historyLimit
        self.logger = logger
    }

    public func save(_ session: SessionSnapshot, ttl: Duration) async throws {
        let milliseconds = max(1, Int(ttl.components.seconds) * 1_000 + Int(ttl.components.attoseconds / 1_000_000_000_000_000))
        try await redis.set(keys.recoverable(session.pid), to: RESPArgument(session.jsonText), expiration: .milliseconds(milliseconds))
    }

    /// Extends the recovery window of connected sockets' sessions (called with the presence heartbeat).
    public func refresh(pids: [String], ttl: Duration) async throws {
        guard !pids.isEmpty else { return }
        let seconds = max(1, Int(ttl.components.seconds))
        _ = try await redis.pipeline(pids.map { ["EXPIRE", RESPArgument(keys.recoverable($0)), RESPArgument(seconds)] })
    }

    public func restore(pid: String, offset: String) async throws -> RestoredSession? {
        let request: (pid: String, offset: StreamID)
        switch RecoveryDecision.request(pid: pid, offset: offset) {
        case .success(let valid): request = valid
        case .failure(let reason):
            logger.info("Recovery refused: \(reason.rawValue)", metadata: ["pid": "\(pid.prefix(64))"])
            return nil
        }
        let reply = try await redis.evalScript(
            Self.restoreScript,
            keys: [keys.recoverable(request.pid), keys.history],
            arguments: [RESPArgument(request.offset.description), RESPArgument(historyLimit)]
        )
        guard let parts = reply.array, let code = parts.first?.int else {
            throw RedisError.unexpectedReply(command: "recovery script", reply: reply.description)
        }
        let stored = parts.count > 1 ? parts[1].string.flatMap { SessionSnapshot(jsonText: $0) } : nil
        switch RecoveryDecision.decide(offset: request.offset, stored: stored, offsetInHistory: code == 2) {
        case .fresh(let reason):
            logger.info("Client reconnects without recovery: \(reason.rawValue)", metadata: ["pid": "\(request.pid)"])
            return nil
        case .recover(let snapshot, let after):
            let entries = parts.count > 2 ? (parts[2].array ?? []) : []
            let missed = entries.compactMap(Self.line(from:)).filter { $0.id > after }.map { line in
                MissedPacket(event: "chat", arguments: [.string(line.json)], offset: line.id.description)
            }
            logger.info(
                "Session recovered with \(missed.count) missed message(s)", metadata: ["pid": "\(request.pid)", "sid": "\(snapshot.sid)"])
            return RestoredSession(session: snapshot, missedPackets: missed)
        }
    }

    /// chat-node gives every broadcast its own offset (the stream id); others go without one.
    public func record(_ broadcast: BroadcastMessage) async throws -> String? { nil }

    static func line(from entry: RESPValue) -> StoredLine? {
        guard let parts = entry.array, parts.count == 2, let text = parts[0].string, let id = StreamID(text), let fields = parts[1].array else {
            return nil
        }
        var index = 0
        while index + 1 < fields.count {
            if fields[index].string == "m", let json = fields[index + 1].string { return StoredLine(id: id, json: json) }
            index += 2
        }
        return nil
    }

    /// KEYS[1] the session key, KEYS[2] the history stream; ARGV[1] the client's offset, ARGV[2] the most
    /// entries to return. Answers {0} (no session), {1, session} (session, but the offset is not in
    /// the history: a gap cannot be ruled out) or {2, session, entries after the offset}. The session
    /// is forgotten once found (the recovered socket saves itself again). Offset `0-0` means "before
    /// the first message": valid while the stream has never lost an entry.
    static let restoreScript = RedisScript(
        """
        local session = redis.call('GET', KEYS[1])
        if not session then return {0} end
        redis.call('DEL', KEYS[1])
        local offset = ARGV[1]
        local known = false
        if offset == '0-0' then
          if redis.call('EXISTS', KEYS[2]) == 0 then
            known = true
          else
            local info = redis.call('XINFO', 'STREAM', KEYS[2])
            local length, added
            for i = 1, #info, 2 do
              if info[i] == 'length' then length = info[i + 1] end
              if info[i] == 'entries-added' then added = info[i + 1] end
            end
            known = length ~= nil and added ~= nil and length == added
          end
        else
          known = #redis.call('XRANGE', KEYS[2], offset, offset, 'COUNT', 1) > 0
        end
        if not known then return {1, session} end
        local start = '(' .. offset
        if offset == '0-0' then start = '-' end
        return {2, session, redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', ARGV[2])}
        """
    )
}
