import Logging
import NIOCore

/// The Socket.IO side of a connection: decoder state, the namespaces joined, and the queue of work
/// for the app's handlers (run in order by one task at a time, started when work arrives).
struct SocketIOState: ~Copyable {
    enum WorkItem: Sendable {
        case connect(namespace: String, auth: JSONValue?)
        case event(namespace: String, arguments: [JSONValue], ackID: Int?)
        case disconnect(namespace: String)
        case closed(Socket, reason: String, rooms: [String], recoverable: Bool)
    }

    var decoder: SocketDecoder
    var sockets: [String: Socket] = [:]
    /// Namespaces whose CONNECT is being processed (usually none, and then no storage is kept).
    var connecting: [String] = []
    var queue: [WorkItem] = []
    var head = 0
    var workerRunning = false
    /// Readers waiting for the handlers to catch up (`Connection.whenHandlersCatchUp`).
    var waiters: [@Sendable () -> Void] = []
    var closed = false

    init(decoder: SocketDecoder) {
        self.decoder = decoder
    }

    var pending: Int { queue.count - head }

    mutating func finishConnecting(_ namespace: String) {
        connecting.removeAll { $0 == namespace }
        if connecting.isEmpty { connecting = [] }
    }

    mutating func enqueue(_ item: WorkItem) -> Bool {
        queue.append(item)
        if workerRunning { return false }
        workerRunning = true
        return true
    }

    mutating func next() -> WorkItem? {
        guard head < queue.count else {
            queue.removeAll(keepingCapacity: false)
            head = 0
            workerRunning = false
            return nil
        }
        let item = queue[head]
        head += 1
        if head > 64, head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
        return item
    }
}

enum SocketIOProtocolViolation: Error, CustomStringConvertible {
    case decoding(SocketDecodingError)
    case invalidState(String)

    var description: String {
        switch self {
        case .decoding(let error): return error.description
        case .invalidState(let what): return what
        }
    }
}

extension Connection {
    // MARK: Inbound

    /// Hands Engine.IO messages to the Socket.IO layer, in order. Returns false when the handler
    /// queue is full: the caller stops reading from the client until `whenHandlersCatchUp` calls back.
    func deliver(_ packets: [EnginePacket]) -> Bool {
        guard !packets.isEmpty else { return true }
        for packet in packets {
            do {
                try receive(packet)
            } catch {
                logger.info("Closing a session: \(error)")
                close(.parseError)
                return true
            }
        }
        let limit = server.configuration.limits.maxQueuedInboundPackets
        return socketIO.withLock { $0.pending < limit || $0.closed }
    }

    /// Calls `resume` once the handler queue is below its limit again (at once if it is, or when the
    /// session closes).
    func whenHandlersCatchUp(_ resume: @escaping @Sendable () -> Void) {
        let limit = server.configuration.limits.maxQueuedInboundPackets
        let waiting = socketIO.withLock { state -> Bool in
            guard state.pending >= limit, !state.closed else { return false }
            state.waiters.append(resume)
            return true
        }
        if !waiting { resume() }
    }

    /// `whenHandlersCatchUp` for a task (a long-polling POST).
    func waitForHandlers() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            whenHandlersCatchUp { continuation.resume() }
        }
    }

    private func receive(_ message: EnginePacket) throws(SocketIOProtocolViolation) {
        let result: Result<SocketPacket?, SocketDecodingError> = socketIO.withLock { state in
            do throws(SocketDecodingError) {
                if message.isBinary { return .success(try state.decoder.receive(binary: message.data)) }
                return .success(try state.decoder.receive(text: message.data))
            } catch {
                return .failure(error)
            }
        }
        let packet: SocketPacket
        switch result {
        case .failure(let error): throw .decoding(error)
        case .success(nil): return
        case .success(let decoded?): packet = decoded
        }
        server.metrics.messagesReceived.increment()
        let namespace = packet.namespace
        switch packet.type {
        case .connect:
            let start = try socketIO.withLock { state throws(SocketIOProtocolViolation) -> Bool in
                guard state.sockets[namespace] == nil, !state.connecting.contains(namespace) else {
                    throw .invalidState("a second CONNECT to \(namespace)")
                }
                state.connecting.append(namespace)
                return state.enqueue(.connect(namespace: namespace, auth: packet.data))
            }
            if start { startWorker() }
        case .event, .binaryEvent:
            let arguments = packet.data?.arrayValue ?? []
            let start = try socketIO.withLock { state throws(SocketIOProtocolViolation) -> Bool in
                guard state.sockets[namespace] != nil || state.connecting.contains(namespace) else {
                    throw .invalidState("an EVENT for \(namespace), which the client has not joined")
                }
                return state.enqueue(.event(namespace: namespace, arguments: arguments, ackID: packet.id))
            }
            if start { startWorker() }
        case .ack, .binaryAck:
            guard let socket = socketIO.withLock({ $0.sockets[namespace] }) else {
                throw .invalidState("an ACK for \(namespace), which the client has not joined")
            }
            if let id = packet.id { socket.resolveAck(id: id, arguments: packet.data?.arrayValue ?? []) }
        case .disconnect:
            let start = try socketIO.withLock { state throws(SocketIOProtocolViolation) -> Bool in
                guard state.sockets[namespace] != nil || state.connecting.contains(namespace) else {
                    throw .invalidState("a DISCONNECT from \(namespace), which the client has not joined")
                }
                return state.enqueue(.disconnect(namespace: namespace))
            }
            if start { startWorker() }
        case .connectError:
            throw .invalidState("a CONNECT_ERROR from a client")
        }
    }

    private func startWorker() {
        server.workerStarted()
        Task {
            await self.runWorker()
            self.server.workerFinished()
        }
    }

    private func runWorker() async {
        let limit = server.configuration.limits.maxQueuedInboundPackets
        while true {
            let (item, waiters) = socketIO.withLock { state -> (SocketIOState.WorkItem?, [@Sendable () -> Void]) in
                let item = state.next()
                guard state.pending < limit / 2 || item == nil, !state.waiters.isEmpty else { return (item, []) }
                defer { state.waiters.removeAll() }
                return (item, state.waiters)
            }
            for waiter in waiters { waiter() }
            guard let item else { return }
            await process(item)
        }
    }

    // MARK: Processing, one item at a time

    private func process(_ item: SocketIOState.WorkItem) async {
        switch item {
        case .connect(let namespace, let auth):
            await connect(to: namespace, auth: auth)
        case .event(let namespace, let arguments, let ackID):
            guard let socket = socketIO.withLock({ $0.sockets[namespace] }), let name = arguments.first?.stringValue else { return }
            await socket.dispatch(event: name, arguments: Array(arguments.dropFirst()), ackID: ackID)
        case .disconnect(let namespace):
            guard let socket = socketIO.withLock({ $0.sockets.removeValue(forKey: namespace) }) else { return }
            let rooms = socket.namespace.remove(socket)
            socket.markDisconnected()
            logger.debug("Socket \(socket.id) left \(namespace): client namespace disconnect")
            _ = rooms
            await socket.runDisconnectHandlers(reason: "client namespace disconnect")
        case .closed(let socket, let reason, let rooms, let recoverable):
            if recoverable, let pid = socket.pid, let store = server.recoveryStore, let recovery = server.configuration.recovery {
                let snapshot = SessionSnapshot(
                    sid: socket.id, pid: pid, namespace: socket.namespace.name, rooms: rooms, data: socket.data, lastOffset: nil)
                do {
                    try await store.save(snapshot, ttl: recovery.maxDisconnectionDuration)
                } catch {
                    logger.warning("Could not save socket \(socket.id) for recovery (\(error)); it will reconnect as a new socket")
                }
            }
            await socket.runDisconnectHandlers(reason: reason)
        }
    }

    private func connect(to name: String, auth: JSONValue?) async {
        guard let namespace = server.namespace(named: name) else {
            socketIO.withLock { $0.finishConnecting(name) }
            server.metrics.connectionsRefused.increment()
            sendPacket(SocketPacket(.connectError, namespace: name, data: ["message": "Invalid namespace"]))
            return
        }
        let authValue = auth ?? .null
        var restored: RestoredSession?
        var capture: Int?
        if server.configuration.recovery != nil, let store = server.recoveryStore, let pid = authValue["pid"]?.stringValue,
            let offset = authValue["offset"]?.stringValue
        {
            // Catch what is broadcast while the store looks the session up, so nothing falls in between.
            capture = namespace.startCapture()
            do {
                restored = try await store.restore(pid: pid, offset: offset)
            } catch {
                logger.warning("Could not look up session \(pid) for recovery (\(error)); connecting it as a new socket")
            }
            if let found = restored, found.session.namespace != name { restored = nil }
        }
        var data = restored?.session.data ?? .null
        let skipHooks = restored != nil && (server.configuration.recovery?.skipConnectHooks ?? false)
        if !skipHooks {
            let request = ConnectRequest(
                namespace: name, handshake: handshake, auth: authValue, recovering: restored != nil, restoredData: restored?.session.data ?? .null)
            for hook in namespace.hooks {
                switch await hook(request) {
                case .accept(let accepted):
                    if !accepted.isNull { data = accepted }
                case .refuse(let message, let extra):
                    if let capture { namespace.endCapture(capture) }
                    socketIO.withLock { $0.finishConnecting(name) }
                    server.metrics.connectionsRefused.increment()
                    var body: JSONObject = ["message": .string(message)]
                    if let extra { body["data"] = extra }
                    sendPacket(SocketPacket(.connectError, namespace: name, data: .object(body)))
                    logger.debug("Refused a connection to \(LogText.quoted(name)): \(message)")
                    return
                }
            }
        }
        let recovery = server.configuration.recovery != nil
        let socket = Socket(
            id: restored?.session.sid ?? SocketIOServer.generateID(),
            pid: restored?.session.pid ?? (recovery ? SocketIOServer.generateID() : nil),
            namespace: namespace, connection: self, auth: authValue, data: data, recovered: restored != nil)
        let registered = socketIO.withLock { state -> Bool in
            state.finishConnecting(name)
            guard !state.closed else { return false }
            state.sockets[name] = socket
            return true
        }
        guard registered else {
            if let capture { namespace.endCapture(capture) }
            return
        }
        clearAttachDeadline()
        var reply: JSONObject = ["sid": .string(socket.id)]
        if let pid = socket.pid { reply["pid"] = .string(pid) }
        let missed = restored?.missedPackets ?? []
        var aftermath = Connection.Aftermath()
        namespace.add(socket, rooms: restored?.session.rooms ?? [], capture: capture) { captured, rooms in
            // Under the namespace lock: nothing is broadcast to this socket before its CONNECT reply
            // and its replay, and nothing between the store's answer and now is lost. (A close this
            // causes is handled after the lock is released.)
            var packets: [SocketPacket] = [SocketPacket(.connect, namespace: name, data: .object(reply))]
            var replayed = Set<String>()
            for packet in missed {
                replayed.insert(packet.offset)
                let message = BroadcastMessage(namespace: name, event: packet.event, arguments: packet.arguments, offset: packet.offset)
                packets.append(SocketPacket(.event, namespace: name, data: message.packetData))
            }
            if restored != nil {
                for message in captured where message.reaches(socketRooms: rooms) {
                    if let offset = message.offset, replayed.contains(offset) { continue }
                    packets.append(SocketPacket(.event, namespace: name, data: message.packetData))
                }
            }
            server.metrics.messagesSent.increment(by: packets.count)
            // The CONNECT reply and the replay: one burst (see `EngineSession.send`).
            aftermath = sendDeferred(packets.flatMap(SocketCodec.encode), burst: true)
        }
        handle(aftermath)
        server.metrics.connectionsAccepted.increment()
        if restored != nil {
            server.metrics.connectionsRecovered.increment()
            logger.debug("Socket \(socket.id) recovered in \(name) with \(missed.count) missed packets")
        }
        if let handler = namespace.connectionHandler {
            await handler(socket)
        }
    }

    // MARK: Outbound

    func sendPacket(_ packet: SocketPacket) {
        server.metrics.messagesSent.increment()
        send(SocketCodec.encode(packet))
    }

    /// The Engine.IO session ended: every socket disconnects (and is saved for recovery when the
    /// reason allows it).
    func engineClosed(_ reason: EngineCloseReason) {
        let (sockets, waiters) = socketIO.withLock { state -> ([Socket], [@Sendable () -> Void]) in
            guard !state.closed else { return ([], []) }
            state.closed = true
            let sockets = Array(state.sockets.values)
            state.sockets.removeAll()
            state.connecting.removeAll()
            defer { state.waiters.removeAll() }
            return (sockets, state.waiters)
        }
        for waiter in waiters { waiter() }
        var start = false
        for socket in sockets {
            let rooms = socket.namespace.remove(socket)
            socket.markDisconnected()
            // No rooms: the namespace no longer holds this socket under its id, because a client
            // recovered the session on another connection while this one was still open (a half-open
            // transport). The session is the new socket's now: saving this one would overwrite the
            // app's snapshot of it with no rooms.
            let recoverable = reason.isRecoverable && !rooms.isEmpty
            let item = SocketIOState.WorkItem.closed(socket, reason: reason.rawValue, rooms: rooms, recoverable: recoverable)
            if socketIO.withLock({ $0.enqueue(item) }) { start = true }
        }
        if start { startWorker() }
    }

    /// A socket left its namespace on the server's initiative.
    func socketDisconnected(_ socket: Socket, close: Bool) {
        let removed = socketIO.withLock { state -> Bool in
            guard let current = state.sockets[socket.namespace.name], current === socket else { return false }
            state.sockets.removeValue(forKey: socket.namespace.name)
            return true
        }
        guard removed else { return }
        sendPacket(SocketPacket(.disconnect, namespace: socket.namespace.name))
        _ = socket.namespace.remove(socket)
        socket.markDisconnected()
        let start = socketIO.withLock { $0.enqueue(.closed(socket, reason: "server namespace disconnect", rooms: [], recoverable: false)) }
        if start { startWorker() }
        if close { self.close(.forcedClose) }
    }
}
