/// Reading the request's `Cookie` header(s): `a=1; b=2`. Byte-level: it runs on every request.
public enum RequestCookies {
    /// The value of the first cookie called `name` in any of `headers`.
    public static func value(named name: String, in headers: [String]) -> Substring? {
        for header in headers {
            if let value = value(named: name, in: header) { return value }
        }
        return nil
    }

    public static func value(named name: String, in header: String) -> Substring? {
        var found: Range<Int>?
        scan(header) { nameRange, valueRange, bytes in
            if matches(name, bytes, nameRange) {
                found = valueRange
                return false
            }
            return true
        }
        guard let found else { return nil }
        let utf8 = header.utf8
        let start = utf8.index(utf8.startIndex, offsetBy: found.lowerBound)
        let end = utf8.index(start, offsetBy: found.count)
        return header[start..<end]
    }

    /// True when one of `names` is present in `headers`.
    public static func containsAny(of names: [String], in headers: [String]) -> Bool {
        for header in headers {
            var found = false
            scan(header) { nameRange, _, bytes in
                for name in names where matches(name, bytes, nameRange) {
                    found = true
                    return false
                }
                return true
            }
            if found { return true }
        }
        return false
    }

    /// `header` without the cookies called `name`; nil when nothing is left. (haproxy mode only.)
    /// A part is removed when `scan`, the reader that pins the request, reads it as that cookie: one
    /// reading for both. A part without "=" is a nameless cookie (RFC 6265bis, as browsers send it), so
    /// a bare `SERVERID` is kept. Works on bytes: as Characters, a combining mark after "=" joins it
    /// into one Character, the name was not found, and the cookie reached the app (found by `make fuzz`).
    public static func removing(named name: String, from header: String) -> String? {
        var removedAny = false
        var kept: [String] = []
        for part in header.utf8.split(separator: UInt8(ascii: ";")) {
            // ";" is ASCII, so each part of a String's UTF-8 is valid UTF-8 on its own.
            let text = String(decoding: part, as: UTF8.self)
            if value(named: name, in: text) != nil {
                removedAny = true
                continue
            }
            var pair = part
            while let first = pair.first, first == 0x20 || first == 0x09 { pair = pair.dropFirst() }
            while let last = pair.last, last == 0x20 || last == 0x09 { pair = pair.dropLast() }
            if !pair.isEmpty { kept.append(String(decoding: pair, as: UTF8.self)) }
        }
        guard removedAny else { return header }
        return kept.isEmpty ? nil : kept.joined(separator: "; ")
    }

    private static func matches(_ name: String, _ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Bool {
        var name = name
        return name.withUTF8 { expected in
            guard expected.count == range.count else { return false }
            for offset in 0..<range.count where expected[offset] != bytes[range.lowerBound + offset] { return false }
            return true
        }
    }

    /// Calls `body` with the byte ranges of each name and value (quotes removed); `body` returns false
    /// to stop.
    static func scan(_ header: String, _ body: (Range<Int>, Range<Int>, UnsafeBufferPointer<UInt8>) -> Bool) {
        var header = header
        header.withUTF8 { bytes in
            let end = bytes.count
            var index = 0
            while index < end {
                while index < end && (bytes[index] == 0x20 || bytes[index] == 0x09 || bytes[index] == UInt8(ascii: ";")) { index += 1 }
                let nameStart = index
                while index < end && bytes[index] != UInt8(ascii: "=") && bytes[index] != UInt8(ascii: ";") { index += 1 }
                guard index < end, bytes[index] == UInt8(ascii: "=") else { continue }
                var nameEnd = index
                while nameEnd > nameStart && (bytes[nameEnd - 1] == 0x20 || bytes[nameEnd - 1] == 0x09) { nameEnd -= 1 }
                index += 1
                var valueStart = index
                while index < end && bytes[index] != UInt8(ascii: ";") { index += 1 }
                var valueEnd = index
                while valueStart < valueEnd && (bytes[valueStart] == 0x20 || bytes[valueStart] == 0x09) { valueStart += 1 }
                while valueEnd > valueStart && (bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09) { valueEnd -= 1 }
                if valueEnd - valueStart >= 2 && bytes[valueStart] == UInt8(ascii: "\"") && bytes[valueEnd - 1] == UInt8(ascii: "\"") {
                    valueStart += 1
                    valueEnd -= 1
                }
                guard nameEnd > nameStart else { continue }
                if !body(nameStart..<nameEnd, valueStart..<valueEnd, bytes) { return }
            }
        }
    }
}

extension Substring {
    func trimmingSuffix(_ character: Character) -> Substring {
        var result = self
        while result.last == character { result.removeLast() }
        return result
    }
}
