import NIOCore

/// A Swift Concurrency task executor that runs jobs on one NIO event loop. A task that talks to Redis
/// a lot can run on its connection's event loop, so that each `await` of a reply resumes right there
/// instead of hopping to the cooperative pool and back (two thread wake-ups per command batch):
///
/// ```swift
/// try await withTaskExecutorPreference(client.taskExecutor) {
///     for batch in batches { _ = try await client.pipeline(batch) }
/// }
/// // or: group.addTask(executorPreference: client.taskExecutor) { ... }
/// ```
///
/// Only for code that does not block: whatever runs there holds the event loop's thread.
public final class EventLoopTaskExecutor: TaskExecutor {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

extension RedisClient {
    /// A task executor on the event loop of the current connection (see `EventLoopTaskExecutor`).
    public var taskExecutor: EventLoopTaskExecutor { EventLoopTaskExecutor(eventLoop) }
}
