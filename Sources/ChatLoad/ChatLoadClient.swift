import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// What an Engine.IO v4 / Socket.IO v5 text frame is, to the load generator (the first bytes decide).
enum EngineIOFrame: Equatable, Sendable {
    /// `42["<event>",...`: a delivery of the counted event (`chat` unless told otherwise).
    case delivery
    /// `2`: an Engine.IO ping.
    case ping
    /// `0{...}`: the Engine.IO open packet.
    case open
    /// `40...`: Socket.IO CONNECT accepted.
    case connected
    /// `44...`: Socket.IO CONNECT refused.
    case refused
    case other

    /// The first bytes of a delivery of `event` (a name of letters, digits, - and _, which needs no
    /// JSON escaping: see `ChatLoadCommand.isName`).
    static func deliveryPrefix(event: String) -> [UInt8] { Array(#"42[""#.utf8) + Array(event.utf8) + [UInt8(ascii: "\"")] }

    static let chatPrefix = deliveryPrefix(event: "chat")

    init(_ bytes: UnsafeRawBufferPointer, deliveryPrefix: [UInt8] = Self.chatPrefix) {
        if bytes.count >= deliveryPrefix.count, zip(bytes, deliveryPrefix).allSatisfy({ $0 == $1 }) {
            self = .delivery
        } else if bytes.count == 1, bytes[0] == UInt8(ascii: "2") {
            self = .ping
        } else if bytes.first == UInt8(ascii: "0") {
            self = .open
        } else if bytes.count >= 2, bytes[0] == UInt8(ascii: "4"), bytes[1] == UInt8(ascii: "0") {
            self = .connected
        } else if bytes.count >= 2, bytes[0] == UInt8(ascii: "4"), bytes[1] == UInt8(ascii: "4") {
            self = .refused
        } else {
            self = .other
        }
    }
}

/// A load-generator client's Engine.IO / Socket.IO handshake: open packet -> send `40` -> `40`
/// (connected) or `44` (refused). Pure: the handler does what the returned action says.
struct EngineIOClientState: Equatable, Sendable {
    enum Phase: Equatable, Sendable { case awaitingOpen, awaitingConnect, connected, refused }
    enum Action: Equatable, Sendable {
        case none
        /// Send this text frame.
        case send(String)
        /// A delivery of the counted event: count it.
        case count
        /// The Socket.IO connection is up.
        case becameConnected
        /// The server refused the Socket.IO connection.
        case becameRefused
    }

    private(set) var phase = Phase.awaitingOpen

    mutating func received(_ frame: EngineIOFrame) -> Action {
        switch (frame, phase) {
        case (.delivery, _): return .count
        case (.ping, _): return .send("3")
        case (.open, .awaitingOpen):
            phase = .awaitingConnect
            return .send("40")
        case (.connected, .awaitingConnect):
            phase = .connected
            return .becameConnected
        case (.refused, .awaitingConnect):
            phase = .refused
            return .becameRefused
        default: return .none
        }
    }
}

/// Counters of the clients on one event loop; touched only on that loop.
final class ChatLoadCounters {
    var received = 0
    var lastReceive: NIODeadline?
    var closed = 0
    var recording = false
    var latencies: [LatencySample] = []
    /// Reads this loop's unsampled clients in batches, when the generator was told to (`--read-every-ms`).
    let batchedReads: BatchedReads?

    init(batchedReads: BatchedReads? = nil) {
        self.batchedReads = batchedReads
    }
}

/// Reads the unsampled clients of one event loop every `interval` instead of as soon as data arrives
/// (their channels' autoRead off, one `read()` each per interval): what the server's flushes send them
/// waits in the kernel's receive buffer and is read in one system call, so the generator wakes up for
/// them once per interval instead of once per write of the server. The reads are spread evenly over
/// the interval (a tenth of the channels every tenth of it), so that the generator's work does not come
/// in bursts that would take a core from the server all at once. The server's work is the same; the
/// generator's, which shares the machine with it, is not. Sampled clients are never batched: they read
/// at once, so their latency samples are the server's. Touched only on its loop.
final class BatchedReads {
    static let slices = 10

    let interval: TimeAmount
    private let loop: any EventLoop
    private var channels: [any Channel] = []
    private var slots: [ObjectIdentifier: Int] = [:]
    /// Which tenth of the interval the next tick is.
    private var tick = 0
    private var ticking = false

    init(interval: TimeAmount, loop: any EventLoop) {
        self.interval = interval
        self.loop = loop
    }

    /// The channels read on the ticks.
    var count: Int { channels.count }

    /// From now on `channel` (on this loop) is read only on the ticks.
    func add(_ channel: any Channel) {
        loop.preconditionInEventLoop()
        let id = ObjectIdentifier(channel)
        guard slots[id] == nil, let options = channel.syncOptions, (try? options.setOption(.autoRead, value: false)) != nil else { return }
        slots[id] = channels.count
        channels.append(channel)
        if !ticking {
            ticking = true
            schedule()
        }
    }

    func remove(_ channel: any Channel) {
        guard let slot = slots.removeValue(forKey: ObjectIdentifier(channel)) else { return }
        let last = channels.removeLast()
        if slot < channels.count {
            channels[slot] = last
            slots[ObjectIdentifier(last)] = slot
        }
    }

    private func schedule() {
        loop.assumeIsolated().scheduleTask(in: .nanoseconds(max(1_000_000, interval.nanoseconds / Int64(Self.slices)))) {
            guard !self.channels.isEmpty else {
                self.ticking = false
                return
            }
            // Tick k of every `slices` reads the k-th tenth of the channels: each once per interval.
            let range = Self.share(self.tick, of: self.channels.count)
            // (`read()` only asks for the next readable event, but a channel that closes meanwhile
            // leaves the array: check every index.)
            for index in range where index < self.channels.count { self.channels[index].read() }
            self.tick = (self.tick + 1) % Self.slices
            self.schedule()
        }
    }

    /// The channels tick `tick` (0..<slices) reads out of `count`: consecutive, as even as can be, and
    /// together every channel once.
    static func share(_ tick: Int, of count: Int) -> Range<Int> {
        (tick * count / slices)..<((tick + 1) * count / slices)
    }
}

/// One WebSocket client after the upgrade: answers pings, completes the Socket.IO handshake, counts
/// deliveries (of `chat`, or the event it was told to count) and, when it is a sampled client and
/// recording is on, records send-to-delivery latency from the `~T<ns>~E` stamp the sender embedded.
final class ChatLoadClientHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let counters: ChatLoadCounters
    private let sample: Bool
    private let deliveryPrefix: [UInt8]
    private let ready: EventLoopPromise<Void>
    private let name: String
    private var state = EngineIOClientState()

    init(counters: ChatLoadCounters, sample: Bool, ready: EventLoopPromise<Void>, name: String, deliveryPrefix: [UInt8] = EngineIOFrame.chatPrefix) {
        self.counters = counters
        self.sample = sample
        self.deliveryPrefix = deliveryPrefix
        self.ready = ready
        self.name = name
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            let payload = frame.unmaskedData
            let kind = payload.withUnsafeReadableBytes { EngineIOFrame($0, deliveryPrefix: deliveryPrefix) }
            switch state.received(kind) {
            case .none: break
            case .count:
                counters.received += 1
                if sample, counters.recording, let stamp = payload.withUnsafeReadableBytes(Self.stamp(in:)) {
                    counters.latencies.append(LatencySample(stamp: stamp, latency: Int64(NIODeadline.now().uptimeNanoseconds) - stamp))
                }
            case .send(let text):
                send(text, context: context)
            case .becameConnected:
                if !sample, let batched = counters.batchedReads { batched.add(context.channel) }
                ready.succeed()
            case .becameRefused:
                ready.fail(ChatLoadProtocolError("\(name): the server refused the Socket.IO connection: \(String(buffer: payload))"))
                context.close(promise: nil)
            }
        case .ping:
            var pong = frame.unmaskedData
            let bytes = pong.readSlice(length: pong.readableBytes) ?? ByteBuffer()
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: bytes)), promise: nil)
        case .connectionClose:
            context.close(promise: nil)
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        counters.lastReceive = .now()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        counters.closed += 1
        counters.batchedReads?.remove(context.channel)
        ready.fail(ChatLoadProtocolError("\(name): the connection closed during the Socket.IO handshake"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        ready.fail(ChatLoadProtocolError("\(name): \(error)"))
        context.close(promise: nil)
    }

    private func send(_ text: String, context: ChannelHandlerContext) {
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: context.channel.allocator.buffer(string: text))
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    /// The number between `~T` and `~E`, if the text carries one.
    static func stamp(in bytes: UnsafeRawBufferPointer) -> Int64? {
        let tilde = UInt8(ascii: "~")
        var index = 0
        while index + 1 < bytes.count {
            if bytes[index] == tilde, bytes[index + 1] == UInt8(ascii: "T") {
                var value: Int64 = 0
                var cursor = index + 2
                var digits = 0
                while cursor < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[cursor]), digits < 18 {
                    value = value * 10 + Int64(bytes[cursor] - UInt8(ascii: "0"))
                    cursor += 1
                    digits += 1
                }
                if digits > 0, cursor + 1 < bytes.count, bytes[cursor] == tilde, bytes[cursor + 1] == UInt8(ascii: "E") { return value }
            }
            index += 1
        }
        return nil
    }
}

/// Reads the response of a declined WebSocket upgrade and fails the client with its status.
final class DeclinedUpgradeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let ready: EventLoopPromise<Void>
    private let name: String

    init(ready: EventLoopPromise<Void>, name: String) {
        self.ready = ready
        self.name = name
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            ready.fail(
                ChatLoadProtocolError("\(name): the server declined the WebSocket upgrade with HTTP \(head.status.code) \(head.status.reasonPhrase)"))
            context.close(promise: nil)
        }
    }
}

/// Opens one client: TCP connect, WebSocket upgrade with the session cookie, Socket.IO handshake.
/// Completes `ready` when the client is a connected Socket.IO client, fails it with a readable reason.
enum ChatLoadConnector {
    enum Upgrade: Sendable { case upgraded, declined }

    static func connect(
        _ spec: ChatLoadClientSpec,
        name: String,
        on loop: any EventLoop,
        counters: NIOLoopBound<ChatLoadCounters>,
        deliveryPrefix: [UInt8],
        ready: EventLoopPromise<Void>
    ) -> EventLoopFuture<any Channel> {
        ClientBootstrap(group: loop)
            .connectTimeout(.seconds(10))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: "\(spec.host):\(spec.port)")
                    headers.add(name: "Content-Length", value: "0")
                    if !spec.cookie.isEmpty { headers.add(name: "Cookie", value: spec.cookie) }
                    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: spec.path, headers: headers)
                    let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade>(maxFrameSize: 1 << 20) { channel, _ in
                        channel.eventLoop.makeCompletedFuture {
                            let handler = ChatLoadClientHandler(
                                counters: counters.value, sample: spec.sample, ready: ready, name: name, deliveryPrefix: deliveryPrefix)
                            try channel.pipeline.syncOperations.addHandler(handler)
                            return .upgraded
                        }
                    }
                    let configuration = NIOTypedHTTPClientUpgradeConfiguration<Upgrade>(
                        upgradeRequestHead: head,
                        upgraders: [upgrader],
                        notUpgradingCompletionHandler: { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(DeclinedUpgradeHandler(ready: ready, name: name))
                                return .declined
                            }
                        }
                    )
                    // The server sends the Engine.IO open packet right behind its 101: keep those bytes.
                    var pipeline = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: configuration)
                    pipeline.leftOverBytesStrategy = .forwardBytes
                    let result = try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: pipeline)
                    result.whenFailure { error in ready.fail(ChatLoadProtocolError("\(name): the WebSocket upgrade failed: \(error)")) }
                }
            }
            .connect(host: spec.host, port: spec.port)
    }
}
