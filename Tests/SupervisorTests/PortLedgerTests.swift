import Testing

@testable import Supervisor

/// A generator that repeats a fixed sequence: which candidates the ledger sees, in order.
private struct Cycle: RandomNumberGenerator {
    var values: [UInt64]
    var position = 0
    mutating func next() -> UInt64 {
        defer { position = (position + 1) % values.count }
        return values[position]
    }
}

@Suite("Free ports: never the same one twice")
struct PortLedgerTests {
    @Test("Every port of a small range once, then none: a port handed out is not handed out again")
    func eachPortOnce() {
        var ledger = PortLedger()
        var generator = SystemRandomNumberGenerator()
        var picked: [Int] = []
        for _ in 0..<5 {
            guard let port = ledger.pick(from: 20_000..<20_005, attempts: 10_000, using: &generator, isFree: { _ in true }) else {
                Issue.record("a free port was left, and none was picked")
                return
            }
            picked.append(port)
        }
        #expect(picked.sorted() == [20_000, 20_001, 20_002, 20_003, 20_004])
        #expect(ledger.pick(from: 20_000..<20_005, attempts: 100, using: &generator, isFree: { _ in true }) == nil)
    }

    @Test("A port the user gave (recorded) and a port in use are skipped")
    func recordedAndBusyPortsAreSkipped() {
        var ledger = PortLedger()
        ledger.record(30_001)
        var generator = Cycle(values: [0, 1, 2, 3].map { UInt64($0) << 62 })
        var tried: [Int] = []
        let port = ledger.pick(from: 30_000..<30_004, using: &generator) { candidate in
            tried.append(candidate)
            return candidate != 30_000
        }
        // 30_000 is busy, 30_001 was the user's (not even checked), 30_002 is free.
        #expect(tried == [30_000, 30_002])
        #expect(port == 30_002)
        #expect(ledger.contains(30_001) && ledger.contains(30_002) && !ledger.contains(30_000))
    }

    @Test("The ledger is bounded: past its limit the oldest port is forgotten, each once")
    func bounded() {
        var ledger = PortLedger(limit: 3)
        for port in [1, 2, 3, 3, 4] { ledger.record(port) }
        #expect(!ledger.contains(1) && ledger.contains(2) && ledger.contains(3) && ledger.contains(4))
        ledger.record(5)
        ledger.record(6)
        #expect(!ledger.contains(2) && !ledger.contains(3))
        #expect(ledger.contains(4) && ledger.contains(5) && ledger.contains(6))
    }

    @Test("Probe.freePort hands out distinct ports, and never one reserved for the user, in one process")
    func freePortIsDistinct() throws {
        let reserved = try Probe.freePort()
        Probe.reserve(port: reserved)
        var seen: Set<Int> = [reserved]
        // 2,000 random picks from the ~22,000 ports below the ephemeral range: without the ledger two
        // of them would be equal almost surely (birthday bound, 1 - e^-87).
        for _ in 0..<2_000 {
            let port = try Probe.freePort()
            #expect(seen.insert(port).inserted, "port \(port) handed out twice")
        }
    }
}
