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
    targets: [
        .executableTarget(
            name: "Kernels",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "FlexEngine", package: "FlexRun"),
            ],
            path: "Benchmarks/Kernels",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
        .executableTarget(
            name: "EndToEnd",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "FlexEngine", package: "FlexRun"),
            ],
            path: "Benchmarks/EndToEnd",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ]
)
