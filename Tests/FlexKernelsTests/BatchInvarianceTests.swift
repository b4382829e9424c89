import Testing
@testable import FlexKernels
import FlexFormat

/// A row's matmul result depends only on its path, never on the batch around it: what lets a
/// batch of sequences give each one exactly its alone numbers (FlexEngine's `Session`).
@Suite struct BatchInvarianceTests {
    /// The K-quants run 768 columns (3 super-blocks). Where a format's prefill path is the batched
    /// integer kernel (`cflex_gemv4n_*`, `cflex_gemv8n_*`: the K-quants, Q4_1, Q5_0, Q5_1, Q8_0),
    /// it must give every row the bits it gets alone, and (checked below) the bits of the decode path.
    @Test(arguments: [GGMLType.q4_1, .q8_0, .q4_0, .q5_0, .q5_1, .f32, .q4_K, .q5_K, .q6_K])
    func rowsAreTheSameBitsAtEveryBatchSize(_ type: GGMLType) throws {
        let kquant = [GGMLType.q4_K, .q5_K, .q6_K].contains(type)
        let rows = 37, cols = kquant ? 768 : 96
        let bytes = try #require(type.rowBytes(elements: cols)) * rows
        var rng = SystemRandomNumberGenerator()
        let data = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { data.deallocate() }
        // Random floats quantized with the reference quantizer, so every block is valid.
        let source = (0..<rows * cols).map { _ in Float.random(in: -1...1, using: &rng) }
        source.withUnsafeBufferPointer { s in
            if type == .f32 { data.copyMemory(from: s.baseAddress!, byteCount: bytes); return }
            for r in 0..<rows {
                Quantize.plain(type, s.baseAddress! + r * cols, count: cols, into: data + r * type.rowBytes(elements: cols)!)
            }
        }
        let plain = QuantMatrix(type: type, data: UnsafeRawPointer(data), rows: rows, cols: cols)
        // The same rows with the first 32 in x8 groups (where the format has them): the batched
        // x8 kernels must give the bits of the one-row kernels, batched or not.
        let copy = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer { copy.deallocate() }
        copy.copyMemory(from: data, byteCount: bytes)
        // (K-quant groups whether or not the engine picks them here: Q6_K's, and every CPU's
        // fallback, must give the same bits too.)
        let grouped = kquant && IntegerDot.simd ? 32 : Interleave.rows(type, 32)
        if grouped > 0 {
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: Interleave.scratchBytes(type, cols: cols), alignment: 64)
            defer { scratch.deallocate() }
            Interleave.inPlace(type, copy, rows: grouped, cols: cols, scratch: scratch)
        }
        let x8 = QuantMatrix(type: type, data: UnsafeRawPointer(copy), rows: rows, cols: cols).interleaved(rows: grouped)
        // K-quants past MatMul.lanesMinBatch, so prompt batches take the lane kernels where the CPU has them.
        let maxBatch = kquant ? 20 : 9
        let x = (0..<maxBatch * cols).map { _ in Float.random(in: -2...2, using: &rng) }
        let pool = WorkerPool(threads: 2)
        let scratch = MatMulScratch(threads: 2, maxCols: cols, maxBatch: maxBatch)
        var results: [[[Float]]] = []
        for w in [plain, x8] {
        for path in [MatMul.Path.decode, .prefill] {
            var single = [[Float]]()
            for b in 0..<maxBatch {
                var y = [Float](repeating: 0, count: rows)
                x.withUnsafeBufferPointer { xp in
                    MatMul.compute(w, x: xp.baseAddress! + b * cols, ldx: cols, y: &y, ldy: rows, batch: 1, pool: pool,
                                   workspace: scratch.workspace, path: path)
                }
                single.append(y)
            }
            for n in 1...maxBatch {
                var y = [Float](repeating: 0, count: n * rows)
                x.withUnsafeBufferPointer { xp in
                    MatMul.compute(w, x: xp.baseAddress!, ldx: cols, y: &y, ldy: rows, batch: n, pool: pool,
                                   workspace: scratch.workspace, path: path)
                }
                for b in 0..<n {
                    #expect(Array(y[b * rows..<(b + 1) * rows]) == single[b], "\(type) \(path) batch \(n) row \(b) x8 \(w.interleavedRows)")
                }
            }
            results.append(single)
        }
        }
        #expect(results[0] == results[2] && results[1] == results[3], "x8 groups and row-major rows differ")
        if IntegerDot.simd, IntegerDot.kernel(for: type)?.prefills == true {
            #expect(results[0].map { $0.map(\.bitPattern) } == results[1].map { $0.map(\.bitPattern) }, "\(type) prefill and decode differ")
        }
    }
}
