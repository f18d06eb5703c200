/// Cookie names as RFC 6265 allows them (an HTTP token).
public enum CookieName {
    @inlinable public static func isValid(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy(isTokenByte)
    }

    @inlinable package static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }
}

/// One `Set-Cookie` response header, parsed the way browsers (and Go's net/http) read it.
public struct SetCookie: Sendable, Equatable {
    public var name: String
    public var value: String
    public var path: String?
    /// The `Expires` text as the app wrote it.
    public var expires: String?
    /// `Max-Age` in seconds as written (0 or negative deletes the cookie).
    public var maxAge: Int?
    public var secure = false
    public var httpOnly = false
    /// `Lax`, `Strict` or `None` as written.
    public var sameSite: String?
    public var partitioned = false

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    /// nil when the header has no `name=value` first part.
    public init?(header: String) {
        var parts = header.split(separator: ";", omittingEmptySubsequences: false).makeIterator()
        guard let first = parts.next(), let equals = first.firstIndex(of: "=") else { return nil }
        let name = first[first.startIndex..<equals].trimmingCharacters()
        guard !name.isEmpty else { return nil }
        self.name = String(name)
        self.value = String(first[first.index(after: equals)...].trimmingCharacters())
        while let part = parts.next() {
            let attribute = part.trimmingCharacters()
            let key: Substring
            let attributeValue: Substring?
            if let equals = attribute.firstIndex(of: "=") {
                key = attribute[attribute.startIndex..<equals].trimmingCharacters()
                attributeValue = attribute[attribute.index(after: equals)...].trimmingCharacters()
            } else {
                key = attribute
                attributeValue = nil
            }
            switch key.lowercased() {
            case "path": path = attributeValue.map(String.init)
            case "expires": expires = attributeValue.map(String.init)
            case "max-age": maxAge = attributeValue.flatMap { Int($0) }
            case "secure": secure = true
            case "httponly": httpOnly = true
            case "samesite": sameSite = attributeValue.map(String.init)
            case "partitioned": partitioned = true
            default: break
            }
        }
    }

    /// `SameSite` as Go writes it back after reading it: `Lax`, `Strict` or `None` in any case;
    /// nil for another value (Go's default mode, which it does not write).
    public var canonicalSameSite: String? {
        switch sameSite?.lowercased() {
        case "lax": return "Lax"
        case "strict": return "Strict"
        case "none": return "None"
        default: return nil
        }
    }

    /// `Expires` as Go writes it back after reading it: the date in IMF-fixdate; nil when it is not
    /// a date, or one Go does not write (before 1601).
    public var canonicalExpires: String? {
        expires.flatMap(HTTPDate.parse).flatMap { VCAPIDMeta.writableDates.contains($0) ? HTTPDate.format($0) : nil }
    }

    /// True when the cookie deletes itself: `Max-Age` of 0 or less, or an `Expires` in the past.
    public func isDeletion(nowSecondsSince1970 now: Int64) -> Bool {
        if let maxAge, maxAge <= 0 { return true }
        if let expires, let time = HTTPDate.parse(expires), time <= now { return true }
        return false
    }

    /// The header text, attributes in Go's order (what gorouter writes).
    public var headerValue: String {
        var text = "\(name)=\(value)"
        if let path { text += "; Path=\(path)" }
        if let expires { text += "; Expires=\(expires)" }
        if let maxAge { text += "; Max-Age=\(max(maxAge, 0))" }
        if httpOnly { text += "; HttpOnly" }
        if secure { text += "; Secure" }
        if let sameSite { text += "; SameSite=\(sameSite)" }
        if partitioned { text += "; Partitioned" }
        return text
    }
}

extension Substring {
    /// Without the spaces and tabs at both ends.
    package func trimmingCharacters() -> Substring {
        var result = self
        while let first = result.first, first == " " || first == "\t" { result.removeFirst() }
        while let last = result.last, last == " " || last == "\t" { result.removeLast() }
        return result
    }
}

/// HTTP dates (`Expires`): IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 and asctime.
public enum HTTPDate {
    /// Seconds since 1970, or nil when the text is not an HTTP date.
    public static func parse(_ text: String) -> Int64? {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "-" }).map(String.init)
        // IMF-fixdate: [Sun] 06 Nov 1994 08:49:37 GMT; RFC 850: [Sunday] 06 Nov 94 08:49:37 GMT;
        // asctime: [Sun] Nov 6 08:49:37 1994.
        guard words.count >= 4 else { return nil }
        var day: Int?
        var month: Int?
        var year: Int?
        var time: (Int, Int, Int)?
        for word in words {
            if let clock = parseClock(word) {
                time = clock
            } else if let monthIndex = months.firstIndex(of: word.lowercased().prefix(3).description), month == nil {
                month = monthIndex + 1
            } else if let number = Int(word) {
                // The first number is the day, the second the year, in all three formats.
                if day == nil {
                    day = number
                } else if year == nil {
                    year = number < 70 ? 2000 + number : number < 100 ? 1900 + number : number
                }
            }
        }
        // Out of range is not a date (an app can write any digits): no arithmetic on them overflows.
        guard let day, let month, let year, let time, (1...31).contains(day), (0...9999).contains(year), (0...23).contains(time.0),
            (0...59).contains(time.1), (0...60).contains(time.2)
        else { return nil }
        return epochSeconds(year: year, month: month, day: day) + Int64(time.0 * 3600 + time.1 * 60 + time.2)
    }

    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    private static func parseClock(_ word: String) -> (Int, Int, Int)? {
        let parts = word.split(separator: ":")
        guard parts.count == 3, let h = Int(parts[0]), let m = Int(parts[1]), let s = Int(parts[2]) else { return nil }
        return (h, m, s)
    }

    /// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), as Go writes a cookie's `Expires`.
    public static func format(_ seconds: Int64) -> String {
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let time = seconds - days * 86400
        let (year, month, day) = civil(fromDays: days)
        let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][Int(((days % 7) + 7) % 7)]
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let name = months[month - 1].capitalized
        return "\(weekday), \(two(Int64(day))) \(name) \(year) \(two(time / 3600)):\(two(time % 3600 / 60)):\(two(time % 60)) GMT"
    }

    /// Civil-from-days (Howard Hinnant): the year, month and day of a day counted from 1970-01-01.
    @inlinable public static func civil(fromDays days: Int64) -> (year: Int64, month: Int, day: Int) {
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let dayOfEra = z - era * 146097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthPart = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * monthPart + 2) / 5 + 1)
        let month = Int(monthPart < 10 ? monthPart + 3 : monthPart - 9)
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    /// Days-from-civil (Howard Hinnant), times 86400.
    static func epochSeconds(year: Int, month: Int, day: Int) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return Int64(era * 146097 + dayOfEra - 719468) * 86400
    }
}

/// `__VCAP_ID_META__`: newer gorouters store the attributes of the `__VCAP_ID__` they set in this
/// companion cookie, since a browser never sends attributes back. When the pinned instance is gone
/// and the app sets no new session cookie, the refreshed `__VCAP_ID__` gets them back from it instead
/// of default attributes. Its value is gorouter's: `secure&partitioned&expires=E&maxage=M&samesite=S`
/// (bare flags, then the others as Go's `url.Values.Encode` writes them, sorted by key), with `maxage`
/// and `expires` as absolute Unix times so that a refresh does not extend the session's lifetime
/// (`maxage=-1`: the cookie was a deletion).
public struct VCAPIDMeta: Sendable, Equatable {
    public static let cookieName = "__VCAP_ID_META__"

    public var secure = false
    public var partitioned = false
    /// `lax`, `strict` or `none`; nil when the cookie had none (or another value).
    public var sameSite: String?
    /// When a positive `Max-Age` runs out (Unix seconds); -1 for a deletion; nil without `Max-Age`.
    public var maxAgeEnds: Int64?
    /// `Expires` (Unix seconds); nil without one (or one that is not a date).
    public var expires: Int64?

    /// The `SameSite` values gorouter keeps, as it writes them here.
    static let sameSiteValues: Set<String> = ["lax", "strict", "none"]

    /// The attributes of `cookie` as they stand at `now`.
    public init(of cookie: SetCookie, now: Int64) {
        secure = cookie.secure
        partitioned = cookie.partitioned
        sameSite = cookie.sameSite.map { $0.lowercased() }.flatMap { Self.sameSiteValues.contains($0) ? $0 : nil }
        if let maxAge = cookie.maxAge {
            // 0 or less is a deletion ("Max-Age=0" is how one is written).
            let (ends, overflow) = now.addingReportingOverflow(Int64(maxAge))
            maxAgeEnds = maxAge <= 0 ? -1 : overflow ? .max : ends
        }
        expires = cookie.expires.flatMap(HTTPDate.parse)
    }

    /// Reads a cookie value; unknown parts are ignored, and a malformed number leaves its attribute out
    /// (gorouter logs it and keeps the rest).
    public init(value: String) {
        for part in value.split(separator: "&") {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(pair[0])
            let text = pair.count > 1 ? String(pair[1]) : ""
            switch key {
            case "secure": secure = true
            case "partitioned": partitioned = true
            case "samesite": sameSite = Self.sameSiteValues.contains(text) ? text : nil
            case "maxage": maxAgeEnds = Int64(text)
            case "expires": expires = Int64(text)
            default: break
            }
        }
    }

    public var value: String {
        var parts: [String] = []
        if secure { parts.append("secure") }
        if partitioned { parts.append("partitioned") }
        if let expires { parts.append("expires=\(expires)") }
        if let maxAgeEnds { parts.append("maxage=\(maxAgeEnds)") }
        if let sameSite { parts.append("samesite=\(sameSite)") }
        return parts.joined(separator: "&")
    }

    /// The companion of `vcapID`: the same attributes, this name and value.
    public static func cookie(for vcapID: SetCookie, now: Int64) -> SetCookie {
        var meta = vcapID
        meta.name = cookieName
        meta.value = VCAPIDMeta(of: vcapID, now: now).value
        return meta
    }

    /// Gives a refreshed `__VCAP_ID__` the attributes kept here, at `now`: `Max-Age` what remains of
    /// it (0, a deletion, once it has run out), `Expires` as it was; `Secure` only added.
    public func restore(into cookie: inout SetCookie, now: Int64) {
        cookie.secure = cookie.secure || secure
        cookie.partitioned = partitioned
        cookie.sameSite = sameSite.map { $0.prefix(1).uppercased() + $0.dropFirst() }
        if let maxAgeEnds {
            cookie.maxAge = maxAgeEnds < 0 ? 0 : max(0, Int(clamping: maxAgeEnds - now))
        }
        // A date Go would not write (before 1601) or IMF-fixdate cannot (after 9999) is left out: the
        // value comes from the client, and may be anything.
        cookie.expires = expires.flatMap { Self.writableDates.contains($0) ? HTTPDate.format($0) : nil }
    }

    /// 1601-01-01 to 9999-12-31, in Unix seconds.
    package static let writableDates: ClosedRange<Int64> = -11_644_473_600...253_402_300_799
}
