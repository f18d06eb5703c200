import NIOCore
import Testing

@testable import SocketIO

@Suite("Flush pacing (write coalescing), without I/O")
struct FlushPacingTests {
    final class Connection {}
    let a = ObjectIdentifier(Connection.self)
    let window = TimeAmount.milliseconds(10)

    func at(_ milliseconds: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(1_000_000_000 + milliseconds * 1_000_000)) }

    @Test("no window: every write is flushed at once")
    func off() {
        var pacing = FlushPacing<ObjectIdentifier>()
        for time in [0, 1, 2] as [Int64] { #expect(pacing.wrote(a, a, window: .zero, now: at(time)) == .flush) }
        #expect(pacing.lastFlush.isEmpty)
    }

    @Test("a lone write is flushed at once; writes within the window wait for its end, together")
    func nagle() {
        var pacing = FlushPacing<ObjectIdentifier>()
        #expect(pacing.wrote(a, a, window: window, now: at(0)) == .flush)
        #expect(pacing.wrote(a, a, window: window, now: at(3)) == .deferUntil(at(10)))
        #expect(pacing.wrote(a, a, window: window, now: at(6)) == .alreadyDeferred)
        #expect(pacing.due(now: at(10)) == [a])
        #expect(pacing.deferred.isEmpty && pacing.nextDeadline == nil)
        // The deferred flush counts as a flush: the next write within the window waits again.
        #expect(pacing.wrote(a, a, window: window, now: at(12)) == .deferUntil(at(20)))
        #expect(pacing.due(now: at(20)) == [a])
        // After a quiet window, at once again.
        #expect(pacing.wrote(a, a, window: window, now: at(35)) == .flush)
    }

    @Test("connections are paced each by its own last flush; one timer serves the earliest deadline")
    func perConnection() {
        final class Other {}
        let b = ObjectIdentifier(Other.self)
        var pacing = FlushPacing<ObjectIdentifier>()
        #expect(pacing.wrote(a, a, window: window, now: at(0)) == .flush)
        #expect(pacing.wrote(b, b, window: window, now: at(4)) == .flush)
        #expect(pacing.wrote(a, a, window: window, now: at(5)) == .deferUntil(at(10)))
        // b is due later than the timer already set for a: it rides on it (flushed early, never late).
        #expect(pacing.wrote(b, b, window: window, now: at(6)) == .alreadyDeferred)
        #expect(Set(pacing.due(now: at(10))) == [a, b])
        // A connection never flushed before is not held back by another's recent flush.
        final class Third {}
        #expect(pacing.wrote(ObjectIdentifier(Third.self), ObjectIdentifier(Third.self), window: window, now: at(11)) == .flush)
    }

    @Test("a closed connection is forgotten: nothing deferred for it, no deadline left")
    func forget() {
        var pacing = FlushPacing<ObjectIdentifier>()
        _ = pacing.wrote(a, a, window: window, now: at(0))
        #expect(pacing.wrote(a, a, window: window, now: at(1)) == .deferUntil(at(10)))
        pacing.forget(a)
        #expect(pacing.deferred.isEmpty && pacing.nextDeadline == nil && pacing.lastFlush.isEmpty)
        #expect(pacing.due(now: at(10)).isEmpty)
    }

    @Test("the table only keeps connections flushed within the last window")
    func prune() {
        var pacing = FlushPacing<ObjectIdentifier>()
        final class Other {}
        let b = ObjectIdentifier(Other.self)
        _ = pacing.wrote(a, a, window: window, now: at(2_000))
        #expect(pacing.lastFlush.count == 1)
        // A second later, a's entry can no longer defer anything: it goes when b is flushed.
        #expect(pacing.wrote(b, b, window: window, now: at(3_500)) == .flush)
        #expect(Set(pacing.lastFlush.keys) == [b])
    }

    @Test("under constant deferral, a connection that went away without a close is still pruned")
    func pruneWhileDeferring() {
        final class Other {}
        let gone = ObjectIdentifier(Other.self)
        var pacing = FlushPacing<ObjectIdentifier>()
        _ = pacing.wrote(gone, gone, window: window, now: at(0))
        _ = pacing.wrote(a, a, window: window, now: at(1))
        // a is written to every 5 ms and flushed every 10 ms by the timer, never at once; gone says nothing more.
        var time: Int64 = 5
        while time < 2_500 {
            _ = pacing.wrote(a, a, window: window, now: at(time))
            if let next = pacing.nextDeadline, next <= at(time + 5) { _ = pacing.due(now: next) }
            time += 5
        }
        #expect(pacing.lastFlush[gone] == nil)
        #expect(pacing.lastFlush[a] != nil)
    }
}
