import NIOCore
import NIOPosix
import NIOWebSocket

/// The clients of one event loop and their counters.
struct ChatLoadShard: Sendable {
    var loop: any EventLoop
    var counters: NIOLoopBound<ChatLoadCounters>

    /// `readEvery`: read the unsampled clients in batches at this interval (nil: as data arrives).
    static func make(on loop: any EventLoop, readEvery: TimeAmount? = nil) -> EventLoopFuture<ChatLoadShard> {
        loop.submit {
            let batched = readEvery.map { BatchedReads(interval: $0, loop: loop) }
            return ChatLoadShard(loop: loop, counters: NIOLoopBound(ChatLoadCounters(batchedReads: batched), eventLoop: loop))
        }
    }
}

/// Reads `chat-load` commands (one JSON line each), runs them one after the other on its event loop
/// and writes one JSON reply line per command. Client i lives on event loop i % loops, a sampled client
/// on the sampler's loop when there is one.
final class ChatLoadController: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Connections being opened at the same time (the listen backlog of the servers stays small).
    static let openWindow = 200

    /// Every event loop's clients and counters.
    private let shards: [ChatLoadShard]
    /// The loops of the clients that are not sampled (all of them, without a sampler).
    private let clientShards: [ChatLoadShard]
    /// Where the sampled clients live when they have an event loop of their own (the last one).
    private let sampler: ChatLoadShard?
    /// The first bytes of a counted delivery (`42["chat"` unless told otherwise).
    private let deliveryPrefix: [UInt8]
    /// Every channel opened, to close them all.
    private var channels: [any Channel] = []
    /// Clients that completed the Socket.IO handshake, in the order they were asked for.
    private var clients: [any Channel] = []
    private var requested = 0
    /// Channels connected by the running `open`, by client index, until their handshake completes.
    private var pending: [Int: any Channel] = [:]
    private var queue: EventLoopFuture<Void>?

    /// `samplerThread`: the last of `shards` is the sampled clients' own (when another is left for the
    /// other clients; else every client shares the loops).
    init(shards: [ChatLoadShard], samplerThread: Bool, deliveryPrefix: [UInt8]) {
        precondition(!shards.isEmpty, "chat-load needs at least one event loop")
        let separate = samplerThread && shards.count > 1
        self.shards = shards
        self.clientShards = separate ? Array(shards.dropLast()) : shards
        self.sampler = separate ? shards.last : nil
        self.deliveryPrefix = deliveryPrefix
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = String(buffer: unwrapInboundIn(data))
        guard !line.allSatisfy(\.isWhitespace) else { return }
        let loop = context.eventLoop
        let previous = queue ?? loop.makeSucceededVoidFuture()
        let reply = previous.assumeIsolated().flatMap { () -> EventLoopFuture<ChatLoadReply> in
            switch Result(catching: { () throws(ChatLoadProtocolError) in try ChatLoadCommand.parse(line) }) {
            case .success(let command): return self.execute(command, on: loop)
            case .failure(let error): return loop.makeSucceededFuture(.failure(error.description))
            }
        }
        // A command that fails still gets its reply, and the commands behind it still run.
        queue = reply.recover { error in .failure("\(error)") }.map { reply in
            var buffer = context.channel.allocator.buffer(string: reply.line())
            buffer.writeString("\n")
            context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
        }.nonisolated()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .some(ChannelEvent.inputClosed) = event as? ChannelEvent else { return context.fireUserInboundEventTriggered(event) }
        // stdin closed: answer the commands still running, then close.
        let finished = queue ?? context.eventLoop.makeSucceededVoidFuture()
        finished.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // stdin closed: the bench is done (or gone); close every client.
        for channel in channels { channel.close(promise: nil) }
        context.fireChannelInactive()
    }

    private func execute(_ command: ChatLoadCommand, on loop: any EventLoop) -> EventLoopFuture<ChatLoadReply> {
        switch command {
        case .open(let specs, let timeout): open(specs, timeout: timeout, on: loop)
        case .send(let rate, let seconds, let tag, let senders): send(rate: rate, seconds: seconds, tag: tag, senders: senders, on: loop)
        case .stats: stats(on: loop)
        case .latencies(let record): latencies(record: record, on: loop)
        case .close: close(on: loop)
        }
    }

    // MARK: open

    private func open(_ specs: [ChatLoadClientSpec], timeout: Double, on loop: any EventLoop) -> EventLoopFuture<ChatLoadReply> {
        let job = OpenJob(total: specs.count, promise: loop.makePromise())
        let first = requested
        requested += specs.count
        var next = 0
        func startNext() {
            while next < specs.count, job.inFlight < Self.openWindow, job.failure == nil {
                let spec = specs[next]
                let index = first + next
                next += 1
                job.inFlight += 1
                let shard = (spec.sample ? sampler : nil) ?? clientShards[index % clientShards.count]
                let name = "client \(index) (\(spec.host):\(spec.port))"
                let ready = shard.loop.makePromise(of: Void.self)
                ChatLoadConnector.connect(
                    spec, name: name, on: shard.loop, counters: shard.counters, deliveryPrefix: deliveryPrefix, ready: ready
                )
                .hop(to: loop).assumeIsolated()
                .whenComplete { result in
                    switch result {
                    case .success(let channel):
                        self.channels.append(channel)
                        self.pending[index] = channel
                        channel.closeFuture.whenComplete { _ in
                            ready.fail(ChatLoadProtocolError("\(name): the connection closed during the handshake"))
                        }
                    case .failure(let error):
                        ready.fail(ChatLoadProtocolError("\(name): could not connect: \(error)"))
                    }
                }
                let channelFuture = ready.futureResult.hop(to: loop)
                channelFuture.assumeIsolated().whenComplete { result in
                    job.inFlight -= 1
                    switch result {
                    case .success:
                        job.opened += 1
                        job.connected[index - first] = true
                    case .failure(let error):
                        job.fail(error)
                    }
                    if job.opened == job.total || (job.failure != nil && job.inFlight == 0) {
                        job.finish()
                    } else {
                        startNext()
                    }
                }
            }
        }
        startNext()
        if specs.isEmpty { job.finish() }
        let timer = loop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(timeout * 1e9))) {
            job.fail(ChatLoadProtocolError("open: only \(job.opened) of \(job.total) clients connected within \(timeout) s"))
            job.finish()
        }
        return job.promise.futureResult.assumeIsolated().map { reply in
            timer.cancel()
            // Senders are spread over the clients in the order they were asked for, whatever order
            // their handshakes completed in.
            for offset in 0..<specs.count {
                if job.connected[offset], let channel = self.pending.removeValue(forKey: first + offset) { self.clients.append(channel) }
            }
            self.pending = [:]
            return reply
        }.nonisolated()
    }

    private final class OpenJob {
        let total: Int
        let promise: EventLoopPromise<ChatLoadReply>
        var inFlight = 0
        var opened = 0
        var failure: (any Error)?
        var connected: [Bool]
        private var finished = false

        init(total: Int, promise: EventLoopPromise<ChatLoadReply>) {
            self.total = total
            self.promise = promise
            self.connected = Array(repeating: false, count: total)
        }

        func fail(_ error: any Error) {
            if failure == nil { failure = error }
        }

        func finish() {
            guard !finished else { return }
            finished = true
            if let failure {
                promise.succeed(.failure("\(failure)"))
            } else {
                promise.succeed(ChatLoadReply(opened: opened))
            }
        }
    }

    // MARK: send

    private func send(rate: Double, seconds: Double, tag: String, senders wanted: Int, on loop: any EventLoop) -> EventLoopFuture<ChatLoadReply> {
        guard !clients.isEmpty else { return loop.makeSucceededFuture(.failure("send: no client is open; send open first")) }
        let senders = min(wanted, clients.count)
        let interval = Double(senders) / rate
        let begin = NIODeadline.now()
        let end = begin + .nanoseconds(Int64(seconds * 1e9))
        var counts: [EventLoopFuture<Int>] = []
        for k in 0..<senders {
            let channel = clients[(k * clients.count) / senders]
            let first = begin + .nanoseconds(Int64(Double(k) * interval / Double(senders) * 1e9))
            let step = TimeAmount.nanoseconds(Int64(interval * 1e9))
            counts.append(
                channel.eventLoop.flatSubmit {
                    ChatLoadSender(channel: channel, sender: k, tag: tag, due: first, interval: step, end: end).start()
                }
            )
        }
        return EventLoopFuture.whenAllSucceed(counts, on: loop).map { ChatLoadReply(sent: $0.reduce(0, +)) }
    }

    // MARK: stats, latencies, close

    private struct ShardStats: Sendable {
        var received: Int
        var lastReceive: NIODeadline?
        var closed: Int
    }

    private func stats(on loop: any EventLoop) -> EventLoopFuture<ChatLoadReply> {
        let futures = shards.map { shard in
            shard.loop.submit {
                let counters = shard.counters.value
                return ShardStats(received: counters.received, lastReceive: counters.lastReceive, closed: counters.closed)
            }
        }
        return EventLoopFuture.whenAllSucceed(futures, on: loop).map { all in
            let last = all.compactMap(\.lastReceive).max()
            return ChatLoadReply(
                received: all.reduce(0) { $0 + $1.received },
                lastReceiveAge: last.map { Double((NIODeadline.now() - $0).nanoseconds) / 1e9 },
                closed: all.reduce(0) { $0 + $1.closed }
            )
        }
    }

    private func latencies(record: Bool, on loop: any EventLoop) -> EventLoopFuture<ChatLoadReply> {
        let futures = shards.map { shard in
            shard.loop.submit { () -> [LatencySample] in
                let counters = shard.counters.value
                counters.recording = record
                let samples = counters.latencies
                counters.latencies = []
                return record ? [] : samples
            }
        }
        return EventLoopFuture.whenAllSucceed(futures, on: loop).map { all in
            let samples = all.flatMap { $0 }
            guard !record, let percentiles = LatencyPercentiles(samples: samples.map(\.latency)) else { return ChatLoadReply(count: 0) }
            var reply = ChatLoadReply(
                count: percentiles.count,
                p50Ms: percentiles.p50Milliseconds,
                p99Ms: percentiles.p99Milliseconds
            )
            if let breakdown = FanOutBreakdown(samples: samples) {
                reply.messages = breakdown.messages
                reply.firstP50Ms = breakdown.first.p50Milliseconds
                reply.firstP99Ms = breakdown.first.p99Milliseconds
                reply.spreadP50Ms = breakdown.spread.p50Milliseconds
                reply.spreadP99Ms = breakdown.spread.p99Milliseconds
            }
            return reply
        }
    }

    private func close(on loop: any EventLoop) -> EventLoopFuture<ChatLoadReply> {
        let closing = channels.map { channel in channel.close() }
        channels = []
        clients = []
        pending = [:]
        return EventLoopFuture.andAllComplete(closing, on: loop).map { ChatLoadReply() }
    }
}

/// One sender: a chat message every `interval` from `due` until `end`, on its channel's event loop,
/// stamped with the monotonic time it was written. Completes with how many it sent.
final class ChatLoadSender {
    private let channel: any Channel
    private let sender: Int
    private let tag: String
    private var due: NIODeadline
    private let interval: TimeAmount
    private let end: NIODeadline
    private var count = 0
    private let promise: EventLoopPromise<Int>

    init(channel: any Channel, sender: Int, tag: String, due: NIODeadline, interval: TimeAmount, end: NIODeadline) {
        self.channel = channel
        self.sender = sender
        self.tag = tag
        self.due = due
        self.interval = interval
        self.end = end
        self.promise = channel.eventLoop.makePromise()
    }

    func start() -> EventLoopFuture<Int> {
        schedule()
        return promise.futureResult
    }

    private func schedule() {
        guard due < end else { return promise.succeed(count) }
        channel.eventLoop.assumeIsolated().scheduleTask(deadline: due) { self.fire() }
    }

    private func fire() {
        let stamp = NIODeadline.now().uptimeNanoseconds
        let text = #"42["chat","{\"action\":\"message\",\"msg\":\"~T\#(stamp)~E\",\"id\":\"\#(tag)-\#(sender)-\#(count)\"}"]"#
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: channel.allocator.buffer(string: text))
        channel.writeAndFlush(frame, promise: nil)
        count += 1
        due = due + interval
        schedule()
    }
}
