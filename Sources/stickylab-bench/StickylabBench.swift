import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import RedisClient

/// Load generators for `make bench` (bench/run.py drives them and compares with the references).
@main
struct StickylabBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stickylab-bench",
        abstract: "Load generators used by `make bench`.",
        subcommands: [RedisBench.self, ChatLoadBench.self]
    )
}

/// Pipelined SET / GET / PUBLISH through RedisClient, shaped like `redis-benchmark -P depth -c clients`.
struct RedisBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis",
        abstract: "Pipelined SET, GET or PUBLISH throughput through RedisClient; prints one JSON line."
    )

    @Option(help: "Redis URL.") var url = "redis://127.0.0.1:6379"
    @Option(help: "set, get or publish.") var test = "set"
    @Option(name: .customLong("requests"), help: "Total commands.") var requests = 1_000_000
    @Option(help: "Commands per pipeline batch (redis-benchmark -P).") var pipeline = 16
    @Option(help: "Parallel connections (redis-benchmark -c).") var clients = 4
    @Option(help: "Value size in bytes (redis-benchmark -d).") var dataSize = 3
    @Option(
        help:
            "async: one Swift task per connection awaiting `pipeline`; async-loop: the same task with the connection's event loop as its executor (`client.taskExecutor`); futures: `pipelineFuture` on the event loop."
    )
    var api = "async"
    @Option(help: "Event loop threads (redis-benchmark uses one).") var threads = 1

    func validate() throws {
        guard ["async", "async-loop", "futures"].contains(api) else { throw ValidationError("--api must be async, async-loop or futures") }
        guard ["set", "get", "publish"].contains(test) else { throw ValidationError("--test must be set, get or publish") }
        guard requests > 0, pipeline > 0, clients > 0, dataSize >= 0 else { throw ValidationError("counts must be positive") }
    }

    func run() async throws {
        let configuration = try RedisConfiguration(url: url)
        let value = RESPArgument(bytes: [UInt8](repeating: UInt8(ascii: "x"), count: dataSize))
        let command: [RESPArgument] =
            switch test {
            case "set": ["SET", "key:__rand_int__", value]
            case "get": ["GET", "key:__rand_int__"]
            default: ["PUBLISH", "bench", value]
            }
        let batch = [[RESPArgument]](repeating: command, count: pipeline)
        var connections: [RedisClient] = []
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        for _ in 0..<clients { connections.append(try await RedisClient.connect(configuration, eventLoopGroup: group)) }
        let perClient = requests / clients
        let clock = ContinuousClock()
        let start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in connections {
                if api == "futures" {
                    group.addTask { try await FutureDriver.run(client: client, batch: batch, total: perClient) }
                } else {
                    let drive: @Sendable () async throws -> Void = {
                        var sent = 0
                        while sent < perClient {
                            let count = min(pipeline, perClient - sent)
                            let replies = try await client.pipeline(count == pipeline ? batch : Array(batch.prefix(count)))
                            if case .error(let message) = replies.first { throw RedisError.server(message: message) }
                            sent += count
                        }
                    }
                    if api == "async-loop" {
                        group.addTask(executorPreference: client.taskExecutor, operation: drive)
                    } else {
                        group.addTask(operation: drive)
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = (clock.now - start).seconds
        for client in connections { await client.close() }
        try await group.shutdownGracefully()
        let total = perClient * clients
        print(#"{"test":"\#(test)","requests":\#(total),"seconds":\#(elapsed),"ops_per_sec":\#(Double(total) / elapsed),"api":"\#(api)"}"#)
    }
}

/// Drives one connection with `pipelineFuture` from the connection's event loop, the way NIO-native
/// code does: the next batch is written from the callback of the previous one, with no task hop.
enum FutureDriver {
    static func run(client: RedisClient, batch: [[RESPArgument]], total: Int) async throws {
        let promise = client.eventLoop.makePromise(of: Void.self)
        client.eventLoop.execute { step(client: client, batch: batch, remaining: total, done: promise) }
        try await promise.futureResult.get()
    }

    private static func step(client: RedisClient, batch: [[RESPArgument]], remaining: Int, done: EventLoopPromise<Void>) {
        guard remaining > 0 else { return done.succeed() }
        let count = min(batch.count, remaining)
        client.pipelineFuture(count == batch.count ? batch : Array(batch.prefix(count))).whenComplete { result in
            switch result {
            case .success(let replies):
                if case .error(let message) = replies.first { return done.fail(RedisError.server(message: message)) }
                step(client: client, batch: batch, remaining: remaining - count, done: done)
            case .failure(let error):
                done.fail(error)
            }
        }
    }
}
