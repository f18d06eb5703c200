import ChatApp
import SocketIO
import StickyProxy
import Supervisor

/// One fuzz target: a name (`make fuzz FUZZ=http-request`, the corpus folder
/// Tests/FuzzTests/Corpus/<name>) and the function that takes the bytes.
package struct FuzzTarget: Sendable {
    package let name: String
    /// Who sends such bytes, for the docs and the fuzzer's first line.
    package let source: String
    package let run: @Sendable (UnsafeRawBufferPointer) -> Void
}

/// Every fuzz target: the parsers that read what clients, apps and Redis send.
package enum FuzzTargets {
    package static let all: [FuzzTarget] = [
        FuzzTarget(name: "http-request", source: "a client, to sticky-proxy", run: StickyProxyFuzzing.requestHead),
        FuzzTarget(name: "http-response", source: "an app, to sticky-proxy", run: StickyProxyFuzzing.responseHead),
        FuzzTarget(name: "request-smuggling", source: "a client, through sticky-proxy to an app", run: AppParserDifferential.check),
        FuzzTarget(name: "response-splitting", source: "an app, through sticky-proxy to a client", run: ClientParserDifferential.check),
        FuzzTarget(name: "chunked-body", source: "a client or an app, to sticky-proxy", run: StickyProxyFuzzing.chunkedBody),
        FuzzTarget(name: "header-values", source: "cookies and dates, to sticky-proxy", run: StickyProxyFuzzing.headerValues),
        FuzzTarget(name: "route-registration", source: "the admin API, to sticky-proxy", run: StickyProxyFuzzing.routeRegistration),
        FuzzTarget(name: "routes-file", source: "a routes file, to sticky-proxy", run: StickyProxyFuzzing.routesFile),
        FuzzTarget(name: "json", source: "a Socket.IO client, to chat-node", run: SocketIOFuzzing.json),
        FuzzTarget(name: "engineio", source: "an Engine.IO client, to chat-node", run: SocketIOFuzzing.engine),
        FuzzTarget(name: "socketio", source: "a Socket.IO client, to chat-node", run: SocketIOFuzzing.socket),
        FuzzTarget(name: "base64", source: "a long-polling client, to chat-node", run: SocketIOFuzzing.base64),
        FuzzTarget(name: "recovery", source: "stored Socket.IO sessions, to chat-node", run: SocketIOFuzzing.recovery),
        FuzzTarget(name: "chat-input", source: "a chat user, to chat-node", run: ChatAppFuzzing.chatInput),
        FuzzTarget(name: "session-cookie", source: "a browser, to chat-node", run: ChatAppFuzzing.sessionCookie),
        FuzzTarget(name: "redis-values", source: "Redis, to chat-node", run: ChatAppFuzzing.redisValues),
        FuzzTarget(name: "environment", source: "the environment, to chat-node", run: ChatAppFuzzing.environment),
        FuzzTarget(name: "cluster-config", source: "a cluster config file, to cluster", run: SupervisorFuzzing.clusterConfig),
        FuzzTarget(name: "control-request", source: "the control socket, to a running cluster", run: SupervisorFuzzing.controlRequest),
        FuzzTarget(name: "login-page", source: "an app's login page, to cluster users", run: SupervisorFuzzing.loginPage),
    ]

    package static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}
