import Foundation
import FuzzTargets
import Testing

/// Every input under Corpus/<target>/ goes through its fuzz target: the seeds `make fuzz` starts
/// from, and every input a fuzzer ever found a crash or a broken property with (named `crash-*`,
/// kept as regressions). A crash here stops the test run, which is a failed run.
@Suite("Fuzz corpus: seeds and past findings, replayed")
struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus")

    static func inputs(_ target: String) throws -> [URL] {
        let folder = corpus.appendingPathComponent(target)
        return try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil).sorted { $0.path < $1.path }
    }

    @Test("Each fuzz target has a seed folder, and each seed folder a fuzz target")
    func targetsAndFoldersAgree() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path).sorted()
        #expect(folders == FuzzTargets.all.map(\.name).sorted())
    }

    @Test("Every seed and past finding goes through its target", arguments: FuzzTargets.all.map(\.name))
    func replay(_ name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        let inputs = try Self.inputs(name)
        #expect(!inputs.isEmpty, "no seed for \(name)")
        for input in inputs {
            let bytes = try Data(contentsOf: input)
            bytes.withUnsafeBytes { target.run($0) }
        }
    }

    @Test("Each target takes empty input, and every prefix of its seeds (a cut-off read)", arguments: FuzzTargets.all.map(\.name))
    func prefixes(_ name: String) throws {
        let target = try #require(FuzzTargets.named(name))
        [UInt8]().withUnsafeBytes { target.run($0) }
        for input in try Self.inputs(name) {
            let bytes = [UInt8](try Data(contentsOf: input))
            for end in 0..<min(bytes.count, 600) { bytes[..<end].withUnsafeBytes { target.run($0) } }
        }
    }
}
