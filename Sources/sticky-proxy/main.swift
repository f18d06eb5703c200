import ArgumentParser

// Placeholder until its own issue lands: parses arguments and prints --help.
struct Command: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sticky-proxy", abstract: "Not implemented yet; see README.")
}

Command.main()
