import NIOCore
import NIOWebSocket
import Synchronization

/// Everything written to the WebSockets of one event loop goes through its outbox, in the order it was
/// submitted: packets for one session, broadcasts to many, closes. The loop runs one pass over what
/// has queued up since the last pass: every write, then ONE flush per channel. A burst (a run of
/// broadcasts arriving while the loop was busy, a handler emitting several events) leaves in one
/// system call per connection, and a broadcast costs one hop per event loop, not one per recipient.
///
/// Slow clients are judged here, on the loop: a channel that is still over its write buffer's high
/// watermark when the next write for it comes (after a flush handed the kernel all it would take)
/// belongs to a client that does not read; its session is closed and it gets nothing more. A burst (a
/// recovery replay) raises that limit by its own size until the client drains back within it
/// (`SlowClientLimit`, the rule long-polling follows too).
final class WebSocketOutbox: Sendable {
    /// A WebSocket to write to, the session to close when its client does not read, and how long its
    /// flushes may wait to carry more frames (the server's `writeCoalescing`; zero without a session).
    struct Target: Sendable {
        let channel: any Channel
        let connection: Connection?
        let window: TimeAmount
        /// Where a broadcast's frames, encoded once for all recipients, go (nil: through the pipeline).
        let encoded: EncodedFrameSink?

        init(channel: any Channel, connection: Connection?, encoded: EncodedFrameSink? = nil, window: TimeAmount? = nil) {
            self.channel = channel
            self.connection = connection
            self.window = window ?? connection?.server.writeCoalescingWindow ?? .zero
            self.encoded = encoded
        }
    }

    enum Item: Sendable {
        /// Frames for one channel (`burst`: see `SlowClientLimit`).
        case write([WebSocketFrame], to: Target, burst: Bool = false)
        /// The same frames for many channels of this loop (`encoded`: the frames' bytes on the wire,
        /// when a target takes them that way).
        case broadcast([WebSocketFrame], encoded: ByteBuffer?, to: [Target])
        /// A close frame with this code, then the connection closed (at once, dropping what is queued,
        /// when `immediately`; also at once when the peer does not read).
        case close(any Channel, code: WebSocketErrorCode, immediately: Bool)
    }

    let eventLoop: any EventLoop
    private let queue = Mutex(Queue())
    /// Deferred flushes (`FlushPacing`, keeping the channels that wait): touched on the loop only.
    private let pacing: NIOLoopBoundBox<FlushPacing<any Channel>>
    /// Channels a burst gave room over their high watermark, until they drain back within it: touched
    /// on the loop only.
    private let bursts: NIOLoopBoundBox<[ObjectIdentifier: SlowClientLimit]>

    private struct Queue: ~Copyable {
        var items: [Item] = []
        var scheduled = false
    }

    private init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.pacing = NIOLoopBoundBox.makeBoxSendingValue(FlushPacing(), eventLoop: eventLoop)
        self.bursts = NIOLoopBoundBox.makeBoxSendingValue([:], eventLoop: eventLoop)
    }

    private static let outboxes = Mutex<[ObjectIdentifier: WebSocketOutbox]>([:])

    /// The outbox of `loop` (one per event loop, created on first use).
    static func of(_ loop: any EventLoop) -> WebSocketOutbox {
        outboxes.withLock { outboxes in
            let key = ObjectIdentifier(loop)
            if let existing = outboxes[key] { return existing }
            let created = WebSocketOutbox(eventLoop: loop)
            outboxes[key] = created
            return created
        }
    }

    /// Queues `item`; the loop writes it with the next pass (scheduled when none is).
    func submit(_ item: Item) {
        let schedule = queue.withLock { queue -> Bool in
            queue.items.append(item)
            if queue.scheduled { return false }
            queue.scheduled = true
            return true
        }
        if schedule { eventLoop.execute { self.drain() } }
    }

    /// Writes the same frames to WebSockets of any event loops: one item per loop.
    static func broadcast(_ frames: [WebSocketFrame], to targets: [Target]) {
        guard let first = targets.first else { return }
        // Encoded once, for the targets that take encoded frames (the event-loop path's WebSockets).
        let encoded = targets.contains { $0.encoded != nil } ? EncodedFrameSink.encode(frames, allocator: first.channel.allocator) : nil
        if targets.allSatisfy({ $0.channel.eventLoop === first.channel.eventLoop }) {
            of(first.channel.eventLoop).submit(.broadcast(frames, encoded: encoded, to: targets))
            return
        }
        var byLoop: [ObjectIdentifier: (loop: any EventLoop, targets: [Target])] = [:]
        for target in targets {
            byLoop[ObjectIdentifier(target.channel.eventLoop), default: (target.channel.eventLoop, [])].targets.append(target)
        }
        for (_, batch) in byLoop {
            of(batch.loop).submit(.broadcast(frames, encoded: encoded, to: batch.targets))
        }
    }

    /// One pass, on the event loop.
    private func drain() {
        let items = queue.withLock { queue -> [Item] in
            queue.scheduled = false
            defer { queue.items.removeAll(keepingCapacity: queue.items.count <= 64) }
            return queue.items
        }
        let now = eventLoop.now
        if items.count == 1, case .broadcast(let frames, let encoded, let targets) = items[0] {
            // The common case under light load: nothing to deduplicate.
            for target in targets where write(frames, encoded: encoded, to: target) { flush(target, now: now) }
            return
        }
        var dirty: [ObjectIdentifier: Target] = [:]
        for item in items {
            switch item {
            case .write(let frames, let target, let burst):
                if write(frames, to: target, burst: burst) { dirty[ObjectIdentifier(target.channel)] = target }
            case .broadcast(let frames, let encoded, let targets):
                for target in targets where write(frames, encoded: encoded, to: target) {
                    dirty[ObjectIdentifier(target.channel)] = target
                }
            case .close(let channel, let code, let immediately):
                let key = ObjectIdentifier(channel)
                dirty.removeValue(forKey: key)
                pacing.value.forget(key)
                bursts.value[key] = nil
                Self.close(channel, code: code, immediately: immediately)
            }
        }
        for target in dirty.values { flush(target, now: now) }
    }

    /// Flushes a channel now, or later with what follows when it was flushed within its window.
    private func flush(_ target: Target, now: NIODeadline) {
        guard target.window > .zero else {
            target.channel.flush()
            return
        }
        switch pacing.value.wrote(ObjectIdentifier(target.channel), target.channel, window: target.window, now: now) {
        case .flush:
            target.channel.flush()
        case .alreadyDeferred:
            break
        case .deferUntil(let deadline):
            eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in flushDeferred() }
        }
    }

    /// The deferred flushes are due.
    private func flushDeferred() {
        for channel in pacing.value.due(now: eventLoop.now) { channel.flush() }
    }

    /// Writes (without flushing) unless the client is too slow; false: nothing written. `encoded`:
    /// the frames already encoded, written below the frame encoder when the target allows it.
    private func write(_ frames: [WebSocketFrame], encoded: ByteBuffer? = nil, to target: Target, burst: Bool = false) -> Bool {
        let channel = target.channel
        let wasWritable = channel.isWritable
        if wasWritable {
            // Back under the watermark: a burst's room is no longer needed.
            if !bursts.value.isEmpty { bursts.value[ObjectIdentifier(channel)] = nil }
        } else if !withinBurst(channel) {
            // Still over the high watermark after the last flush: the client does not read.
            target.connection?.closeAsSlowClient()
            return false
        }
        if let encoded, let sink = target.encoded {
            sink.write(encoded)
        } else {
            for frame in frames { channel.write(frame, promise: nil) }
        }
        // Crossing the watermark with unflushed writes says nothing about the client yet: hand the
        // kernel what it takes, and judge the client by what remains.
        if !channel.isWritable {
            channel.flush()
            if burst && wasWritable && !channel.isWritable { recordBurst(frames, on: channel) }
        }
        return true
    }

    /// Whether a channel over its high watermark is within the room a burst gave it (`SlowClientLimit`,
    /// against the bytes NIO holds for it); forgets the room when it is not.
    private func withinBurst(_ channel: any Channel) -> Bool {
        let key = ObjectIdentifier(channel)
        guard let limit = bursts.value[key], let waiting = try? channel.syncOptions?.getOption(.bufferedWritableBytes),
            !limit.isSlow(waiting: waiting)
        else {
            bursts.value[key] = nil
            return false
        }
        return true
    }

    /// A burst sent while the channel was under its high watermark left it over: the burst's size is
    /// added to its limit until it is back under the watermark.
    private func recordBurst(_ frames: [WebSocketFrame], on channel: any Channel) {
        guard let high = try? channel.syncOptions?.getOption(.writeBufferWaterMark).high else { return }
        let key = ObjectIdentifier(channel)
        var limit = SlowClientLimit(limit: high)
        // Under the watermark before the burst; a frame's header is at most 10 bytes from the server.
        limit.burst(of: frames.reduce(0) { $0 + $1.data.readableBytes + 10 }, waiting: 0)
        bursts.value[key] = limit
        // Forgotten with the channel, whoever closes it.
        channel.closeFuture.whenComplete { [bursts] _ in bursts.value[key] = nil }
    }

    /// Sends a close frame (after what was written before it) then closes the connection; a peer that
    /// does not read (the close frame cannot go out) is cut off after a short grace period.
    private static func close(_ channel: any Channel, code: WebSocketErrorCode, immediately: Bool) {
        if immediately || !channel.isWritable {
            channel.close(promise: nil)
            return
        }
        var data = channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: data)
        channel.writeAndFlush(frame).whenComplete { _ in channel.close(promise: nil) }
        channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }
}
