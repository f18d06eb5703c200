import Logging
import NIOCore
import RedisClient
import SocketIO

/// The SocketIO library's recovery store, backed by Redis so that a client recovers on ANY instance:
/// sessions under `<prefix>sio:<pid>` (written when a socket connects, refreshed while it lives, saved
/// again when it disconnects). Offsets are stream ids, supplied by chat-node itself (`record` answers
/// nil).
///
/// The store decides WHETHER a client recovers (its session is known and its offset is still in the
/// history); it returns no missed packets and leaves the socket out of the `live` room. The missed
/// lines are sent by `ChatHub`'s delivery loop, which knows what this instance has delivered: lines up
/// to there from the history, later ones live. Replaying here, beside the loop, would race with it (a
/// line both replayed and broadcast, or neither).
public struct RedisRecoveryStore: RecoveryStore {
    public let redis: RedisClient
    public let keys: ChatKeys
    let logger: Logger

    public init(redis: RedisClient, keys: ChatKeys, logger: Logger) {
        self.redis = redis
        self.keys = keys
        self.logger = logger
    }

    public func save(_ session: SessionSnapshot, ttl: Duration) async throws {
        let milliseconds = max(1, Int(ttl.milliseconds))
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
            logger.info("Recovery refused: \(reason.rawValue)", metadata: ["pid": "\(LogText.quoted(pid, limit: 64))"])
            return nil
        }
        let reply = try await redis.evalScript(
            Self.restoreScript,
            keys: [keys.recoverable(request.pid), keys.history],
            arguments: [RESPArgument(request.offset.description)]
        )
        guard let parts = reply.array, let code = parts.first?.int else {
            throw RedisError.unexpectedReply(command: "recovery script", reply: reply.description)
        }
        let stored = parts.count > 1 ? parts[1].string.flatMap { SessionSnapshot(jsonText: $0) } : nil
        switch RecoveryDecision.decide(offset: request.offset, stored: stored, offsetInHistory: code == 2) {
        case .fresh(let reason):
            logger.info("Client reconnects without recovery: \(reason.rawValue)", metadata: ["pid": "\(LogText.quoted(request.pid, limit: 64))"])
            return nil
        case .recover(var snapshot, _):
            snapshot.rooms.removeAll { $0 == ChatHub.liveRoom }
            logger.info(
                "Session recovered; its missed messages follow from the delivery loop", metadata: ["pid": "\(request.pid)", "sid": "\(snapshot.sid)"])
            return RestoredSession(session: snapshot, missedPackets: [])
        }
    }

    /// chat-node gives every broadcast its own offset (the stream id); others go without one.
    public func record(_ broadcast: BroadcastMessage) async throws -> String? { nil }

    /// KEYS[1] the session key, KEYS[2] the history stream; ARGV[1] the client's offset. Answers {0}
    /// (no session), {1, session} (session, but the offset is not in the history: a gap cannot be ruled
    /// out) or {2, session} (recoverable). The session is forgotten once found (the recovered socket
    /// saves itself again). Offset `0-0` means "before the first message": valid while the stream has
    /// never lost an entry.
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
        return {2, session}
        """
    )
}
