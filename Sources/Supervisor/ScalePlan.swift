import Foundation

/// `cluster scale N|+k|-k`, parsed.
public enum ScaleRequest: Sendable, Equatable, CustomStringConvertible {
    case absolute(Int)
    case relative(Int)

    /// Parses `5`, `+2` or `-1`; nil for anything else.
    public init?(_ text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("+") || trimmed.hasPrefix("-") {
            guard let magnitude = Int(trimmed.dropFirst()), magnitude >= 0, !trimmed.dropFirst().hasPrefix("+") else { return nil }
            self = .relative(trimmed.hasPrefix("-") ? -magnitude : magnitude)
        } else {
            guard let count = Int(trimmed), count >= 0 else { return nil }
            self = .absolute(count)
        }
    }

    public var description: String {
        switch self {
        case .absolute(let count): "\(count)"
        case .relative(let delta): delta < 0 ? "\(delta)" : "+\(delta)"
        }
    }

    /// Why a `cluster scale` request cannot be carried out.
    public struct Refusal: Error, Equatable {
        public let message: String
        public init(message: String) { self.message = message }
    }

    /// The instance count that the text of a `scale` request (`5`, `+2`, `-1`) asks for, given the
    /// current count, or why there is none: the running supervisor's decision.
    public static func decide(_ text: String?, current: Int) -> Result<Int, Refusal> {
        guard let text, let request = ScaleRequest(text) else {
            return .failure(Refusal(message: "cannot scale to '\(text ?? "")': give a count (5), or a change (+2, -1)"))
        }
        let limit = ClusterConfig.maximumInstances
        guard let target = request.target(current: current), (0...limit).contains(target) else {
            let asked = request.target(current: current).map { "to \($0)" } ?? "by \(request)"
            return .failure(Refusal(message: "cannot scale from \(current) \(asked) instances: the count must be 0 to \(limit)"))
        }
        return .success(target)
    }

    /// The instance count this request asks for, given the current one; nil when `current + k` is
    /// beyond what an Int holds (`+9223372036854775807`), which is no count either.
    public func target(current: Int) -> Int? {
        switch self {
        case .absolute(let count): return count
        case .relative(let delta):
            let (sum, overflow) = current.addingReportingOverflow(delta)
            return overflow ? nil : sum
        }
    }
}

/// Which indices a scale adds and removes. Indices stay dense (0..<count): a scale-up adds the missing
/// lowest indices, a scale-down removes the highest first, as Diego does; the plan names them, because
/// removing an instance decides which pinned users lose their affinity.
public struct ScalePlan: Sendable, Equatable {
    public var from: Int
    public var to: Int
    /// Indices to start, ascending.
    public var add: [Int]
    /// Indices to stop and forget, highest first.
    public var remove: [Int]

    public init(current indices: some Sequence<Int>, target: Int) {
        let present = Set(indices)
        from = present.count
        to = target
        add = (0..<max(0, target)).filter { !present.contains($0) }
        remove = present.filter { $0 >= target }.sorted(by: >)
    }

    public var isEmpty: Bool { add.isEmpty && remove.isEmpty }
}
