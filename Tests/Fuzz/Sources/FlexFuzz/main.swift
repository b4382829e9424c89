import Glibc

/// libFuzzer's driver, started from our own main: SwiftPM links an executable's entry point
/// under its own name, so libFuzzer's `main` cannot be the one that runs; `LLVMFuzzerRunDriver`
/// is its documented entry for exactly this case, with the same command line.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
