import HTTPTypes

/// The HTTP request that opened the Engine.IO session (the first polling GET or the WebSocket
/// upgrade), as a connect hook sees it.
public struct Handshake: Sendable {
    /// Request headers (cookies, `X-Forwarded-For`, `User-Agent`, ...).
    public let headers: HTTPFields
    /// Query parameters of the handshake URL (`EIO`, `transport`, and whatever the client added).
    public let query: [String: String]
    /// The peer's address (`127.0.0.1:54321`), when known. Behind a proxy, see `X-Forwarded-For`.
    public let remoteAddress: String?
    /// The request path with its query.
    public let url: String
    /// The transport the session was opened with.
    public let transport: SocketIOConfiguration.Transport

    public init(
        headers: HTTPFields, query: [String: String], remoteAddress: String?, url: String, transport: SocketIOConfiguration.Transport
    ) {
        self.headers = headers
        self.query = query
        self.remoteAddress = remoteAddress
        self.url = url
        self.transport = transport
    }

    /// The request headers a session keeps: all but the hop-by-hop and WebSocket handshake ones
    /// (`Connection`, `Upgrade`, `Sec-WebSocket-*`), which mean nothing once the session is open and
    /// would cost memory for as long as it lives.
    static func keptHeaders(_ headers: HTTPFields) -> HTTPFields {
        guard headers.contains(where: { isHandshakeOnly($0.name) }) else { return headers }
        var kept = HTTPFields()
        for field in headers where !isHandshakeOnly(field.name) { kept.append(field) }
        return kept
    }

    private static func isHandshakeOnly(_ name: HTTPField.Name) -> Bool {
        name == .connection || name == .upgrade || name == .secWebSocketKey || name == .secWebSocketVersion
            || name == .secWebSocketExtensions || name == .secWebSocketProtocol
    }

    /// The value of header `name` (case-insensitive), all values joined with ", " (cookies with "; ").
    public func header(_ name: String) -> String? {
        guard let field = HTTPField.Name(name) else { return nil }
        let values = headers[values: field]
        guard !values.isEmpty else { return nil }
        return values.joined(separator: field == .cookie ? "; " : ", ")
    }

    /// Cookies sent with the handshake, by name (the raw, still URL-encoded values).
    public var cookies: [String: String] {
        var result: [String: String] = [:]
        for line in headers[values: .cookie] {
            for pair in line.split(separator: ";") {
                let trimmed = pair.drop { $0 == " " }
                guard let equals = trimmed.firstIndex(of: "=") else { continue }
                let name = String(trimmed[..<equals]).trimmingSpaces
                guard !name.isEmpty, result[name] == nil else { continue }
                var value = String(trimmed[trimmed.index(after: equals)...]).trimmingSpaces
                if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
                result[name] = value
            }
        }
        return result
    }
}

extension String {
    var trimmingSpaces: String {
        var view = Substring(self)
        while view.first == " " { view = view.dropFirst() }
        while view.last == " " { view = view.dropLast() }
        return String(view)
    }
}

/// What a namespace's connect hook is asked: may this client join?
public struct ConnectRequest: Sendable {
    /// The namespace being joined (`/`, `/admin`).
    public let namespace: String
    /// The Engine.IO handshake's HTTP request.
    public let handshake: Handshake
    /// The CONNECT packet's auth payload (`{"token":"..."}`), `.null` when the client sent none.
    public let auth: JSONValue
    /// True when the client is recovering a previous session (its `pid` and `offset` matched).
    public let recovering: Bool
    /// The data of the recovered session (`.null` when not recovering).
    public let restoredData: JSONValue
}

/// A connect hook's answer.
public enum ConnectDecision: Sendable, Hashable {
    /// Accept. `data` becomes the socket's `data` (`.null` keeps what earlier hooks or recovery set).
    case accept(data: JSONValue = .null)
    /// Refuse: the client gets CONNECT_ERROR `{"message":"<message>"}` (plus `"data"` when given);
    /// the official client emits `connect_error` with that message and does not retry by itself.
    case refuse(message: String, data: JSONValue? = nil)

    public static var accept: ConnectDecision { .accept(data: .null) }
}

/// A connect hook (middleware): runs for every CONNECT to its namespace, in the order added.
public typealias ConnectHook = @Sendable (ConnectRequest) async -> ConnectDecision

/// An event handler: the event's arguments (without the name) and, when the client asked for an
/// acknowledgement, the function that sends it.
public typealias EventHandler = @Sendable (_ arguments: [JSONValue], _ ack: Ack?) async -> Void
