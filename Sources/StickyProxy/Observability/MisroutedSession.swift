import CloudFoundry

/// The symptom this lab exists to show, seen from the router: an Engine.IO (Socket.IO) request that
/// names a session (`sid=`) reached, without affinity, an instance that does not have the session,
/// which answered 400 ("Session ID unknown", python-socketio's "Invalid session"). gorouter says
/// nothing about it; sticky-proxy says what happened and why, whatever the app, at most once every
/// few seconds (`ThrottledLog`). Also when the request was pinned to an instance this router never
/// had: the signature of a second router on the client's path (section 5 of
/// cloud-foundry-behaviour.md), which overwrites the cookie with its own instances'. Pure.
public enum MisroutedSession {
    /// The session id of an Engine.IO request target (`/socket.io/?EIO=4&transport=polling&sid=X`): the
    /// `sid` query parameter of a request that also has `EIO`; nil for any other request.
    public static func sessionID(inTarget target: String) -> Substring? {
        guard let question = target.firstIndex(of: "?") else { return nil }
        var sid: Substring?
        var isEngineIO = false
        for parameter in target[target.index(after: question)...].split(separator: "&") {
            if parameter.hasPrefix("EIO=") {
                isEngineIO = true
            } else if parameter.hasPrefix("sid="), parameter.count > 4 {
                sid = parameter.dropFirst(4)
            }
        }
        return isEngineIO ? sid : nil
    }

    /// What was asked and what came of it.
    public struct Exchange: Sendable {
        public var target: String
        public var status: Int
        public var decision: RoutingDecisionKind?
        public var isUpgrade: Bool
        /// The instance that answered: its index and GUID, as the access log names them.
        public var instanceIndex: String
        public var instanceID: String
        /// The instance the request was pinned to, if any.
        public var pinnedInstanceID: String?
        /// The pinned instance was never registered with this router since it started (set by the
        /// router, which knows; false when it cannot tell).
        public var pinnedInstanceNeverRegistered = false
        /// How long this router has been running, for the text.
        public var routerUptime: Duration = .zero

        public init(
            target: String, status: Int, decision: RoutingDecisionKind?, isUpgrade: Bool, instanceIndex: String, instanceID: String,
            pinnedInstanceID: String? = nil
        ) {
            self.target = target
            self.status = status
            self.decision = decision
            self.isUpgrade = isUpgrade
            self.instanceIndex = instanceIndex
            self.instanceID = instanceID
            self.pinnedInstanceID = pinnedInstanceID
        }

        /// A fallback away from an instance this router never had, which only a cookie set by
        /// someone else explains.
        var pinnedElsewhere: Bool { decision == .fallbackInstanceGone && pinnedInstanceNeverRegistered && pinnedInstanceID != nil }
    }

    /// Whether the exchange is the symptom (no text is built): a 400 from the app to an Engine.IO
    /// request with a session id that no affinity sent where it was. A sticky hit, a fallback after the
    /// pinned instance went away, a retry, and `ip-hash` (where the address decides) are not this; a
    /// fallback away from an instance this router never had is (`Exchange.pinnedElsewhere`).
    public static func isSymptom(_ exchange: Exchange, affinity: AffinityMode) -> Bool {
        misroutedSessionID(exchange, affinity: affinity) != nil
    }

    /// The session id of the exchange when it is the symptom, else nil.
    private static func misroutedSessionID(_ exchange: Exchange, affinity: AffinityMode) -> Substring? {
        guard exchange.status == 400, affinity != .ipHash,
            exchange.decision == .balanced || exchange.decision == .newSession || exchange.pinnedElsewhere
        else {
            return nil
        }
        return sessionID(inTarget: exchange.target)
    }

    /// The line to log, or nil when the exchange is not the symptom (`isSymptom`).
    public static func hint(
        for exchange: Exchange, affinity: AffinityMode, webSocketAffinity: Bool, stickyCookieNames: [String], haproxyCookieName: String
    ) -> String? {
        guard let sid = misroutedSessionID(exchange, affinity: affinity) else { return nil }
        let transport = exchange.isUpgrade ? "WebSocket upgrade" : "long-polling request"
        if exchange.pinnedElsewhere, let pinned = exchange.pinnedInstanceID {
            let cookie = affinity == .haproxy ? haproxyCookieName : "__VCAP_ID__"
            return "An Engine.IO \(transport) for session \(sid) was pinned by its \(cookie) cookie to instance '\(pinned)', which no "
                + "instance registered with this router since it started \(DurationText.format(exchange.routerUptime)) ago has had, "
                + "so it fell back to instance \(exchange.instanceIndex) (\(exchange.instanceID)), and the app answered 400: that instance "
                + "does not have the session (\"Session ID unknown\"). Another router on this client's path also routes with \(cookie) "
                + "(a second Cloud Foundry router in front of this one, or an app behind it that forwards through a router of its own, "
                + "such as an API gateway): each sets the cookie to one of its own instances, the other takes it for an instance that "
                + "is gone and overwrites it, and every other request lands on any instance. Let only one of them use the cookie: a load "
                + "balancer in front can pin with a cookie of its own (HAProxy's, nginx's); an app in front should not pass the inner "
                + "router's \(cookie) on to the browser, or should reach the app another way (for example container-to-container "
                + "networking)."
        }
        let what =
            "An Engine.IO \(transport) for session \(sid) reached instance \(exchange.instanceIndex) (\(exchange.instanceID)) "
            + "without affinity (routing_decision \(exchange.decision?.rawValue ?? "-")), and the app answered 400: "
            + "that instance does not have the session (\"Session ID unknown\"). "
        let why: String
        switch affinity {
        case .none:
            why = "sticky-proxy runs with affinity none, so every request is balanced: use --affinity cf (the default), haproxy or ip-hash"
        case .cf where exchange.isUpgrade && !webSocketAffinity:
            why =
                "WebSocket upgrades are routed without affinity here (--websocket-affinity off, Cloud Foundry before 2024): "
                + "the upgrade of a session opened over long-polling lands anywhere; let clients connect over WebSocket only, "
                + "or turn WebSocket affinity back on"
        case .cf:
            let names = stickyCookieNames.joined(separator: " or ")
            let first = stickyCookieNames.first ?? "JSESSIONID"
            why =
                "The request carried no \(names) cookie with __VCAP_ID__: Cloud Foundry's router pins a client only after the app's "
                + "response sets \(names) (the router then adds __VCAP_ID__), and only if the client sends both back. "
                + "Make the app set a \(first) cookie (any value will do; Socket.IO servers can name their session cookie: "
                + "cookie=\"\(first)\" in python-socketio, cookie: { name: \"\(first)\" } in Node) and the client keep cookies, "
                + "or let clients connect over WebSocket only"
        case .haproxy:
            why =
                "The request carried no \(haproxyCookieName) cookie, which sticky-proxy inserts on every response: "
                + "the client does not send cookies back"
        case .ipHash:
            return nil
        }
        return what + why + "."
    }
}
