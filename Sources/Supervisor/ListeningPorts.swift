import Foundation

/// The TCP sockets a process group listens on, read from /proc (Linux). Diego's port check only tries
/// `$PORT`: an app that listens on a port of its own (`app.listen(3000)`, the most common mistake when
/// an app first meets Cloud Foundry) is "never healthy" with nothing in the logs to say why. The
/// supervisor reads where such an app does listen, and says so.
public enum ListeningPorts {
    /// A listening socket: the local address as text (`127.0.0.1`, `::1`, `0.0.0.0`) and the port.
    public struct Listener: Sendable, Equatable, Hashable, CustomStringConvertible {
        public var address: String
        public var port: Int

        public init(address: String, port: Int) {
            self.address = address
            self.port = port
        }

        public var description: String { address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)" }

        /// Whether a connection to 127.0.0.1 on `port` reaches this socket.
        var acceptsLoopbackIPv4: Bool { address == "0.0.0.0" || address == "127.0.0.1" || address == "::" }
    }

    /// The LISTEN sockets of a /proc/net/tcp or /proc/net/tcp6 table, by socket inode. Lines that do
    /// not parse are skipped.
    public static func parse(procNetTCP text: String) -> [UInt64: Listener] {
        var listeners: [UInt64: Listener] = [:]
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            guard fields.count > 9, fields[3] == "0A", let inode = UInt64(fields[9]), inode != 0 else { continue }
            let local = fields[1].split(separator: ":")
            guard local.count == 2, let port = Int(local[1], radix: 16), let address = address(hex: local[0]) else { continue }
            listeners[inode] = Listener(address: address, port: port)
        }
        return listeners
    }

    /// The inode of a /proc/PID/fd link that is a socket (`socket:[12345]`), else nil.
    public static func socketInode(linkTarget: String) -> UInt64? {
        guard linkTarget.hasPrefix("socket:["), linkTarget.hasSuffix("]") else { return nil }
        return UInt64(linkTarget.dropFirst("socket:[".count).dropLast())
    }

    /// An address of /proc/net/tcp (8 hex digits) or tcp6 (32): 32-bit words in the machine's byte
    /// order, as the kernel prints them.
    static func address(hex: Substring) -> String? {
        guard hex.count == 8 || hex.count == 32 else { return nil }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let end = hex.index(index, offsetBy: 8)
            guard let word = UInt32(hex[index..<end], radix: 16) else { return nil }
            // The kernel printed the address's memory read as a host integer: the same integer's
            // memory is the address again, on any byte order.
            withUnsafeBytes(of: word) { bytes.append(contentsOf: $0) }
            index = end
        }
        if bytes.count == 4 { return bytes.map(String.init).joined(separator: ".") }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let done = bytes.withUnsafeBytes { raw in inet_ntop(AF_INET6, raw.baseAddress, &text, socklen_t(text.count)) }
        guard done != nil else { return nil }
        let address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // An IPv4-mapped address is the IPv4 one (`::ffff:127.0.0.1`).
        return address.hasPrefix("::ffff:") && address.contains(".") ? String(address.dropFirst("::ffff:".count)) : address
    }

    /// What to tell the user when the startup check of an instance assigned `port` fails while its
    /// processes listen on `listeners`; nil when there is nothing to say (it listens nowhere yet, or
    /// where the check connects).
    public static func hint(instance: String, port: Int, listeners: [Listener]) -> String? {
        guard !listeners.isEmpty else { return nil }
        let sorted = ordered(listeners)
        let onPort = sorted.filter { $0.port == port }
        if onPort.contains(where: \.acceptsLoopbackIPv4) { return nil }
        if let first = onPort.first {
            return "\(instance) listens on \(first), which the health check cannot reach: it connects to 127.0.0.1:\(port); "
                + "make the app listen on 0.0.0.0 (as on Cloud Foundry) or 127.0.0.1"
        }
        let list = sorted.map(\.description).joined(separator: ", ")
        return "\(instance) listens on \(list) but not on its port \(port) ($PORT): the health check only connects to $PORT, "
            + "so this instance will never be healthy; make the app listen on the port in $PORT (Cloud Foundry sets it, and so does cluster)"
    }

    /// The last of an app's last lines that says it could not listen because the address is in use
    /// (Node's `EADDRINUSE`, Python's `[Errno 98] Address already in use`, Go's `bind: address already
    /// in use`, Java's `BindException: Address already in use`), else nil.
    public static func addressInUseLine(in lines: [String]) -> String? {
        lines.last { line in
            let lower = line.lowercased()
            return lower.contains("address already in use") || lower.contains("eaddrinuse") || lower.contains("address in use")
        }
    }

    /// What to tell the user when `instance`, given `port`, exited after saying `line` (an address in
    /// use). On Cloud Foundry every instance has a container of its own; here they share one machine,
    /// so an app that listens on a fixed port (its own, or a second one: a debugger's, a metrics
    /// port) collides with its other instances. `others`: where the other instances listen beyond
    /// their own ports, which names the port they took.
    public static func addressInUseHint(
        instance: String, port: Int, line: String, others: [(name: String, listeners: [Listener])]
    )
        -> String
    {
        let quoted = line.count > 200 ? String(line.prefix(200)) + "..." : line
        var text =
            "\(instance) is exiting after saying that an address is already in use (\"\(quoted)\"): all instances run on this one "
            + "machine, each with a port of its own in $PORT (\(port) for this run of \(instance)), so an app that listens on a fixed "
            + "port (its own, or a second one such as a debugger's or a metrics port) collides with its other instances, "
            + "and in a rolling restart with the old process it replaces"
        let taken = others.filter { !$0.listeners.isEmpty }.sorted { $0.name < $1.name }
        if !taken.isEmpty {
            let list = taken.map { "\($0.name) on \(ordered($0.listeners).map(\.description).joined(separator: ", "))" }
            text += " (listening on ports other than their $PORT: \(list.joined(separator: "; ")))"
        }
        return text + ". Make the app listen only on the port in $PORT, or give each instance its own port for anything else"
    }

    /// Each listener once, by port then address.
    static func ordered(_ listeners: [Listener]) -> [Listener] {
        Array(Set(listeners)).sorted { ($0.port, $0.address) < ($1.port, $1.address) }
    }

    /// The listening TCP sockets of every process in process group `group`: the sockets each process
    /// holds (/proc/PID/fd) found in /proc/net/tcp and tcp6. Empty when nothing could be read.
    public static func ofProcessGroup(_ group: Int32) -> [Listener] {
        ofProcessGroups([group])[group] ?? []
    }

    /// `ofProcessGroup` for several groups, reading /proc once: group -> its listeners (a group that
    /// listens nowhere is left out).
    public static func ofProcessGroups(_ groups: Set<Int32>) -> [Int32: [Listener]] {
        var table: [UInt64: Listener] = [:]
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { continue }
            table.merge(parse(procNetTCP: text)) { first, _ in first }
        }
        guard !table.isEmpty, !groups.isEmpty, let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else {
            return [:]
        }
        var found: [Int32: Set<Listener>] = [:]
        for pid in entries.compactMap({ Int32($0) }) {
            guard let stat = ProcessTable.stat(pid), groups.contains(stat.processGroup), !stat.zombie else { continue }
            let folder = "/proc/\(pid)/fd"
            guard let fds = try? FileManager.default.contentsOfDirectory(atPath: folder) else { continue }
            for fd in fds {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(folder)/\(fd)"),
                    let inode = socketInode(linkTarget: target), let listener = table[inode]
                else { continue }
                found[stat.processGroup, default: []].insert(listener)
            }
        }
        return found.mapValues(Array.init)
    }
}
