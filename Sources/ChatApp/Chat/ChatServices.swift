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

/// The presence heartbeat, every `interval` until graceful shutdown; then this instance's presence is
/// removed (its users show up again on the instances they reconnect to).
struct PresenceService: Service {
    let hub: ChatHub
    let registry: PresenceRegistry
    let interval: Duration
    let logger: Logger

    func run() async throws {
        var failing = false
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                try await hub.heartbeat(registry: registry)
                if failing { logger.notice("Presence heartbeat works again") }
                failing = false
            } catch {
                if !failing { logger.warning("Presence heartbeat failed (\(error)); users may look offline until Redis is back") }
                failing = true
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch {
                break
            }
        }
        try? await registry.remove()
    }
}
