import ArgumentParser
import ChatApp
import Foundation

/// chat-node: the Socket.IO chat. Configuration comes from the environment (see --help); this file only
/// parses, reports configuration errors, and starts the ChatApp service.
@main
struct ChatNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-node",
        abstract: "A Socket.IO chat on Hummingbird and Redis that keeps working when any instance dies.",
        discussion: ChatNode.helpText
    )

    @Option(name: .long, help: "Override PORT.")
    var port: Int?

    @Option(name: .long, help: "Override BIND (the address to listen on).")
    var bind: String?

    func run() async throws {
        var environment = ProcessInfo.processInfo.environment
        if let port { environment["PORT"] = String(port) }
        if let bind { environment["BIND"] = bind }
        let code = await ChatNode.main(environment: environment)
        if code != 0 { throw ExitCode(code) }
    }
}
