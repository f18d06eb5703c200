/// `--users-login-form`: the URL-encoded form a simulated user logs in with. `{user}` stands for the
/// user's name; `{field:NAME}` for the value of the field NAME in the login page's form, which the user
/// then fetches (a GET of the login path) before each login: the CSRF token that Spring Security
/// (`_csrf`), Django (`csrfmiddlewaretoken`) and Rails (`authenticity_token`) put in their forms and
/// check against the session.
public struct LoginFormTemplate: Sendable, Equatable {
    enum Part: Sendable, Equatable {
        case text(String)
        case user
        case field(String)
    }

    let parts: [Part]

    /// The form as given; nil with `problem` set when it has a placeholder other than `{user}` and
    /// `{field:NAME}`, or a brace left open.
    public init?(_ form: String) {
        guard case .success(let parts) = Self.parse(form) else { return nil }
        self.parts = parts
    }

    /// What is wrong with `form` as a login form template (nil: nothing).
    public static func problem(_ form: String) -> String? {
        guard case .failure(let problem) = parse(form) else { return nil }
        return problem.text
    }

    /// The fields of the login page the form needs, in order of appearance, each once.
    public var pageFields: [String] {
        var names: [String] = []
        for case .field(let name) in parts where !names.contains(name) { names.append(name) }
        return names
    }

    /// The body to POST: `{user}` replaced by `user`, each `{field:NAME}` by the page's value of NAME,
    /// form-encoded (a token with `+`, `/` or `=` arrives as the page had it).
    public func body(user: String, fields: [String: String]) -> String {
        parts.map { part in
            switch part {
            case .text(let text): text
            case .user: Self.formEncoded(user)
            case .field(let name): Self.formEncoded(fields[name] ?? "")
            }
        }.joined()
    }

    struct Problem: Error { var text: String }

    static func parse(_ form: String) -> Result<[Part], Problem> {
        var parts: [Part] = []
        var rest = Substring(form)
        while let open = rest.firstIndex(of: "{") {
            if open > rest.startIndex { parts.append(.text(String(rest[..<open]))) }
            guard let close = rest[open...].firstIndex(of: "}") else {
                return .failure(Problem(text: "--users-login-form has a { without its }: use {user} or {field:NAME} (%7B for a brace)"))
            }
            let name = rest[rest.index(after: open)..<close]
            if name == "user" {
                parts.append(.user)
            } else if name.hasPrefix("field:"), case let field = name.dropFirst("field:".count), !field.isEmpty {
                parts.append(.field(String(field)))
            } else {
                return .failure(
                    Problem(
                        text: "--users-login-form has an unknown placeholder {\(name)}: use {user} for the user's name or {field:NAME} "
                            + "for the value of the login page's field NAME (a CSRF token: {field:_csrf})"))
            }
            rest = rest[rest.index(after: close)...]
        }
        if !rest.isEmpty { parts.append(.text(String(rest))) }
        return .success(parts)
    }

    /// application/x-www-form-urlencoded, as a browser encodes a field's value: letters, digits and
    /// `*-._` as they are, a space as `+`, every other byte of the UTF-8 as `%XX`.
    private static let hexDigits = Array("0123456789ABCDEF".unicodeScalars)

    static func formEncoded(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "*"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: " "):
                out += "+"
            default:
                out += "%"
                out.unicodeScalars.append(hexDigits[Int(byte >> 4)])
                out.unicodeScalars.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return out
    }
}

/// The `<input name=... value=...>` fields of an HTML page: what a login form sends besides what the
/// user types (its hidden CSRF token). The first field of each name counts, as in a page with one
/// form; values have their character references decoded.
public enum HTMLFormFields {
    public static func values(in html: String) -> [String: String] {
        var fields: [String: String] = [:]
        let scalars = Array(html.unicodeScalars)
        var index = 0
        while let start = tagStart(scalars, from: index, name: "input") {
            let (attributes, end) = self.attributes(scalars, from: start)
            index = end
            guard let name = attributes["name"], fields[name] == nil else { continue }
            fields[name] = attributes["value"] ?? ""
        }
        return fields
    }

    /// The index just after `<name` (any case) followed by a space, `/` or `>`, from `index` on.
    static func tagStart(_ scalars: [Unicode.Scalar], from index: Int, name: String) -> Int? {
        let name = Array(name.unicodeScalars)
        var at = index
        while at + name.count + 1 < scalars.count {
            defer { at += 1 }
            guard scalars[at] == "<" else { continue }
            let matches = (0..<name.count).allSatisfy { lowercased(scalars[at + 1 + $0]) == name[$0] }
            let after = scalars[at + 1 + name.count]
            if matches, after == "/" || after == ">" || after.properties.isWhitespace { return at + 1 + name.count }
        }
        return nil
    }

    /// The attributes of a tag from `index` (just after its name) to its `>`: names lowercased, values
    /// unquoted and decoded; and the index after the tag.
    static func attributes(_ scalars: [Unicode.Scalar], from index: Int) -> (attributes: [String: String], end: Int) {
        var attributes: [String: String] = [:]
        var at = index
        func skipSpaces() { while at < scalars.count, scalars[at].properties.isWhitespace || scalars[at] == "/" { at += 1 } }
        while true {
            skipSpaces()
            guard at < scalars.count, scalars[at] != ">" else { return (attributes, min(at + 1, scalars.count)) }
            var name = ""
            while at < scalars.count, !scalars[at].properties.isWhitespace, !["=", ">", "/"].contains(scalars[at]) {
                name.unicodeScalars.append(lowercased(scalars[at]))
                at += 1
            }
            if name.isEmpty {  // a stray "=": step over it
                at += 1
                continue
            }
            while at < scalars.count, scalars[at].properties.isWhitespace { at += 1 }
            var value = ""
            if at < scalars.count, scalars[at] == "=" {
                at += 1
                while at < scalars.count, scalars[at].properties.isWhitespace { at += 1 }
                if at < scalars.count, scalars[at] == "\"" || scalars[at] == "'" {
                    let quote = scalars[at]
                    at += 1
                    while at < scalars.count, scalars[at] != quote {
                        value.unicodeScalars.append(scalars[at])
                        at += 1
                    }
                    at += 1
                } else {
                    while at < scalars.count, !scalars[at].properties.isWhitespace, scalars[at] != ">" {
                        value.unicodeScalars.append(scalars[at])
                        at += 1
                    }
                }
            }
            if attributes[name] == nil { attributes[name] = decoded(value) }
        }
    }

    static func lowercased(_ scalar: Unicode.Scalar) -> Unicode.Scalar {
        ("A"..."Z").contains(scalar) ? Unicode.Scalar(scalar.value + 32) ?? scalar : scalar
    }

    private static let namedReferences: [String: Unicode.Scalar] = ["amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'"]

    /// Character references: the five named ones a token or a name can hold, and numeric ones.
    static func decoded(_ value: String) -> String {
        guard value.contains("&") else { return value }
        var out = ""
        var rest = Substring(value)
        while let amp = rest.firstIndex(of: "&") {
            out += rest[..<amp]
            rest = rest[amp...]
            guard let semicolon = rest.prefix(12).firstIndex(of: ";") else {
                out += "&"
                rest = rest.dropFirst()
                continue
            }
            let reference = rest[rest.index(after: rest.startIndex)..<semicolon]
            var scalar: Unicode.Scalar?
            if let named = namedReferences[String(reference)] {
                scalar = named
            } else if reference.hasPrefix("#x") || reference.hasPrefix("#X") {
                scalar = UInt32(reference.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init)
            } else if reference.hasPrefix("#") {
                scalar = UInt32(reference.dropFirst(), radix: 10).flatMap(Unicode.Scalar.init)
            }
            if let scalar {
                out.unicodeScalars.append(scalar)
                rest = rest[rest.index(after: semicolon)...]
            } else {
                out += "&"
                rest = rest.dropFirst()
            }
        }
        return out + rest
    }
}
