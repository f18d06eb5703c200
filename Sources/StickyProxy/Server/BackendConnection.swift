import NIOCore

/// What a backend connection reports to the client connection it currently serves.
protocol BackendConnectionOwner: AnyObject {
    func backendRead(_ buffer: ByteBuffer, from connection: BackendHandler)
    func backendReadComplete(from connection: BackendHandler)
    func backendClosed(_ connection: BackendHandler, error: (any Error)?)
    func backendWritabilityChanged(_ connection: BackendHandler)
    /// False while the client cannot take more bytes: the backend stops reading.
    var acceptsResponseBytes: Bool { get }
}

/// The only handler of a connection to a backend: raw bytes. Connections live in the event loop's
/// `BackendPool` between requests; while serving a request (or a tunnel), events go to its `owner`.
final class BackendHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The endpoint's counters, held so that the pool key below stays unique while this connection lives.
    let endpointStats: EndpointStats
    /// The pool key: the endpoint instance (its counters object), so that a lookup hashes no string.
    let key: ObjectIdentifier
    /// Strong while serving; cleared when the exchange ends (no cycle outlives it).
    var owner: (any BackendConnectionOwner)?
    unowned let pool: BackendPool
    var idleSince: NIODeadline = .now()
    var inPool = false
    private(set) var context: ChannelHandlerContext?
    private var pendingRead = false
    private var closedError: (any Error)?

    init(endpointStats: EndpointStats, pool: BackendPool) {
        self.endpointStats = endpointStats
        self.key = ObjectIdentifier(endpointStats)
        self.pool = pool
    }

    var isActive: Bool { context?.channel.isActive ?? false }
    var isWritable: Bool { context?.channel.isWritable ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func send(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>? = nil) {
        guard let context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func flush() {
        context?.flush()
    }

    func close() {
        context?.close(promise: nil)
    }

    /// Closes once everything written so far went out (end of a tunnel).
    func closeAfterWrites() {
        guard let context else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: promise)
        promise.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// The client can take bytes again.
    func resumeReading() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let owner else {
            // An idle connection has nothing to say; whatever it sends makes it unusable.
            context.close(promise: nil)
            return
        }
        owner.backendRead(unwrapInboundIn(data), from: self)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.backendReadComplete(from: self)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.backendWritabilityChanged(self)
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let owner, !owner.acceptsResponseBytes {
            pendingRead = true
        } else {
            context.read()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closedError = error
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        pool.removed(self)
        let owner = self.owner
        self.owner = nil
        owner?.backendClosed(self, error: closedError)
        context.fireChannelInactive()
    }
}

/// Keep-alive connections to backends of one event loop, by endpoint address. Only touched on its loop.
final class BackendPool {
    private var idle: [ObjectIdentifier: [BackendHandler]] = [:]
    let maxIdlePerBackend: Int

    init(maxIdlePerBackend: Int) {
        self.maxIdlePerBackend = maxIdlePerBackend
    }

    /// The most recently used idle connection to `key`, if any. (Arrays are changed in place: no copy.)
    func take(_ key: ObjectIdentifier) -> BackendHandler? {
        while let connection = idle[key]?.popLast() {
            connection.inPool = false
            if connection.isActive { return connection }
        }
        return nil
    }

    /// Puts a connection whose exchange completed back, or closes it when the pool is full.
    func release(_ connection: BackendHandler, now: NIODeadline) {
        connection.owner = nil
        guard connection.isActive, maxIdlePerBackend > 0, (idle[connection.key]?.count ?? 0) < maxIdlePerBackend else {
            connection.close()
            return
        }
        connection.inPool = true
        connection.idleSince = now
        idle[connection.key, default: []].append(connection)
    }

    /// A pooled connection closed.
    func removed(_ connection: BackendHandler) {
        guard connection.inPool else { return }
        connection.inPool = false
        idle[connection.key]?.removeAll { $0 === connection }
    }

    /// Closes connections idle for longer than `timeout`.
    func closeIdle(olderThan timeout: TimeAmount, now: NIODeadline) {
        for connections in idle.values {
            for connection in connections where connection.idleSince + timeout < now {
                connection.close()
            }
        }
    }

    func closeAll() {
        for connections in idle.values {
            for connection in connections { connection.close() }
        }
    }

    var idleCount: Int { idle.values.reduce(0) { $0 + $1.count } }
}
