// swift-tools-version:6.1
// FlexRun's libFuzzer targets, a nested package so the root's `swift build` and `swift test`
// never build them with `-sanitize=fuzzer` missing (the executable calls libFuzzer's driver).
// Build and run through Tools/fuzz.sh.
import PackageDescription

let package = Package(
    name: "FlexRunFuzz",
    dependencies: [
        .package(name: "FlexRun", path: "../.."),
    ],
    targets: [
        .executableTarget(name: "FlexFuzz", dependencies: [.product(name: "FlexEngine", package: "FlexRun")]),
    ]
)
