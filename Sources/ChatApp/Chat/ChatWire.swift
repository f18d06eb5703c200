import Foundation
import SocketIO

/// A line of the chat as every client receives it: the `chat` event's argument, a JSON string, wire
/// compatible with the original app (`action`, `user`, `msg`) plus `id` (the client's message id),
/// `time` (server time, ms since 1970) and `instance` (which chat-node handled it).
public struct ChatLine: Sendable, Hashable, Codable {
    public enum Action: String, Sendable, Hashable, Codable {
        case message
        case control
    }

    public var action: Action
    public var user: String
    public var msg: String
    public var id: String?
    public var time: Int64
    public var instance: String

    public init(action: Action, user: String, msg: String, id: String?, time: Int64, instance: String) {
        self.action = action
        self.user = user
        self.msg = msg
        self.id = id
        self.time = time
        self.instance = instance
    }

    /// The JSON text sent to clients and stored in the history stream (encoded once per message).
    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    public static func decode(_ text: String) -> ChatLine? {
        try? JSONDecoder().decode(ChatLine.self, from: Data(text.utf8))
    }

    /// The control texts of the original app.
    public static let joinedText = " joined the channel"
    public static let leftText = " left the channel"

    /// A presence announcement: who joined (true) or left (false) the channel, if this is one.
    public var presenceChange: (user: String, joined: Bool)? {
        guard action == .control else { return nil }
        switch msg {
        case Self.joinedText: return (user, true)
        case Self.leftText: return (user, false)
        default: return nil
        }
    }

    /// The presence announcement in a stored line's JSON, without decoding the lines that cannot be
    /// one (a stored line's keys are sorted, so a control line starts with its action).
    public static func presenceChange(json: String) -> (user: String, joined: Bool)? {
        guard json.hasPrefix(#"{"action":"control""#) else { return nil }
        return decode(json)?.presenceChange
    }
}

/// A `chat` event sent by a client: `{"action":"message","msg":"<text>","id":"<client id>"}` as a JSON
/// string (the original client's form) or as a JSON object. Parsing never trusts the input: every
/// problem is a `ChatInputError` with a message for that client.
public struct IncomingChat: Sendable, Hashable {
    public var text: String
    /// The client's id for this message (deduplicated by the server), if it sent one.
    public var clientID: String?

    public init(text: String, clientID: String?) {
        self.text = text
        self.clientID = clientID
    }

    static let shapeHint = "the chat event's argument must be a JSON object such as {\"action\":\"message\",\"msg\":\"hi\"}"

    /// The `chat` event's first argument: a JSON string holding the object (the original client's
    /// form) or the object itself.
    public static func parse(argument: JSONValue?, limits: ChatLimits) -> Result<IncomingChat, ChatInputError> {
        switch argument {
        case .string(let text)?: return parse(json: text, limits: limits)
        case .object(let object)?: return parse(object: object, limits: limits)
        default: return .failure(.malformed(shapeHint))
        }
    }

    public static func parse(json: String, limits: ChatLimits) -> Result<IncomingChat, ChatInputError> {
        guard json.utf8.count <= limits.maxMessageBytes * 6 + 1_024 else { return .failure(.tooLong(limit: limits.maxMessageBytes)) }
        guard let value = try? JSONValue(parsing: json), let object = value.objectValue else {
            return .failure(.malformed(shapeHint))
        }
        return parse(object: object, limits: limits)
    }

    public static func parse(object: JSONObject, limits: ChatLimits) -> Result<IncomingChat, ChatInputError> {
        if let action = object["action"] {
            guard action.stringValue == "message" else { return .failure(.malformed("\"action\" must be \"message\"")) }
        }
        guard let message = object["msg"]?.stringValue else {
            return .failure(.malformed("\"msg\" must be a string"))
        }
        var clientID: String?
        if let id = object["id"], !id.isNull {
            guard let text = id.stringValue, MessageID.isValid(text) else {
                return .failure(.malformed("\"id\" must be 1 to 64 letters, digits or - _ . :"))
            }
            clientID = text
        }
        switch ChatText.validate(message, limits: limits) {
        case .success(let text): return .success(IncomingChat(text: text, clientID: clientID))
        case .failure(let error): return .failure(error)
        }
    }
}

/// Limits on what users type.
public struct ChatLimits: Sendable, Hashable {
    public var maxMessageBytes: Int
    public var maxNameLength: Int

    public init(maxMessageBytes: Int = 2_000, maxNameLength: Int = 32) {
        self.maxMessageBytes = maxMessageBytes
        self.maxNameLength = maxNameLength
    }
}

public enum ChatInputError: Error, Sendable, Hashable, CustomStringConvertible {
    case malformed(String)
    case empty
    case tooLong(limit: Int)
    case controlCharacters
    case invalidName(String)
    case notLoggedIn

    public var description: String {
        switch self {
        case .malformed(let reason): "Malformed message: \(reason)."
        case .empty: "Empty message: type something first."
        case .tooLong(let limit): "Message too long: at most \(limit) bytes."
        case .controlCharacters: "The message contains control characters; only text, tabs and new lines are allowed."
        case .invalidName(let reason): reason
        case .notLoggedIn: "not logged in"
        }
    }
}

enum ChatText {
    /// Trims surrounding white space; refuses empty text, text over the limit and control characters
    /// other than tab and new line. Markup is allowed: clients insert every text as text.
    static func validate(_ raw: String, limits: ChatLimits) -> Result<String, ChatInputError> {
        let text = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        if text.isEmpty { return .failure(.empty) }
        if text.utf8.count > limits.maxMessageBytes { return .failure(.tooLong(limit: limits.maxMessageBytes)) }
        let allowed: Set<Unicode.Scalar> = ["\n", "\t"]
        if text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control && !allowed.contains($0) }) {
            return .failure(.controlCharacters)
        }
        return .success(text)
    }
}

/// User names typed on the login page.
public enum UserName {
    /// Trimmed, 1 to `maxNameLength` characters of letters, digits, marks, spaces and `- _ . ' @`.
    /// Markup characters are refused with a message (the page would show them as text anyway).
    public static func validate(_ raw: String, limits: ChatLimits) -> Result<String, ChatInputError> {
        let name = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        if name.isEmpty { return .failure(.invalidName("Please type a name.")) }
        if name.count > limits.maxNameLength {
            return .failure(.invalidName("That name is too long: at most \(limits.maxNameLength) characters."))
        }
        let punctuation: Set<Unicode.Scalar> = ["-", "_", ".", "'", "@", " "]
        let ok = name.unicodeScalars.allSatisfy { scalar in
            scalar.properties.isAlphabetic || scalar.properties.numericType != nil
                || scalar.properties.generalCategory == .nonspacingMark || scalar.properties.generalCategory == .spacingMark
                || punctuation.contains(scalar)
        }
        if !ok { return .failure(.invalidName("A name may only contain letters, digits, spaces and - _ . ' @")) }
        return .success(name)
    }
}

/// Client-generated message ids.
public enum MessageID {
    public static func isValid(_ id: String) -> Bool {
        (1...64).contains(id.utf8.count)
            && id.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
            }
    }
}
