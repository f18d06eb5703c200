import Foundation
import FuzzTargets

// libFuzzer's driver, called from our own main: SwiftPM names an executable's entry point itself,
// so the one libFuzzer brings cannot be used. Built with `-sanitize=fuzzer` only (`make fuzz`).
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// The target named by STICKYLAB_FUZZ_TARGET (`make fuzz` sets it).
let name = ProcessInfo.processInfo.environment["STICKYLAB_FUZZ_TARGET"] ?? ""
guard let target = FuzzTargets.named(name) else {
    let names = FuzzTargets.all.map(\.name).joined(separator: ", ")
    FileHandle.standardError.write(Data("stickylab-fuzz: STICKYLAB_FUZZ_TARGET='\(name)' is not a fuzz target: use one of \(names)\n".utf8))
    exit(2)
}
let run = target.run

/// One input.
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(runFuzzerDriver(&argc, &argv, fuzzOneInput))
