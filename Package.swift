// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "stickylab",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "chat-node", targets: ["chat-node"]),
        .executable(name: "sticky-proxy", targets: ["sticky-proxy"]),
        .executable(name: "cluster", targets: ["cluster"]),
        .executable(name: "stickylab-bench", targets: ["stickylab-bench"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
        .library(name: "SocketIO", targets: ["SocketIO"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", exact: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", exact: "2.8.1"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", exact: "1.0.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    ],
    targets: [
        // hiredis from Debian's libhiredis-dev: RESP parsing (redisReader*) and encoding (redisFormatCommandArgv).
        .systemLibrary(
            name: "CHiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .target(
            name: "RedisClient",
            dependencies: [
                "CHiredis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // Cloud Foundry's contracts as values: instance GUIDs, the instance environment, route registration.
        .target(name: "CloudFoundry"),
        .target(
            name: "SocketIO",
            dependencies: [
                "CloudFoundry", "RedisClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "ChatApp",
            dependencies: [
                "SocketIO", "RedisClient", "CloudFoundry",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.copy("Public")]
        ),
        .target(
            name: "StickyProxy",
            dependencies: [
                "CloudFoundry",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .target(
            name: "Supervisor",
            dependencies: [
                "CloudFoundry", "RedisClient",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .executableTarget(
            name: "chat-node",
            dependencies: [
                "ChatApp",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "sticky-proxy",
            dependencies: [
                "StickyProxy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "cluster",
            dependencies: [
                "Supervisor", "CloudFoundry",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Test-only: the Socket.IO server the protocol, interop and benchmark tests talk to.
        .executableTarget(
            name: "socketio-testserver",
            dependencies: [
                "SocketIO", "RedisClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "stickylab-bench",
            dependencies: [
                "RedisClient", "ChatLoad",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The chat benchmark's load generator (`stickylab-bench chat-load`): Socket.IO clients on SwiftNIO.
        .target(
            name: "ChatLoad",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
            ]
        ),
        // The fuzz targets by name (docs/fuzzing.md): replayed by FuzzTests, run by `make fuzz`.
        .target(
            name: "FuzzTargets",
            dependencies: [
                "StickyProxy", "SocketIO", "ChatApp", "Supervisor",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // Shared test helpers: a real redis-server on a free loopback port, built executables, free ports.
        .target(
            name: "TestSupport",
            dependencies: [
                "RedisClient", "Supervisor",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "RedisClientTests",
            dependencies: ["RedisClient", "TestSupport", .product(name: "NIOPosix", package: "swift-nio")]
        ),
        .testTarget(name: "CloudFoundryTests", dependencies: ["CloudFoundry"]),
        .testTarget(
            name: "SocketIOTests",
            dependencies: [
                "SocketIO", "TestSupport", "RedisClient", "socketio-testserver",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "ChatAppTests", dependencies: ["ChatApp", "SocketIO", "TestSupport"]),
        .testTarget(name: "StickyProxyTests", dependencies: ["StickyProxy", "CloudFoundry", "TestSupport"]),
        .testTarget(
            name: "SupervisorTests",
            dependencies: [
                "Supervisor", "CloudFoundry", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "ChatLoadTests",
            dependencies: [
                "ChatLoad",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "EndToEndTests", dependencies: ["TestSupport", "CloudFoundry"]),
        .testTarget(name: "FuzzTests", dependencies: ["FuzzTargets"], exclude: ["Corpus", "Dictionaries"]),
    ]
)

// `make fuzz` only (STICKYLAB_FUZZ=1): the libFuzzer executable. It is built with
// `-sanitize=fuzzer`, whose runtime brings `main`, so it cannot be part of an ordinary build.
if Context.environment["STICKYLAB_FUZZ"] == "1" {
    package.targets.append(.executableTarget(name: "stickylab-fuzz", dependencies: ["FuzzTargets"]))
    package.products.append(.executable(name: "stickylab-fuzz", targets: ["stickylab-fuzz"]))
}
