import Benchmark
import FlexEngine
import FlexFormat
import Foundation

// Codec table for the block file (docs/BENCHMARKS.md): on real blocks of the default model,
// each codec's compression ratio (×1000, an integer metric) and decode speed in MB/s of raw
// output on one core, byte planes included where the block has float tensors.
//
// The model comes from FLEXRUN_MODEL or the model cache (Tools/fetch-model.sh).

let decodeMetric = BenchmarkMetric.custom("decode MB/s", polarity: .prefersLarger, useScalingFactor: false)
let ratioMetric = BenchmarkMetric.custom("ratio x1000", polarity: .prefersLarger, useScalingFactor: false)

let modelPath = ProcessInfo.processInfo.environment["FLEXRUN_MODEL"] ?? ModelCache.defaultModelPath

/// The raw bytes of a few representative blocks: one attention, one FFN, the embedding.
func sampleBlocks(_ file: GGUFFile) -> [(String, [UInt8], [TensorInfo])] {
    let wanted: Set<String> = ["attn:0", "ffn:0", "embed", "other"]
    var out: [(String, [UInt8], [TensorInfo])] = []
    for g in BlockPacker.blocks(of: file) {
        let name = g.kind.blockName(layer: g.layer)
        guard wanted.contains(name) else { continue }
        var raw: [UInt8] = []
        for t in g.tensors { raw.append(contentsOf: file.tensorBytes(t)) }
        out.append((name, raw, g.tensors))
    }
    return out
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, decodeMetric, ratioMetric], warmupIterations: 1,
                                           maxDuration: .seconds(2), maxIterations: 50)
    guard let file = try? GGUFFile(path: modelPath) else {
        print("Codecs: no model at \(modelPath); run Tools/fetch-model.sh or set FLEXRUN_MODEL")
        return
    }
    let coder = BlockCoder()
    let codecs: [(String, BlockCodec, Int)] = [("lz4", .lz4, 0), ("zstd-3", .zstd, 3), ("zstd-9", .zstd, 9), ("zstd-19", .zstd, 19)]
    for (name, raw, _) in sampleBlocks(file) {
        for (label, codec, level) in codecs {
            guard let stored = raw.withUnsafeBytes({ coder.compress($0, codec: codec, level: level) }) else { continue }
            Benchmark("\(label) decode \(name) (\(raw.count >> 10) KiB)") { benchmark in
                let out = UnsafeMutableRawBufferPointer.allocate(byteCount: raw.count, alignment: 64)
                defer { out.deallocate() }
                for _ in benchmark.scaledIterations {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    let ok = stored.withUnsafeBytes { coder.decompress($0, codec: codec, into: out) }
                    let ns = DispatchTime.now().uptimeNanoseconds - t0
                    precondition(ok)
                    benchmark.measurement(decodeMetric, Int(Double(raw.count) / Double(max(1, ns)) * 1000))
                    benchmark.measurement(ratioMetric, raw.count * 1000 / stored.count)
                }
            }
        }
    }
}
