import Foundation

/// Where the running program is: `cluster` finds chat-node and sticky-proxy next to itself, chat-node
/// its page's files and the project's client bundle.
public enum ExecutableLocation {
    /// The folder of the running executable (`/proc/self/exe` on Linux, else the first argument with
    /// its links resolved).
    public static var directory: URL {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return URL(fileURLWithPath: path).deletingLastPathComponent()
        }
        return URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath().deletingLastPathComponent()
    }
}
