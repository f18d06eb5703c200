/// Counts as the cluster's lines print them: grouped by thousands with commas whatever the locale
/// (`1,234`), and with their noun (`1 kill`, `3 kills`).
enum CountText {
    static func grouped(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var grouped = value < 0 ? "-" : ""
        for (offset, character) in digits.enumerated() {
            if offset > 0, (digits.count - offset) % 3 == 0 { grouped.append(",") }
            grouped.append(character)
        }
        return grouped
    }

    static func count(_ number: Int, _ noun: String) -> String {
        "\(grouped(number)) \(number == 1 ? noun : noun + "s")"
    }
}
