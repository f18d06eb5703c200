import NIOCore

/// Durations as people type them on the command line and in files: `500ms`, `5s`, `2m`, `1h`, `1.5s`,
/// or a plain number of seconds. `0` means "off" wherever a setting allows it.
public enum DurationText {
    /// Parses `text`; nil when it is not a duration (the caller reports the error with the flag's name).
    public static func parse(_ text: String) -> TimeAmount? {
        let trimmed = text.trimmingASCIIWhitespace()
        guard !trimmed.isEmpty else { return nil }
        let units: [(suffix: String, nanoseconds: Double)] = [
            ("ns", 1), ("us", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9),
        ]
        var number = Substring(trimmed)
        var scale = 1e9
        for unit in units where trimmed.hasSuffix(unit.suffix) {
            // "ms" also ends in "s" and "ns"/"us" too: take the longest matching suffix.
            let candidate = trimmed.dropLast(unit.suffix.count)
            if let last = candidate.last, last.isLetter { continue }
            number = candidate
            scale = unit.nanoseconds
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0 else { return nil }
        let nanoseconds = value * scale
        guard nanoseconds < Double(Int64.max) else { return nil }
        return .nanoseconds(Int64(nanoseconds.rounded()))
    }

    /// An exact text for `amount`: `900s`, `500ms`, `1h`.
    public static func format(_ amount: TimeAmount) -> String {
        let ns = amount.nanoseconds
        if ns == 0 { return "0s" }
        if ns % 3_600_000_000_000 == 0 { return "\(ns / 3_600_000_000_000)h" }
        if ns % 1_000_000_000 == 0 { return "\(ns / 1_000_000_000)s" }
        if ns % 1_000_000 == 0 { return "\(ns / 1_000_000)ms" }
        if ns % 1_000 == 0 { return "\(ns / 1_000)us" }
        return "\(ns)ns"
    }
}

extension String {
    func trimmingASCIIWhitespace() -> String {
        var view = Substring(self)
        while let first = view.first, first == " " || first == "\t" || first == "\n" || first == "\r" { view.removeFirst() }
        while let last = view.last, last == " " || last == "\t" || last == "\n" || last == "\r" { view.removeLast() }
        return String(view)
    }
}
