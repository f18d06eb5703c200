import Metrics

/// The server's swift-metrics instruments (bootstrap a backend such as swift-prometheus to see them).
struct SocketIOMetrics: Sendable {
    /// Engine.IO sessions open now.
    let sessions: Meter
    /// Engine.IO sessions opened since start, by transport.
    let sessionsOpenedPolling: Counter
    let sessionsOpenedWebSocket: Counter
    /// Sockets (namespace connections) accepted and refused since start.
    let connectionsAccepted: Counter
    let connectionsRefused: Counter
    /// Connections recovered with connection state recovery.
    let connectionsRecovered: Counter
    /// Socket.IO packets received from clients and sent to them.
    let messagesReceived: Counter
    let messagesSent: Counter
    /// Sessions closed because the client was too slow to read.
    let slowClientsClosed: Counter

    init(prefix: String = "socketio") {
        sessions = Meter(label: "\(prefix)_engine_sessions")
        sessionsOpenedPolling = Counter(label: "\(prefix)_engine_sessions_opened_total", dimensions: [("transport", "polling")])
        sessionsOpenedWebSocket = Counter(label: "\(prefix)_engine_sessions_opened_total", dimensions: [("transport", "websocket")])
        connectionsAccepted = Counter(label: "\(prefix)_connections_total", dimensions: [("result", "accepted")])
        connectionsRefused = Counter(label: "\(prefix)_connections_total", dimensions: [("result", "refused")])
        connectionsRecovered = Counter(label: "\(prefix)_connections_recovered_total")
        messagesReceived = Counter(label: "\(prefix)_messages_received_total")
        messagesSent = Counter(label: "\(prefix)_messages_sent_total")
        slowClientsClosed = Counter(label: "\(prefix)_slow_clients_closed_total")
    }
}
