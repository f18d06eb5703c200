import Foundation
import Supervisor

/// Marks every process a Swift test starts with `STICKYLAB_TEST_RUN=<pid>:<start time>` of the test
/// runner, so that the next test run stops what a killed one left behind (`Tests/python/leftovers.py`,
/// run by `make test` first).
public enum TestRun {
    public static let markerVariable = "STICKYLAB_TEST_RUN"

    /// This runner's marker, or the one it inherited (a runner started by a marked test run).
    public static let marker: String = {
        if let inherited = ProcessInfo.processInfo.environment[markerVariable], !inherited.isEmpty { return inherited }
        let pid = getpid()
        return "\(pid):\(ProcessTable.startTime(pid) ?? 0)"
    }()

    /// `base` (by default this process's environment) with the marker.
    public static func environment(_ base: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
        var environment = base
        environment[markerVariable] = marker
        return environment
    }
}
