import CloudFoundry
import Foundation
import NIOCore

/// The page's files (Sources/ChatApp/Public) and the official socket.io client bundle, loaded once at
/// start. Pages are filled in by plain substitution of HTML-escaped values: user text never becomes markup.
public struct ChatAssets: Sendable {
    public var loginTemplate: String
    public var chatTemplate: String
    public var style: ByteBuffer
    public var script: ByteBuffer
    /// nil when the bundle was not found (chat-node still serves other clients; the page says why).
    public var socketIOClient: ByteBuffer?
    public var socketIOClientPath: String

    /// Loads the page's files from the resource bundle next to the executable (or the source tree in
    /// development) and the socket.io client from `socketIOClientPath`.
    public static func load(socketIOClientPath: String) throws(ChatStartupError) -> ChatAssets {
        guard let directory = publicDirectory() else {
            throw .assetsMissing("the page's files (stickylab_ChatApp.resources/Public) are not next to the executable; rebuild with swift build")
        }
        func read(_ name: String) throws(ChatStartupError) -> String {
            do {
                return try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
            } catch {
                throw .assetsMissing("cannot read \(directory.appendingPathComponent(name).path): \(error.localizedDescription)")
            }
        }
        let client = FileManager.default.contents(atPath: socketIOClientPath).map { ByteBuffer(bytes: $0) }
        return ChatAssets(
            loginTemplate: try read("login.html"),
            chatTemplate: try read("chat.html"),
            style: ByteBuffer(string: try read("style.css")),
            script: ByteBuffer(string: try read("app.js")),
            socketIOClient: client,
            socketIOClientPath: socketIOClientPath
        )
    }

    static func publicDirectory() -> URL? {
        var candidates: [URL] = []
        let executable = ExecutableLocation.directory
        for bundle in ["stickylab_ChatApp.resources", "stickylab_ChatApp.bundle"] {
            candidates.append(executable.appendingPathComponent(bundle).appendingPathComponent("Public"))
            candidates.append(executable.appendingPathComponent(bundle))
            if let main = Bundle.main.resourceURL { candidates.append(main.appendingPathComponent(bundle).appendingPathComponent("Public")) }
        }
        // Development and tests: the source tree this file was compiled from.
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Public"))
        return candidates.first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("chat.html").path) }
    }

    public func loginPage(error: String?, instance: InstanceIdentity, limits: ChatLimits) -> String {
        HTML.fill(
            loginTemplate,
            ["error": error ?? "", "instance": instance.label, "maxName": String(limits.maxNameLength)]
        )
    }

    public func chatPage(user: String, instance: InstanceIdentity, limits: ChatLimits) -> String {
        HTML.fill(
            chatTemplate,
            ["user": user, "instance": instance.label, "maxMessage": String(limits.maxMessageBytes)]
        )
    }

    /// GET /logout's question, in the login page's card: a button that posts the logout (a GET itself
    /// changes nothing). Built in, not a file of Public: it has nothing to customise. With `error`
    /// (a logout that could not be done), the same button tries again; `user` nil leaves out who is
    /// logged in (not known when Redis is down).
    public func logoutPage(user: String?, error: String? = nil, instance: InstanceIdentity) -> String {
        let template = user == nil ? Self.logoutTemplate.replacingOccurrences(of: Self.loggedInAs, with: "") : Self.logoutTemplate
        return HTML.fill(template, ["user": user ?? "", "error": error ?? "", "instance": instance.label])
    }

    /// A path the chat does not have: a page that says so and leads back to the chat (a blank page
    /// would look like a broken instance). Built in, as the logout page.
    public func notFoundPage(path: String, instance: InstanceIdentity) -> String {
        HTML.fill(Self.notFoundTemplate, ["path": path, "instance": instance.label])
    }

    static let loggedInAs = "You are logged in as <strong>{{user}}</strong>. "

    static let logoutTemplate = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>stickylab chat · log out</title>
        <link rel="stylesheet" href="/style.css">
        </head>
        <body class="login">
        <main class="card">
          <header>
            <h1>Log out of the chat?</h1>
            <p class="subtitle">You are logged in as <strong>{{user}}</strong>. Logging out closes the chat in every tab of this browser.</p>
          </header>
          <form method="post" action="/logout">
            <div class="row">
              <button type="submit" autofocus>Log out</button>
            </div>
            <p class="error" role="alert">{{error}}</p>
          </form>
          <p><a href="/">Back to the chat</a></p>
          <footer class="instance" title="The instance that rendered this page">
            <span class="dot"></span> Served by instance <strong data-testid="instance">{{instance}}</strong>
          </footer>
        </main>
        </body>
        </html>

        """

    static let notFoundTemplate = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>stickylab chat · not found</title>
        <link rel="stylesheet" href="/style.css">
        </head>
        <body class="login">
        <main class="card">
          <header>
            <h1>Page not found</h1>
            <p class="subtitle">This chat has no page at <code>{{path}}</code>.</p>
          </header>
          <p><a href="/">Go to the chat</a></p>
          <footer class="instance" title="The instance that answered">
            <span class="dot"></span> Served by instance <strong data-testid="instance">{{instance}}</strong>
          </footer>
        </main>
        </body>
        </html>

        """
}

public enum HTML {
    /// Escapes the five characters that matter in text and attribute values.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }

    /// Replaces `{{name}}` with the escaped value of `name`; unknown placeholders are left alone.
    public static func fill(_ template: String, _ values: [String: String]) -> String {
        var result = template
        for (name, value) in values {
            result = result.replacingOccurrences(of: "{{\(name)}}", with: escape(value))
        }
        return result
    }
}

/// Why chat-node could not start, in words the operator can act on.
public enum ChatStartupError: Error, Sendable, CustomStringConvertible {
    case assetsMissing(String)
    case redisUnreachable(url: String, source: String, reason: String)
    case cannotListen(host: String, port: Int, reason: String)

    public var description: String {
        switch self {
        case .assetsMissing(let reason):
            "chat-node cannot start: \(reason)."
        case .redisUnreachable(let url, let source, let reason):
            "chat-node cannot reach Redis at \(url) (from \(source)): \(reason) Start redis-server or fix REDIS_URL / VCAP_SERVICES."
        case .cannotListen(let host, let port, let reason):
            "chat-node cannot listen on \(host):\(port): \(reason). Is another program using that port? Set PORT."
        }
    }

    /// The process exit code for this error (documented in chat-node --help).
    public var exitCode: Int32 {
        switch self {
        case .assetsMissing: 3
        case .redisUnreachable: 4
        case .cannotListen: 5
        }
    }
}
