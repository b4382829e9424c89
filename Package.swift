// swift-tools-version:6.1
import PackageDescription

// No compiler flags: SwiftPM refuses `unsafeFlags` in a package used as a versioned dependency,
// and `-mavx2` would put AVX2 into every function, so the binary would die with SIGILL on an
// x86-64 without it. The hot loops are C in CFlexKernels, compiled twice on x86-64 (a baseline
// variant and one with per-function AVX2/FMA/F16C targets) and chosen at load by the CPU's
// features; docs/ARCHITECTURE.md, "Kernel dispatch".

let package = Package(
    name: "FlexRun",
    products: [
        .library(name: "FlexEngine", targets: ["FlexEngine"]),
        .library(name: "FlexKernels", targets: ["FlexKernels"]),
        .executable(name: "flexrun", targets: ["flexrun"]),
        // The C ABI (Sources/CFlexRun/include/flexrun.h) as libflexrun.so, for apps in C, C++,
        // Rust, Go or Kotlin: Swift @_cdecl exports over Model and Session. Built as libFlexRunC.so (the
        // name `flexrun` is the CLI's); Tools/install.sh installs it as libflexrun.so.
        .library(name: "FlexRunC", type: .dynamic, targets: ["FlexC"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `flexrun serve`: Hummingbird 2 (SwiftNIO); docs/ARCHITECTURE.md, "Choices worth knowing".
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.14.0"),
    ],
    targets: [
        // System libraries, found through pkg-config. Later issues (streaming, packed files) use them;
        // linking them now proves the build environment is complete.
        .systemLibrary(name: "CURing", pkgConfig: "liburing", providers: [.apt(["liburing-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .target(name: "CFlexShims", dependencies: ["CURing", "CZstd", "CLZ4"]),

        .target(name: "FlexSystem", dependencies: ["CFlexShims"]),
        .target(name: "FlexFormat", dependencies: ["FlexSystem", "CZstd", "CLZ4"]),
        // Integer dot-product kernels in C: see the header for the benchmark that justifies C here.
        .target(name: "CFlexKernels"),
        .target(name: "FlexKernels", dependencies: ["FlexFormat", "CFlexShims", "CFlexKernels"]),
        .target(name: "FlexEngine", dependencies: ["FlexSystem", "FlexFormat", "FlexKernels"]),
        // The C interface: the header and what Swift cannot declare (a thread-local error buffer),
        // then the Swift exports behind it.
        .target(name: "CFlexRun"),
        .target(name: "FlexC", dependencies: ["FlexEngine", "FlexSystem", "CFlexRun"]),
        // The OpenAI-compatible server: HTTP only; the engine stays free of NIO for library users.
        .target(name: "FlexServe", dependencies: [
            "FlexEngine", "FlexSystem",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "flexrun", dependencies: [
            "FlexEngine", "FlexServe",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "FlexSystemTests", dependencies: ["FlexSystem"]),
        .testTarget(name: "FlexFormatTests", dependencies: ["FlexFormat"]),
        .testTarget(name: "FlexKernelsTests", dependencies: ["FlexKernels", "FlexFormat", "CFlexKernels"], exclude: ["Fixtures"]),
        .testTarget(name: "FlexEngineTests", dependencies: ["FlexEngine", "FlexFormat", "FlexKernels"], exclude: ["Fixtures"]),
        .testTarget(name: "CLITests", dependencies: ["flexrun"]),
    ]
)
