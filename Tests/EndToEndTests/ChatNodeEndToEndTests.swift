import Foundation
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// chat-node as built (`.build/debug/chat-node`), two instances on one real redis-server, driven over
/// plain HTTP: login, Engine.IO long-polling with Socket.IO packets, kill -9 and recovery on the other
/// instance. (The Python tests in Tests/chat cover the same paths with python-socketio in depth.)
@Suite(.serialized) struct ChatNodeEndToEndTests {
    @Test func twoInstancesShareOneOrderAndAKilledInstancesClientRecoversOnTheOther() async throws {
        let redis = try await RedisServer(appendOnly: true)
        let one = try await ChatNodeProcess.start(redisURL: redis.url, index: 0)
        let two = try await ChatNodeProcess.start(redisURL: redis.url, index: 1)
        defer {
            one.kill()
            two.kill()
        }
        let ada = try await PollingChatClient.login(name: "ada", at: one.url)
        let bob = try await PollingChatClient.login(name: "bob", at: two.url)
        try await ada.connect(to: one.url)
        try await bob.connect(to: two.url)

        var sent: [String] = []
        for index in 0..<5 {
            let adaAck = try await ada.send("ada \(index)", id: "a\(index)")
            let bobAck = try await bob.send("bob \(index)", id: "b\(index)")
            #expect(adaAck["ok"] as? Bool == true)
            #expect(bobAck["ok"] as? Bool == true)
            sent += ["a\(index)", "b\(index)"]
        }
        try await ada.receive(until: sent)
        try await bob.receive(until: sent)
        #expect(ada.messageIDs == bob.messageIDs)
        #expect(Set(ada.messageIDs) == Set(sent))

        one.kill()
        let missed = ["m0", "m1", "m2"]
        for id in missed { _ = try await bob.send("while ada's instance is dead", id: id) }
        let recovered = try await ada.connect(to: two.url)
        #expect(recovered, "ada's session was not recovered on the other instance")
        try await ada.receive(until: sent + missed)
        #expect(ada.duplicates.isEmpty)
        #expect(ada.offsets == ada.offsets.sorted { StreamOrder.less($0, $1) })
        #expect(ada.messageIDs.suffix(3) == missed[...])
        let back = try await ada.send("back, still ada", id: "a-back")
        #expect(back["ok"] as? Bool == true)
        try await bob.receive(until: sent + missed + ["a-back"])
        #expect(bob.lines.last?["user"] as? String == "ada")
    }

    @Test func redisUnreachableAtStartIsAClearErrorAndExitCode() async throws {
        let port = try FreePort.allocate()
        let result = try await ChatNodeProcess.run(environment: ["PORT": "\(try FreePort.allocate())", "REDIS_URL": "redis://127.0.0.1:\(port)"])
        #expect(result.status == 4)
        #expect(result.standardError.contains("cannot reach Redis at redis://127.0.0.1:\(port)"))
    }
}

/// Stream ids compare numerically.
enum StreamOrder {
    static func less(_ lhs: String, _ rhs: String) -> Bool {
        let a = lhs.split(separator: "-").compactMap { UInt64($0) }
        let b = rhs.split(separator: "-").compactMap { UInt64($0) }
        return a.lexicographicallyPrecedes(b)
    }
}

/// A chat-node process on a free loopback port.
final class ChatNodeProcess: @unchecked Sendable {
    let process: Process
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }

    private init(process: Process, port: Int) {
        self.process = process
        self.port = port
    }

    static func executable() throws -> URL {
        var candidates: [URL] = []
        if let bin = ProcessInfo.processInfo.environment["STICKYLAB_BIN"] { candidates.append(URL(fileURLWithPath: bin)) }
        // The test bundle sits in the build folder next to the executables.
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        candidates.append(testBinary.deletingLastPathComponent())
        candidates.append(testBinary.deletingLastPathComponent().deletingLastPathComponent())
        for folder in candidates {
            let path = folder.appendingPathComponent("chat-node")
            if FileManager.default.isExecutableFile(atPath: path.path) { return path }
        }
        throw TestSupportError("chat-node is not built next to the tests; run `swift build --build-tests` (or set STICKYLAB_BIN)")
    }

    static func start(redisURL: String, index: Int) async throws -> ChatNodeProcess {
        let port = try FreePort.allocate()
        let process = Process()
        process.executableURL = try executable()
        process.environment = TestRun.environment([
            "PORT": "\(port)", "REDIS_URL": redisURL, "SESSION_SECRET": "e2e-secret", "CF_INSTANCE_INDEX": "\(index)",
            "LOG_LEVEL": "warning",
        ])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let node = ChatNodeProcess(process: process, port: port)
        try await waitUntil("chat-node on port \(port) to be healthy", timeout: .seconds(30)) {
            guard process.isRunning else { throw TestSupportError("chat-node exited with \(process.terminationStatus)") }
            return (try? await HTTP.get("\(node.url)/health").status) == 200
        }
        return node
    }

    /// Runs chat-node to completion (it is expected to exit by itself).
    static func run(environment: [String: String]) async throws -> (status: Int32, standardError: String) {
        let process = Process()
        process.executableURL = try executable()
        process.environment = TestRun.environment(environment)
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        try await waitUntil("chat-node to exit", timeout: .seconds(60)) { !process.isRunning }
        let output = String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self)
        return (process.terminationStatus, output)
    }

    /// kill -9.
    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }
}

enum HTTP {
    static let session: URLSession = {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpShouldSetCookies = false
        configuration.httpCookieAcceptPolicy = .never
        configuration.timeoutIntervalForRequest = 30
        return URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
    }()

    static func get(_ url: String, headers: [String: String] = [:]) async throws -> (status: Int, body: String, headers: [String: String]) {
        try await request("GET", url, headers: headers, body: nil)
    }

    static func request(
        _ method: String, _ url: String, headers: [String: String], body: Data?
    ) async throws -> (
        status: Int, body: String, headers: [String: String]
    ) {
        guard let target = URL(string: url) else { throw TestSupportError("bad URL \(url)") }
        var request = URLRequest(url: target)
        request.httpMethod = method
        request.httpBody = body
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await session.data(for: request)
        guard let http = response as? HTTPURLResponse else { throw TestSupportError("no HTTP response from \(url)") }
        var fields: [String: String] = [:]
        for (name, value) in http.allHeaderFields {
            if let name = name as? String, let value = value as? String { fields[name.lowercased()] = value }
        }
        return (http.statusCode, String(decoding: data, as: UTF8.self), fields)
    }

    final class NoRedirects: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
        func urlSession(
            _ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse, newRequest request: URLRequest,
            completionHandler: @escaping @Sendable (URLRequest?) -> Void
        ) {
            completionHandler(nil)
        }
    }
}

/// A minimal Socket.IO client over Engine.IO long-polling (enough for the test): CONNECT with a
/// session cookie and optional pid/offset, EVENT with ack, and the chat lines it receives.
final class PollingChatClient: @unchecked Sendable {
    let cookie: String
    var sid = ""
    var baseURL = ""
    var pid: String?
    var offset: String?
    var lines: [[String: Any]] = []
    var offsets: [String] = []
    var duplicates: [String] = []
    var nextAck = 1
    var acks: [Int: [String: Any]] = [:]

    var messageIDs: [String] { lines.filter { $0["action"] as? String == "message" }.compactMap { $0["id"] as? String } }

    init(cookie: String) {
        self.cookie = cookie
    }

    static func login(name: String, at url: String) async throws -> PollingChatClient {
        let response = try await HTTP.request(
            "POST", "\(url)/user", headers: ["Content-Type": "application/x-www-form-urlencoded"], body: Data("user=\(name)".utf8))
        guard response.status == 303, let setCookie = response.headers["set-cookie"] else {
            throw TestSupportError("login failed: \(response.status) \(response.body)")
        }
        return PollingChatClient(cookie: String(setCookie.prefix { $0 != ";" }))
    }

    /// Opens a session and connects; with a pid and offset from before, asks to recover. Returns
    /// whether the session was recovered (same pid).
    @discardableResult
    func connect(to url: String) async throws -> Bool {
        baseURL = url
        let open = try await HTTP.get("\(url)/socket.io/?EIO=4&transport=polling", headers: ["Cookie": cookie])
        guard open.body.hasPrefix("0"), let handshake = Self.json(String(open.body.dropFirst())) as? [String: Any],
            let sid = handshake["sid"] as? String
        else { throw TestSupportError("bad Engine.IO handshake: \(open.body)") }
        self.sid = sid
        var auth = ""
        let previous = pid
        if let pid, let offset { auth = #"{"pid":"\#(pid)","offset":"\#(offset)"}"# }
        pid = nil
        try await post("0" + auth)
        try await poll { [self] in pid != nil }
        return previous != nil && pid == previous
    }

    func send(_ text: String, id: String) async throws -> [String: Any] {
        let ack = nextAck
        nextAck += 1
        let payload = #"{"action":"message","msg":"\#(text)","id":"\#(id)"}"#
        let event = try JSONSerialization.data(withJSONObject: ["chat", payload])
        try await post("2\(ack)" + String(decoding: event, as: UTF8.self))
        try await poll { [self] in acks[ack] != nil }
        return acks[ack] ?? [:]
    }

    func receive(until ids: [String]) async throws {
        try await poll { [self] in Set(ids).isSubset(of: Set(messageIDs)) }
    }

    /// POSTs one Socket.IO packet (the Engine.IO message prefix `4` is added here).
    private func post(_ packet: String) async throws {
        let response = try await HTTP.request(
            "POST", "\(baseURL)/socket.io/?EIO=4&transport=polling&sid=\(sid)", headers: ["Cookie": cookie, "Content-Type": "text/plain"],
            body: Data(("4" + packet).utf8))
        guard response.status == 200 else { throw TestSupportError("POST failed: \(response.status) \(response.body)") }
    }

    /// Long-polls until `done` holds (each GET returns what is queued, or a ping after 25 s).
    private func poll(until done: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while !done() {
            guard ContinuousClock.now < deadline else { throw TestSupportError("timed out waiting on \(baseURL)") }
            let response = try await HTTP.get("\(baseURL)/socket.io/?EIO=4&transport=polling&sid=\(sid)", headers: ["Cookie": cookie])
            guard response.status == 200 else { throw TestSupportError("GET \(baseURL) sid \(sid) failed: \(response.status) \(response.body)") }
            for packet in response.body.split(separator: "\u{1e}") { try await handle(String(packet)) }
        }
    }

    private func handle(_ packet: String) async throws {
        if packet == "2" { return try await postPong() }
        guard packet.hasPrefix("4") else { return }
        let socketPacket = packet.dropFirst()
        if socketPacket.hasPrefix("0"), let reply = Self.json(String(socketPacket.dropFirst())) as? [String: Any] {
            pid = reply["pid"] as? String
        } else if socketPacket.hasPrefix("3") {
            let body = socketPacket.dropFirst()
            let digits = body.prefix { $0.isNumber }
            if let id = Int(digits), let args = Self.json(String(body.dropFirst(digits.count))) as? [Any], let ack = args.first as? [String: Any] {
                acks[id] = ack
            }
        } else if socketPacket.hasPrefix("2"), let args = Self.json(String(socketPacket.dropFirst())) as? [Any] {
            if let last = args.last as? String, args.count > 1 { offset = last }
            guard args.first as? String == "chat", args.count == 3, let text = args[1] as? String, let id = args[2] as? String,
                let line = Self.json(text) as? [String: Any]
            else { return }
            if offsets.contains(id) {
                duplicates.append(id)
            } else {
                offsets.append(id)
                lines.append(line)
            }
        }
    }

    private func postPong() async throws {
        let response = try await HTTP.request(
            "POST", "\(baseURL)/socket.io/?EIO=4&transport=polling&sid=\(sid)", headers: ["Cookie": cookie], body: Data("3".utf8))
        _ = response
    }

    static func json(_ text: String) -> Any? {
        try? JSONSerialization.jsonObject(with: Data(text.utf8))
    }
}
