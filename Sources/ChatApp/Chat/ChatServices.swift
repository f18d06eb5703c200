import Logging
import RedisClient
import ServiceLifecycle

/// Runs the hub's delivery loop until graceful shutdown, then closes the Redis subscription.
struct HubService: Service {
    let hub: ChatHub
    let subscriber: RedisSubscriber

    func run() async throws {
        await withGracefulShutdownHandler {
            await hub.run(subscriber: subscriber)
        } onGracefulShutdown: {
            Task { await subscriber.close() }
        }
    }
}

/// The presence heartbeat, every `interval`, and sooner when a user arrives who is not published yet
/// (`ChatHub.requestHeartbeat`; at most one per `minimumSpacing`, so a crowd arriving costs a few
/// heartbeats, not one each), until graceful shutdown; then this instance hands its users over
/// (`PresenceRegistry.handOver`): those who reconnect elsewhere within the grace stay, the others get
/// a "left" line from the instance that reaps it.
struct PresenceService: Service {
    let hub: ChatHub
    let registry: PresenceRegistry
    let interval: Duration
    let logger: Logger
    static let minimumSpacing = Duration.milliseconds(500)

    func run() async throws {
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { [hub, interval] in
                    while !Task.isCancelled {
                        hub.requestHeartbeat()
                        do { try await Task.sleep(for: interval) } catch { return }
                    }
                }
                await beat()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            hub.finishHeartbeats()
        }
        let (users, grace) = hub.presenceToHandOver()
        do {
            try await registry.handOver(users: users, now: ChatHub.now(), grace: grace)
        } catch {
            let what =
                users.isEmpty
                ? "tell the others that this instance is stopping"
                : "hand this instance's \(users.count) user\(users.count == 1 ? "" : "s") over to the others"
            logger.warning("Could not \(what) (\(error)); once PRESENCE_TTL has passed they treat it as killed")
        }
    }

    /// One heartbeat per request, until the requests end.
    private func beat() async {
        var failing = false
        for await _ in hub.heartbeatRequests {
            if Task.isShuttingDownGracefully { break }
            do {
                try await hub.heartbeat(registry: registry)
                if failing { logger.notice("Presence heartbeat works again") }
                failing = false
            } catch {
                if !failing { logger.warning("Presence heartbeat failed (\(error)); users may look offline until Redis is back") }
                failing = true
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: Self.minimumSpacing) }
            } catch {
                return
            }
        }
    }
}
