/// Text a client chose (a session id from a query string, an Origin header, a namespace, a recovery
/// pid) as it goes into a log line: quoted, with control characters escaped and cut to `limit`
/// characters, so that no client can break a line in two or forge one.
public enum LogText {
    public static func quoted(_ text: some StringProtocol, limit: Int = 80) -> String {
        let cut = text.count > limit ? String(text.prefix(limit)) : String(text)
        return String(reflecting: cut) + (text.count > limit ? "..." : "")
    }
}
