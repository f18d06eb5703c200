import CloudFoundry
import Foundation

/// A second router in front of the app's (`proxy.front_router`, `cluster up --front-router`): another
/// sticky-proxy on the port users open, whose only endpoint is the app's router, registered with an
/// instance GUID of its own, as a second Cloud Foundry router (or an app that forwards to this app
/// through its route, such as an API gateway) would see it. Both route with `__VCAP_ID__` and overwrite
/// each other's cookie: section 5 of cloud-foundry-behaviour.md, "affinity broken behind a second
/// router", live.
public struct FrontRouter: Sendable, Equatable {
    /// Where the app's own router listens (the front one has the port users open).
    public var appRouterPort: Int
    /// The app's router as the front router's endpoint: its GUID is what the front router writes
    /// into `__VCAP_ID__`.
    public var instanceID: InstanceGUID
    /// The front router's "app" GUID.
    public var appID: String

    public init(appRouterPort: Int, instanceID: InstanceGUID = InstanceGUID(), appID: String = UUID().uuidString.lowercased()) {
        self.appRouterPort = appRouterPort
        self.instanceID = instanceID
        self.appID = appID
    }

    /// The front router's one registration: the app's routes, to the app's router.
    public func registration(uris: [String]) -> RouteRegistration {
        RouteRegistration(
            host: "127.0.0.1", port: appRouterPort, uris: uris, app: appID, privateInstanceID: instanceID.value, privateInstanceIndex: "0",
            tags: ["component": "cluster-front-router"])
    }

    /// The front router's static routes file (sticky-proxy's `--routes-file`: never pruned).
    public func routesFile(uris: [String]) -> Data {
        Data("[".utf8) + registration(uris: uris).json() + Data("]\n".utf8)
    }
}
