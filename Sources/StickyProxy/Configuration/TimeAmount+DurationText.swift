import CloudFoundry
import NIOCore

/// NIO's `TimeAmount` read and written as `DurationText` (CloudFoundry), the one reading of durations
/// shared with `cluster`.
extension TimeAmount {
    /// A duration as people type it for a flag (`500ms`, `5s`, `1m30s`, `2m`, `1h`, or a number of
    /// seconds); nil when it is not one (the caller names the flag in its error).
    public init?(durationText text: String) {
        guard let duration = DurationText.parse(text) else { return nil }
        self = .nanoseconds(duration.nanosecondsClamped)
    }

    /// As gorouter (Go) prints a duration: `5s`, `2m0s`, `500ms`.
    public var durationText: String { DurationText.format(.nanoseconds(nanoseconds)) }
}
