import CloudFoundry
import NIOCore

/// Entry points for coverage-guided fuzzing (`make fuzz`, docs/fuzzing.md) and for replaying its
/// corpus in the tests (FuzzCorpusTests). Each takes arbitrary bytes, as a client or an app could
/// send them, and must return without crashing. Where there is a property to hold (a head the proxy
/// forwards must parse again, with the same framing; a body read in pieces is read as in one go), a
/// violation stops the process with `preconditionFailure`, which the fuzzer reports like a crash.
package enum StickyProxyFuzzing {
    /// A client's request: find the head, parse it, rewrite it as gorouter does (with each affinity
    /// mode), check that the app would read the same request, then frame the body that follows.
    package static func requestHead(_ data: UnsafeRawBufferPointer) {
        let buffer = ByteBuffer(bytes: data)
        guard let (head, length) = parsedHead(buffer, isRequest: true) else { return }
        _ = (head.method, head.target, head.hostValue, head.hasIdempotentMethod, head.keepAlive, head.isUpgradeRequest)
        for field in head.fields { _ = (head.isNamedInConnection(field), head.values(field.kind), head.firstValue(field.kind)) }
        let endpoint = Endpoint(host: "127.0.0.1", port: 8081, appID: "app", instanceID: "guid-1", instanceIndex: "0")
        let policies: [any AffinityPolicy] = [
            CFAffinity(), CFAffinity(stickySessionsForAuthNegotiate: true), NoAffinity(), HAProxyAffinity(), IPHashAffinity(),
        ]
        // A request without a host is the router's `empty_host`, never forwarded.
        for policy in policies where !head.hostValue.isEmpty {
            var (forwarded, request) = RequestRewriter.rewrite(
                head, clientIP: "127.0.0.1", vcapRequestID: "id", requestStartMillis: 1, policy: policy)
            RequestRewriter.writeInstanceHeaders(for: endpoint, into: &forwarded)
            _ = policy.pin(
                for: AffinityRequest(
                    cookieHeaders: request.cookieHeaders, clientAddress: "127.0.0.1", isUpgrade: request.isUpgrade,
                    negotiatesAuthentication: request.negotiatesAuthentication))
            let again = reparsed(forwarded, isRequest: true, "the request forwarded to the app")
            precondition(again.method == head.method && again.target == head.target, "the forwarded request line changed")
            precondition(again.hostValue == head.hostValue, "the app would see another host than the one that routed")
            precondition(again.contentLength == head.contentLength && again.chunked == head.chunked, "the forwarded request's framing changed")
        }
        var framer = BodyFramer(head.requestBodyFraming)
        var body = buffer
        body.moveReaderIndex(forwardBy: length)
        body.withUnsafeReadableBytes { raw in _ = try? framer.consume(raw) }
    }

    /// An app's response: parse it, frame and rewrite it for each kind of client, with the affinity
    /// cookies each mode adds (which reads the app's `Set-Cookie` lines), and check that the client
    /// would read the same status.
    package static func responseHead(_ data: UnsafeRawBufferPointer) {
        let buffer = ByteBuffer(bytes: data)
        guard let (head, length) = parsedHead(buffer, isRequest: false) else { return }
        let setCookies = head.values(.setCookie)
        for cookie in setCookies {
            if let parsed = SetCookie(header: cookie) {
                _ = (parsed.isDeletion(nowSecondsSince1970: 1_700_000_000), parsed.headerValue)
            }
        }
        let policies: [any AffinityPolicy] = [
            CFAffinity(), CFAffinity(secureCookies: true, stickySessionsForAuthNegotiate: true), NoAffinity(), HAProxyAffinity(), IPHashAffinity(),
        ]
        for policy in policies {
            for pin in [AffinityPin.none, .instance("guid-1"), .required("guid-2")] {
                let affinity = policy.response(
                    AffinityResponse(
                        pin: pin, servedInstanceID: "guid-2", servedAddress: "127.0.0.1:8081", setCookieHeaders: setCookies, contextPath: "/",
                        isUpgrade: false, nowSecondsSince1970: 1_700_000_000, negotiatesAuthentication: head.negotiatesAuthentication))
                for (isHead, minor, keepAlive) in [(false, 1, true), (true, 1, true), (false, 0, false), (false, 0, true)] {
                    let framing = ResponseRewriter.framing(
                        of: head, requestMethodIsHead: isHead, clientMinorVersion: minor, clientKeepAlive: keepAlive)
                    let rewritten = ResponseRewriter.rewrite(
                        head, response: framing, clientMinorVersion: minor, vcapRequestID: "id", affinity: affinity)
                    let again = reparsed(rewritten, isRequest: false, "the response sent to the client")
                    precondition(again.statusCode == head.statusCode, "the status sent to the client changed")
                }
            }
        }
        _ = ResponseRewriter.informational(head, clientMinorVersion: 1)
        let framing = ResponseRewriter.framing(of: head, requestMethodIsHead: false, clientMinorVersion: 1, clientKeepAlive: true)
        var framer = BodyFramer(framing.backendFraming)
        var body = buffer
        body.moveReaderIndex(forwardBy: length)
        body.withUnsafeReadableBytes { raw in _ = try? framer.consume(raw) }
    }

    /// A chunked body: read in one go, and in pieces cut where the first bytes say; both readings must
    /// agree on where the body ends, on its payload, and on whether it is malformed.
    package static func chunkedBody(_ data: UnsafeRawBufferPointer) {
        func read(cuts: [Int]) -> (consumed: Int, payload: [UInt8], failed: Bool, complete: Bool) {
            var framer = BodyFramer(.chunked)
            var payload: [UInt8] = []
            var consumed = 0
            var start = 0
            for end in cuts + [data.count] where end >= start {
                let piece = UnsafeRawBufferPointer(rebasing: data[start..<end])
                do throws(BodyFramer.Failure) {
                    let used = try framer.consume(piece) { range in payload.append(contentsOf: piece[range]) }
                    consumed += used
                    if used < piece.count || framer.isComplete { return (consumed, payload, false, framer.isComplete) }
                } catch {
                    return (consumed, payload, true, false)
                }
                start = end
            }
            return (consumed, payload, false, framer.isComplete)
        }
        let whole = read(cuts: [])
        let cuts = data.prefix(4).map { Int($0) }.reduce(into: [Int]()) { cuts, step in cuts.append(min(data.count, (cuts.last ?? 0) + step)) }
        let pieces = read(cuts: cuts)
        precondition(whole.failed == pieces.failed, "a chunked body is malformed in one reading and not in the other")
        if !whole.failed {
            precondition(whole.complete == pieces.complete, "a chunked body ends in one reading and not in the other")
            precondition(whole.payload == pieces.payload, "a chunked body's payload differs between readings")
            if whole.complete { precondition(whole.consumed == pieces.consumed, "a chunked body's end differs between readings") }
        }
    }

    /// Cookie and other header values an app or a client controls.
    package static func headerValues(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        _ = RequestCookies.value(named: "JSESSIONID", in: text)
        _ = RequestCookies.value(named: "__VCAP_ID__", in: [text, text])
        _ = RequestCookies.containsAny(of: ["JSESSIONID", "SERVERID"], in: [text])
        let removed = RequestCookies.removing(named: "SERVERID", from: text)
        if let removed {
            precondition(RequestCookies.value(named: "SERVERID", in: removed) == nil, "a removed cookie is still there")
        }
        if RequestCookies.value(named: "SERVERID", in: text) == nil {
            precondition(removed == text, "a header without the cookie (as the request's pin reads it) was changed")
        }
        if let cookie = SetCookie(header: text) {
            _ = (cookie.isDeletion(nowSecondsSince1970: 0), cookie.headerValue)
        }
        if let seconds = HTTPDate.parse(text), VCAPIDMeta.writableDates.contains(seconds) {
            precondition(HTTPDate.parse(HTTPDate.format(seconds)) == seconds, "a date written back reads as another")
        }
        // A client's __VCAP_ID_META__ (this text as its value, or its whole Cookie header) restored into
        // the __VCAP_ID__ of a fallback: one well-formed cookie, whatever the client sent.
        for cookieHeader in [text, "JSESSIONID=s; __VCAP_ID__=gone; __VCAP_ID_META__=" + text] {
            let fallback = CFAffinity().response(
                AffinityResponse(
                    pin: .instance("gone"), servedInstanceID: "guid-2", servedAddress: "127.0.0.1:8081", setCookieHeaders: [], contextPath: "/",
                    isUpgrade: false, nowSecondsSince1970: 1_700_000_000, requestCookieHeaders: [cookieHeader]))
            precondition(fallback.setCookies.count == 1, "a fallback sets one __VCAP_ID__")
            let written = fallback.setCookies[0]
            precondition(!written.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }), "a control byte in the Set-Cookie written")
            precondition(SetCookie(header: written)?.name == "__VCAP_ID__", "the Set-Cookie written does not read back")
        }
        _ = AppInstanceTarget(header: text)
        _ = CookieName.isValid(text)
    }

    /// A registration posted to the admin API (by the cluster, a script, or someone with curl): decided
    /// on, then applied to a routing table, looked up, listed, pruned and unregistered.
    package static func routeRegistration(_ data: UnsafeRawBufferPointer) {
        let outcome = AdminAPI(token: "t").route(
            method: .POST, uri: "/routes/register", authorization: "Bearer t", body: ByteBuffer(bytes: data), routes: { RoutingTable() })
        guard case .register(let registration) = outcome else { return }
        var table = RoutingTable()
        table.register(registration, now: .uptimeNanoseconds(1_000_000_000), wallClock: 1_700_000_000)
        for uri in registration.uris { _ = table.lookup(host: uri, path: "/") }
        _ = AdminAPI.listing(table, now: .uptimeNanoseconds(2_000_000_000), wallNow: WallClockTime(seconds: 1_700_000_001, nanoseconds: 0))
        _ = table.prune(now: .uptimeNanoseconds(1_000_000_000_000))
        table.register(registration, now: .uptimeNanoseconds(1_000_000_000), wallClock: 1_700_000_000)
        _ = table.unregister(registration, now: .uptimeNanoseconds(2_000_000_000))
        // A table that keeps a route without endpoints (empty_pool_timeout): kept, then deleted.
        var keeping = RoutingTable(emptyPoolTimeout: .seconds(10))
        keeping.register(registration, now: .uptimeNanoseconds(1_000_000_000), wallClock: 1_700_000_000)
        _ = keeping.unregister(registration, now: .uptimeNanoseconds(2_000_000_000))
        _ = AdminAPI.listing(keeping, now: .uptimeNanoseconds(3_000_000_000), wallNow: WallClockTime(seconds: 1_700_000_002, nanoseconds: 0))
        _ = keeping.prune(now: .uptimeNanoseconds(13_000_000_000))
        precondition(keeping.isEmpty, "an empty route outlived empty_pool_timeout")
    }

    /// A routes file (`--routes-file`, YAML or JSON), as someone wrote it: read, then every route put
    /// in a routing table as a static route, looked up and listed.
    package static func routesFile(_ data: UnsafeRawBufferPointer) {
        let text = String(decoding: data, as: UTF8.self)
        let routes: [RouteRegistration]
        do {
            routes = try RoutesFile.parse(text)
        } catch {
            _ = "\(error)"
            return
        }
        var table = RoutingTable()
        for route in routes { table.register(route, now: .uptimeNanoseconds(1_000_000_000), wallClock: 1_700_000_000, isStatic: true) }
        for uri in routes.flatMap(\.uris).map(RouteURI.init) where !uri.host.isEmpty && !uri.host.contains(":") {
            precondition(table.lookup(host: uri.host, path: uri.contextPath) != nil, "a static route is not found: \(uri)")
        }
        _ = AdminAPI.listing(table, now: .uptimeNanoseconds(2_000_000_000), wallNow: WallClockTime(seconds: 1_700_000_001, nanoseconds: 0))
        precondition(table.prune(now: .uptimeNanoseconds(1_000_000_000_000)).isEmpty, "a static route was pruned")
    }

    /// What sticky-proxy sends an app for a client's request (cf mode): the rewritten head and the body
    /// bytes that belong to the request, as they came (chunked stays chunked). nil when the proxy refuses
    /// the request. For a differential check against the app's own parser (FuzzTargets).
    package struct ForwardedRequest {
        package var bytes: ByteBuffer
        package var method: String
        package var target: String
        package var isUpgrade: Bool
        /// The body without chunk framing, as far as it came.
        package var payload: [UInt8]
        /// The body ended within the bytes (or there is none).
        package var complete: Bool
    }

    package static func forwardedRequest(_ data: UnsafeRawBufferPointer) -> ForwardedRequest? {
        let buffer = ByteBuffer(bytes: data)
        guard let (head, length) = parsedHead(buffer, isRequest: true) else { return nil }
        var (forwarded, request) = RequestRewriter.rewrite(
            head, clientIP: "127.0.0.1", vcapRequestID: "id", requestStartMillis: 1, policy: CFAffinity())
        RequestRewriter.writeInstanceHeaders(for: Endpoint(host: "127.0.0.1", port: 8081, instanceID: "guid-1"), into: &forwarded)
        // A malformed chunked body: 400, nothing more forwarded.
        guard let body = relayBody(of: buffer, after: length, framing: head.requestBodyFraming, to: &forwarded) else { return nil }
        return ForwardedRequest(
            bytes: forwarded, method: head.method, target: head.target, isUpgrade: request.isUpgrade, payload: body.payload,
            complete: body.complete)
    }

    /// What sticky-proxy sends a client (HTTP/1.1, GET) for an app's final response (cf mode, a new
    /// session): the rewritten head and the body as the proxy relays it. nil when the proxy refuses the
    /// response (502), or for 1xx and 101, which are not final. For a differential check against a
    /// client's parser (FuzzTargets).
    package struct ForwardedResponse {
        package var bytes: ByteBuffer
        package var status: Int
        /// The body without chunk framing, as far as it came.
        package var payload: [UInt8]
        /// The body ended within the bytes (or there is none); a close-delimited body ends at close.
        package var complete: Bool
        package var closeDelimited: Bool
    }

    package static func forwardedResponse(_ data: UnsafeRawBufferPointer) -> ForwardedResponse? {
        let buffer = ByteBuffer(bytes: data)
        guard let (head, length) = parsedHead(buffer, isRequest: false), head.statusCode >= 200 else { return nil }
        let framing = ResponseRewriter.framing(of: head, requestMethodIsHead: false, clientMinorVersion: 1, clientKeepAlive: true)
        let affinity = CFAffinity().response(
            AffinityResponse(
                pin: .none, servedInstanceID: "guid-2", servedAddress: "127.0.0.1:8081", setCookieHeaders: head.values(.setCookie),
                contextPath: "/", isUpgrade: false, nowSecondsSince1970: 1_700_000_000))
        var out = ResponseRewriter.rewrite(head, response: framing, clientMinorVersion: 1, vcapRequestID: "id", affinity: affinity)
        // A malformed chunked body: the client's connection is closed.
        guard let body = relayBody(of: buffer, after: length, framing: framing.backendFraming, to: &out) else { return nil }
        return ForwardedResponse(
            bytes: out, status: head.statusCode, payload: body.payload, complete: body.complete,
            closeDelimited: framing.clientFraming == .untilClose)
    }

    /// The body that follows a head of `length` bytes in `buffer`, as the proxy relays it (framing
    /// kept): its bytes appended to `out`, its payload without chunk framing, and whether it ended.
    /// nil when the body is malformed.
    static func relayBody(
        of buffer: ByteBuffer, after length: Int, framing: BodyFramer.Framing, to out: inout ByteBuffer
    ) -> (payload: [UInt8], complete: Bool)? {
        var framer = BodyFramer(framing)
        var payload: [UInt8] = []
        var body = buffer
        body.moveReaderIndex(forwardBy: length)
        let consumed = body.withUnsafeReadableBytes { raw -> Int? in
            try? framer.consume(raw) { range in payload.append(contentsOf: raw[range]) }
        }
        guard let consumed else { return nil }
        out.writeImmutableBuffer(body.getSlice(at: body.readerIndex, length: consumed)!)
        return (payload, framer.isComplete)
    }

    /// The head at the start of `buffer`, parsed, and its length; nil when it is incomplete or refused.
    /// Its end is also looked for in two reads, cut where the first byte says: both must find it at the
    /// same place.
    static func parsedHead(_ buffer: ByteBuffer, isRequest: Bool) -> (HTTPHead, Int)? {
        let cut = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self).map(Int.init) ?? 0
        guard let length = headLength(buffer, splitAt: cut), let bytes = buffer.getSlice(at: buffer.readerIndex, length: length) else {
            return nil
        }
        let head = isRequest ? try? HTTPHeadParser.parseRequest(bytes) : try? HTTPHeadParser.parseResponse(bytes)
        return head.map { ($0, length) }
    }

    /// A head the proxy sends on, parsed again as the other side would: it must parse.
    static func reparsed(_ bytes: ByteBuffer, isRequest: Bool, _ what: String) -> HTTPHead {
        do throws(HeadError) {
            return isRequest ? try HTTPHeadParser.parseRequest(bytes) : try HTTPHeadParser.parseResponse(bytes)
        } catch {
            preconditionFailure("\(what) does not parse (\(error)): \(String(buffer: bytes))")
        }
    }

    /// The head's length, found in one call and in two (the second resuming after `splitAt` bytes):
    /// both must give the same answer.
    static func headLength(_ buffer: ByteBuffer, splitAt: Int) -> Int? {
        var scanned = 0
        let whole = HTTPHeadParser.headLength(in: buffer, scanned: &scanned)
        let cut = min(splitAt, buffer.readableBytes)
        var resumed = 0
        var length = HTTPHeadParser.headLength(in: buffer.getSlice(at: buffer.readerIndex, length: cut)!, scanned: &resumed)
        if length == nil { length = HTTPHeadParser.headLength(in: buffer, scanned: &resumed) }
        precondition(length == whole, "the head's end differs when its bytes arrive in two reads")
        return whole
    }
}
