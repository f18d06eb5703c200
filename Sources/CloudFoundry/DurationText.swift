import Foundation

/// Durations as people write them in a config file or on the command line (`2s`, `500ms`, `1m30s`,
/// `16m`, `1h`, or a bare number of seconds), and as Cloud Foundry prints them (`1m0s`, Go's
/// `time.Duration` text). The one reading of durations for `cluster`, its config and sticky-proxy's flags.
public enum DurationText {
    /// Parses `1h2m3s`, `1.5s`, `250ms`, `30` (seconds). Nil when the text is not a duration
    /// (`problem(_:)` says why).
    public static func parse(_ text: String) -> Duration? {
        totalSeconds(text).flatMap(seconds)
    }

    /// The error message for `option` given `text`, nil when `text` is a duration: what `cluster`
    /// and sticky-proxy say of a duration flag they refuse.
    public static func refusal(of text: String, for option: String) -> String? {
        problem(text).map { "\(option) '\(text)' is not a duration: \($0)" }
    }

    /// Why `parse` refuses `text`, in a few words for an error message that names the option; nil
    /// when it accepts it.
    public static func problem(_ text: String) -> String? {
        guard parse(text) == nil else { return nil }
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.isEmpty { return "it is empty" }
        if trimmed.hasPrefix("-") { return "a duration cannot be negative" }
        if let total = totalSeconds(trimmed), !total.isNaN { return "it is longer than the longest allowed, about 31 years" }
        return "write a number and a unit, e.g. 500ms, 10s, 1m30s (units: h, m, s, ms, us, ns)"
    }

    /// The seconds `text` adds up to, not yet checked for range.
    private static func totalSeconds(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { return nil }
        if let number = Double(trimmed) { return number }
        var total = 0.0
        var rest = Substring(trimmed)
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { $0.isLetter }
            rest = rest.dropFirst(unit.count)
            switch unit {
            case "h": total += value * 3600
            case "m": total += value * 60
            case "s": total += value
            case "ms": total += value / 1000
            case "us", "µs": total += value / 1_000_000
            case "ns": total += value / 1_000_000_000
            default: return nil
            }
        }
        return total
    }

    /// A number of seconds as a duration: nil unless finite, 0 or more, and under 1e9 (about 31
    /// years), so that the nanoseconds fit in an Int64 whatever digits someone typed.
    public static func seconds(_ value: Double) -> Duration? {
        guard value.isFinite, value >= 0, value < 1e9 else { return nil }
        return .nanoseconds(Int64((value * 1e9).rounded()))
    }

    /// Go's `time.Duration` text, which Cloud Foundry's messages use: `1m0s`, `30s`, `1.5s`, `250ms`.
    public static func format(_ duration: Duration) -> String {
        let nanoseconds = duration.nanosecondsClamped
        if nanoseconds == 0 { return "0s" }
        let sign = nanoseconds < 0 ? "-" : ""
        let magnitude = nanoseconds.magnitude
        if magnitude < 1_000_000_000 {
            return sign + trim(Double(magnitude) / 1_000_000) + "ms"
        }
        let totalSeconds = Double(magnitude) / 1e9
        let hours = Int(totalSeconds / 3600)
        let minutes = Int((totalSeconds - Double(hours) * 3600) / 60)
        let seconds = totalSeconds - Double(hours) * 3600 - Double(minutes) * 60
        var text = sign
        if hours > 0 { text += "\(hours)h" }
        if hours > 0 || minutes > 0 { text += "\(minutes)m" }
        return text + trim(seconds) + "s"
    }

    /// A short human form for tables: `850ms`, `12s`, `4m05s`, `2h03m`.
    public static func short(_ duration: Duration) -> String {
        let nanoseconds = max(0, duration.nanosecondsClamped)
        if nanoseconds < 1_000_000_000 { return "\(nanoseconds / 1_000_000)ms" }
        let seconds = nanoseconds / 1_000_000_000
        if seconds < 60 { return "\(seconds)s" }
        if seconds < 3600 { return "\(seconds / 60)m" + pad(seconds % 60) + "s" }
        return "\(seconds / 3600)h" + pad(seconds % 3600 / 60) + "m"
    }

    private static func pad(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }

    private static func trim(_ value: Double) -> String {
        let rounded = (value * 1000).rounded() / 1000
        if rounded == rounded.rounded() { return String(Int64(rounded)) }
        var text = String(rounded)
        while text.hasSuffix("0") { text.removeLast() }
        return text
    }
}

extension Duration {
    /// The duration in nanoseconds, clamped to Int64.
    public var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = product.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return sum
    }
}
