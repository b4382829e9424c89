// swift-tools-version:6.1
// FlexRun's benchmarks, a nested package so `swift test` in the root never builds
// package-benchmark. Run from this directory:
//   swift package --allow-writing-to-package-directory benchmark
import PackageDescription

let package = Package(
    name: "FlexRunBenchmarks",
    dependencies: [
        .package(name: "FlexRun", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: ["Kernels", "EndToEnd", "Codecs"].map(benchmarkTarget)
)

/// One package-benchmark executable per folder under Benchmarks/.
func benchmarkTarget(_ name: String) -> Target {
    .executableTarget(
        name: name,
        dependencies: [
            .product(name: "Benchmark", package: "benchmark"),
            .product(name: "FlexEngine", package: "FlexRun"),
            .product(name: "FlexKernels", package: "FlexRun"),
        ],
        path: "Benchmarks/\(name)",
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")])
}
