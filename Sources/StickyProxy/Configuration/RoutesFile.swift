import CloudFoundry
import Foundation
import Yams

/// Static routes for standalone use (`--routes-file`): gorouter register messages in YAML or JSON,
/// either as a list or under a `routes:` key. Static routes are never pruned. Errors name a route
/// as decoding errors do (`routes[1]`, counted from 0).
///
/// ```yaml
/// routes:
///   - host: 127.0.0.1
///     port: 9001
///     uris: [localhost, 127.0.0.1]
///     app: 6e5a3b1c-0000-4000-8000-000000000001
///     private_instance_id: 0a1b2c3d-0000-4000-8000-0000
///     private_instance_index: "0"
/// ```
public enum RoutesFile {
    public struct LoadError: Error, CustomStringConvertible {
        public let description: String
    }

    private struct Document: Decodable {
        var routes: [RouteRegistration]
    }

    public static func load(path: String) throws -> [RouteRegistration] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LoadError(description: "cannot read the routes file '\(path)': \(error.localizedDescription)")
        }
        return try parse(text, source: path)
    }

    public static func parse(_ text: String, source: String = "routes file") throws -> [RouteRegistration] {
        let trimmed = text.drop { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }
        guard !trimmed.isEmpty else {
            throw LoadError(
                description: "\(source) is empty: give a list of route registrations (see the example under --routes-file in docs/sticky-proxy.md)")
        }
        let routes: [RouteRegistration]
        let isJSON = trimmed.first == "{" || trimmed.first == "["
        // Where each route is, as decoding errors name it: `[1]` in a list, `routes[1]` under the key.
        let isList = trimmed.first == "[" || trimmed.first == "-"
        do {
            if isJSON {
                let data = Data(text.utf8)
                if trimmed.first == "[" {
                    routes = try JSONDecoder().decode([RouteRegistration].self, from: data)
                } else {
                    routes = try JSONDecoder().decode(Document.self, from: data).routes
                }
            } else if trimmed.first == "-" {
                routes = try YAMLDecoder().decode([RouteRegistration].self, from: text)
            } else {
                routes = try YAMLDecoder().decode(Document.self, from: text).routes
            }
        } catch DecodingError.keyNotFound(let key, let context) where key.stringValue == "routes" && context.codingPath.isEmpty {
            throw LoadError(
                description:
                    "\(source) has no \"routes\" list: give a list of route registrations, or put them under \"routes:\" (one registration alone must be in a list too)"
            )
        } catch let error as DecodingError {
            throw LoadError(
                description: "\(source) is not a list of route registrations: \(AdminAPI.describe(error, format: isJSON ? "JSON" : "YAML"))")
        } catch {
            throw LoadError(description: "\(source) is neither YAML nor JSON: \(error)")
        }
        for (index, route) in routes.enumerated() {
            if let problem = RouteRegistry.problem(with: route) {
                throw LoadError(description: "\(source), at \"\(isList ? "" : "routes")[\(index)]\": \(problem)")
            }
        }
        return routes
    }
}
