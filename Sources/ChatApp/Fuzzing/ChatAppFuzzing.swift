import NIOCore
import RedisClient
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

    /// The environment chat-node starts with (one `NAME=value` per line): Cloud Foundry's variables
    /// (VCAP_APPLICATION, VCAP_SERVICES, PORT, CF_INSTANCE_INDEX) and its own. Any value is either
    /// taken or refused with a message naming the variable.
    package static func environment(_ data: UnsafeRawBufferPointer) {
        var environment = ["SOCKETIO_CLIENT_JS": "/nonexistent/socket.io.min.js"]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            environment[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        do {
            let configuration = try ChatConfiguration(environment: environment, workingDirectory: "/nonexistent")
            precondition((1...65_535).contains(configuration.port) || configuration.port == 0, "a port out of range was accepted")
            _ = try? RedisConfiguration(url: configuration.redisURL)
        } catch {
            // The variable a refusal names is one the user set, so that they know what to change.
            guard case .invalid(let variable, let reason) = error else { return }
            precondition(!reason.isEmpty, "a refusal without a reason")
            precondition(!(environment[variable] ?? "").isEmpty, "a refusal names \(variable), which is not set: \(error)")
        }
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
