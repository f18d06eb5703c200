import CloudFoundry
import NIOCore
import NIOPosix
import RedisClient
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A TCP relay on 127.0.0.1 between one instance and Redis: what `cluster redis slow`, `hang` and
/// `cut` act on. Each accepted connection gets its own connection to Redis on the same event loop.
/// What the instance sends goes across as it comes; what Redis sends (replies, pub/sub messages) is
/// held per `RedisLinkFault.slow`, in order, as Toxiproxy's latency toxic does downstream: every
/// command's answer comes `latency` later. A hang holds everything, both ways, until it ends. The
/// fault is read for every chunk, so a change takes effect on the next one.
public final class RedisLinkRelay: Sendable {
    /// The port the instance is given instead of Redis's own.
    public let port: Int
    private let server: Channel
    private let shared: Shared

    /// Opens the relay on a free loopback port, forwarding to Redis at `host` and `port` (a name is
    /// resolved for each connection, as the instance itself would). `onUpstreamChange` is called when
    /// connecting to Redis starts failing or works again (read `upstreamProblem` for which).
    public static func start(
        toHost host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onUpstreamChange: @escaping @Sendable () -> Void = {}
    ) async throws
        -> RedisLinkRelay
    {
        let shared = Shared(host: host, port: port, onUpstreamChange: onUpstreamChange)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RelayHandler(shared: shared, side: .app, eventLoop: channel.eventLoop))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        guard let port = server.localAddress?.port else {
            try? await server.close()
            throw RelayError(message: "the relay's socket has no port")
        }
        return RedisLinkRelay(port: port, server: server, shared: shared)
    }

    private init(port: Int, server: Channel, shared: Shared) {
        self.port = port
        self.server = server
        self.shared = shared
    }

    /// How many connections go through it now.
    public var connectionCount: Int { shared.state.withLock { $0.pairs.count } }

    /// Why the last connection to Redis could not be made, or nil once one was made (or none tried).
    public var upstreamProblem: String? { shared.state.withLock { $0.upstreamProblem } }

    /// The bytes a hang holds now, either way, until it ends.
    public var bytesHeldByHang: Int { shared.bytesHeldByHang.load(ordering: .relaxed) }

    /// Sets the fault for the chunks to come. A hang that ends lets what it held go on, in order.
    public func apply(_ fault: RedisLinkFault?) {
        let released = shared.state.withLock { state -> [Pair] in
            let wasHung = state.fault == .hang
            state.fault = fault
            return wasHung && fault != .hang && fault != .cut ? Array(state.pairs.values) : []
        }
        for pair in released {
            for handler in pair.handlers { handler.eventLoop.execute { handler.value.release() } }
        }
    }

    /// Resets every open connection: the instance's side gets an RST, Redis sees its client leave.
    public func resetConnections() {
        let pairs = shared.state.withLock { state -> [Pair] in
            defer { state.pairs.removeAll() }
            return Array(state.pairs.values)
        }
        for pair in pairs {
            Self.reset(pair.app)
            pair.redis?.close(promise: nil)
        }
    }

    /// Stops listening and closes every connection.
    public func close() async {
        try? await server.close()
        let pairs = shared.state.withLock { state -> [Pair] in
            defer { state.pairs.removeAll() }
            return Array(state.pairs.values)
        }
        for pair in pairs {
            pair.app.close(promise: nil)
            pair.redis?.close(promise: nil)
        }
    }

    /// Closes with SO_LINGER 0: the peer gets an RST (ECONNRESET), as from a peer that went away.
    static func reset(_ channel: Channel) {
        guard let provider = channel as? SocketOptionProvider else {
            channel.close(promise: nil)
            return
        }
        provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
    }

    struct RelayError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    /// One relayed connection: the instance's side, Redis's once connected, and their handlers.
    struct Pair: Sendable {
        var app: Channel
        var redis: Channel?
        var handlers: [NIOLoopBound<RelayHandler>]
    }

    final class Shared: Sendable {
        struct State {
            var fault: RedisLinkFault?
            var pairs: [ObjectIdentifier: Pair] = [:]
            var upstreamProblem: String?

            /// Records whether connecting to Redis worked; true when that changed.
            mutating func upstream(_ problem: String?) -> Bool {
                defer { upstreamProblem = problem }
                return (upstreamProblem == nil) != (problem == nil)
            }
        }
        let host: String
        let port: Int
        let state = Mutex(State())
        let bytesHeldByHang = Atomic<Int>(0)
        let onUpstreamChange: @Sendable () -> Void
        init(host: String, port: Int, onUpstreamChange: @escaping @Sendable () -> Void) {
            self.host = host
            self.port = port
            self.onUpstreamChange = onUpstreamChange
        }

        var fault: RedisLinkFault? { state.withLock { $0.fault } }
    }
}

/// One side of a relayed connection: reads from its channel and writes to the peer's, at once, after
/// the fault's delay, or once a hang ends, never out of order; reading pauses while the peer cannot
/// take more or too much is held. Both channels of a pair are on one event loop, so the two handlers
/// never race.
final class RelayHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Side { case app, redis }

    /// Held bytes past which reading pauses, and under which it resumes.
    static let highWater = 1 << 20
    static let lowWater = 1 << 18

    private let shared: RedisLinkRelay.Shared
    private let side: Side
    private let eventLoop: EventLoop
    private var peer: Channel?
    private weak var ownChannel: Channel?
    /// The peer's handler, to tell it when this side can read again.
    private var peerHandler: RelayHandler?
    /// Bytes scheduled for the peer after a delay (slow).
    private var heldBytes = 0
    /// When the last held chunk is due: a later chunk never goes before it.
    private var lastDue = NIODeadline.uptimeNanoseconds(0)
    /// Chunks kept while the link hangs, in order, and their size.
    private var parked: [ByteBuffer] = []
    private var parkedBytes = 0
    /// The instance connected while the link hung: Redis is connected once it ends.
    private var connectWhenReleased = false
    /// This side closed while chunks were parked for its peer: the peer closes after they went on.
    private var closeWhenReleased = false
    private var pausedForHeld = false
    private var pausedForPeer = false
    private var generator = SystemRandomNumberGenerator()

    init(shared: RedisLinkRelay.Shared, side: Side, eventLoop: EventLoop) {
        self.shared = shared
        self.side = side
        self.eventLoop = eventLoop
    }

    func channelActive(context: ChannelHandlerContext) {
        ownChannel = context.channel
        guard side == .app else {
            context.fireChannelActive()
            return
        }
        let channel = context.channel
        let key = ObjectIdentifier(channel)
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        // Checked and registered at once: a cut either sees this connection or refuses it.
        let admitted = shared.state.withLock { state -> RedisLinkFault?? in
            guard state.fault != .cut else { return .none }
            state.pairs[key] = RedisLinkRelay.Pair(app: channel, redis: nil, handlers: [bound])
            return .some(state.fault)
        }
        switch admitted {
        case .none:
            RedisLinkRelay.reset(channel)
            return
        case .some(.hang):
            // A partition: the connection is made (the kernel did), and nothing answers until it ends.
            connectWhenReleased = true
        case .some:
            connectToRedis(channel)
        }
        context.fireChannelActive()
    }

    private func connectToRedis(_ channel: Channel) {
        let key = ObjectIdentifier(channel)
        let shared = self.shared
        let upstream = RelayHandler(shared: shared, side: .redis, eventLoop: eventLoop)
        upstream.peer = channel
        upstream.peerHandler = self
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        let upstreamBound = NIOLoopBound(upstream, eventLoop: eventLoop)
        ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .channelInitializer { redis in
                redis.eventLoop.makeCompletedFuture { try redis.pipeline.syncOperations.addHandler(upstreamBound.value) }
            }
            .connect(host: shared.host, port: shared.port)
            .whenComplete { result in
                let handler = loopBound.value
                switch result {
                case .success(let redis):
                    let (known, changed) = shared.state.withLock { state -> (Bool, Bool) in
                        let changed = state.upstream(nil)
                        guard state.pairs[key] != nil else { return (false, changed) }
                        state.pairs[key]?.redis = redis
                        state.pairs[key]?.handlers.append(upstreamBound)
                        return (true, changed)
                    }
                    if changed { shared.onUpstreamChange() }
                    guard known, channel.isActive else {
                        redis.close(promise: nil)
                        return
                    }
                    handler.peer = redis
                    handler.peerHandler = upstreamBound.value
                    channel.setOption(.autoRead, value: true).whenComplete { _ in channel.read() }
                case .failure(let error):
                    // Redis is down: the instance sees a connection that ends at once (a client that
                    // waits for Redis to answer, as RedisClient does, sees that it could not connect).
                    let problem = SocketErrorText.describe(error) ?? "\(error)"
                    let changed = shared.state.withLock { state -> Bool in
                        state.pairs.removeValue(forKey: key)
                        return state.upstream(problem)
                    }
                    if changed { shared.onUpstreamChange() }
                    RedisLinkRelay.reset(channel)
                }
            }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        forward(unwrapInboundIn(data))
    }

    /// Sends a chunk on to the peer as the fault says: dropped while cut (the connection is being
    /// reset), parked while the link hangs or anything is parked before it, held while slow (only
    /// what Redis sends), at once otherwise.
    private func forward(_ buffer: ByteBuffer) {
        let fault = shared.fault
        if fault == .cut { return }
        guard fault != .hang, parked.isEmpty, let peer else {
            park(buffer)
            return
        }
        let now = NIODeadline.now()
        let wanted = side == .redis ? fault.map { now + .nanoseconds($0.delay(random: generator.next()).nanosecondsClamped) } ?? now : now
        if heldBytes == 0 && wanted <= now {
            peer.writeAndFlush(buffer, promise: nil)
            if !peer.isWritable { pause(forPeer: true) }
            return
        }
        // Held (or behind a held one): due no earlier than the chunk before it.
        let due = max(wanted, lastDue + .nanoseconds(1))
        lastDue = due
        let size = buffer.readableBytes
        heldBytes += size
        if heldBytes + parkedBytes > Self.highWater { pause(forPeer: false) }
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.scheduleTask(deadline: due) {
            let handler = loopBound.value
            peer.writeAndFlush(buffer, promise: nil)
            handler.heldBytes -= size
            handler.resumeIfDrained()
        }
    }

    private func park(_ buffer: ByteBuffer) {
        parked.append(buffer)
        parkedBytes += buffer.readableBytes
        shared.bytesHeldByHang.add(buffer.readableBytes, ordering: .relaxed)
        if heldBytes + parkedBytes > Self.highWater { pause(forPeer: false) }
    }

    /// The hang ended: Redis is connected for a connection that waited, and what was parked goes on,
    /// in order, as if it had just been read (under the fault now in force).
    func release() {
        if connectWhenReleased {
            connectWhenReleased = false
            if let channel = ownChannel, channel.isActive { connectToRedis(channel) }
            return
        }
        for chunk in takeParked() { forward(chunk) }
        if closeWhenReleased, parked.isEmpty {
            closeWhenReleased = false
            closePeer()
            if side == .app, let channel = ownChannel {
                let key = ObjectIdentifier(channel)
                shared.state.withLock { _ = $0.pairs.removeValue(forKey: key) }
            }
        }
        resumeIfDrained()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // This side's channel drained: the peer may read again.
        if context.channel.isWritable, let peerHandler, peerHandler.pausedForPeer {
            peerHandler.pausedForPeer = false
            peerHandler.resumeIfFree()
        }
        context.fireChannelWritabilityChanged()
    }

    /// What the hang parked, in order, no longer counted as held.
    private func takeParked() -> [ByteBuffer] {
        let chunks = parked
        shared.bytesHeldByHang.subtract(parkedBytes, ordering: .relaxed)
        parked = []
        parkedBytes = 0
        return chunks
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !parked.isEmpty, peer != nil {
            switch shared.fault {
            case .hang?:
                // What this side sent during the hang still goes on when it ends (as TCP delivers it
                // after a partition), then the peer closes: the connection stays listed until then.
                closeWhenReleased = true
                context.fireChannelInactive()
                return
            case .cut?:
                // The connection is being reset: what it held goes nowhere.
                _ = takeParked()
            default:
                // The hang has ended and its release is on its way: what was held goes on now.
                for chunk in takeParked() { forward(chunk) }
            }
        }
        if side == .app {
            let key = ObjectIdentifier(context.channel)
            shared.state.withLock { _ = $0.pairs.removeValue(forKey: key) }
        }
        closePeer()
        context.fireChannelInactive()
    }

    /// Closes the peer once what is held for it has gone out, and lets go of it.
    private func closePeer() {
        if let peer {
            if heldBytes > 0 {
                eventLoop.scheduleTask(deadline: lastDue + .nanoseconds(1)) { peer.close(promise: nil) }
            } else {
                peer.close(promise: nil)
            }
        }
        // The two handlers refer to each other: let go.
        peer = nil
        peerHandler = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func pause(forPeer: Bool) {
        if forPeer { pausedForPeer = true } else { pausedForHeld = true }
        ownChannel?.setOption(.autoRead, value: false).whenComplete { _ in }
    }

    private func resumeIfDrained() {
        if pausedForHeld && heldBytes + parkedBytes < Self.lowWater {
            pausedForHeld = false
            resumeIfFree()
        }
    }

    private func resumeIfFree() {
        guard !pausedForHeld, !pausedForPeer, let channel = ownChannel, channel.isActive else { return }
        channel.setOption(.autoRead, value: true).whenComplete { _ in channel.read() }
    }
}
