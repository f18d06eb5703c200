/// The ports one process has handed out (`Probe.freePort`) or been given (a `--port` of the user's),
/// so that it never hands out the same one twice. A port is only checked free when it is chosen, and
/// its user binds it later (a proxy's listener and its admin API, an instance's `$PORT`): two choices
/// made before either is bound could otherwise land on the same port, and the second program to
/// start would fail with "address already in use" (seen once in CI: the proxy's admin port was its
/// listening port, and it crash-looped). Remembers the last `limit` ports; an older one is either
/// bound by now (the free check refuses it) or released.
public struct PortLedger: Sendable {
    public let limit: Int
    private var order: [Int] = []
    private var next = 0
    private var taken: Set<Int> = []

    /// `limit`: how many ports it remembers (at least one).
    public init(limit: Int = 4096) {
        self.limit = max(1, limit)
    }

    public func contains(_ port: Int) -> Bool { taken.contains(port) }

    /// Records a port as handed out: it is not chosen again while remembered.
    public mutating func record(_ port: Int) {
        guard taken.insert(port).inserted else { return }
        if order.count < limit {
            order.append(port)
        } else {
            taken.remove(order[next])
            order[next] = port
            next = (next + 1) % limit
        }
    }

    /// A port from `range` that this ledger has not handed out and `isFree` accepts, recorded; at most
    /// `attempts` random tries, nil when none was found (the caller falls back to the kernel's choice).
    public mutating func pick(
        from range: Range<Int>, attempts: Int = 500, using generator: inout some RandomNumberGenerator, isFree: (Int) -> Bool
    ) -> Int? {
        guard !range.isEmpty else { return nil }
        for _ in 0..<attempts {
            let candidate = Int.random(in: range, using: &generator)
            if !contains(candidate), isFree(candidate) {
                record(candidate)
                return candidate
            }
        }
        return nil
    }
}
