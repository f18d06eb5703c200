import NIOCore
import Testing

@testable import SocketIO

/// The Engine.IO session state machine, with time passed in: no sockets, no clocks.
@Suite("Engine.IO session state machine")
struct EngineSessionTests {
    let configuration = EngineSessionConfiguration(
        pingInterval: .milliseconds(300), pingTimeout: .milliseconds(200), upgradeTimeout: .seconds(10), maxBufferedBytes: 1000,
        maxPacketsPerPoll: 3)
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func at(_ milliseconds: Int64) -> NIODeadline { start + .milliseconds(milliseconds) }

    func texts(_ packets: [EnginePacket]?) -> [String] {
        (packets ?? []).map { String(buffer: $0.wire) }
    }

    func polling() -> EngineSession { EngineSession(transport: .polling, now: start, configuration: configuration) }

    @Test("a held GET is answered as soon as something is queued; queued packets go out with the next GET")
    func longPolling() {
        var session = polling()
        #expect(session.poll().0 == .park)
        let sent = session.send([EnginePacket(.message, "a")])
        #expect(texts(sent.pollResponse) == ["4a"])
        _ = session.send([EnginePacket(.message, "b"), EnginePacket(.message, "c")])
        guard case .respond(let packets) = session.poll().0 else { Issue.record("expected an answer"); return }
        #expect(texts(packets) == ["4b", "4c"])
    }

    @Test("a response carries at most maxPacketsPerPoll packets, in order")
    func pollLimit() {
        var session = polling()
        _ = session.send((1...5).map { EnginePacket(.message, "\($0)") })
        guard case .respond(let first) = session.poll().0, case .respond(let second) = session.poll().0 else {
            Issue.record("expected answers")
            return
        }
        #expect(texts(first) == ["41", "42", "43"])
        #expect(texts(second) == ["44", "45"])
    }

    @Test("a second concurrent GET closes the session: the held one gets the close packet, the other 400")
    func duplicatePoll() {
        var session = polling()
        _ = session.poll()
        let (decision, effects) = session.poll()
        #expect(decision == .fail(.badRequest))
        #expect(texts(effects.pollResponse) == ["1"])
        #expect(effects.closed == .transportError)
        #expect(session.poll().0 == .fail(.unknownSessionID))
    }

    @Test("a second concurrent POST closes the session")
    func duplicatePost() {
        var session = polling()
        #expect(session.postStarted().0 == nil)
        let (refusal, effects) = session.postStarted()
        #expect(refusal == .badRequest)
        #expect(effects.closed == .transportError)
    }

    @Test("the server pings every pingInterval; a pong reschedules; no pong within pingTimeout closes")
    func heartbeat() {
        var session = polling()
        #expect(session.nextDeadline == at(300))
        #expect(session.timerFired(now: at(299)).isEmpty)
        _ = session.poll()
        let ping = session.timerFired(now: at(300))
        #expect(texts(ping.pollResponse) == ["2"])
        #expect(session.nextDeadline == at(500))
        _ = session.receive([EnginePacket(.pong)], now: at(350))
        #expect(session.nextDeadline == at(650))
        _ = session.timerFired(now: at(650))
        let timeout = session.timerFired(now: at(850))
        #expect(timeout.closed == .pingTimeout)
        #expect(session.isClosed && session.nextDeadline == nil)
    }

    @Test("a client ping (v3 direction) or an open/upgrade packet on the transport is a protocol error")
    func wrongDirection() {
        for type in [EnginePacketType.ping, .open, .upgrade] {
            var session = polling()
            #expect(session.receive([EnginePacket(type)], now: at(1)).closed == .parseError)
        }
    }

    @Test("messages are delivered in order; a close packet ends the session and the held GET gets a noop")
    func receiveAndClose() {
        var session = polling()
        _ = session.poll()
        let effects = session.receive(
            [EnginePacket(.message, "x"), EnginePacket(.noop), EnginePacket(.close), EnginePacket(.message, "y")], now: at(1))
        #expect(texts(effects.received) == ["4x"])
        #expect(effects.closed == .transportClose)
        #expect(texts(effects.pollResponse) == ["6"])
    }

    @Test("upgrade: 2probe -> 3probe and the held GET released with 6; then 5 switches and flushes the buffer")
    func upgrade() {
        var session = polling()
        #expect(session.poll().0 == .park)
        let opened = session.probeOpened(now: at(10))
        #expect(opened)
        let probe = session.probeReceived(EnginePacket(.ping, "probe"))
        #expect(texts(probe.probeWrites) == ["3probe"])
        #expect(texts(probe.pollResponse) == ["6"])
        // A GET during the probe is answered at once with a noop.
        #expect(session.poll().0 == .respond([EnginePacket(.noop)]))
        _ = session.send([EnginePacket(.message, "buffered")])
        let upgraded = session.probeReceived(EnginePacket(.upgrade))
        #expect(upgraded.upgraded)
        #expect(texts(upgraded.webSocketWrites) == ["4buffered"])
        #expect(session.transport == .websocket)
        // After the upgrade: HTTP requests are bad requests; sends go to the WebSocket.
        #expect(session.poll().0 == .fail(.badRequest))
        #expect(session.postStarted().0 == .badRequest)
        #expect(texts(session.send([EnginePacket(.message, "ws")]).webSocketWrites) == ["4ws"])
        #expect(!session.canProbe)
    }

    @Test("what is left of a burst when the client upgrades goes to the WebSocket as a burst, and only then")
    func upgradeKeepsABurstsRoom() {
        func upgraded(after packets: [EnginePacket], burst: Bool) -> EngineEffects {
            var session = polling()
            _ = session.send(packets, burst: burst)
            _ = session.probeOpened(now: at(10))
            _ = session.probeReceived(EnginePacket(.ping, "probe"))
            return session.probeReceived(EnginePacket(.upgrade))
        }
        let replay = Array(repeating: EnginePacket(.message, String(repeating: "x", count: 300)), count: 8)  // over 1,000 bytes
        let fromBurst = upgraded(after: replay, burst: true)
        #expect(fromBurst.webSocketWrites.count == 8 && fromBurst.webSocketBurst)
        let ordinary = upgraded(after: [EnginePacket(.message, "a")], burst: false)
        #expect(ordinary.webSocketWrites.count == 1 && !ordinary.webSocketBurst)
    }

    @Test("anything else during probing closes the probe; the session stays on polling")
    func probeFailure() {
        var session = polling()
        _ = session.probeOpened(now: at(0))
        let effects = session.probeReceived(EnginePacket(.message, "hello"))
        #expect(effects.closeProbe)
        #expect(session.transport == .polling && !session.isUpgrading && !session.isClosed)
        // 5 before 2probe fails too.
        _ = session.probeOpened(now: at(0))
        #expect(session.probeReceived(EnginePacket(.upgrade)).closeProbe)
    }

    @Test("the upgrade must complete within upgradeTimeout")
    func upgradeTimeout() {
        var fresh = EngineSession(transport: .polling, now: start, configuration: configuration)
        _ = fresh.probeOpened(now: at(0))
        _ = fresh.probeReceived(EnginePacket(.ping, "probe"))
        #expect(fresh.nextDeadline == at(300))
        _ = fresh.receive([EnginePacket(.pong)], now: at(200))
        var deadline = fresh.nextDeadline
        while let next = deadline, next < at(10_000) {
            _ = fresh.timerFired(now: next)
            _ = fresh.receive([EnginePacket(.pong)], now: next)
            deadline = fresh.nextDeadline
        }
        // Heartbeats went on meanwhile; at the upgrade deadline the probe is closed, the session stays.
        #expect(fresh.timerFired(now: at(10_000)).closeProbe)
        #expect(!fresh.isUpgrading && !fresh.isClosed)
    }

    @Test("a session opened over WebSocket cannot probe; a close of its WebSocket ends it")
    func webSocketSession() {
        var session = EngineSession(transport: .websocket, now: start, configuration: configuration)
        #expect(!session.canProbe)
        #expect(texts(session.send([EnginePacket(.message, "x")]).webSocketWrites) == ["4x"])
        #expect(session.webSocketClosed().closed == .transportClose)
    }

    @Test("a long-polling client that lets its queue pass the limit is closed as too slow")
    func slowClient() {
        var session = polling()
        let big = EnginePacket(.message, String(repeating: "x", count: 600))
        #expect(session.send([big]).closed == nil)
        #expect(session.send([big]).closed == .slowClient)
    }

    @Test("a burst (a replay) raises the limit by its size until the client drains back within it")
    func burst() {
        var session = polling()
        let line = EnginePacket(.message, String(repeating: "x", count: 300))  // 302 bytes queued
        // 2,416 bytes owed at once, against a limit of 1,000: the client is not closed for it.
        #expect(session.send(Array(repeating: line, count: 8), burst: true).closed == nil)
        #expect(session.burstAllowance == 2_416)
        // What follows (a welcome, live lines) has the usual room on top...
        #expect(session.send([line, line, line]).closed == nil)
        // ...and no more: a client that does not drain is slow.
        var undrained = session
        #expect(undrained.send([line]).closed == .slowClient)
        // Drained back within the limit (3 packets per poll here), the allowance is gone.
        for _ in 0..<3 { _ = session.poll() }
        #expect(session.bufferedBytes <= 1_000 && session.burstAllowance == 0)
        #expect(session.send([line, line]).closed == .slowClient)
        // A burst on top of an overfull queue is no burst.
        var overfull = polling()
        _ = overfull.send(Array(repeating: line, count: 4))
        #expect(overfull.isClosed)
        var full = polling()
        _ = full.send([line, line, line])
        #expect(full.send(Array(repeating: line, count: 8), burst: true).closed == nil, "within the limit before: a burst")
    }

    @Test("the slow-client rule of both transports: a burst's room is its size, given within the limit, gone once drained")
    func slowClientLimit() {
        var limit = SlowClientLimit(limit: 100)
        #expect(!limit.isSlow(waiting: 100) && limit.isSlow(waiting: 101))
        limit.burst(of: 500, waiting: 50)
        #expect(!limit.isSlow(waiting: 600) && limit.isSlow(waiting: 601))
        limit.drained(to: 300)
        #expect(limit.allowance == 500, "not yet back within the limit")
        limit.drained(to: 100)
        #expect(limit.allowance == 0)
        limit.burst(of: 500, waiting: 101)
        #expect(limit.allowance == 0, "a burst to a client already over the limit is no burst")
    }

    @Test("the attach deadline (Socket.IO connect timeout) closes the session unless cleared")
    func attachDeadline() {
        var session = polling()
        session.setAttachDeadline(at(100))
        #expect(session.nextDeadline == at(100))
        #expect(session.timerFired(now: at(100)).closed == .forcedClose)
        var cleared = polling()
        cleared.setAttachDeadline(at(100))
        cleared.setAttachDeadline(nil)
        #expect(cleared.timerFired(now: at(100)).closed == nil)
    }

    @Test("a server close answers the held GET with the close packet")
    func serverClose() {
        var session = polling()
        _ = session.poll()
        let effects = session.close(.serverShuttingDown)
        #expect(texts(effects.pollResponse) == ["1"])
        #expect(effects.closed == .serverShuttingDown)
        #expect(session.close(.forcedClose).closed == nil)
    }
}

@Suite("Recovery log")
struct RecoveryLogTests {
    func message(_ event: String, rooms: Set<String> = [], except: Set<String> = [], namespace: String = "/") -> BroadcastMessage {
        BroadcastMessage(namespace: namespace, rooms: rooms, except: except, event: event, arguments: ["x"])
    }

    @Test("replays the broadcasts after the offset that reach the session's rooms, then forgets the session")
    func replay() {
        var log = RecoveryLog(retention: .seconds(60))
        let first = log.append(message("a"), now: .seconds(1))
        _ = log.append(message("b", rooms: ["lobby"]), now: .seconds(2))
        _ = log.append(message("c", rooms: ["other"]), now: .seconds(3))
        _ = log.append(message("d", except: ["lobby"]), now: .seconds(4))
        _ = log.append(message("e", namespace: "/admin"), now: .seconds(5))
        let last = log.append(message("f"), now: .seconds(6))
        log.save(SessionSnapshot(sid: "s", pid: "p", namespace: "/", rooms: ["s", "lobby"], data: .null), ttl: .seconds(60), now: .seconds(6))
        let restored = log.restore(pid: "p", offset: first, now: .seconds(7))
        #expect(restored?.missedPackets.map(\.event) == ["b", "f"])
        #expect(restored?.missedPackets.last?.offset == last)
        #expect(log.restore(pid: "p", offset: first, now: .seconds(7)) == nil)
    }

    @Test("an expired session or an unknown offset cannot be recovered")
    func expiry() {
        var log = RecoveryLog(retention: .seconds(60))
        let offset = log.append(message("a"), now: .seconds(1))
        log.save(SessionSnapshot(sid: "s", pid: "p", namespace: "/", rooms: ["s"], data: .null), ttl: .seconds(10), now: .seconds(1))
        #expect(log.restore(pid: "p", offset: offset, now: .seconds(12)) == nil)
        log.save(SessionSnapshot(sid: "s", pid: "q", namespace: "/", rooms: ["s"], data: .null), ttl: .seconds(10), now: .seconds(1))
        #expect(log.restore(pid: "q", offset: "unknown", now: .seconds(2)) == nil)
    }

    @Test("snapshots survive their JSON text form")
    func snapshotText() {
        let snapshot = SessionSnapshot(sid: "s", pid: "p", namespace: "/chat", rooms: ["s", "r"], data: ["user": "bob"], lastOffset: "1-0")
        #expect(SessionSnapshot(jsonText: snapshot.jsonText) == snapshot)
        #expect(SessionSnapshot(jsonText: "{}") == nil)
    }
}
