// swift-tools-version:6.1
import PackageDescription

// Hot numeric code needs AVX2/FMA/F16C code generation. Swift takes its target features from the
// Clang importer, so `-Xcc -mavx2 ...` is what turns `SIMD8<Float>.addProduct` into `vfmadd231ps`
// instead of eight calls to `fmaf` (checked by reading the assembly on this machine).
// Other architectures build the same Swift SIMD code with their baseline features.
#if arch(x86_64)
let simdFlags: [SwiftSetting] = [
    .unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c"]),
]
let simdCFlags: [CSetting] = [.unsafeFlags(["-mavx2", "-mfma", "-mf16c"])]
#else
let simdFlags: [SwiftSetting] = []
let simdCFlags: [CSetting] = []
#endif

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
        .target(name: "CFlexKernels", cSettings: simdCFlags + [.unsafeFlags(["-O3"])]),
        .target(name: "FlexKernels", dependencies: ["FlexFormat", "CFlexShims", "CFlexKernels"], swiftSettings: simdFlags),
        .target(name: "FlexEngine", dependencies: ["FlexSystem", "FlexFormat", "FlexKernels"], swiftSettings: simdFlags),
        // The C interface: the header and what Swift cannot declare (a thread-local error buffer),
        // then the Swift exports behind it.
        .target(name: "CFlexRun"),
        .target(name: "FlexC", dependencies: ["FlexEngine", "FlexSystem", "CFlexRun"]),
        .executableTarget(name: "flexrun", dependencies: [
            "FlexEngine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "FlexSystemTests", dependencies: ["FlexSystem"]),
        .testTarget(name: "FlexFormatTests", dependencies: ["FlexFormat"]),
        .testTarget(name: "FlexKernelsTests", dependencies: ["FlexKernels", "FlexFormat", "CFlexKernels"], exclude: ["Fixtures"], swiftSettings: simdFlags),
        .testTarget(name: "FlexEngineTests", dependencies: ["FlexEngine", "FlexFormat", "FlexKernels"]),
        .testTarget(name: "CLITests", dependencies: ["flexrun"]),
    ]
)
