import CloudFoundry
import Foundation
import Testing

@testable import Supervisor

@Suite("A second router in front of the app's")
struct FrontRouterTests {
    @Test("Its one route goes to the app's router, under a GUID of its own, in sticky-proxy's routes file format")
    func routesFile() throws {
        let guid = try #require(InstanceGUID("0a1b2c3d-0000-4000-8000-0000"))
        let front = FrontRouter(appRouterPort: 41_237, instanceID: guid, appID: "front-app")
        let routes = try JSONDecoder().decode([RouteRegistration].self, from: front.routesFile(uris: ["localhost", "127.0.0.1"]))
        #expect(routes.count == 1)
        #expect(routes[0].host == "127.0.0.1" && routes[0].port == 41_237 && routes[0].uris == ["localhost", "127.0.0.1"])
        #expect(routes[0].privateInstanceID == guid.value && routes[0].privateInstanceIndex == "0" && routes[0].app == "front-app")
        // A new GUID each time, as an instance of another app would have.
        #expect(FrontRouter(appRouterPort: 1).instanceID != FrontRouter(appRouterPort: 1).instanceID)
    }

    @Test("Which front routers flip stickiness: the same cookie in both")
    func sharedCookie() throws {
        var proxy = ClusterConfig.Proxy()
        #expect(proxy.frontAffinity == .cf && proxy.routersShareACookie)
        proxy.frontRouterAffinity = .haproxy
        #expect(proxy.frontAffinity == .haproxy && !proxy.routersShareACookie)
        proxy.affinity = .haproxy
        #expect(proxy.routersShareACookie)
        proxy.frontRouterAffinity = Affinity.none
        #expect(!proxy.routersShareACookie)
        // From the file and the flag: `same` is the app router's; the flag turns the front router on.
        let config = try ClusterConfig.parse(yaml: "proxy:\n  front_router: on\n  front_router_affinity: haproxy\n")
        #expect(config.proxy.frontRouter && config.proxy.frontRouterAffinity == .haproxy)
        #expect(try ClusterConfig.parse(yaml: "proxy:\n  front_router_affinity: same\n").proxy.frontRouterAffinity == nil)
        #expect(throws: ConfigError.self) { try ClusterConfig.parse(yaml: "proxy:\n  front_router_affinity: f5\n") }
        let flagged = ClusterOverrides(frontRouterAffinity: .haproxy).applied(to: ClusterConfig())
        #expect(flagged.proxy.frontRouter && flagged.proxy.frontAffinity == .haproxy)
    }

    @Test("Status: users go through the front router, and the table lists both routers")
    func status() {
        var status = ClusterStatus(
            app: "chat", command: "chat-node", ready: true, desiredInstances: 1, affinity: "cf", restartPolicy: "diego", timeScale: 1,
            proxy: .init(state: "running", url: "http://localhost:41237/"), frontRouter: .init(state: "running", url: "http://localhost:8080/"),
            redis: .init(state: "running"), instances: [])
        #expect(status.entry.url == "http://localhost:8080/")
        #expect(status.table().contains("front  http://localhost:8080/ (a second router in front, affinity cf, running)"))
        status.frontRouterAffinity = "haproxy"
        #expect(status.table().contains("front  http://localhost:8080/ (a second router in front, affinity haproxy, running)"))
        #expect(status.table().contains("proxy  http://localhost:41237/ (affinity cf, running)"))
        status.proxy.state = "crashed"
        #expect(status.entry.url == nil && status.entry.state == "front router running, proxy crashed")
        status.frontRouter = nil
        #expect(status.entry.url == nil && status.entry.state == "crashed")
        status.proxy.state = "running"
        #expect(status.entry.url == "http://localhost:41237/" && !status.table().contains("front "))
    }
}
