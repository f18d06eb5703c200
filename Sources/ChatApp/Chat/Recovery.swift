import Foundation

/// What chat-node keeps in Redis about a Socket.IO session so that a client can recover it on ANY
/// instance: key `<prefix>sio:<pid>`, refreshed while the socket is connected, expiring
/// `recoveryWindow` after it was last seen (also when its instance was killed).
public struct RecoverableSession: Sendable, Hashable, Codable {
    /// The Socket.IO socket id the client had (restored on recovery).
    public var sid: String
    /// The user of the login session at the handshake.
    public var user: String
    /// The express session the socket was opened with.
    public var session: String

    public init(sid: String, user: String, session: String) {
        self.sid = sid
        self.user = user
        self.session = session
    }

    public func encoded() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    public static func decode(_ text: String) -> RecoverableSession? {
        try? JSONDecoder().decode(RecoverableSession.self, from: Data(text.utf8))
    }

    /// Private session ids: 1 to 64 URL-safe characters (anything else from a client is not looked up).
    public static func isWellFormedPID(_ pid: String) -> Bool { SessionID.isWellFormed(pid) && pid.utf8.count <= 64 }
}

/// The recovery decision, a pure function of what the client sent and what Redis knows: from a
/// client's `pid` and `offset`, whether to restore its session and replay what it missed.
public enum RecoveryDecision: Sendable, Hashable {
    /// Restore socket id `sid` and replay every entry after `offset`.
    case recover(sid: String, after: StreamID)
    /// Start a new session (the client gets recent history instead), for `reason`.
    case fresh(FreshReason)

    public enum FreshReason: String, Error, Sendable, Hashable {
        /// The client asked for no recovery (first connection).
        case notRequested = "no pid and offset"
        /// pid or offset is not something this server issues.
        case malformed = "malformed pid or offset"
        /// Redis does not know the pid (expired after the recovery window, or never existed).
        case unknownSession = "session unknown or expired"
        /// The pid belongs to another user than the logged-in one: never hand a session across users.
        case otherUser = "session belongs to another user"
        /// The offset is no longer in the history (trimmed, or Redis lost its data): a gap cannot be ruled out.
        case offsetNotInHistory = "offset no longer in the history"
    }

    /// Step 1, before any lookup: is this a recovery request at all, with values safe to look up?
    public static func request(pid: String?, offset: String?) -> Result<(pid: String, offset: StreamID), FreshReason> {
        guard let pid, let offset else { return .failure(.notRequested) }
        guard RecoverableSession.isWellFormedPID(pid), let streamID = StreamID(offset) else { return .failure(.malformed) }
        return .success((pid, streamID))
    }

    /// Step 2, with what Redis answered: the stored session for the pid (nil if none), the user of the
    /// login session at this handshake, and whether the offset is still in the history.
    public static func decide(
        offset: StreamID, stored: RecoverableSession?, user: String, offsetInHistory: Bool
    ) -> RecoveryDecision {
        guard let stored else { return .fresh(.unknownSession) }
        guard stored.user == user else { return .fresh(.otherUser) }
        guard offsetInHistory else { return .fresh(.offsetNotInHistory) }
        return .recover(sid: stored.sid, after: offset)
    }
}
