import Testing
import Glibc
@testable import FlexKernels
import CFlexKernels
import FlexFormat

/// Random but valid blocks: finite f16 scales, arbitrary quant bytes.
func randomBlocks(_ type: GGMLType, blocks: Int, seed: UInt64) -> [UInt8] {
    var rng = TestRNG(seed: seed)
    var bytes = (0..<(blocks * type.blockBytes)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    func putF16(_ off: Int, _ v: Float) {
        let bits = Float16(v).bitPattern
        bytes[off] = UInt8(bits & 0xFF); bytes[off + 1] = UInt8(bits >> 8)
    }
    func unit() -> Float { Float(rng.next() % 10_000) / 10_000 - 0.5 }
    for b in 0..<blocks {
        let o = b * type.blockBytes
        switch type {
        case .f16: putF16(o, unit() * 4)
        case .bf16: bytes[o + 1] = 0x3F ^ (bytes[o + 1] & 0x80)
        case .f32:
            withUnsafeBytes(of: (unit() * 8).bitPattern.littleEndian) { for i in 0..<4 { bytes[o + i] = $0[i] } }
        case .q4_0, .q5_0, .q8_0: putF16(o, unit() * 0.1)
        case .q4_1, .q5_1: putF16(o, unit() * 0.1); putF16(o + 2, unit())
        case .q4_K, .q5_K: putF16(o, unit() * 0.1); putF16(o + 2, unit() * 0.1)
        case .q6_K: putF16(o + 208, unit() * 0.1)
        }
    }
    return bytes
}

struct TestRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct DequantizeTests {
    /// The fast path must reproduce the reference exactly: same arithmetic, only vectorised.
    @Test(arguments: GGMLType.allCases)
    func fastMatchesReference(_ type: GGMLType) {
        let elements = 512
        let blocks = elements / type.blockElements
        let data = randomBlocks(type, blocks: blocks, seed: UInt64(type.rawValue))
        var ref = [Float](repeating: 0, count: elements), fast = [Float](repeating: .nan, count: elements)
        data.withUnsafeBytes { src in
            ReferenceDequantize.row(type, src.baseAddress!, &ref, count: elements)
            FastDequantize.row(type, src.baseAddress!, &fast, count: elements)
        }
        #expect(ref == fast)
        #expect(ref.allSatisfy { $0.isFinite })
    }

    /// Hand-made blocks with known values pin the reference to ggml's definitions.
    @Test func referenceDecodesKnownBlocks() {
        // Q4_0: d = 0.5, nibbles 0x0..0xF in low halves → (q − 8)·d
        var q40: [UInt8] = GGUFLE.f16(0.5) + (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        var out = [Float](repeating: 0, count: 32)
        q40.withUnsafeMutableBytes { ReferenceDequantize.row(.q4_0, $0.baseAddress!, &out, count: 32) }
        #expect(out[0] == -4 && out[15] == 3.5 && out[16] == 3.5 && out[31] == -4)
        // Q4_1: x = q·d + m with d = 1, m = −2
        var q41: [UInt8] = GGUFLE.f16(1) + GGUFLE.f16(-2) + [UInt8](repeating: 0x51, count: 16)
        q41.withUnsafeMutableBytes { ReferenceDequantize.row(.q4_1, $0.baseAddress!, &out, count: 32) }
        #expect(out[0] == -1 && out[16] == 3)
        // Q8_0: x = q·d with signed q
        var q80: [UInt8] = GGUFLE.f16(0.25) + [UInt8(bitPattern: -128), 127] + [UInt8](repeating: 4, count: 30)
        q80.withUnsafeMutableBytes { ReferenceDequantize.row(.q8_0, $0.baseAddress!, &out, count: 32) }
        #expect(out[0] == -32 && out[1] == 31.75 && out[2] == 1)
        // Q5_0: high bit of element 0 set in qh → (0x10 | 0) − 16 = 0; element 1 without → −16·d
        var q50: [UInt8] = GGUFLE.f16(1) + [1, 0, 0, 0] + [UInt8](repeating: 0, count: 16)
        q50.withUnsafeMutableBytes { ReferenceDequantize.row(.q5_0, $0.baseAddress!, &out, count: 32) }
        #expect(out[0] == 0 && out[1] == -16)
        // BF16: 0x3F80 is 1.0
        var bf: [UInt8] = [0x80, 0x3F]
        bf.withUnsafeMutableBytes { ReferenceDequantize.row(.bf16, $0.baseAddress!, &out, count: 1) }
        #expect(out[0] == 1)
    }
}

enum GGUFLE {
    static func f16(_ v: Float) -> [UInt8] { let b = Float16(v).bitPattern; return [UInt8(b & 0xFF), UInt8(b >> 8)] }
}

/// What the integer kernels see of an activation row: x quantized to 16-bit blocks and back.
func roundTripQ16(_ x: [Float]) -> [Float] {
    var blocks = [cflex_q16_block](repeating: cflex_q16_block(), count: x.count / 32)
    cflex_quantize_q16(x, &blocks, Int32(x.count))
    var out: [Float] = []
    for b in blocks {
        withUnsafeBytes(of: b.qs) { q in for i in 0..<32 { out.append(b.d * Float(q.load(fromByteOffset: 2 * i, as: Int16.self))) } }
    }
    return out
}

@Suite struct ActivationQuantizationTests {
    /// Round to nearest with d = max|x|/32767: every element within d/2.
    @Test func errorIsHalfAStep() {
        var rng = TestRNG(seed: 3)
        let x = (0..<256).map { _ in Float(rng.next() % 20001) / 1000 - 10 }
        let y = roundTripQ16(x)
        for blk in 0..<8 {
            let slice = x[(32 * blk)..<(32 * blk + 32)]
            let d = slice.map(abs).max()! / 32767
            for i in slice.indices { #expect(abs(x[i] - y[i]) <= d / 2 * 1.0001 + 1e-7) }
        }
    }

    /// The SIMD quantizer gives exactly the blocks of the plain formula (d = max|x|/32767, q =
    /// round-to-nearest-even of x/d clamped to ±32767, s = d·Σq), ties and order-of-magnitude
    /// spreads included.
    @Test func blocksEqualThePlainFormula() {
        var rng = TestRNG(seed: 11)
        var x = (0..<4096).map { i in Float(Int(rng.next() % 2_000_001) - 1_000_000) / Float([1, 1000, 1e6][i % 3]) }
        x.replaceSubrange(0..<32, with: (0..<32).map { Float($0) - 15.5 })   // halves: ties at x/d
        x.replaceSubrange(32..<64, with: [Float](repeating: -3, count: 32))
        var blocks = [cflex_q16_block](repeating: cflex_q16_block(), count: x.count / 32)
        cflex_quantize_q16(x, &blocks, Int32(x.count))
        for (b, blk) in blocks.enumerated() {
            let v = x[(32 * b)..<(32 * b + 32)]
            let d = v.map(abs).max()! / 32767, id: Float = d != 0 ? 1 / d : 0
            let q = v.map { Int16(max(-32767, min(32767, ($0 * id).rounded(.toNearestOrEven)))) }
            let got = withUnsafeBytes(of: blk.qs) { p in (0..<32).map { p.load(fromByteOffset: 2 * $0, as: Int16.self) } }
            #expect(got == q, "block \(b)")
            #expect(blk.d.bitPattern == d.bitPattern)
            #expect(blk.s.bitPattern == (d * Float(q.reduce(0) { $0 + Int($1) })).bitPattern)
        }
    }

    @Test func zeroBlockStaysZero() {
        #expect(roundTripQ16([Float](repeating: 0, count: 32)) == [Float](repeating: 0, count: 32))
    }
}

@Suite struct MatMulTests {
    enum Path: String, CaseIterable, Sendable { case engine, integer, fused }

    /// A matmul against a plain double-precision one over reference-dequantized rows.
    /// `engine` is what `MatMul.compute` picks (integer or fused below `decodeBatchLimit`; above it
    /// integer where the format has a batched kernel, else dequantize-then-FMA); `fused` is the Swift decode kernel, float throughout. `integer` is the C 16-bit-activation path: its
    /// reference uses the activations as that path sees them (16-bit round trip), so the same
    /// bound checks the kernel's arithmetic exactly.
    @Test(arguments: [GGMLType.q4_1, .q8_0, .q4_0, .q5_0, .q5_1, .q6_K, .q4_K, .q5_K, .f16, .bf16], [1, 3, 4, 9])
    func matchesNaive(_ type: GGMLType, _ batch: Int) {
        check(type, batch, .engine)
        if IntegerDot.kernel(for: type) != nil { check(type, batch, .integer) }
        // The Swift decode path (taken on builds without AVX2), exercised directly here.
        if FusedDot.kernel(for: type) != nil { check(type, batch, .fused) }
    }

    /// Rows of an odd number of blocks exercise the kernels' tail after the two-block unroll.
    @Test(arguments: [GGMLType.q4_1, .q8_0, .q4_0, .q5_0, .q5_1])
    func oddBlockCountRows(_ type: GGMLType) {
        check(type, 1, .engine, cols: 96)
        check(type, 1, .integer, cols: 96)
        check(type, 3, .integer, cols: 160)
    }

    /// K-quant rows of 3 and 5 super-blocks through the matmul (37 rows: nine fours, one left over).
    @Test(arguments: [GGMLType.q4_K, .q5_K, .q6_K], [768, 1280])
    func kQuantRowsOfSeveralSuperBlocks(_ type: GGMLType, _ cols: Int) {
        check(type, 1, .engine, cols: cols)
        check(type, 3, .integer, cols: cols)
    }

    /// The prefill path's pairs of rows against four activation rows, with an odd row count
    /// (37: a single row left over), a batch remainder (9 = 2·4 + 1) and a row length that is not
    /// a multiple of the 8-lane vectors (the scalar tail).
    @Test(arguments: [GGMLType.f16, .bf16, .f32])
    func prefillTailsMatch(_ type: GGMLType) {
        check(type, 9, .engine, cols: 100)
    }

    func check(_ type: GGMLType, _ batch: Int, _ path: Path, cols: Int = 256) {
        let rows = 37
        let data = randomBlocks(type, blocks: rows * cols / type.blockElements, seed: 7)
        var rng = TestRNG(seed: 11)
        let xRaw = (0..<(batch * cols)).map { _ in Float(rng.next() % 2000) / 1000 - 1 }
        // What the chosen path sees: `compute` takes the 16-bit integer path for decode-sized
        // batches of formats that have a C kernel, and for every batch of the K-quants.
        let integer = path == .integer || (path == .engine && IntegerDot.simd
            && IntegerDot.kernel(for: type).map { batch < MatMul.decodeBatchLimit || $0.prefills } ?? false)
        let x = integer ? roundTripQ16(xRaw) : xRaw
        var y = [Float](repeating: .nan, count: batch * rows)
        let pool = WorkerPool(threads: 2)
        let scratch = MatMulScratch(threads: 2, maxCols: cols, maxBatch: batch)
        data.withUnsafeBytes { raw in
            let w = QuantMatrix(type: type, data: raw.baseAddress!, rows: rows, cols: cols)
            if path == .integer {
                MatMul.computeInteger(w, dot: IntegerDot.kernel(for: type)!, x: xRaw, ldx: cols, y: &y, ldy: rows, batch: batch,
                                      pool: pool, workspace: scratch.workspace)
            } else if path == .fused {
                MatMul.computeFused(w, dot: FusedDot.kernel(for: type)!, x: xRaw, ldx: cols, y: &y, ldy: rows, batch: batch,
                                    pool: pool, workspace: scratch.workspace)
            } else {
                MatMul.compute(w, x: xRaw, ldx: cols, y: &y, ldy: rows, batch: batch, pool: pool, workspace: scratch.workspace)
            }
            var row = [Float](repeating: 0, count: cols)
            for r in 0..<rows {
                ReferenceDequantize.row(type, raw.baseAddress! + r * w.rowBytes, &row, count: cols)
                for b in 0..<batch {
                    var s = 0.0
                    for i in 0..<cols { s += Double(row[i]) * Double(x[b * cols + i]) }
                    #expect(abs(Double(y[b * rows + r]) - s) <= 1e-4 * max(1, abs(s)), "\(path) row \(r) batch \(b)")
                }
            }
        }
    }
}

/// The x8 layout (``Interleave``): the engine mixes it with row-major rows in one matrix (resident
/// groups, streamed tail), so results must not depend on it at all.
@Suite struct InterleaveTests {
    /// `rows` rows of `type` with the first `interleaved` rearranged, and the row-major original.
    func matrices(_ type: GGMLType, rows: Int, cols: Int, interleaved: Int, _ body: (QuantMatrix, QuantMatrix) -> Void) {
        let data = randomBlocks(type, blocks: rows * cols / type.blockElements, seed: 21)
        let copy = UnsafeMutableRawPointer.allocate(byteCount: data.count, alignment: 64)
        defer { copy.deallocate() }
        data.withUnsafeBytes { raw in
            copy.copyMemory(from: raw.baseAddress!, byteCount: data.count)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: Interleave.scratchBytes(type, cols: cols), alignment: 64)
            Interleave.inPlace(type, copy, rows: interleaved, cols: cols, scratch: scratch)
            scratch.deallocate()
            body(QuantMatrix(type: type, data: raw.baseAddress!, rows: rows, cols: cols),
                 QuantMatrix(type: type, data: copy, rows: rows, cols: cols).interleaved(rows: interleaved))
        }
    }

    /// The K-quants' x8 groups (`kquants_x8.c`) run their AVX-512 VNNI kernels where the CPU has
    /// them and the portable fallback elsewhere; batches take the group back to row-major rows.
    @Test(arguments: [GGMLType.q4_1, .q8_0, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K], [1, 2, 3, 13])
    func decodeIsBitIdenticalToRowMajor(_ type: GGMLType, _ batch: Int) throws {
        guard Interleave.supports(type) else { return }
        try #require(IntegerDot.simd || Interleave.rows(type, 8) == 0)
        // 5 groups, then 5 row-major rows (one four, one left over); the K-quants 3 super-blocks.
        let rows = 45, cols = Interleave.isKQuant(type) ? 768 : 96
        var rng = TestRNG(seed: 5)
        let x = (0..<(batch * cols)).map { _ in Float(rng.next() % 2000) / 1000 - 1 }
        let pool = WorkerPool(threads: 2)
        let scratch = MatMulScratch(threads: 2, maxCols: cols, maxBatch: batch)
        for interleaved in [8, 40] {
            matrices(type, rows: rows, cols: cols, interleaved: interleaved) { plain, x8 in
                var y0 = [Float](repeating: .nan, count: batch * rows), y1 = y0
                let dot = IntegerDot.kernel(for: type)!
                MatMul.computeInteger(plain, dot: dot, x: x, ldx: cols, y: &y0, ldy: rows, batch: batch, pool: pool, workspace: scratch.workspace)
                MatMul.computeInteger(x8, dot: dot, x: x, ldx: cols, y: &y1, ldy: rows, batch: batch, pool: pool, workspace: scratch.workspace)
                #expect(y0 == y1, "\(interleaved) rows interleaved")
                #expect(y0.allSatisfy { $0.isFinite })
            }
        }
    }

    /// A matrix split between a resident head (interleaved) and a streamed tail (row-major), as
    /// the offload runtime builds it, against the contiguous row-major matrix.
    @Test(arguments: [GGMLType.q4_1, .q8_0, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K])
    func splitMatrixMatches(_ type: GGMLType) throws {
        guard Interleave.supports(type) else { return }
        try #require(IntegerDot.simd)
        let rows = 64, cols = Interleave.isKQuant(type) ? 512 : 128, split = 20
        var rng = TestRNG(seed: 9)
        let x = (0..<cols).map { _ in Float(rng.next() % 2000) / 1000 - 1 }
        let pool = WorkerPool(threads: 2)
        let scratch = MatMulScratch(threads: 2, maxCols: cols, maxBatch: 1)
        matrices(type, rows: rows, cols: cols, interleaved: 16) { plain, x8 in
            let mixed = QuantMatrix(type: type, head: x8.data, splitRow: split, tail: plain.row(split), rows: rows, cols: cols,
                                    interleavedRows: 16)
            var y0 = [Float](repeating: .nan, count: rows), y1 = y0
            let dot = IntegerDot.kernel(for: type)!
            MatMul.computeInteger(plain, dot: dot, x: x, ldx: cols, y: &y0, ldy: rows, batch: 1, pool: pool, workspace: scratch.workspace)
            MatMul.computeInteger(mixed, dot: dot, x: x, ldx: cols, y: &y1, ldy: rows, batch: 1, pool: pool, workspace: scratch.workspace)
            #expect(y0 == y1)
        }
    }

    /// Dequantized rows (prefill, embedding lookups) are the same floats in both layouts, and the
    /// float path over an interleaved matrix gives the same products.
    @Test(arguments: [GGMLType.q4_1, .q8_0, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K])
    func dequantizedRowsAndPrefillMatch(_ type: GGMLType) {
        guard Interleave.supports(type) else { return }
        let rows = 24, cols = Interleave.isKQuant(type) ? 768 : 160, batch = 9
        matrices(type, rows: rows, cols: cols, interleaved: 24) { plain, x8 in
            var a = [Float](repeating: 0, count: cols), b = [Float](repeating: .nan, count: cols)
            for r in 0..<rows {
                plain.dequantizeRow(r, into: &a)
                x8.dequantizeRow(r, into: &b)
                #expect(a == b, "row \(r)")
            }
            var rng = TestRNG(seed: 13)
            let x = (0..<(batch * cols)).map { _ in Float(rng.next() % 2000) / 1000 - 1 }
            let pool = WorkerPool(threads: 2)
            let scratch = MatMulScratch(threads: 2, maxCols: cols, maxBatch: batch)
            var y0 = [Float](repeating: .nan, count: batch * rows), y1 = y0
            MatMul.compute(plain, x: x, ldx: cols, y: &y0, ldy: rows, batch: batch, pool: pool, workspace: scratch.workspace)
            MatMul.compute(x8, x: x, ldx: cols, y: &y1, ldy: rows, batch: batch, pool: pool, workspace: scratch.workspace)
            #expect(y0 == y1)
        }
    }

    /// The layout itself, on a hand-built group: row r's d at 2r, its quant bytes 4t..4t+3 in
    /// chunk 2t+h, slot k, with rows 0, 1, 4, 5 in half 0 and 2, 3, 6, 7 in half 1.
    @Test func q8_0GroupLayout() {
        var rows = [UInt8]()
        for r in 0..<8 { rows += GGUFLE.f16(Float(r + 1)) + (0..<32).map { UInt8(r * 32 + $0) } }
        var group = [UInt8](repeating: 0, count: 272)
        rows.withUnsafeBytes { src in group.withUnsafeMutableBytes { Interleave.copy(.q8_0, from: src.baseAddress!, to: $0.baseAddress!, rows: 8, cols: 32) } }
        #expect(Array(group[10..<12]) == GGUFLE.f16(6))          // d of row 5
        #expect(Array(group[16..<20]) == [0, 1, 2, 3])           // chunk 0 (t 0, half 0), slot 0: row 0
        #expect(Array(group[28..<32]) == [160, 161, 162, 163])   // slot 3: row 5
        #expect(Array(group[32..<36]) == [64, 65, 66, 67])       // chunk 1 (half 1), slot 0: row 2
        #expect(Array(group[48..<52]) == [4, 5, 6, 7])           // chunk 2 (t 1, half 0): row 0, bytes 4-7
    }
}

@Suite struct WorkerPoolTests {
    /// Releasing a pool ends its threads: they hold the crew, which then goes too (a worker that
    /// held its pool kept it, and its threads, alive for the life of the process).
    @Test func releasingThePoolEndsItsThreads() {
        weak var crew: WorkerCrew?
        do {
            let pool = WorkerPool(threads: 4)
            crew = pool.crew
            pool.parallelFor(16) { _, _ in }
            #expect(crew != nil)
        }
        #expect(crew == nil)
    }

    @Test func runsEveryTaskOnceAcrossThreads() {
        let pool = WorkerPool(threads: 3)
        for round in 0..<200 {
            let n = round % 17 + 1
            let hits = UnsafeMutablePointer<Int>.allocate(capacity: n)
            hits.initialize(repeating: 0, count: n)
            pool.parallelFor(n) { t, thread in
                precondition(thread < 3)
                hits[t] += 1
            }
            #expect((0..<n).allSatisfy { hits[$0] == 1 })
            hits.deallocate()
        }
    }
}

@Suite struct VectorTests {
    @Test func softmaxSumsToOne() {
        var x: [Float] = [1, 2, 3, 1000]
        Vector.softmax(&x, 4)
        #expect(abs(x.reduce(0, +) - 1) < 1e-6 && x[3] > 0.99)
    }

    @Test func ropeRotatesPairsByLayout() {
        let rope = Rope(style: .interleaved, dims: 4, base: 10000)
        var table = [Float](repeating: 0, count: 4)
        rope.table(position: 1, into: &table)
        var v: [Float] = [1, 0, 1, 0]
        rope.apply(&v, heads: 1, headStride: 4, table: table)
        #expect(abs(v[0] - cosf(1)) < 1e-6 && abs(v[1] - sinf(1)) < 1e-6)
        let neox = Rope(style: .neox, dims: 4, base: 10000)
        var w: [Float] = [1, 1, 0, 0]
        neox.apply(&w, heads: 1, headStride: 4, table: table)
        #expect(abs(w[0] - cosf(1)) < 1e-6 && abs(w[2] - sinf(1)) < 1e-6)
    }
}

@Suite struct VectorGateTests {
    /// Units in the last place between two positive floats.
    func ulps(_ a: Float, _ b: Float) -> Int { abs(Int(a.bitPattern) - Int(b.bitPattern)) }

    @Test func exp8IsWithinTwoUlpOfLibm() {
        var worst = 0, at: Float = 0
        var x: Float = -87
        while x < 88 {
            let v = SIMD8<Float>((0..<8).map { x + Float($0) * 1e-3 })
            let e = Vector.exp8(v)
            for k in 0..<8 where ulps(e[k], expf(v[k])) > worst { worst = ulps(e[k], expf(v[k])); at = v[k] }
            x += 0.0371
        }
        #expect(worst <= 2, "exp8 is \(worst) ulp from expf at \(at)")
        // Far outside the range the gates stay finite: e^-200 is 0, e^200 large but finite.
        let far = Vector.exp8(SIMD8(-200, 200, -1000, 1000, 0, 1, -1, 88))
        #expect(far[0] < 1e-37 && far[2] < 1e-37 && far[1].isFinite && far[3].isFinite && far[1] > 1e38)
        #expect(far[4] == 1 && ulps(far[5], expf(1)) <= 2)
    }

    /// The gates against libm's formulas (tanh for GELU), including a length that leaves a partial
    /// last vector, and each element the same whatever its position (the tail takes the same lanes).
    @Test(arguments: [1, 7, 8, 37, 2048])
    func gatesMatchTheScalarFormulas(n: Int) {
        var rng = TestRNG(seed: UInt64(n))
        let a = (0..<n).map { _ in Float(Int(rng.next() % 20_001) - 10_000) / 1_000 }   // [-10, 10]
        let b = (0..<n).map { _ in Float(Int(rng.next() % 2_001) - 1_000) / 1_000 }
        var silu = a, gelu = a
        silu.withUnsafeMutableBufferPointer { Vector.swiglu($0.baseAddress!, b, n) }
        gelu.withUnsafeMutableBufferPointer { Vector.geglu($0.baseAddress!, b, n) }
        let c = 0.7978845608028654
        var worstSilu = 0.0, worstGelu = 0.0
        for i in 0..<n {
            let g = Double(a[i]), h = Double(b[i])
            let s = g / (1 + Foundation_exp(-g)) * h
            let t = 0.5 * g * (1 + tanh(c * (g + 0.044715 * g * g * g))) * h
            worstSilu = max(worstSilu, abs(Double(silu[i]) - s) / max(abs(s), 1e-3))
            worstGelu = max(worstGelu, abs(Double(gelu[i]) - t) / max(abs(t), 1e-3))
        }
        // The C gates give the bits of the Swift SIMD code they replaced.
        var swiftSilu = a, swiftGelu = a
        swiftSilu.withUnsafeMutableBufferPointer { SwiftSIMDReference.swiglu($0.baseAddress!, b, n) }
        swiftGelu.withUnsafeMutableBufferPointer { SwiftSIMDReference.geglu($0.baseAddress!, b, n) }
        #expect(silu.map(\.bitPattern) == swiftSilu.map(\.bitPattern))
        #expect(gelu.map(\.bitPattern) == swiftGelu.map(\.bitPattern))
        #expect(worstSilu < 2e-6, "swiglu relative error \(worstSilu)")
        #expect(worstGelu < 2e-6, "geglu relative error \(worstGelu)")
        // Position independence: element i alone gives the same bits as inside the run.
        for i in [0, n / 2, n - 1] {
            var one = [a[i]]
            one.withUnsafeMutableBufferPointer { Vector.geglu($0.baseAddress!, [b[i]], 1) }
            #expect(one[0].bitPattern == gelu[i].bitPattern)
        }
    }
}

private func Foundation_exp(_ x: Double) -> Double { Glibc.exp(x) }

/// Which kernel variant this process runs (CFlexKernels picks it at load from the CPU's features).
/// FLEXRUN_EXPECT_KERNELS names the one a run means to test: Tools/baseline-check.sh sets
/// "baseline" when it runs the logit tests under qemu's Nehalem (no AVX) or with
/// FLEXRUN_KERNELS=baseline, so a pass there is known to come from the baseline code.
@Suite struct KernelVariantTests {
    static let expected: String? = getenv("FLEXRUN_EXPECT_KERNELS").map { String(cString: $0) }

    @Test(.enabled(if: expected != nil)) func theExpectedVariantRuns() {
        #expect(Self.expected == "baseline" || Self.expected == "avx2")
        #expect(IntegerDot.avx2 == (Self.expected == "avx2"))
        #expect(cflex_isa_available(Int32(CFLEX_ISA_AVX2)) == (Self.expected == "avx2" ? 1 : 0))
    }
}
