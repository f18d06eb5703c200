/// A decoding error's coding path as the key is written in a file: `app.routes[1]`, `routes[0].port`,
/// `[1].host`. The one way config, routes file and admin API errors name where a value is.
public enum CodingPathText {
    public static func text(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
        }
        return text
    }
}
