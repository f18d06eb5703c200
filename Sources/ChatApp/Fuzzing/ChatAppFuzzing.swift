import NIOCore
import SocketIO

/// Entry points for coverage-guided fuzzing (`make fuzz`, docs/fuzzing.md) and for replaying its
/// corpus in the tests (FuzzCorpusTests): what a browser, a client or Redis hands chat-node. Each
/// must return without crashing; a violated property stops the process with `preconditionFailure`.
package enum ChatAppFuzzing {
    static let limits = ChatLimits()
    static let cookie = SessionCookie(name: "JSESSIONID", secrets: ["keyboard cat", "old secret"])

    /// A chat message as sent (the JSON string argument of `chat`), a login name, a message id.
    package static func chatInput(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        if case .success(let chat) = IncomingChat.parse(json: text, limits: limits) {
            precondition(chat.text.utf8.count <= limits.maxMessageBytes, "an accepted message is over the limit")
        }
        if case .success(let name) = UserName.validate(text, limits: limits) {
            precondition(!name.isEmpty && name.count <= limits.maxNameLength, "an accepted name is empty or too long")
        }
        _ = MessageID.isValid(text)
    }

    /// A session cookie as a browser sends it: only one this secret signed yields a session id.
    package static func sessionCookie(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        if let sid = cookie.sessionID(fromValue: text) {
            precondition(SessionID.isWellFormed(sid), "a cookie gave a malformed session id")
        }
        _ = cookie.sessionID(fromHeaders: [text, "a=b; " + text])
        _ = CookieSignature.unsign(text, secrets: cookie.secrets)
    }

    /// What Redis hands back: a session record, a published chat line, a stream id, a history line.
    package static func redisValues(_ data: UnsafeRawBufferPointer) {
        _ = SessionRecord.decode(data)
        let text = String(decoding: data, as: UTF8.self)
        if let id = StreamID(text) { precondition(StreamID(id.description) == id, "a stream id does not read back the same") }
        _ = ChatLog.parsePublished(ByteBuffer(bytes: data))
        _ = ChatLine.decode(text)
    }
}
