import CloudFoundry
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Wall-clock time with nanoseconds.
public struct WallClockTime: Sendable, Equatable {
    public var seconds: Int64
    public var nanoseconds: Int32

    public init(seconds: Int64, nanoseconds: Int32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public static func now() -> WallClockTime {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return WallClockTime(seconds: Int64(spec.tv_sec), nanoseconds: Int32(spec.tv_nsec))
    }

    public var milliseconds: Int64 { seconds * 1000 + Int64(nanoseconds / 1_000_000) }
    public var secondsSince1970: Double { Double(seconds) + Double(nanoseconds) / 1e9 }

    /// RFC 3339 in UTC with nanoseconds, as gorouter writes it: `2024-05-01T12:00:00.123456789Z`.
    public func write(rfc3339Into buffer: inout ByteBuffer) {
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secondOfDay = Int(seconds - days * 86400)
        let (year, month, day) = HTTPDate.civil(fromDays: days)
        Self.write(year, width: 4, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "-"))
        Self.write(Int64(month), width: 2, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "-"))
        Self.write(Int64(day), width: 2, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "T"))
        Self.write(Int64(secondOfDay / 3600), width: 2, into: &buffer)
        buffer.writeInteger(UInt8(ascii: ":"))
        Self.write(Int64(secondOfDay / 60 % 60), width: 2, into: &buffer)
        buffer.writeInteger(UInt8(ascii: ":"))
        Self.write(Int64(secondOfDay % 60), width: 2, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "."))
        Self.write(Int64(nanoseconds), width: 9, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "Z"))
    }

    public var rfc3339: String {
        var buffer = ByteBuffer()
        write(rfc3339Into: &buffer)
        return String(buffer: buffer)
    }

    private static func write(_ value: Int64, width: Int, into buffer: inout ByteBuffer) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0, 0)
        var remaining = value < 0 ? 0 : value
        withUnsafeMutableBytes(of: &digits) { raw in
            for position in stride(from: width - 1, through: 0, by: -1) {
                raw[position] = UInt8(ascii: "0") + UInt8(remaining % 10)
                remaining /= 10
            }
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[0..<width]))
        }
    }
}

/// One access log line in gorouter's format (cloud-foundry-behaviour.md section 2), followed by the
/// routing decision fields this simulator adds (`routing_decision`, `pinned_instance_id`, `attempts`).
public struct AccessLogRecord: Sendable {
    public var host = ""
    public var startedAt = WallClockTime(seconds: 0, nanoseconds: 0)
    public var method = ""
    public var uri = ""
    public var proto = "HTTP/1.1"
    /// 0 is written as "-".
    public var status = 0
    public var bytesReceived = 0
    public var bytesSent = 0
    public var referer: String?
    public var userAgent: String?
    public var clientAddress: String?
    public var backendAddress: String?
    public var forwardedFor: String?
    public var forwardedProto: String?
    public var vcapRequestID: String?
    /// Seconds from the request head to the end of the response; negative is written as "-".
    public var responseTime: Double = -1
    /// Seconds spent in the router itself (response time minus time waiting for the app).
    public var gorouterTime: Double = -1
    public var appID: String?
    public var appIndex: String?
    public var instanceID: String?
    public var routerError: String?
    public var decision: RoutingDecisionKind?
    public var pinnedInstanceID: String?
    public var attempts = 0

    public init() {}

    public func write(into buffer: inout ByteBuffer) {
        buffer.writeString(host)
        buffer.writeStaticString(" - [")
        startedAt.write(rfc3339Into: &buffer)
        buffer.writeStaticString("] \"")
        Self.writeEscaped(method, into: &buffer)
        buffer.writeInteger(UInt8(ascii: " "))
        Self.writeEscaped(uri, into: &buffer)
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(proto)
        buffer.writeStaticString("\" ")
        if status == 0 { buffer.writeStaticString("\"-\"") } else { buffer.writeString(String(status)) }
        buffer.writeStaticString(" ")
        buffer.writeString(String(bytesReceived))
        buffer.writeStaticString(" ")
        buffer.writeString(String(bytesSent))
        buffer.writeStaticString(" ")
        Self.writeQuotedOrDash(referer, into: &buffer)
        buffer.writeStaticString(" ")
        Self.writeQuotedOrDash(userAgent, into: &buffer)
        buffer.writeStaticString(" ")
        Self.writeQuotedOrDash(clientAddress, into: &buffer)
        buffer.writeStaticString(" ")
        Self.writeQuotedOrDash(backendAddress, into: &buffer)
        buffer.writeStaticString(" x_forwarded_for:")
        Self.writeQuotedOrDash(forwardedFor, into: &buffer)
        buffer.writeStaticString(" x_forwarded_proto:")
        Self.writeQuotedOrDash(forwardedProto, into: &buffer)
        buffer.writeStaticString(" vcap_request_id:")
        Self.writeQuotedOrDash(vcapRequestID, into: &buffer)
        buffer.writeStaticString(" response_time:")
        Self.writeSeconds(responseTime, into: &buffer)
        buffer.writeStaticString(" gorouter_time:")
        Self.writeSeconds(gorouterTime, into: &buffer)
        buffer.writeStaticString(" app_id:")
        Self.writeQuotedOrDash(appID, into: &buffer)
        buffer.writeStaticString(" app_index:")
        Self.writeQuotedOrDash(appIndex, into: &buffer)
        buffer.writeStaticString(" instance_id:")
        Self.writeQuotedOrDash(instanceID, into: &buffer)
        buffer.writeStaticString(" x_cf_routererror:")
        Self.writeQuotedOrDash(routerError, into: &buffer)
        buffer.writeStaticString(" routing_decision:")
        Self.writeQuotedOrDash(decision?.rawValue, into: &buffer)
        buffer.writeStaticString(" pinned_instance_id:")
        Self.writeQuotedOrDash(pinnedInstanceID, into: &buffer)
        buffer.writeStaticString(" attempts:")
        buffer.writeString(String(attempts))
        buffer.writeStaticString("\n")
    }

    public var line: String {
        var buffer = ByteBuffer()
        write(into: &buffer)
        return String(buffer: buffer)
    }

    static func writeQuotedOrDash(_ value: String?, into buffer: inout ByteBuffer) {
        guard let value, !value.isEmpty else {
            buffer.writeStaticString("\"-\"")
            return
        }
        buffer.writeInteger(UInt8(ascii: "\""))
        writeEscaped(value, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\""))
    }

    /// Go's strconv.Quote escaping for what can appear in headers: quotes, backslashes, control bytes.
    static func writeEscaped(_ value: String, into buffer: inout ByteBuffer) {
        let needsEscaping = value.utf8.contains { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") || $0 < 0x20 || $0 == 0x7F }
        guard needsEscaping else {
            buffer.writeString(value)
            return
        }
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
            case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
            case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
            case 0..<0x20, 0x7F:
                buffer.writeStaticString("\\x")
                buffer.writeInteger(hex[Int(byte >> 4)])
                buffer.writeInteger(hex[Int(byte & 0xF)])
            default: buffer.writeInteger(byte)
            }
        }
    }

    /// Seconds with 6 decimals, or "-" when negative.
    static func writeSeconds(_ seconds: Double, into buffer: inout ByteBuffer) {
        guard seconds >= 0, seconds.isFinite else {
            buffer.writeStaticString("\"-\"")
            return
        }
        let micros = Int64((seconds * 1_000_000).rounded())
        buffer.writeString(String(micros / 1_000_000))
        buffer.writeInteger(UInt8(ascii: "."))
        let fraction = String(micros % 1_000_000)
        for _ in fraction.count..<6 { buffer.writeInteger(UInt8(ascii: "0")) }
        buffer.writeString(fraction)
    }
}
