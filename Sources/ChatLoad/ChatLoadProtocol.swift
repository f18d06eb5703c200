import Foundation

/// One command of the `chat-load` control protocol: one JSON object per line on stdin, one reply per
/// line on stdout, in order. bench/bench_chat.py drives it (the step logic stays there).
enum ChatLoadCommand: Sendable, Equatable {
    /// Connects these clients (appended to the ones already open) and waits until each is a connected
    /// Socket.IO client, or fails with the first refusal.
    case open(clients: [ChatLoadClientSpec], timeoutSeconds: Double)
    /// `rate` chat messages per second in total from `senders` clients spread over the open clients,
    /// for `seconds`; replies with how many were sent.
    case send(rate: Double, seconds: Double, tag: String, senders: Int)
    /// Counters: deliveries, seconds since the last frame arrived, connections closed.
    case stats
    /// `record: true` clears the latency samples and starts recording; `false` stops and replies with
    /// the percentiles.
    case latencies(record: Bool)
    /// Closes every client.
    case close

    /// A tag or an event name: letters, digits, - and _ (nothing to escape in JSON).
    static func isName(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { $0.isASCIIAlphanumeric || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }
    }

    /// Parses one line; the error message says what is wrong with it.
    static func parse(_ line: String) throws(ChatLoadProtocolError) -> ChatLoadCommand {
        let raw: RawCommand
        do {
            raw = try JSONDecoder().decode(RawCommand.self, from: Data(line.utf8))
        } catch {
            throw ChatLoadProtocolError("not a JSON command object (\(error)); expected e.g. {\"cmd\":\"stats\"}")
        }
        switch raw.cmd {
        case "open":
            guard let clients = raw.clients else { throw ChatLoadProtocolError("open needs \"clients\": [{host, port, path, cookie, sample}]") }
            for client in clients {
                guard (1...65535).contains(client.port) else {
                    throw ChatLoadProtocolError("open: port \(client.port) of \(client.host) is not a TCP port")
                }
                guard client.path.hasPrefix("/") else { throw ChatLoadProtocolError("open: path \(client.path) must start with /") }
                guard !client.cookie.utf8.contains(where: { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") }) else {
                    throw ChatLoadProtocolError("open: a cookie contains a line break")
                }
            }
            let timeout = raw.timeout ?? 120
            guard timeout > 0 else { throw ChatLoadProtocolError("open: timeout must be positive") }
            return .open(clients: clients, timeoutSeconds: timeout)
        case "send":
            guard let rate = raw.rate, rate > 0, rate.isFinite else {
                throw ChatLoadProtocolError("send needs \"rate\" > 0 (messages per second in total)")
            }
            guard let seconds = raw.seconds, seconds > 0, seconds <= 3600 else { throw ChatLoadProtocolError("send needs \"seconds\" in (0, 3600]") }
            let tag = raw.tag ?? "m"
            guard Self.isName(tag) else {
                throw ChatLoadProtocolError("send: tag \(tag) must be letters, digits, - or _")
            }
            let senders = raw.senders ?? 20
            guard senders > 0 else { throw ChatLoadProtocolError("send: senders must be positive") }
            return .send(rate: rate, seconds: seconds, tag: tag, senders: senders)
        case "stats":
            return .stats
        case "latencies":
            guard let record = raw.record else {
                throw ChatLoadProtocolError("latencies needs \"record\": true (clear and start) or false (stop and report)")
            }
            return .latencies(record: record)
        case "close":
            return .close
        default:
            throw ChatLoadProtocolError("unknown command \(raw.cmd); known: open, send, stats, latencies, close")
        }
    }

    private struct RawCommand: Decodable {
        var cmd: String
        var clients: [ChatLoadClientSpec]?
        var timeout: Double?
        var rate: Double?
        var seconds: Double?
        var tag: String?
        var senders: Int?
        var record: Bool?
    }
}

/// One client to open: where, with which session cookie (empty: none), and whether its deliveries are
/// latency samples.
struct ChatLoadClientSpec: Codable, Sendable, Equatable {
    var host: String
    var port: Int
    var path: String
    var cookie: String
    var sample: Bool

    init(host: String, port: Int, path: String, cookie: String = "", sample: Bool = false) {
        self.host = host
        self.port = port
        self.path = path
        self.cookie = cookie
        self.sample = sample
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        host = try container.decode(String.self, forKey: .host)
        port = try container.decode(Int.self, forKey: .port)
        path = try container.decodeIfPresent(String.self, forKey: .path) ?? "/socket.io/?EIO=4&transport=websocket"
        cookie = try container.decodeIfPresent(String.self, forKey: .cookie) ?? ""
        sample = try container.decodeIfPresent(Bool.self, forKey: .sample) ?? false
    }
}

public struct ChatLoadProtocolError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// One reply line. `ok: false` carries `error`; the other fields belong to the command answered.
struct ChatLoadReply: Encodable, Sendable {
    var ok = true
    var error: String?
    var opened: Int?
    var sent: Int?
    var received: Int?
    var lastReceiveAge: Double?
    var closed: Int?
    var count: Int?
    var p50Ms: Double?
    var p99Ms: Double?
    /// Messages seen by two sampled clients or more, and per message the latency of its first delivery
    /// (the common path: sender, server, Redis, back) and the time from its first to its last delivery
    /// (the fan-out: write-coalescing windows and the servers' writes to every client).
    var messages: Int?
    var firstP50Ms: Double?
    var firstP99Ms: Double?
    var spreadP50Ms: Double?
    var spreadP99Ms: Double?

    static func failure(_ message: String) -> ChatLoadReply { ChatLoadReply(ok: false, error: message) }

    enum CodingKeys: String, CodingKey {
        case ok, error, opened, sent, received, closed, count
        case lastReceiveAge = "last_receive_age"
        case p50Ms = "p50_ms"
        case p99Ms = "p99_ms"
        case messages
        case firstP50Ms = "first_p50_ms"
        case firstP99Ms = "first_p99_ms"
        case spreadP50Ms = "spread_p50_ms"
        case spreadP99Ms = "spread_p99_ms"
    }

    func line() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return #"{"ok":false,"error":"could not encode the reply"}"# }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Latency percentiles the way the bench always computed them: the sample at index n/2 and at
/// min(n-1, floor(n*0.99)) of the sorted samples.
struct LatencyPercentiles: Sendable, Equatable {
    var count: Int
    var p50Nanoseconds: Int64
    var p99Nanoseconds: Int64

    init?(samples: [Int64]) {
        guard !samples.isEmpty else { return nil }
        let ordered = samples.sorted()
        count = ordered.count
        p50Nanoseconds = ordered[ordered.count / 2]
        p99Nanoseconds = ordered[min(ordered.count - 1, Int(Double(ordered.count) * 0.99))]
    }

    var p50Milliseconds: Double { Double(p50Nanoseconds) / 1e6 }
    var p99Milliseconds: Double { Double(p99Nanoseconds) / 1e6 }
}

/// One latency sample: the send stamp of the message (which identifies it) and how long after it a
/// sampled client received it.
struct LatencySample: Sendable, Equatable {
    var stamp: Int64
    var latency: Int64
}

/// Where a latency comes from, per message: the first of its deliveries to the sampled clients, and
/// the spread from its first delivery to its last. Messages delivered to a single sampled client are
/// left out.
struct FanOutBreakdown: Sendable, Equatable {
    var messages: Int
    var first: LatencyPercentiles
    var spread: LatencyPercentiles

    init?(samples: [LatencySample]) {
        var bounds: [Int64: (first: Int64, last: Int64, count: Int)] = [:]
        for sample in samples {
            if let seen = bounds[sample.stamp] {
                bounds[sample.stamp] = (min(seen.first, sample.latency), max(seen.last, sample.latency), seen.count + 1)
            } else {
                bounds[sample.stamp] = (sample.latency, sample.latency, 1)
            }
        }
        let fannedOut = bounds.values.filter { $0.count > 1 }
        guard let first = LatencyPercentiles(samples: fannedOut.map(\.first)),
            let spread = LatencyPercentiles(samples: fannedOut.map { $0.last - $0.first })
        else { return nil }
        self.messages = fannedOut.count
        self.first = first
        self.spread = spread
    }
}

extension UInt8 {
    fileprivate var isASCIIAlphanumeric: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self)
    }
}
