import NIOCore
import SocketIO
import Testing

@testable import ChatApp

@Suite struct StreamIDTests {
    @Test func parsesAndOrdersLikeRedis() throws {
        let a = try #require(StreamID("1700000000000-0"))
        let b = try #require(StreamID("1700000000000-1"))
        let c = try #require(StreamID("1700000000001-0"))
        #expect(a < b && b < c)
        #expect(StreamID("9-10")! > StreamID("9-9")!)
        #expect(c.description == "1700000000001-0")
        for bad in ["", "-", "1-", "-1", "1", "1-2-3", "a-1", "1-+", "(1-0", "1 -0", "99999999999999999999999-0"] {
            #expect(StreamID(bad) == nil, "\(bad)")
        }
    }
}

@Suite struct ChatInputTests {
    let limits = ChatLimits(maxMessageBytes: 20, maxNameLength: 8)

    @Test func acceptsTheOriginalClientsForm() throws {
        let parsed = try IncomingChat.parse(json: #"{"action":"message","msg":"  hello  "}"#, limits: limits).get()
        #expect(parsed.text == "hello")
        #expect(parsed.clientID == nil)
        let withID = try IncomingChat.parse(json: #"{"msg":"<b>x</b>","id":"a1-b2"}"#, limits: limits).get()
        #expect(withID.text == "<b>x</b>")
        #expect(withID.clientID == "a1-b2")
    }

    @Test func refusesBadInputWithAReason() {
        let cases: [(String, ChatInputError)] = [
            ("not json", .malformed("the chat event's argument must be a JSON object such as {\"action\":\"message\",\"msg\":\"hi\"}")),
            ("[1,2]", .malformed("the chat event's argument must be a JSON object such as {\"action\":\"message\",\"msg\":\"hi\"}")),
            (#"{"msg":5}"#, .malformed("\"msg\" must be a string")),
            (#"{"action":"control","msg":"x"}"#, .malformed("\"action\" must be \"message\"")),
            (#"{"msg":"   "}"#, .empty),
            (#"{"msg":"123456789012345678901"}"#, .tooLong(limit: 20)),
            (#"{"msg":"a\u0000b"}"#, .controlCharacters),
            (#"{"msg":"ok","id":"has space"}"#, .malformed("\"id\" must be 1 to 64 letters, digits or - _ . :")),
            (#"{"msg":"ok","id":7}"#, .malformed("\"id\" must be 1 to 64 letters, digits or - _ . :")),
        ]
        for (input, expected) in cases {
            #expect(throws: expected, "\(input)") { try IncomingChat.parse(json: input, limits: limits).get() }
        }
        let huge = "{\"msg\":\"" + String(repeating: "x", count: 100_000) + "\"}"
        #expect(throws: ChatInputError.tooLong(limit: 20)) { try IncomingChat.parse(json: huge, limits: limits).get() }
    }

    @Test func newLinesAndTabsAreText() throws {
        #expect(try IncomingChat.parse(json: #"{"msg":"a\nb\tc"}"#, limits: limits).get().text == "a\nb\tc")
    }

    @Test func names() throws {
        #expect(try UserName.validate("  Ada ", limits: limits).get() == "Ada")
        #expect(try UserName.validate("Zoë-1", limits: limits).get() == "Zoë-1")
        #expect(try UserName.validate("山田", limits: limits).get() == "山田")
        #expect(throws: ChatInputError.self) { try UserName.validate("   ", limits: limits).get() }
        #expect(throws: ChatInputError.self) { try UserName.validate("abcdefghi", limits: limits).get() }
        #expect(throws: ChatInputError.self) { try UserName.validate("<script>", limits: limits).get() }
        #expect(throws: ChatInputError.self) { try UserName.validate("a\u{7}", limits: limits).get() }
    }

    @Test func linesRoundTripAsJSON() throws {
        let line = ChatLine(action: .message, user: "a\"b", msg: "</script><img src=x>", id: "m1", time: 1_700_000_000_000, instance: "i")
        let json = line.json()
        #expect(json.contains(#""action":"message""#))
        #expect(ChatLine.decode(json) == line)
    }
}

@Suite struct RecoveryDecisionTests {
    let stored = SessionSnapshot(sid: "socket-1", pid: "pid-1", namespace: "/", rooms: ["socket-1", "live"], data: ["user": "ada"])
    let offset = StreamID("100-0")!

    @Test func requestNeedsBothWellFormedValues() {
        #expect(throws: RecoveryDecision.FreshReason.notRequested) { try RecoveryDecision.request(pid: nil, offset: "1-0").get() }
        #expect(throws: RecoveryDecision.FreshReason.notRequested) { try RecoveryDecision.request(pid: "p", offset: nil).get() }
        #expect(throws: RecoveryDecision.FreshReason.malformed) { try RecoveryDecision.request(pid: "p", offset: "+").get() }
        #expect(throws: RecoveryDecision.FreshReason.malformed) { try RecoveryDecision.request(pid: "a b*", offset: "1-0").get() }
        #expect(throws: RecoveryDecision.FreshReason.malformed) {
            try RecoveryDecision.request(pid: String(repeating: "p", count: 65), offset: "1-0").get()
        }
        let ok = try? RecoveryDecision.request(pid: "pid_1", offset: "1-0").get()
        #expect(ok?.pid == "pid_1")
        #expect(ok?.offset == StreamID("1-0"))
    }

    @Test func recoversAKnownSessionWithAKnownOffset() {
        #expect(RecoveryDecision.decide(offset: offset, stored: stored, offsetInHistory: true) == .recover(stored, after: offset))
        #expect(RecoveryDecision.decide(offset: offset, stored: nil, offsetInHistory: true) == .fresh(.unknownSession))
        #expect(RecoveryDecision.decide(offset: offset, stored: stored, offsetInHistory: false) == .fresh(.offsetNotInHistory))
    }

    @Test func onlyLoggedInUsersConnectAndOnlyToTheirOwnSession() {
        #expect(ConnectPolicy.decide(sessionUser: nil, recovering: false, restoredUser: nil) == .refuse(message: "not logged in"))
        #expect(ConnectPolicy.decide(sessionUser: nil, recovering: true, restoredUser: "ada") == .refuse(message: "not logged in"))
        #expect(ConnectPolicy.decide(sessionUser: "ada", recovering: false, restoredUser: nil) == .accept(user: "ada"))
        #expect(ConnectPolicy.decide(sessionUser: "ada", recovering: true, restoredUser: "ada") == .accept(user: "ada"))
        #expect(ConnectPolicy.decide(sessionUser: "eve", recovering: true, restoredUser: "ada") == .refuse(message: ConnectPolicy.otherUser))
        #expect(ConnectPolicy.decide(sessionUser: "eve", recovering: true, restoredUser: nil) == .refuse(message: ConnectPolicy.otherUser))
    }
}

@Suite struct DeliveryLogTests {
    func line(_ id: String) -> StoredLine { StoredLine(id: StreamID(id)!, json: id) }

    @Test func dropsWhatIsNotNewer() {
        var log = DeliveryLog(capacity: 10)
        let r1 = log.accept(line("1-0"))
        #expect(r1)
        let r2 = log.accept(line("2-0"))
        #expect(r2)
        let r3 = log.accept(line("2-0"))
        #expect(!r3)
        let r4 = log.accept(line("1-5"))
        #expect(!r4)
        #expect(log.lastID == StreamID("2-0"))
        #expect(log.gapFillStart == StreamID("2-0"))
    }

    @Test func aLineWhosePredecessorWasNeverDeliveredRevealsAGap() {
        var log = DeliveryLog(capacity: 10, lastID: StreamID("5-0"))
        #expect(!log.missed(before: StreamID("5-0")!))
        #expect(!log.missed(before: StreamID("4-0")!), "an older predecessor: the line itself is old or the chain restarted")
        #expect(log.missed(before: StreamID("6-0")!))
        _ = log.accept(line("6-0"))
        #expect(!log.missed(before: StreamID("6-0")!))
        let fresh = DeliveryLog(capacity: 10)
        #expect(!fresh.missed(before: .zero), "the stream's first line follows 0-0")
        #expect(fresh.missed(before: StreamID("1-0")!))
    }

    @Test func publishedLinesCarryTheirPredecessor() throws {
        let published = try #require(ChatLog.parsePublished(ByteBuffer(string: #"7-1 7-0 {"action":"message","msg":"a b"}"#)))
        #expect(published.line.id == StreamID("7-1"))
        #expect(published.previous == StreamID("7-0"))
        #expect(published.line.json == #"{"action":"message","msg":"a b"}"#)
        for bad in ["", "7-1", #"7-1 {"msg":"x"}"#, #"x 7-0 {}"#, #"7-1 y {}"#] {
            #expect(ChatLog.parsePublished(ByteBuffer(string: bad)) == nil, "\(bad)")
        }
    }

    @Test func catchesUpFromMemoryOrSaysItCannot() {
        var log = DeliveryLog(capacity: 3)
        for id in ["1-0", "2-0", "3-0"] { _ = log.accept(line(id)) }
        #expect(log.catchUp(from: StreamID("1-0")!)?.map(\.json) == ["2-0", "3-0"])
        #expect(log.catchUp(from: StreamID("3-0")!)?.isEmpty == true)
        #expect(log.catchUp(from: StreamID("0-1")!)?.map(\.json) == ["1-0", "2-0", "3-0"])
        _ = log.accept(line("4-0"))  // evicts 1-0
        #expect(log.evictedUpTo == StreamID("1-0"))
        #expect(log.catchUp(from: StreamID("0-1")!) == nil)  // 1-0 is gone: ask Redis
        #expect(log.catchUp(from: StreamID("1-0")!)?.map(\.json) == ["2-0", "3-0", "4-0"])
    }

    @Test func aNewSocketGetsOnlyDeliveredLinesThenWhatCameSince() {
        var log = DeliveryLog(capacity: 3, lastID: StreamID("2-0"))
        // Read while 3-0 was stored but not yet delivered here: 3-0 will arrive live, not in the history.
        var plan = log.newSocketLines(history: [line("1-0"), line("2-0"), line("3-0")])
        #expect(plan.lines.map(\.json) == ["1-0", "2-0"])
        #expect(plan.missingAfter == nil)
        // Read earlier; lines delivered since are added from memory.
        for id in ["3-0", "4-0"] { _ = log.accept(line(id)) }
        plan = log.newSocketLines(history: [line("1-0"), line("2-0")])
        #expect(plan.lines.map(\.json) == ["1-0", "2-0", "3-0", "4-0"])
        // Memory (capacity 3) now starts after 3-0: from the history's end (2-0) it cannot tell.
        for id in ["5-0", "6-0"] { _ = log.accept(line(id)) }
        plan = log.newSocketLines(history: [line("1-0"), line("2-0")])
        #expect(plan.lines.map(\.json) == ["1-0", "2-0"])
        #expect(plan.missingAfter == StreamID("2-0"))
        // With what Redis had after 2-0, the plan is complete.
        plan = log.newSocketLines(history: plan.lines + [line("3-0"), line("4-0"), line("5-0"), line("6-0")])
        #expect(plan.lines.map(\.json) == ["1-0", "2-0", "3-0", "4-0", "5-0", "6-0"])
        #expect(plan.missingAfter == nil)
        // An empty stream: nothing to send, nothing missing.
        let empty = DeliveryLog(capacity: 3)
        #expect(empty.newSocketLines(history: []).lines.isEmpty)
        #expect(empty.newSocketLines(history: []).missingAfter == nil)
    }

    @Test func aRecoveredSocketGetsWhatThisInstanceDeliveredAfterItsOffset() {
        var log = DeliveryLog(capacity: 3)
        for id in ["1-0", "2-0", "3-0"] { _ = log.accept(line(id)) }
        // From memory: the lines after the offset up to what was delivered; then it joins live.
        var plan = log.recoveredSocketLines(after: StreamID("1-0")!)
        #expect(plan.lines.map(\.json) == ["2-0", "3-0"])
        #expect(plan.missingAfter == nil)
        #expect(log.canJoinLive(at: StreamID("1-0")!))
        // Up to date: nothing to send.
        #expect(log.recoveredSocketLines(after: StreamID("3-0")!).lines.isEmpty)
        #expect(log.canJoinLive(at: StreamID("3-0")!))
        // Its client is AHEAD of this instance (another instance's subscription was faster): nothing
        // to send, and it must not join live before this instance has delivered up to 5-0.
        #expect(log.recoveredSocketLines(after: StreamID("5-0")!).lines.isEmpty)
        #expect(!log.canJoinLive(at: StreamID("5-0")!))
        // Memory no longer reaches back to the offset: ask Redis, then the plan is complete. Lines Redis
        // has that this instance has not delivered yet are left to the live broadcast.
        for id in ["4-0", "5-0"] { _ = log.accept(line(id)) }  // memory: 3-0, 4-0, 5-0
        plan = log.recoveredSocketLines(after: StreamID("1-0")!)
        #expect(plan.lines.isEmpty)
        #expect(plan.missingAfter == StreamID("1-0"))
        plan = log.recoveredSocketLines(after: StreamID("1-0")!, fetched: [line("2-0"), line("3-0"), line("4-0"), line("5-0"), line("6-0")])
        #expect(plan.lines.map(\.json) == ["2-0", "3-0", "4-0", "5-0"])
        #expect(plan.missingAfter == nil)
        // An instance that has just started knows nothing before its start: Redis fills that in.
        let started = DeliveryLog(capacity: 3, lastID: StreamID("4-0"))
        #expect(started.recoveredSocketLines(after: StreamID("1-0")!).missingAfter == StreamID("1-0"))
        #expect(started.recoveredSocketLines(after: StreamID("4-0")!) == ([], nil))
    }

    @Test func cursorsDeliverOnceInOrder() {
        var cursor = DeliveryCursor(cursor: StreamID("5-0"))
        let r5 = cursor.advance(to: StreamID("4-0")!)
        #expect(!r5)
        let r6 = cursor.advance(to: StreamID("5-0")!)
        #expect(!r6)
        let r7 = cursor.advance(to: StreamID("5-1")!)
        #expect(r7)
        var empty = DeliveryCursor(cursor: nil)
        let r8 = empty.advance(to: StreamID("0-1")!)
        #expect(r8)
    }
}

@Suite struct CatchUpTests {
    func line(_ id: String) -> StoredLine { StoredLine(id: StreamID(id)!, json: id) }
    func id(_ text: String) -> StreamID { StreamID(text)! }
    func page(_ ids: [String]) -> [StoredLine] { ids.map(line) }

    @Test func fromMemoryNothingIsRead() {
        var delivery = DeliveryLog(capacity: 4)
        for id in ["1-0", "2-0", "3-0"] { _ = delivery.accept(line(id)) }
        let recovered = CatchUp(start: .after(id("1-0")), pageLimit: 8)
        let plan = recovered.plan(delivery)
        #expect(plan.lines.map(\.json) == ["2-0", "3-0"])
        #expect(!recovered.shouldRead(missingAfter: plan.missingAfter))
        let new = CatchUp(start: .history(gap: false), fetched: page(["2-0", "3-0"]), pageLimit: 8)
        #expect(new.plan(delivery).lines.map(\.json) == ["2-0", "3-0"])
        #expect(!new.shouldRead(missingAfter: new.plan(delivery).missingAfter))
    }

    @Test func pagesAreReadOutsideTheLoopUntilThePlanIsComplete() {
        // The instance started at 5-0: a client at 1-0 needs 2-0...5-0 from the stream, in pages of 2.
        var delivery = DeliveryLog(capacity: 4, lastID: id("5-0"))
        var catchUp = CatchUp(start: .after(id("1-0")), pageLimit: 8)
        var plan = catchUp.plan(delivery)
        #expect(plan.missingAfter == id("1-0"))
        #expect(catchUp.shouldRead(missingAfter: plan.missingAfter))
        catchUp.beginReading(after: id("1-0"))
        let more1 = catchUp.add(page: page(["2-0", "3-0"]), after: id("1-0"), pageSize: 2)
        #expect(more1)  // full: read on
        let more2 = catchUp.add(page: page(["4-0", "5-0"]), after: id("3-0"), pageSize: 2)
        #expect(more2)
        // Meanwhile the instance delivered 6-0, which the last (short) page also holds.
        _ = delivery.accept(line("6-0"))
        let more3 = catchUp.add(page: page(["6-0"]), after: id("5-0"), pageSize: 2)
        #expect(!more3)
        #expect(catchUp.pagesRead == 3)
        plan = catchUp.plan(delivery)
        #expect(plan.lines.map(\.json) == ["2-0", "3-0", "4-0", "5-0", "6-0"])
        #expect(plan.missingAfter == nil)
        #expect(!catchUp.shouldRead(missingAfter: plan.missingAfter))
    }

    @Test func aNewSocketsHistoryIsExtendedWithoutDuplicates() {
        // History read when 3-0 was stored but not delivered; by the loop's turn, memory (capacity 2)
        // starts after 4-0: it needs the stream after 2-0, which repeats 3-0.
        var delivery = DeliveryLog(capacity: 2, lastID: id("2-0"))
        var catchUp = CatchUp(start: .history(gap: false), fetched: page(["1-0", "2-0", "3-0"]), pageLimit: 8)
        for id in ["3-0", "4-0", "5-0", "6-0"] { _ = delivery.accept(line(id)) }
        var plan = catchUp.plan(delivery)
        #expect(plan.missingAfter == id("3-0"))
        catchUp.beginReading(after: id("3-0"))
        _ = catchUp.add(page: page(["4-0", "5-0", "6-0"]), after: id("3-0"), pageSize: 10)
        plan = catchUp.plan(delivery)
        #expect(plan.lines.map(\.json) == ["1-0", "2-0", "3-0", "4-0", "5-0", "6-0"])
        #expect(plan.missingAfter == nil)
        // The merge itself: lines fetched after the read's start are replaced by the page.
        var merged = CatchUp(start: .history(gap: false), fetched: page(["1-0", "2-0", "3-0"]), pageLimit: 8)
        _ = merged.add(page: page(["3-0", "4-0"]), after: id("2-0"), pageSize: 10)
        #expect(merged.fetched.map(\.json) == ["1-0", "2-0", "3-0", "4-0"])
    }

    @Test func readingStopsWhenItCannotHelp() {
        // The stream lost the lines after the offset (trimmed): a read brings only lines this
        // instance has not delivered, the plan still misses the same point, and reading it again
        // would bring the same: the socket gets what there is.
        let delivery = DeliveryLog(capacity: 2, lastID: id("5-0"))
        var trimmed = CatchUp(start: .after(id("1-0")), pageLimit: 8)
        trimmed.beginReading(after: id("1-0"))
        _ = trimmed.add(page: page(["7-0"]), after: id("1-0"), pageSize: 10)
        let plan = trimmed.plan(delivery)
        #expect(plan.missingAfter == id("1-0"))
        #expect(!trimmed.shouldRead(missingAfter: plan.missingAfter))
        // The page limit: full pages until it, then no more reads.
        var long = CatchUp(start: .after(id("1-0")), pageLimit: 2)
        long.beginReading(after: id("1-0"))
        let more4 = long.add(page: page(["2-0"]), after: id("1-0"), pageSize: 1)
        #expect(more4)
        let more5 = long.add(page: page(["3-0"]), after: id("2-0"), pageSize: 1)
        #expect(!more5)
        #expect(!long.shouldRead(missingAfter: id("3-0")))
        // A failed read.
        var failed = CatchUp(start: .after(id("1-0")), pageLimit: 8)
        failed.readFailed()
        #expect(!failed.shouldRead(missingAfter: id("1-0")))
    }
}

@Suite struct StreamPositionCheckTests {
    func id(_ text: String) -> StreamID { StreamID(text)! }

    @Test func inStepWhenTheStreamHoldsNothingNewer() {
        var check = StreamPositionCheck()
        #expect(check.check(newest: nil, delivered: nil) == .inStep)
        #expect(check.check(newest: id("5-0"), delivered: id("5-0")) == .inStep)
        // A stream behind the delivery (emptied, or a Redis that lost data) is no gap: new ids are newer.
        #expect(check.check(newest: id("3-0"), delivered: id("5-0")) == .inStep)
        #expect(check.ahead == nil)
    }

    @Test func aLineInFlightIsGivenOneInterval() {
        var check = StreamPositionCheck()
        #expect(check.check(newest: id("6-0"), delivered: id("5-0")) == .wait)
        // Delivered meanwhile; newer lines keep arriving (a busy room): still no gap.
        #expect(check.check(newest: id("9-0"), delivered: id("7-0")) == .wait)
        #expect(check.check(newest: id("12-0"), delivered: id("11-0")) == .wait)
        #expect(check.check(newest: id("12-0"), delivered: id("12-0")) == .inStep)
    }

    @Test func aLineStillMissingAnIntervalLaterIsAGap() {
        var check = StreamPositionCheck()
        #expect(check.check(newest: id("6-0"), delivered: id("5-0")) == .wait)
        #expect(check.check(newest: id("8-0"), delivered: id("5-0")) == .fillGap(missed: id("6-0")))
        // After the fill the check starts over.
        #expect(check.ahead == nil)
        #expect(check.check(newest: id("8-0"), delivered: id("8-0")) == .inStep)
        // Part of the gap delivered is not enough: the line seen ahead must be delivered.
        #expect(check.check(newest: id("10-0"), delivered: id("8-0")) == .wait)
        #expect(check.check(newest: id("10-0"), delivered: id("9-0")) == .fillGap(missed: id("10-0")))
    }

    @Test func nothingDeliveredYetCountsFromZero() {
        var check = StreamPositionCheck()
        #expect(check.check(newest: id("1-0"), delivered: nil) == .wait)
        #expect(check.check(newest: id("1-0"), delivered: nil) == .fillGap(missed: id("1-0")))
    }
}

@Suite struct PresenceStateTests {
    @Test func joinIsAnnouncedOnceAndRefreshesAreSilent() {
        var presence = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        let r9 = presence.connected("ada")
        #expect(r9)
        let r10 = presence.connected("ada")
        #expect(!r10)  // second tab
        presence.disconnected("ada", now: 0)
        presence.disconnected("ada", now: 10)  // refresh: last socket closed...
        let r11 = presence.connected("ada")
        #expect(!r11)  // ...and came back: no new join line
        let beat = presence.heartbeat(onlineElsewhere: ["ada"], reaped: [], now: 5_000)
        #expect(beat.isEmpty)
    }

    @Test func aNewUserIsAnnouncedOnlyOnceAHeartbeatThatHasThemWasWritten() {
        var presence = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        _ = presence.connected("ada")
        let failed = presence.beginHeartbeat()  // Redis failed: never written
        #expect(failed.number == 1 && failed.first)
        let first = presence.beginHeartbeat()
        // Still the first to be written: it moves a predecessor's entry aside (the second attempt
        // used to replace it, and the predecessor's users vanished without a "left" line).
        #expect(first.number == 2 && first.first && first.users.map(\.user) == ["ada"])
        // grace arrives while heartbeat 1, which read the users without her, is on its way to Redis.
        let arrived = presence.connected("grace")
        #expect(arrived)
        let needed = presence.heartbeatPublishingNewArrivals
        #expect(needed == 3)
        presence.heartbeatWritten(first.number)
        #expect(presence.written(2) && !presence.written(needed))
        let second = presence.beginHeartbeat()
        #expect(second.number == needed && !second.first && second.users.map(\.user) == ["ada", "grace"])
        #expect(!presence.written(needed))  // begun is not written
        presence.heartbeatWritten(second.number)
        #expect(presence.written(needed))
        presence.heartbeatWritten(1)  // never goes back
        #expect(presence.heartbeatsWritten == 3)
    }

    @Test func leftAfterTheGraceUnlessOnlineElsewhere() {
        var presence = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        _ = presence.connected("ada")
        _ = presence.connected("bob")
        presence.disconnected("ada", now: 0)
        presence.disconnected("bob", now: 0)
        #expect(presence.takeChangedOnlineList() == ["ada", "bob"])
        let early = presence.heartbeat(onlineElsewhere: [], reaped: [], now: 500)
        #expect(early.isEmpty)  // within the grace
        #expect(presence.takeChangedOnlineList() == nil)
        // bob reconnected to another instance meanwhile:
        let result = presence.heartbeat(onlineElsewhere: ["bob"], reaped: [], now: 1_500)
        #expect(result == ["ada"])
        #expect(presence.takeChangedOnlineList() == ["bob"])
        #expect(presence.takeChangedOnlineList() == nil)
        #expect(presence.online == ["bob"])
        let later = presence.heartbeat(onlineElsewhere: [], reaped: [], now: 5_000)
        #expect(later.isEmpty)  // bob never left here
    }

    @Test func usersOfADeadInstanceLeaveUnlessTheyMoved() {
        var presence = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        _ = presence.connected("local")
        let result = presence.heartbeat(onlineElsewhere: ["local", "moved"], reaped: ["moved", "gone", "local"], now: 0)
        #expect(result == ["gone"])
        #expect(presence.online == ["local", "moved"])
        #expect(presence.localCounts.map(\.user) == ["local"])
    }

    @Test func aUserLeavingWithinTheGraceIsStillPublishedForTheOthers() {
        var presence = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        _ = presence.connected("ada")
        _ = presence.connected("bob")
        _ = presence.connected("bob")
        presence.disconnected("ada", now: 0)  // a refresh: back within the grace, or gone after it
        #expect(presence.localCounts.map(\.user) == ["ada", "bob"])
        #expect(presence.localCounts.map(\.count) == [0, 2])
        #expect(presence.publishes("ada") && presence.publishes("bob") && !presence.publishes("cy"))
        #expect(presence.heartbeat(onlineElsewhere: [], reaped: [], now: 1_000) == ["ada"])
        #expect(presence.localCounts.map(\.user) == ["bob"])
    }

    @Test func joinedAndLeftLinesMoveTheListBeforeTheHeartbeat() {
        var presence = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        _ = presence.connected("ada")
        _ = presence.connected("cy")
        presence.disconnected("cy", now: 0)
        #expect(presence.takeChangedOnlineList() == ["ada", "cy"])
        // bob joined on another instance: listed at once.
        presence.announced("bob", joined: true, now: 0)
        #expect(presence.takeChangedOnlineList() == ["ada", "bob", "cy"])
        // bob left there: unlisted at once.
        presence.announced("bob", joined: false, now: 0)
        #expect(presence.takeChangedOnlineList() == ["ada", "cy"])
        // Another instance says ada and cy left; ada has a socket here and stays. cy left here within
        // the grace too (her tabs on both instances closed together): that line was her leave, and
        // this instance gives her no second one.
        presence.announced("ada", joined: false, now: 0)
        presence.announced("cy", joined: false, now: 0)
        #expect(presence.takeChangedOnlineList() == ["ada"])
        let later = presence.heartbeat(onlineElsewhere: [], reaped: [], now: 5_000)
        #expect(later.isEmpty)
        #expect(presence.online == ["ada"])
    }

    @Test("A user whose tabs on two instances close together gets one left line, from the instance first by name")
    func aUserLeavingTwoInstancesAtOnceLeavesOnce() {
        var first = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        var second = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        for instance in [0, 1] {
            _ = instance == 0 ? first.connected("rita") : second.connected("rita")
        }
        first.disconnected("rita", now: 0)
        second.disconnected("rita", now: 0)
        // Each publishes her with 0 sockets: leaving, not online, so neither takes her for moved
        // (both used to, and she never left).
        let early = second.heartbeat(onlineElsewhere: [], leavingElsewhere: ["rita": ["port-1"]], reaped: [], now: 500, instance: "port-2")
        #expect(early.isEmpty)
        #expect(second.online == ["rita"])  // no flicker within the grace
        let deferred = second.heartbeat(onlineElsewhere: [], leavingElsewhere: ["rita": ["port-1"]], reaped: [], now: 1_500, instance: "port-2")
        #expect(deferred.isEmpty)
        let announced = first.heartbeat(onlineElsewhere: [], leavingElsewhere: ["rita": ["port-2"]], reaped: [], now: 1_600, instance: "port-1")
        #expect(announced == ["rita"])
        // port-1's line reaches both, and port-2 then has nothing more to say.
        first.announced("rita", joined: false, now: 1_601)
        second.announced("rita", joined: false, now: 1_601)
        let after = second.heartbeat(onlineElsewhere: [], reaped: [], now: 2_500, instance: "port-2")
        #expect(after.isEmpty)
        #expect(first.online.isEmpty && second.online.isEmpty)
    }

    @Test("A user announced by another instance, then handed over by it as it stops, gets a left line when it is reaped")
    func anAnnouncedUserHandedOverAndReapedLeaves() {
        var presence = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        presence.announced("ada", joined: true, now: 0)  // no heartbeat here showed her online before the stop
        // Her instance stops and hands her over (0 sockets): shown as leaving, she is confirmed.
        let handedOver = presence.heartbeat(onlineElsewhere: [], leavingElsewhere: ["ada": ["one"]], reaped: [], now: 500, instance: "two")
        #expect(handedOver.isEmpty && presence.online == ["ada"])
        let reaping = presence.heartbeat(onlineElsewhere: [], reaped: ["ada"], now: 2_600, instance: "two")
        #expect(reaping == ["ada"])
        // The same when the reap is the first heartbeat to show her.
        var other = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        other.announced("cy", joined: true, now: 0)
        let reaped = other.heartbeat(onlineElsewhere: [], reaped: ["cy"], now: 2_600, instance: "two")
        #expect(reaped == ["cy"])
    }

    @Test("One joined line per user: a second tab joining on another instance after the first announces nothing")
    func aJoinAnnouncedElsewhereIsNotAnnouncedAgain() {
        var presence = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        let arrived = presence.connected("vera")
        #expect(arrived && presence.joinIsDue("vera"))
        presence.announced("vera", joined: true, now: 10)  // her tab on the other instance joined first
        #expect(!presence.joinIsDue("vera"))
        // Once she has left and comes back, her next join is due again.
        presence.disconnected("vera", now: 20)
        presence.announced("vera", joined: false, now: 2_000)
        _ = presence.heartbeat(onlineElsewhere: [], reaped: [], now: 2_100)
        let back = presence.connected("vera")
        #expect(back && presence.joinIsDue("vera"))
    }

    @Test("After failing to reach Redis, an instance reaps nobody for the presence TTL: the others may have been cut off too")
    func noReapingRightAfterAnOutage() {
        var presence = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        #expect(presence.mayReap(now: 0))
        presence.heartbeatFailed(now: 10_000)
        #expect(!presence.mayReap(now: 10_500) && !presence.mayReap(now: 12_999))
        #expect(presence.mayReap(now: 13_000))
    }

    @Test func anAnnouncedUserStaysListedUntilAHeartbeatShowsThem() {
        var presence = PresenceState(graceMilliseconds: 1_000, confirmWithinMilliseconds: 3_000)
        _ = presence.connected("ada")
        // grace joined on another instance, which publishes her at its next heartbeat: this
        // instance's heartbeats meanwhile read its older hash, without her.
        presence.announced("grace", joined: true, now: 1_000)
        #expect(presence.takeChangedOnlineList() == ["ada", "grace"])
        _ = presence.heartbeat(onlineElsewhere: [], reaped: [], now: 1_500)
        _ = presence.heartbeat(onlineElsewhere: [], reaped: [], now: 2_500)
        #expect(presence.takeChangedOnlineList() == nil)
        // A heartbeat sent before the line arrived cannot speak for her either.
        presence.announced("lin", joined: true, now: 2_600)
        _ = presence.heartbeat(onlineElsewhere: [], reaped: [], now: 2_590)
        #expect(presence.online == ["ada", "grace", "lin"])
        // Once a heartbeat has shown grace, the heartbeats decide again.
        _ = presence.heartbeat(onlineElsewhere: ["grace", "lin"], reaped: [], now: 3_500)
        #expect(presence.unconfirmed.isEmpty)
        _ = presence.heartbeat(onlineElsewhere: ["lin"], reaped: [], now: 4_500)
        #expect(presence.online == ["ada", "lin"])
        // An announced user no heartbeat ever shows (their instance died before publishing them) goes
        // after the presence TTL.
        presence.announced("ghost", joined: true, now: 5_000)
        _ = presence.heartbeat(onlineElsewhere: ["lin"], reaped: [], now: 7_900)
        #expect(presence.online.contains("ghost"))
        _ = presence.heartbeat(onlineElsewhere: ["lin"], reaped: [], now: 8_000)
        #expect(presence.online == ["ada", "lin"] && presence.unconfirmed.isEmpty)
        // A user with a socket here needs no confirmation from anyone.
        presence.announced("ada", joined: true, now: 8_100)
        #expect(presence.unconfirmed.isEmpty)
    }

    @Test func presenceChangesAreReadFromStoredControlLinesOnly() {
        func stored(_ action: ChatLine.Action, _ user: String, _ msg: String) -> String {
            ChatLine(action: action, user: user, msg: msg, id: nil, time: 1, instance: "i").json()
        }
        let joined = ChatLine.presenceChange(json: stored(.control, "ada", ChatLine.joinedText))
        #expect(joined?.user == "ada" && joined?.joined == true)
        let left = ChatLine.presenceChange(json: stored(.control, "bob", ChatLine.leftText))
        #expect(left?.user == "bob" && left?.joined == false)
        // A user typing the control text is a message, not a presence change.
        #expect(ChatLine.presenceChange(json: stored(.message, "eve", ChatLine.joinedText)) == nil)
        #expect(ChatLine.presenceChange(json: stored(.control, "ada", " did something else")) == nil)
        #expect(ChatLine.presenceChange(json: #"{"action":"control"#) == nil)
    }
}
