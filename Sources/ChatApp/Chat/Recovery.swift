import SocketIO

/// The recovery decision, pure functions of what the client sent and what Redis knows: from a client's
/// `pid` and `offset`, whether to restore its Socket.IO session and replay what it missed. The session
/// itself is the SocketIO library's `SessionSnapshot` (kept in Redis under `<prefix>sio:<pid>`, with
/// the user and the express session in its data).
public enum RecoveryDecision: Sendable, Hashable {
    /// Restore the stored session and replay every entry after `after`.
    case recover(SessionSnapshot, after: StreamID)
    /// Start a new session (the client gets recent history instead), for `reason`.
    case fresh(FreshReason)

    public enum FreshReason: String, Error, Sendable, Hashable {
        /// The client asked for no recovery (first connection).
        case notRequested = "no pid and offset"
        /// pid or offset is not something this server issues.
        case malformed = "malformed pid or offset"
        /// Redis does not know the pid (expired after the recovery window, or never existed).
        case unknownSession = "session unknown or expired"
        /// The offset is no longer in the history (trimmed, or Redis lost its data): a gap cannot be ruled out.
        case offsetNotInHistory = "offset no longer in the history"
    }

    /// Step 1, before any lookup: is this a recovery request, with values safe to look up?
    public static func request(pid: String?, offset: String?) -> Result<(pid: String, offset: StreamID), FreshReason> {
        guard let pid, let offset else { return .failure(.notRequested) }
        guard isWellFormedPID(pid), let streamID = StreamID(offset) else { return .failure(.malformed) }
        return .success((pid, streamID))
    }

    /// Step 2, with what Redis answered: the stored session for the pid (nil if none) and whether the
    /// history still holds everything after the offset.
    public static func decide(offset: StreamID, stored: SessionSnapshot?, offsetInHistory: Bool) -> RecoveryDecision {
        guard let stored else { return .fresh(.unknownSession) }
        guard offsetInHistory else { return .fresh(.offsetNotInHistory) }
        return .recover(stored, after: offset)
    }

    /// Private session ids: 1 to 64 URL-safe characters (anything else from a client is not looked up).
    public static func isWellFormedPID(_ pid: String) -> Bool { SessionID.isWellFormed(pid) && pid.utf8.count <= 64 }
}

/// Who may open a Socket.IO connection: the user comes from the login session found through the
/// handshake's cookie, never from the client. A pure decision, run by the connect hook.
public enum ConnectPolicy: Sendable, Hashable {
    case accept(user: String)
    case refuse(message: String)

    public static let notLoggedIn = "not logged in"
    public static let otherUser = "this session belongs to another user: reload the page"

    /// `sessionUser`: the user of the express session (nil: no valid session). `restoredUser`: when the
    /// client is recovering a Socket.IO session, the user stored with it.
    public static func decide(sessionUser: String?, recovering: Bool, restoredUser: String?) -> ConnectPolicy {
        guard let sessionUser else { return .refuse(message: notLoggedIn) }
        if recovering, restoredUser != sessionUser { return .refuse(message: otherUser) }
        return .accept(user: sessionUser)
    }
}
