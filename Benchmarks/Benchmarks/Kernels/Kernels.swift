import Benchmark
import FlexFormat
import FlexKernels
import Foundation

// Kernel throughput. Matrices are larger than L3, so matvec is measured against the machine's
// memory read bandwidth, measured in the same run ("memory read").
//
// Custom metrics are integers: MB/s of weights (or of memory) and MFLOP/s.

let threads = ProcessInfo.processInfo.activeProcessorCount
let pool = WorkerPool(threads: threads)
let bandwidthMetric = BenchmarkMetric.custom("MB/s", polarity: .prefersLarger, useScalingFactor: false)
let flopsMetric = BenchmarkMetric.custom("MFLOP/s", polarity: .prefersLarger, useScalingFactor: false)

/// A random but valid weight matrix (finite scales) in `type`, rows × cols.
func makeMatrix(_ type: GGMLType, rows: Int, cols: Int) -> (UnsafeMutableRawPointer, QuantMatrix) {
    let bytes = rows * type.rowBytes(elements: cols)!
    let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    var state: UInt64 = 0x1234_5678
    for i in 0..<bytes {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        p.storeBytes(of: UInt8(truncatingIfNeeded: state >> 33), toByteOffset: i, as: UInt8.self)
    }
    // Overwrite every block's f16 scale(s) with small finite values.
    let blocks = bytes / type.blockBytes
    let scale = Float16(0.01).bitPattern
    for b in 0..<blocks {
        let o = b * type.blockBytes
        switch type {
        case .q6_K: p.storeBytes(of: scale, toByteOffset: o + 208, as: UInt16.self)
        case .q4_1, .q5_1, .q4_K, .q5_K:
            p.storeBytes(of: scale, toByteOffset: o, as: UInt16.self)
            p.storeBytes(of: scale, toByteOffset: o + 2, as: UInt16.self)
        case .f16: p.storeBytes(of: scale, toByteOffset: o, as: UInt16.self)
        case .f32, .bf16: p.storeBytes(of: UInt16(0x3C00), toByteOffset: o, as: UInt16.self)
        default: p.storeBytes(of: scale, toByteOffset: o, as: UInt16.self)
        }
    }
    return (p, QuantMatrix(type: type, data: UnsafeRawPointer(p), rows: rows, cols: cols))
}

func activations(_ n: Int) -> UnsafeMutablePointer<Float> {
    let x = UnsafeMutablePointer<Float>.allocate(capacity: n)
    for i in 0..<n { x[i] = Float((i * 7919) % 2001) / 1000 - 1 }
    return x
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, bandwidthMetric], warmupIterations: 2,
                                           maxDuration: .seconds(3), maxIterations: 200)

    // Memory read bandwidth: sum 512 MiB with every thread, as the matvec kernels read weights.
    Benchmark("memory read (all threads)") { benchmark in
        let count = 128 << 20   // floats
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: count)
        buf.initialize(repeating: 1, count: count)
        defer { buf.deallocate() }
        let partial = UnsafeMutablePointer<Float>.allocate(capacity: 64)
        defer { partial.deallocate() }
        let chunk = count / 64
        for _ in benchmark.scaledIterations {
            let t0 = DispatchTime.now().uptimeNanoseconds
            pool.parallelFor(64) { task, _ in
                var acc = SIMD8<Float>(), acc2 = SIMD8<Float>()
                var p = buf + task * chunk
                let end = p + chunk
                while p < end {
                    acc += UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
                    acc2 += UnsafeRawPointer(p + 8).loadUnaligned(as: SIMD8<Float>.self)
                    p += 16
                }
                partial[task] = (acc + acc2).sum()
            }
            let ns = DispatchTime.now().uptimeNanoseconds - t0
            blackHole(partial[0])
            benchmark.measurement(bandwidthMetric, Int(Double(count * 4) / Double(ns) * 1000))
        }
    }

    // Decode-shaped matvec on matrices larger than L3: weights MB/s.
    for (type, rows, cols) in [(GGMLType.q4_1, 16384, 4096), (.q8_0, 8192, 4096), (.q4_0, 16384, 4096), (.q5_0, 16384, 4096), (.q6_K, 8192, 4096), (.f16, 4096, 4096)] {
        for path in ["C int16", "Swift fused", "Swift float"] where path == "Swift float"
            || (path == "C int16" && IntegerDot.kernel(for: type) != nil) || (path == "Swift fused" && FusedDot.kernel(for: type) != nil) {
            Benchmark("matvec \(type) \(rows)x\(cols) \(path)") { benchmark in
                let (mem, w) = makeMatrix(type, rows: rows, cols: cols)
                defer { mem.deallocate() }
                let x = activations(cols), y = UnsafeMutablePointer<Float>.allocate(capacity: rows)
                defer { x.deallocate(); y.deallocate() }
                let scratch = MatMulScratch(threads: threads, maxCols: cols, maxBatch: 1)
                for _ in benchmark.scaledIterations {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    if path == "C int16", let dot = IntegerDot.kernel(for: type) {
                        MatMul.computeInteger(w, dot: dot, x: x, ldx: cols, y: y, ldy: rows, batch: 1, pool: pool, workspace: scratch.workspace)
                    } else if path == "Swift fused", let dot = FusedDot.kernel(for: type) {
                        MatMul.computeFused(w, dot: dot, x: x, ldx: cols, y: y, ldy: rows, batch: 1, pool: pool, workspace: scratch.workspace)
                    } else {
                        MatMul.computeFloat(w, x: x, ldx: cols, y: y, ldy: rows, batch: 1, pool: pool, workspace: scratch.workspace)
                    }
                    let ns = DispatchTime.now().uptimeNanoseconds - t0
                    blackHole(y[0])
                    benchmark.measurement(bandwidthMetric, Int(Double(w.byteCount) / Double(ns) * 1000))
                }
            }
        }
    }

    // Prefill-shaped matmul: a 64-token batch through SmolLM2's FFN up projection shape.
    for type in [GGMLType.q4_1, .q8_0] {
        Benchmark("matmul \(type) 1536x576 batch 64", configuration: .init(metrics: [.wallClock, flopsMetric])) { benchmark in
            let rows = 1536, cols = 576, batch = 64
            let (mem, w) = makeMatrix(type, rows: rows, cols: cols)
            defer { mem.deallocate() }
            let x = activations(batch * cols), y = UnsafeMutablePointer<Float>.allocate(capacity: batch * rows)
            defer { x.deallocate(); y.deallocate() }
            let scratch = MatMulScratch(threads: threads, maxCols: cols, maxBatch: batch)
            for _ in benchmark.scaledIterations {
                let t0 = DispatchTime.now().uptimeNanoseconds
                MatMul.compute(w, x: x, ldx: cols, y: y, ldy: rows, batch: batch, pool: pool, workspace: scratch.workspace)
                let ns = DispatchTime.now().uptimeNanoseconds - t0
                blackHole(y[0])
                benchmark.measurement(flopsMetric, Int(Double(2 * rows * cols * batch) / Double(ns) * 1000))
            }
        }
    }
}
