/// One line of the aggregated log: `HH:MM:SS name.N | line`, the way foreman and overmind print it,
/// with one colour per source on a terminal only.
public struct LogLine: Sendable, Equatable, Codable {
    /// Local wall-clock time, `HH:MM:SS`.
    public var time: String
    /// `chat.0`, `proxy`, `redis` or `cluster`.
    public var source: String
    /// The instance index when the line is about (or from) one instance.
    public var index: Int?
    public var text: String

    public init(time: String, source: String, index: Int? = nil, text: String) {
        self.time = time
        self.source = source
        self.index = index
        self.text = text
    }

    /// The plain text form, the source padded to `width` so the bars line up.
    public func formatted(width: Int = 0) -> String {
        time + " " + source.padding(toLength: max(width, source.count)) + " | " + text
    }

    /// The terminal form: time dim, source and bar in the source's colour.
    public func coloured(width: Int = 0) -> String {
        let colour = LogColour.for(source: source, index: index)
        let name = source.padding(toLength: max(width, source.count))
        return "\u{1B}[2m\(time)\u{1B}[0m \(colour)\(name) |\u{1B}[0m \(text)"
    }

    /// `HH:MM:SS` from hours, minutes and seconds.
    public static func clock(hour: Int, minute: Int, second: Int) -> String {
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(two(hour)):\(two(minute)):\(two(second))"
    }
}

enum LogColour {
    static let palette = ["36", "33", "32", "35", "34", "91", "96", "93", "92", "95"]

    static func `for`(source: String, index: Int?) -> String {
        switch source {
        case "cluster": return "\u{1B}[1m"
        case "proxy": return "\u{1B}[94m"
        case "front": return "\u{1B}[96m"
        case "redis": return "\u{1B}[31m"
        default:
            guard let index else { return "\u{1B}[37m" }
            return "\u{1B}[\(palette[index % palette.count])m"
        }
    }
}

extension String {
    func padding(toLength length: Int) -> String {
        count >= length ? self : self + String(repeating: " ", count: length - count)
    }
}
