import Foundation
import Logging
import NIOCore
import RedisClient
import SocketIO
import Synchronization

/// The chat on one instance: the sockets, what they receive and in which order, and presence.
///
/// Every line reaches this instance through its ONE Redis subscription and is broadcast to the room
/// `live` with its stream id as the recovery offset. A new socket first gets the recent history, then
/// joins `live`; a recovered socket first gets the lines after its client's offset that this instance
/// has delivered, then joins `live` (or waits until this instance reaches its offset). These steps and
/// every broadcast run one at a time in `run()`, so no socket ever gets a line twice or out of order;
/// what a socket needs from the stream is read by its own task, outside that loop (`CatchUp`).
/// After a Redis outage the subscription re-subscribes by itself and the hub fills the gap from the
/// stream before going on; and every `positionCheckInterval` the hub makes sure that no line stored in
/// the stream was missed by the subscription (`StreamPositionCheck`).
public final class ChatHub: Sendable {
    static let liveRoom = "live"

    let configuration: ChatConfiguration
    let namespace: Namespace
    let log: ChatLog
    let store: RedisRecoveryStore
    let sessions: SessionStore
    let cookie: SessionCookie
    let metrics: ChatMetrics
    let logger: Logger
    private let commands: AsyncStream<Command>
    private let continuation: AsyncStream<Command>.Continuation
    /// The online list changed: `pushOnlineLists` sends it (signals that come while it waits merge).
    private let onlineChanged: AsyncStream<Void>
    private let onlineChangedContinuation: AsyncStream<Void>.Continuation
    /// A heartbeat is due: the interval passed, or a user arrived who is not in this instance's
    /// published presence yet (`PresenceService` runs them one at a time; requests that come while
    /// one runs merge).
    let heartbeatRequests: AsyncStream<Void>
    private let heartbeatRequestsContinuation: AsyncStream<Void>.Continuation
    private let state: Mutex<State>
    private let startID: StreamID?
    /// Subscription events waiting in `commands`, at most `backlogLimit` (see `SubscriberBacklog`).
    let backlog = SubscriberBacklog(limit: ChatHub.backlogLimit)

    enum Command: Sendable {
        case subscriber(RedisSubscriberEvent)
        /// A new or returning socket: the loop sends it its lines (see `CatchUp`) and lets it into
        /// `live`, and answers nil; or answers where the socket's task must read the stream first.
        case attach(Socket, CatchUp, done: CheckedContinuation<StreamID?, Never>)
        /// The stream's newest id, read just now (see `StreamPositionCheck`).
        case positionCheck(newest: StreamID?)
    }

    /// What the delivery loop owns: the delivered lines, and recovered sockets whose clients are ahead
    /// of this instance (they join `live` once it reaches their offset).
    struct LoopState {
        var delivery: DeliveryLog
        var waiting: [(socket: Socket, offset: StreamID)] = []
        var position = StreamPositionCheck()
    }

    struct Member: Sendable {
        var user: String
        var pid: String?
        /// The socket's `join` should announce the user (it was not online before), once this
        /// presence heartbeat was written (`PresenceState.heartbeatPublishingNewArrivals`).
        var announceJoin: Int?
    }

    struct State {
        var presence: PresenceState
        /// By socket object, not socket id: a client that recovers while its old connection is still
        /// open here gets a second socket with the same id, and each must leave on its own.
        var members: [ObjectIdentifier: Member] = [:]
        /// `join`s waiting for a heartbeat to be written before they announce their user, by key.
        var announcements: [Int: (heartbeat: Int, done: CheckedContinuation<Void, Never>)] = [:]
        var nextAnnouncement = 0
        /// No more heartbeats (shutdown): nothing waits for one.
        var heartbeatsFinished = false

        /// Removes and returns the waiting announcements that may go (all of them after shutdown).
        mutating func takeAnnouncements(upTo written: Int) -> [CheckedContinuation<Void, Never>] {
            let ready = announcements.filter { heartbeatsFinished || $0.value.heartbeat <= written }
            for key in ready.keys { announcements[key] = nil }
            return ready.values.map(\.done)
        }
    }

    var limits: ChatLimits { ChatLimits(maxMessageBytes: configuration.maxMessageBytes, maxNameLength: configuration.maxNameLength) }

    /// `startID`: the newest stream entry when the instance started (the subscription delivers what comes after).
    init(
        configuration: ChatConfiguration, namespace: Namespace, log: ChatLog, store: RedisRecoveryStore, sessions: SessionStore,
        cookie: SessionCookie, metrics: ChatMetrics, logger: Logger, startID: StreamID?
    ) {
        self.configuration = configuration
        self.namespace = namespace
        self.log = log
        self.store = store
        self.sessions = sessions
        self.cookie = cookie
        self.metrics = metrics
        self.logger = logger
        self.startID = startID
        (commands, continuation) = AsyncStream.makeStream(of: Command.self)
        (onlineChanged, onlineChangedContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        (heartbeatRequests, heartbeatRequestsContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        state = Mutex(
            State(
                presence: PresenceState(
                    graceMilliseconds: configuration.presenceInterval.milliseconds * 2,
                    confirmWithinMilliseconds: configuration.presenceTTL.milliseconds)))
    }

    // MARK: Wiring into the Socket.IO namespace

    /// Installs the connect hook (login required; the user comes from the session) and the handlers.
    func install() {
        namespace.use { [self] request in await admit(request) }
        namespace.onConnection { [self] socket in await connected(socket) }
    }

    func admit(_ request: ConnectRequest) async -> ConnectDecision {
        var sessionUser: String?
        var sessionID: String?
        if let sid = cookie.sessionID(fromHeaders: request.handshake.headers[values: .cookie]) {
            do {
                sessionUser = try await sessions.load(sid)?.user
                sessionID = sid
            } catch {
                metrics.redisErrors.increment()
                metrics.refused.increment()
                return .refuse(message: "the chat's Redis is unavailable; retrying")
            }
        }
        switch ConnectPolicy.decide(sessionUser: sessionUser, recovering: request.recovering, restoredUser: request.restoredData["user"]?.stringValue)
        {
        case .refuse(let message):
            metrics.refused.increment()
            return .refuse(message: message)
        case .accept(let user):
            return .accept(data: ["user": .string(user), "session": .string(sessionID ?? "")])
        }
    }

    func connected(_ socket: Socket) async {
        let user = socket.data["user"]?.stringValue ?? ""
        metrics.connections.increment()
        metrics.connectionsTotal.increment()
        let arrived = state.withLock { state in
            let published = state.presence.publishes(user)
            let isNew = state.presence.connected(user)
            state.members[ObjectIdentifier(socket)] = Member(
                user: user, pid: socket.pid, announceJoin: isNew ? state.presence.heartbeatPublishingNewArrivals : nil)
            return !published
        }
        // The other instances read who is here from what this instance publishes: a user who came
        // back elsewhere within the grace must not get a "left" line from the instance they left.
        if arrived { requestHeartbeat() }
        socket.on("chat") { [self] arguments, ack in await chat(from: socket, user: user, arguments: arguments, ack: ack) }
        socket.on("join") { [self] _, _ in await join(socket, user: user) }
        socket.onDisconnect { [self] reason in disconnected(socket, user: user, reason: reason) }
        if let pid = socket.pid {
            let snapshot = SessionSnapshot(
                sid: socket.id, pid: pid, namespace: namespace.name, rooms: [socket.id, Self.liveRoom], data: socket.data)
            do {
                try await store.save(snapshot, ttl: configuration.recoveryWindow)
            } catch {
                metrics.redisErrors.increment()
                logger.warning("Could not save socket \(socket.id) for recovery: \(error)")
            }
        }
        let offset = socket.auth["offset"]?.stringValue.flatMap { StreamID($0) }
        let recovered = socket.recovered
        if recovered {
            metrics.recovered.increment()
        } else if socket.auth["pid"] != nil {
            metrics.notRecovered.increment()
        }
        var catchUp: CatchUp
        switch await catchUpPoint(for: socket, offset: offset) {
        case .after(let offset):
            catchUp = CatchUp(start: .after(offset), pageLimit: Self.maximumCatchUpPages)
        case .recentHistory(let gap):
            var history: [StoredLine] = []
            do {
                history = try await log.recent(configuration.recentHistory)
            } catch {
                metrics.redisErrors.increment()
                logger.warning("Could not read the history for socket \(socket.id): \(error)")
            }
            catchUp = CatchUp(start: .history(gap: gap), fetched: history, pageLimit: Self.maximumCatchUpPages)
        }
        await attach(socket, catchUp: &catchUp)
        // The others learn about a new user from its "joined" line (`join`), else with the next
        // heartbeat; lists go out at most every `onlineListPause`, however many users come and go.
        socket.emit("online", onlineList())
        // A recovered connection continues a page that joined already, and the official client sends
        // no `join` then: a user who was announced as gone meanwhile (their instance was down for
        // longer than the presence TTL) is announced here.
        if recovered { await join(socket, user: user) }
    }

    enum CatchUpPoint: Equatable {
        /// Every line after this offset, then live.
        case after(StreamID)
        /// The recent history, then live; `gap`: the client had an offset the stream no longer holds.
        case recentHistory(gap: Bool)
    }

    /// Where a new socket's lines start. A recovered one: after its client's offset (the store
    /// accepted it). One that was not recovered (its session here expired: the recovery window
    /// passed, or Redis lost it) but whose client says where it was: after that offset too while the
    /// stream still holds that line, instead of only the recent history and a silent hole; when the
    /// stream no longer holds it, the welcome says lines are missing. A client with no offset: the
    /// recent history.
    private func catchUpPoint(for socket: Socket, offset: StreamID?) async -> CatchUpPoint {
        if socket.recovered { return .after(offset ?? .zero) }
        guard let offset else { return .recentHistory(gap: false) }
        // 0-0: the client connected while the stream was empty; everything in it is after that.
        if offset == .zero { return .after(.zero) }
        do {
            return try await log.contains(offset) ? .after(offset) : .recentHistory(gap: true)
        } catch {
            metrics.redisErrors.increment()
            logger.warning("Could not look up the offset of socket \(socket.id) in the stream: \(error)")
            return .recentHistory(gap: true)
        }
    }

    /// The `welcome` event: the instance, the user, whether the session was recovered, and `gap`
    /// when lines between what the client had and the recent history it gets are no longer kept.
    func welcome(user: String, recovered: Bool, gap: Bool = false) -> JSONValue {
        var object: JSONObject = [
            "instance": .string(configuration.instance.label), "user": .string(user), "recovered": .bool(recovered),
        ]
        if gap { object["gap"] = .bool(true) }
        if let index = configuration.instance.index { object["index"] = .number(Double(index)) }
        if let guid = configuration.instance.guid { object["guid"] = .string(guid) }
        return .object(object)
    }

    func onlineList() -> JSONValue {
        Self.onlineValue(state.withLock { $0.presence.online.sorted() })
    }

    /// At most `onlineListLimit` names (sorted) and the total count.
    static func onlineValue(_ users: [String]) -> JSONValue {
        ["users": .array(users.prefix(onlineListLimit).map { .string($0) }), "count": .number(Double(users.count))]
    }

    static let onlineListLimit = 100

    func disconnected(_ socket: Socket, user: String, reason: String) {
        metrics.connections.decrement()
        let now = Int64(Date().timeIntervalSince1970 * 1_000)
        state.withLock { state in
            if state.members.removeValue(forKey: ObjectIdentifier(socket)) != nil { state.presence.disconnected(user, now: now) }
        }
        logger.debug("Socket \(socket.id) of \(user) disconnected: \(reason)")
    }

    // MARK: Client events

    /// `chat`: validate, store once (by the client's id) and publish through Redis, then ack. The line
    /// itself reaches the sender like everyone else, through the subscription.
    func chat(from socket: Socket, user: String, arguments: [JSONValue], ack: Ack?) async {
        let parsed = IncomingChat.parse(argument: arguments.first, limits: limits)
        let incoming: IncomingChat
        switch parsed {
        case .failure(let problem):
            metrics.rejected.increment()
            let reply: JSONValue = ["ok": false, "error": .string(problem.description), "retryable": false]
            if let ack { ack(reply) } else { socket.emit("chat_error", reply) }
            return
        case .success(let valid): incoming = valid
        }
        let line = ChatLine(
            action: .message, user: user, msg: incoming.text, id: incoming.clientID, time: Self.now(), instance: configuration.instance.id)
        do {
            let stored = try await log.append(line, dedupeKey: incoming.clientID.map { "\(user)\u{0}\($0)" })
            if stored.isNew { metrics.messagesIn.increment() } else { metrics.duplicates.increment() }
            var reply: JSONObject = ["ok": true, "offset": .string(stored.id.description), "duplicate": .bool(!stored.isNew)]
            if let id = incoming.clientID { reply["id"] = .string(id) }
            ack?(.object(reply))
        } catch {
            metrics.redisErrors.increment()
            logger.warning("Message from \(user) not stored, Redis failed: \(error)")
            var reply: JSONObject = [
                "ok": false, "error": "not stored: the chat's Redis is unavailable; retrying", "retryable": true,
            ]
            if let id = incoming.clientID { reply["id"] = .string(id) }
            if let ack { ack(.object(reply)) } else { socket.emit("chat_error", .object(reply)) }
        }
    }

    /// `join` (the original client sends it once connected): announces the user when they were not
    /// online, once this instance's presence in Redis has them (see `untilWritten`).
    func join(_ socket: Socket, user: String) async {
        let heartbeat = state.withLock { state -> Int? in
            defer { state.members[ObjectIdentifier(socket)]?.announceJoin = nil }
            return state.members[ObjectIdentifier(socket)]?.announceJoin
        }
        guard let heartbeat else { return }
        await untilWritten(heartbeat: heartbeat)
        // A second tab on another instance joined first: its line announced the user already.
        guard state.withLock({ $0.presence.joinIsDue(user) }) else { return }
        await control(user: user, text: ChatLine.joinedText)
    }

    /// Waits until presence heartbeat `heartbeat` was written to Redis (it was requested when the
    /// user arrived: usually a millisecond, at most `PresenceService.minimumSpacing` more in a crowd),
    /// or failed (Redis failing: the line then goes, or fails, like any other), or one presence
    /// interval passed (at most `announcementWaitLimit`), or shutdown. The connection's later events wait behind its `join`, so the
    /// user's first message cannot overtake the line that announces them.
    func untilWritten(heartbeat: Int) async {
        let key = state.withLock { state -> Int? in
            if state.heartbeatsFinished || state.presence.written(heartbeat) { return nil }
            state.nextAnnouncement += 1
            return state.nextAnnouncement
        }
        guard let key else { return }
        let limit = min(configuration.presenceInterval, Self.announcementWaitLimit)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                await withCheckedContinuation { done in
                    let now = state.withLock { state -> Bool in
                        if state.heartbeatsFinished || state.presence.written(heartbeat) { return true }
                        state.announcements[key] = (heartbeat, done)
                        return false
                    }
                    if now { done.resume() }
                }
            }
            group.addTask { [self] in
                try? await Task.sleep(for: limit)
                state.withLock { $0.announcements.removeValue(forKey: key) }?.done.resume()
            }
            await group.next()
            group.cancelAll()
        }
    }

    /// The longest a "joined" line waits for its user's presence to be written, whatever the interval.
    static let announcementWaitLimit = Duration.seconds(5)

    func control(user: String, text: String) async {
        let line = ChatLine(action: .control, user: user, msg: text, id: nil, time: Self.now(), instance: configuration.instance.id)
        do {
            _ = try await log.append(line, dedupeKey: nil)
        } catch {
            metrics.redisErrors.increment()
            logger.warning("Could not publish '\(user)\(text)': \(error)")
        }
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000) }

    // MARK: The delivery loop

    /// Forwards the subscription's events and the position checks to the loop and processes its
    /// commands one at a time, until the subscription ends or the task is cancelled.
    func run(subscriber: RedisSubscriber) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [continuation, backlog] in
                await backlog.forward(subscriber.events) { continuation.yield(.subscriber($0)) }
                continuation.finish()
            }
            group.addTask { [self] in await readPositions() }
            group.addTask { [self] in await pushOnlineLists() }
            await process()
            group.cancelAll()
        }
    }

    /// Every `positionCheckInterval`, reads the stream's newest id and hands it to the loop, which
    /// compares it with what it delivered. While Redis is unreachable there is nothing to compare: the
    /// subscription's reconnect fills that gap.
    private func readPositions() async {
        let interval = configuration.positionCheckInterval
        guard interval > .zero else { return }
        while true {
            do { try await Task.sleep(for: interval) } catch { return }
            guard let newest = try? await log.newestID() else { continue }
            if case .terminated = continuation.yield(.positionCheck(newest: newest)) { return }
        }
    }

    /// Sends this instance's sockets the online list whenever it changed (a heartbeat, a "joined" or
    /// "left" line), then pauses: a crowd logging in at once costs one list per pause, not one per user.
    private func pushOnlineLists() async {
        for await _ in onlineChanged {
            guard let list = state.withLock({ $0.presence.takeChangedOnlineList() }) else { continue }
            try? await namespace.local.emit("online", Self.onlineValue(list))
            do { try await Task.sleep(for: Self.onlineListPause) } catch { return }
        }
    }

    static let onlineListPause = Duration.milliseconds(500)

    /// Subscription events waiting for the delivery loop, at most; past it the subscription buffers
    /// up to `subscriptionBufferLimit`, then drops and the loop catches up from the stream.
    static let backlogLimit = 1_024
    /// What the subscription may buffer while the loop is behind: ten times the default history, about
    /// 22 MB of lines at the largest message size. Past it the loop catches up from the stream, which
    /// holds `HISTORY_LIMIT` lines (a loop further behind than that cannot give its clients every line
    /// anyway; their own recovery reads the same stream).
    static let subscriptionBufferLimit = 10_000

    /// Stops the loop (after the subscriber was closed, or on cancellation).
    func finish() {
        continuation.finish()
        onlineChangedContinuation.finish()
    }

    /// Asks `PresenceService` for a heartbeat now.
    func requestHeartbeat() {
        heartbeatRequestsContinuation.yield()
    }

    /// No more heartbeats (graceful shutdown); `join`s waiting for one announce now.
    func finishHeartbeats() {
        heartbeatRequestsContinuation.finish()
        let waiting = state.withLock { state in
            state.heartbeatsFinished = true
            return state.takeAnnouncements(upTo: state.presence.heartbeatsWritten)
        }
        for done in waiting { done.resume() }
    }

    private func process() async {
        var loop = LoopState(delivery: DeliveryLog(capacity: 4_096, lastID: startID))
        for await command in commands {
            if case .subscriber = command { backlog.taken() }
            switch command {
            case .subscriber(.message(let message)) where message.channel == log.keys.logouts:
                endSessions([String(buffer: message.payload)])
            case .subscriber(.message(let message)):
                guard let published = ChatLog.parsePublished(message.payload) else {
                    logger.warning("Ignored a message on \(message.channel) that is not '<stream id> <previous id> <json>'")
                    continue
                }
                if loop.delivery.missed(before: published.previous) {
                    metrics.sequenceGaps.increment()
                    logger.warning(
                        "Line \(published.line.id) follows \(published.previous), which the subscription never delivered (pub/sub lost it); reading the missed lines from the stream"
                    )
                    await fillGap(&loop)
                }
                await deliver(published.line, loop: &loop)
            case .subscriber(.connectionLost(let reason)):
                logger.warning("Redis subscription lost (\(reason)); new messages wait until it is back, then the gap is filled")
            case .subscriber(.mayHaveMissedMessages(let reason)):
                logger.notice("Redis subscription may have missed messages (\(reason.rawValue)); catching up from the history")
                // A logout published meanwhile is gone with them: look the sessions up instead.
                Task { await self.endSessionsLoggedOutElsewhere() }
                await fillGap(&loop)
            case .positionCheck(let newest):
                guard case .fillGap(let missed) = loop.position.check(newest: newest, delivered: loop.delivery.lastID) else { continue }
                metrics.positionCheckGaps.increment()
                logger.warning(
                    "Line \(missed) is in the Redis stream but the subscription has not delivered it within \(configuration.positionCheckInterval) (pub/sub lost it, or delivery is stalled); reading the missed lines from the stream"
                )
                await fillGap(&loop)
            case .attach(let socket, let catchUp, let done):
                done.resume(returning: attachTurn(socket, catchUp: catchUp, loop: &loop))
            }
        }
    }

    /// Delivers a line unless it was delivered before; true when it was new.
    @discardableResult
    private func deliver(_ line: StoredLine, loop: inout LoopState) async -> Bool {
        guard loop.delivery.accept(line) else { return false }
        if let change = ChatLine.presenceChange(json: line.json) {
            let now = Self.now()
            state.withLock { $0.presence.announced(change.user, joined: change.joined, now: now) }
            onlineChangedContinuation.yield()
        }
        // A recovered socket whose client already had everything up to its offset joins before the
        // first line after that offset goes out.
        loop.waiting.removeAll { entry in
            guard entry.offset < line.id else { return false }
            if entry.socket.connected { entry.socket.join(Self.liveRoom) }
            return true
        }
        do {
            try await namespace.local.to(Self.liveRoom).emit("chat", .string(line.json), offset: line.id.description)
            metrics.messagesOut.increment(by: Int64(namespace.socketCount))
        } catch {
            logger.error("Broadcast of \(line.id) failed: \(error)")
        }
        return true
    }

    /// Reads from the stream everything after the last delivered line, until caught up.
    private func fillGap(_ loop: inout LoopState) async {
        var attempt = 0
        var filled = 0
        while !Task.isCancelled {
            do {
                let batch = try await log.entries(after: loop.delivery.gapFillStart ?? .zero, limit: 500)
                for line in batch {
                    if await deliver(line, loop: &loop) { filled += 1 }
                }
                if batch.count < 500 {
                    metrics.gapFills.increment()
                    if filled > 0 { logger.notice("Caught up: \(filled) line(s) delivered from the history, up to \(loop.delivery.lastID ?? .zero)") }
                    return
                }
            } catch {
                metrics.redisErrors.increment()
                attempt += 1
                logger.warning("Catching up from the history failed (\(error)); retrying")
                try? await Task.sleep(for: .milliseconds(min(2_000, 100 * attempt)))
            }
        }
    }

    /// A session was destroyed by a logout on this instance: its sockets here go at once, and every
    /// other instance is told through Redis. Without this, the other tabs of a logged-out session went
    /// on chatting under its name until they happened to reconnect.
    func sessionEnded(_ sid: String) async {
        endSessions([sid])
        do {
            _ = try await log.redis.publish(RESPArgument(sid), to: log.keys.logouts)
        } catch {
            metrics.redisErrors.increment()
            logger.warning("Could not tell the other instances that a session logged out (\(error)); its sockets there stay until they reconnect")
        }
    }

    /// After the subscription may have missed messages: a session whose logout was published then
    /// still has its sockets here. The sessions of this instance's sockets are looked up in one round
    /// trip; those that no longer exist end as a logout would end them. (If Redis fails, the next
    /// catch-up looks again.)
    func endSessionsLoggedOutElsewhere() async {
        let sessionIDs = Set(namespace.sockets().compactMap { $0.data["session"]?.stringValue }.filter { !$0.isEmpty })
        guard !sessionIDs.isEmpty, let gone = try? await sessions.missing(Array(sessionIDs)) else { return }
        endSessions(Set(gone))
    }

    /// Disconnects this instance's sockets of these sessions, telling each page it was logged out.
    func endSessions(_ sids: Set<String>) {
        let sids = sids.subtracting([""])
        guard !sids.isEmpty else { return }
        for socket in namespace.sockets() where socket.data["session"]?.stringValue.map(sids.contains) == true {
            socket.emit("logged_out")
            socket.disconnect()
        }
    }

    /// Pages of `historyLimit` lines read for one socket at most (the stream holds about one; its
    /// trimming is approximate, so it may hold more, and stopping after one page lost the rest).
    static let maximumCatchUpPages = 8

    /// Gets a socket into the chat: the delivery loop sends it its lines and lets it into `live`;
    /// when memory does not reach back far enough (this instance started after them, or the client
    /// was away long), this task reads the stream, outside the loop, and asks again.
    private func attach(_ socket: Socket, catchUp: inout CatchUp) async {
        while true {
            let missing = await withCheckedContinuation { done in
                // After shutdown the loop is gone: do not wait for it.
                if case .terminated = continuation.yield(.attach(socket, catchUp, done: done)) { done.resume(returning: nil) }
            }
            guard let missing else { return }
            catchUp.beginReading(after: missing)
            var after = missing
            var attempt = 0
            while true {
                do {
                    let page = try await log.entries(after: after, limit: configuration.historyLimit)
                    let more = catchUp.add(page: page, after: after, pageSize: configuration.historyLimit)
                    guard more, let last = page.last else { break }
                    after = last.id
                } catch {
                    // Redis fails: the socket waits (it is not live yet, and nothing is live while
                    // Redis is down) and the read is tried again, unless the client went away.
                    metrics.redisErrors.increment()
                    attempt += 1
                    logger.warning("Could not read the lines for socket \(socket.id) from the stream (\(error)); retrying")
                    guard socket.connected else { return }
                    do {
                        try await Task.sleep(for: .milliseconds(min(2_000, 100 * attempt)))
                    } catch {
                        catchUp.readFailed()  // shutting down: the socket gets what there is
                        break
                    }
                }
            }
        }
    }

    /// The loop's turn for a socket being attached (see `CatchUp`): the lines it gets, from memory and
    /// what its task read; or, when lines are missing and reading may help, where to read (the socket
    /// waits, delivery goes on). Otherwise the socket gets its lines, then `welcome`, then joins
    /// `live`, so the first line it gets after the welcome is live; a socket whose client is ahead
    /// of this instance joins once the delivery reaches its offset.
    private func attachTurn(_ socket: Socket, catchUp: CatchUp, loop: inout LoopState) -> StreamID? {
        guard socket.connected else { return nil }
        let plan = catchUp.plan(loop.delivery)
        if catchUp.shouldRead(missingAfter: plan.missingAfter) { return plan.missingAfter }
        if let after = plan.missingAfter {
            logger.warning(
                "Socket \(socket.id) gets the lines up to \(after) from the stream; those after it, up to what this instance delivered, could not be read"
            )
        }
        // One batch: a replay larger than the socket's outbound limit must not close a client as
        // slow, or it would come back with the same offset for the same replay, forever.
        socket.emit(batch: plan.lines.map(Self.chatEvent))
        metrics.messagesOut.increment(by: Int64(plan.lines.count))
        let user = socket.data["user"]?.stringValue ?? ""
        switch catchUp.start {
        case .history(let gap):
            // Its offset is its recovery position.
            let offset = plan.lines.last?.id ?? loop.delivery.lastID ?? .zero
            socket.emit("welcome", welcome(user: user, recovered: false, gap: gap), .string(offset.description))
            socket.join(Self.liveRoom)
        case .after(let offset):
            socket.emit("welcome", welcome(user: user, recovered: socket.recovered))
            if loop.delivery.canJoinLive(at: offset) {
                socket.join(Self.liveRoom)
            } else {
                loop.waiting.append((socket, offset))
            }
        }
        return nil
    }

    /// A stored line as the `chat` event: its JSON text and its offset (the stream id).
    static func chatEvent(_ line: StoredLine) -> (event: String, arguments: [JSONValue]) {
        ("chat", [.string(line.json), .string(line.id.description)])
    }

    // MARK: Presence

    /// One heartbeat: writes this instance's users, announces who left, pushes the online list when it
    /// changed, keeps connected sockets recoverable.
    func heartbeat(registry: PresenceRegistry) async throws {
        let now = Self.now()
        let (taken, pids, reap) = state.withLock { state in
            (state.presence.beginHeartbeat(), state.members.values.compactMap(\.pid), state.presence.mayReap(now: now))
        }
        let beat: PresenceRegistry.Heartbeat
        do {
            beat = try await registry.heartbeat(users: taken.users, now: now, first: taken.first, reap: reap)
        } catch {
            // Redis fails: the `join`s waiting for this heartbeat go on (their line goes, or fails,
            // like any other) instead of holding their connection's events back.
            let waiting = state.withLock { state in
                state.presence.heartbeatFailed(now: now)
                return state.takeAnnouncements(upTo: taken.number)
            }
            for done in waiting { done.resume() }
            throw error
        }
        let (left, published, rejoined) = state.withLock { state in
            state.presence.heartbeatWritten(taken.number)
            // Taken for dead by another instance (cut off from Redis for the TTL), which announced
            // this instance's users as gone: those still here and nowhere else are announced again.
            let rejoined = beat.wasReaped ? state.presence.local.keys.filter { !beat.onlineElsewhere.contains($0) }.sorted() : []
            return (
                state.presence.heartbeat(
                    onlineElsewhere: beat.onlineElsewhere, leavingElsewhere: beat.leavingElsewhere, reaped: beat.reaped, now: now,
                    instance: registry.instance),
                state.takeAnnouncements(upTo: taken.number),
                rejoined
            )
        }
        for done in published { done.resume() }
        onlineChangedContinuation.yield()
        if !beat.reapedInstances.isEmpty {
            logger.notice("Instances gone without a goodbye: \(Self.describe(beat.reapedInstances))")
        }
        if !beat.stoppedInstances.isEmpty {
            logger.info("Stopped instances reaped after their grace: \(Self.describe(beat.stoppedInstances))")
        }
        if beat.wasReaped {
            logger.warning(
                "Another instance took this one for gone (no presence heartbeat from it for PRESENCE_TTL: it was cut off from Redis) and announced its users as gone; announcing those still here again: \(rejoined.joined(separator: ", "))"
            )
        }
        for user in left { await control(user: user, text: ChatLine.leftText) }
        for user in rejoined { await control(user: user, text: ChatLine.joinedText) }
        try await store.refresh(pids: pids, ttl: configuration.recoveryWindow)
    }

    /// Reaped instance names for the log: a previous run of an instance id (`<id>#<ms>`, see
    /// `PresenceRegistry.heartbeat`) reads "<id> (a previous run)".
    static func describe(_ instances: [String]) -> String {
        instances.map { name in
            guard let mark = name.firstIndex(of: "#") else { return name }
            return "\(name[..<mark]) (a previous run)"
        }.joined(separator: ", ")
    }

    /// At a graceful stop, after the sockets were closed: the users to hand over (each with 0 sockets
    /// now) and how long the others should wait for them to come back (the grace of a user who leaves).
    func presenceToHandOver() -> (users: [(user: String, count: Int)], grace: Duration) {
        state.withLock { state in (state.presence.localCounts, .milliseconds(state.presence.grace)) }
    }

    var connectionCount: Int { namespace.socketCount }
}
