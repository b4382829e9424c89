import Testing
@testable import FlexKernels
import CFlexKernels
import FlexFormat

/// The K-quant integer kernels (`kquants.c`) on every instruction set this machine has, against
/// the reference dequantizer times the activations as the kernels see them (16-bit round trip).
@Suite struct KQuantKernelTests {
    static let types: [GGMLType] = [.q4_K, .q5_K, .q6_K]
    /// Scalar always; AVX2 and AVX-512 where the build and CPU have them, whichever the engine picked.
    static let isas: [Int32] = [Int32(CFLEX_ISA_SCALAR), Int32(CFLEX_ISA_AVX2), Int32(CFLEX_ISA_AVX512)]
        .filter { cflex_isa_available($0) != 0 }

    /// Four rows of `superBlocks` super-blocks each, in one buffer.
    struct Case {
        let type: GGMLType, superBlocks: Int, weights: [UInt8], x: [Float]
        var cols: Int { 256 * superBlocks }
        var rowBytes: Int { superBlocks * type.blockBytes }
    }

    /// Random blocks (random 6-bit scales and mins, random int8 Q6_K scales, -128 included) with
    /// f16 scales of the given magnitude, and activation blocks whose size varies by up to
    /// `spread` orders of magnitude from one block to the next.
    static func makeCase(_ type: GGMLType, superBlocks: Int, seed: UInt64, scale: Float = 0.05, spread: Int = 0) -> Case {
        var w = randomBlocks(type, blocks: 4 * superBlocks, seed: seed)
        var rng = TestRNG(seed: seed ^ 0xABCD)
        func put(_ off: Int, _ v: Float) { let b = GGUFLE.f16(v); w[off] = b[0]; w[off + 1] = b[1] }
        if scale != 0.05 {
            for b in 0..<4 * superBlocks {
                let o = b * type.blockBytes, sign: Float = rng.next() % 2 == 0 ? 1 : -1
                if type == .q6_K { put(o + 208, sign * scale) } else { put(o, scale); put(o + 2, sign * scale) }
            }
        }
        let cols = 256 * superBlocks
        var x = [Float](repeating: 0, count: cols)
        for blk in 0..<cols / 32 {
            let magnitude = spread == 0 ? 1 : Float.pow10(Int(rng.next() % UInt64(2 * spread + 1)) - spread)
            for i in 0..<32 { x[32 * blk + i] = magnitude * (Float(rng.next() % 20001) / 10_000 - 1) }
        }
        return Case(type: type, superBlocks: superBlocks, weights: w, x: x)
    }

    /// Runs the four-row kernel on `isa` and returns its four results.
    static func gemv4(_ c: Case, isa: Int32) -> [Float] {
        var blocks = [cflex_q16_block](repeating: cflex_q16_block(), count: c.cols / 32)
        cflex_quantize_q16(c.x, &blocks, Int32(c.cols))
        var y = [Float](repeating: .nan, count: 4)
        c.weights.withUnsafeBytes { w in
            let rows: [UnsafeRawPointer?] = (0..<4).map { UnsafeRawPointer(w.baseAddress! + $0 * c.rowBytes) }
            let ok = cflex_gemv4_kquant_isa(Int32(c.type.rawValue), isa, rows, blocks, Int32(c.cols / 32), &y)
            #expect(ok == 1)
        }
        return y
    }

    /// Each row's exact dot product (in Double) of the reference rows and the round-tripped
    /// activations, and the sum of |w·x| that bounds float rounding.
    static func reference(_ c: Case) -> [(dot: Double, magnitude: Double)] {
        let x = roundTripQ16(c.x)
        var row = [Float](repeating: 0, count: c.cols)
        return (0..<4).map { r in
            c.weights.withUnsafeBytes { ReferenceDequantize.row(c.type, $0.baseAddress! + r * c.rowBytes, &row, count: c.cols) }
            var s = 0.0, m = 0.0
            for i in 0..<c.cols { s += Double(row[i]) * Double(x[i]); m += abs(Double(row[i]) * Double(x[i])) }
            return (s, m)
        }
    }

    static func expectClose(_ got: [Float], _ want: [(dot: Double, magnitude: Double)], _ what: String) {
        for r in 0..<4 {
            #expect(abs(Double(got[r]) - want[r].dot) <= 1e-5 * want[r].magnitude + 1e-30, "\(what) row \(r): \(got[r]) vs \(want[r].dot)")
        }
    }

    /// Odd super-block counts (1, 3, 5) and every instruction set, against the reference; and
    /// every instruction set gives the same bits (the engine may run any of them on a given CPU).
    @Test(arguments: types, [1, 3, 5])
    func fourRowsMatchReference(_ type: GGMLType, _ superBlocks: Int) {
        let c = Self.makeCase(type, superBlocks: superBlocks, seed: UInt64(superBlocks) &* 77 &+ UInt64(type.rawValue))
        let want = Self.reference(c)
        var first: [Float]?
        for isa in Self.isas {
            let y = Self.gemv4(c, isa: isa)
            Self.expectClose(y, want, "\(type) isa \(isa)")
            if let first { #expect(y.map(\.bitPattern) == first.map(\.bitPattern), "\(type) isa \(isa) differs from scalar") }
            first = first ?? y
        }
    }

    /// f16 scales from subnormal to near the f16 maximum, activation blocks spread over 8 orders of
    /// magnitude: the float tail scales each block on its own, so each is as accurate as any.
    @Test(arguments: types, [Float(6e-8), 1e-3, 30, 6e4])
    func extremeScales(_ type: GGMLType, _ scale: Float) {
        let c = Self.makeCase(type, superBlocks: 3, seed: 99, scale: scale, spread: 4)
        let want = Self.reference(c)
        var first: [Float]?
        for isa in Self.isas {
            let y = Self.gemv4(c, isa: isa)
            Self.expectClose(y, want, "\(type) scale \(scale) isa \(isa)")
            #expect(y.allSatisfy { $0.isFinite })
            if let first { #expect(y.map(\.bitPattern) == first.map(\.bitPattern)) }
            first = first ?? y
        }
    }

    /// The largest integer sums the formats allow: every quant and scale at its extreme and every
    /// activation at ±32767. A super-block's scaled sum would overflow int32 here (and a Q6_K
    /// block's two scaled halves), so this pins the per-block (per-16 for Q6_K) float tail.
    @Test(arguments: types)
    func saturatedBlocksDoNotOverflow(_ type: GGMLType) {
        var w = [UInt8](repeating: 0, count: 4 * type.blockBytes)
        for r in 0..<4 {
            let o = r * type.blockBytes
            switch type {
            case .q6_K:
                // q = 0 → −32 (row 0, 1) or 63 → 31 (rows 2, 3); scales −128 or 127.
                let q: UInt8 = r < 2 ? 0 : 0xFF
                for i in 0..<192 { w[o + i] = q }
                for i in 0..<16 { w[o + 192 + i] = UInt8(bitPattern: r % 2 == 0 ? -128 : 127) }
                w.replaceSubrange(o + 208..<o + 210, with: GGUFLE.f16(1))
            default:
                // All scales and mins 63, every quant at its top (15, or 31 with the high bit).
                for i in 4..<16 { w[o + i] = 0xFF }
                for i in 16..<type.blockBytes { w[o + i] = 0xFF }
                w.replaceSubrange(o..<o + 2, with: GGUFLE.f16(1))
                w.replaceSubrange(o + 2..<o + 4, with: GGUFLE.f16(r % 2 == 0 ? 0 : 0.5))
            }
        }
        for sign: Float in [1, -1] {
            let c = Case(type: type, superBlocks: 1, weights: w, x: [Float](repeating: sign * 3, count: 256))
            let want = Self.reference(c)
            for isa in Self.isas { Self.expectClose(Self.gemv4(c, isa: isa), want, "\(type) sign \(sign) isa \(isa)") }
        }
    }

    /// x8 groups (`kquants_x8.c`): interleaving a group and taking its rows back gives the rows'
    /// bytes, each row's super-blocks come back one at a time too, and the group kernel on every
    /// path this machine has (the portable fallback always; AVX-512 VNNI where it runs) gives each
    /// of the 8 rows the four-row kernel's bits, with small and large scales of both signs and
    /// activations spread over six decades.
    @Test(arguments: types, [1, 3])
    func x8GroupsMatchFourRows(_ type: GGMLType, _ superBlocks: Int) {
        let a = Self.makeCase(type, superBlocks: superBlocks, seed: 71 &+ UInt64(superBlocks), spread: 3)
        let b = Self.makeCase(type, superBlocks: superBlocks, seed: 72, scale: 3)
        let rows = a.weights + b.weights, nb = a.cols / 32, t = Int32(type.rawValue)
        var blocks = [cflex_q16_block](repeating: cflex_q16_block(), count: nb)
        cflex_quantize_q16(a.x, &blocks, Int32(a.cols))
        var want = [Float](repeating: .nan, count: 8)
        rows.withUnsafeBytes { w in
            for h in 0..<2 {
                let four: [UnsafeRawPointer?] = (0..<4).map { UnsafeRawPointer(w.baseAddress! + (4 * h + $0) * a.rowBytes) }
                want.withUnsafeMutableBufferPointer { _ = cflex_gemv4_kquant_isa(t, Int32(CFLEX_ISA_SCALAR), four, blocks, Int32(nb), $0.baseAddress! + 4 * h) }
            }
        }
        var group = [UInt8](repeating: 0, count: rows.count), back = group
        cflex_x8k_interleave(t, rows, Int32(nb), &group)
        #expect(group != rows)
        cflex_x8k_rows(t, group, Int32(nb), &back)
        #expect(back == rows)
        var block = [UInt8](repeating: 0, count: type.blockBytes)
        for r in 0..<8 {
            for i in 0..<superBlocks {
                group.withUnsafeBytes { cflex_x8k_block(t, $0.baseAddress! + 8 * type.blockBytes * i, Int32(r), &block) }
                let at = r * a.rowBytes + i * type.blockBytes
                #expect(block[...] == rows[at..<at + type.blockBytes], "row \(r) super-block \(i)")
            }
        }
        var ran = 0
        for isa in [Int32(CFLEX_ISA_SCALAR), Int32(CFLEX_ISA_AVX512)] {
            var y = [Float](repeating: .nan, count: 8)
            guard cflex_gemv8_kquant_isa(t, isa, group, blocks, Int32(nb), &y) != 0 else { continue }
            ran += 1
            #expect(y.map(\.bitPattern) == want.map(\.bitPattern), "isa \(isa)")
        }
        #expect(ran == (IntegerDot.x8KQuants ? 2 : 1))
        #expect(want.allSatisfy { $0.isFinite && $0 != 0 })
    }

    /// The one-row kernel gives the bits of the four-row kernel, and a repeated row gives its own
    /// result in every lane (how ``MatMul`` fills the last 1–3 rows of a task).
    @Test(arguments: types)
    func oneRowAndRepeatedRowsMatchFourRows(_ type: GGMLType) {
        let c = Self.makeCase(type, superBlocks: 3, seed: 5)
        let y = Self.gemv4(c, isa: Int32(CFLEX_ISA_SCALAR))
        var blocks = [cflex_q16_block](repeating: cflex_q16_block(), count: c.cols / 32)
        cflex_quantize_q16(c.x, &blocks, Int32(c.cols))
        let dot: IntegerDot.RowKernel = type == .q4_K ? cflex_dot_q4_K : type == .q5_K ? cflex_dot_q5_K : cflex_dot_q6_K
        c.weights.withUnsafeBytes { w in
            for r in 0..<4 {
                let row = w.baseAddress! + r * c.rowBytes
                #expect(dot(row, blocks, Int32(c.cols / 32)).bitPattern == y[r].bitPattern, "row \(r)")
                var same = [Float](repeating: .nan, count: 4)
                guard case .four(let four, _, _) = IntegerDot.kernel(for: type) else { Issue.record("no four-row kernel"); return }
                let same4: [UnsafeRawPointer?] = [row, row, row, row]
                four(same4, blocks, Int32(c.cols / 32), &same)
                #expect(same.allSatisfy { $0.bitPattern == y[r].bitPattern }, "row \(r) repeated")
            }
        }
    }

    /// The batched kernel (`cflex_gemv4n_*`) on every instruction set gives, for each activation
    /// row, the bits of the four-row kernel run on that row alone (batch invariance), for batch
    /// sizes below, at and past its chunk of 8 and 1 or 3 super-blocks; activation rows are
    /// strided (xstride > the row's blocks) and results land with a row stride, as ``MatMul``
    /// passes them.
    @Test(arguments: types, [1, 3])
    func batchedMatchesFourRowsPerActivationRow(_ type: GGMLType, _ superBlocks: Int) {
        let c = Self.makeCase(type, superBlocks: superBlocks, seed: 31 &+ UInt64(superBlocks), spread: 2)
        let nb = c.cols / 32, xstride = nb + 3, ldy = 7, maxN = 13
        var rng = TestRNG(seed: 4242 &+ UInt64(type.rawValue))
        var blocks = [cflex_q16_block](repeating: cflex_q16_block(), count: maxN * xstride)
        for j in 0..<maxN {
            let x = (0..<c.cols).map { i in Float(rng.next() % 20001) / 10_000 - 1 + (i % 32 == 0 ? Float(j) : 0) }
            blocks.withUnsafeMutableBufferPointer { cflex_quantize_q16(x, $0.baseAddress! + j * xstride, Int32(c.cols)) }
        }
        c.weights.withUnsafeBytes { w in
            let rows: [UnsafeRawPointer?] = (0..<4).map { UnsafeRawPointer(w.baseAddress! + $0 * c.rowBytes) }
            for isa in Self.isas {
                var single = [[Float]]()
                for j in 0..<maxN {
                    var y = [Float](repeating: .nan, count: 4)
                    blocks.withUnsafeBufferPointer {
                        #expect(cflex_gemv4_kquant_isa(Int32(c.type.rawValue), isa, rows, $0.baseAddress! + j * xstride, Int32(nb), &y) == 1)
                    }
                    single.append(y)
                }
                for n in [1, 2, 3, 5, 8, 9, 13] {
                    var y = [Float](repeating: .nan, count: n * ldy)
                    let ok = cflex_gemv4n_kquant_isa(Int32(c.type.rawValue), isa, rows, blocks, Int32(xstride), Int32(n), Int32(nb), &y, Int32(ldy))
                    #expect(ok == 1)
                    for j in 0..<n {
                        #expect(y[j * ldy..<j * ldy + 4].map(\.bitPattern) == single[j].map(\.bitPattern),
                                "\(type) \(superBlocks) super-blocks isa \(isa) n \(n) activation row \(j)")
                        #expect(y[j * ldy + 4..<j * ldy + ldy].allSatisfy { $0.isNaN }, "wrote past its four results")
                    }
                }
            }
        }
    }

    /// The lane kernels (activation rows in the vector lanes, AVX-512 VNNI): for every activation
    /// row, the bits of the four-row kernel on that row alone, for batches that fill 16 lanes,
    /// leave some empty, and pass the 64 rows one pass holds; 1 and 3 super-blocks; results with a
    /// row stride, nothing written past the four. The AVX2 form wherever the AVX2 variant runs, the VNNI one
    /// where the CPU has it.
    @Test(.enabled(if: IntegerDot.avx2), arguments: types, [1, 3])
    func lanesMatchFourRowsPerActivationRow(_ type: GGMLType, _ superBlocks: Int) throws {
        let c = Self.makeCase(type, superBlocks: superBlocks, seed: 77 &+ UInt64(superBlocks), spread: 2)
        let nb = c.cols / 32, xstride = nb + 3, ldy = 7, maxN = 70
        var rng = TestRNG(seed: 999 &+ UInt64(type.rawValue))
        var blocks = [cflex_q16_block](repeating: cflex_q16_block(), count: maxN * xstride)
        for j in 0..<maxN {
            let x = (0..<c.cols).map { i in Float(rng.next() % 20001) / 10_000 - 1 + (i % 32 == 0 ? Float(j % 9) : 0) }
            blocks.withUnsafeMutableBufferPointer { cflex_quantize_q16(x, $0.baseAddress! + j * xstride, Int32(c.cols)) }
        }
        let packed = UnsafeMutableRawPointer.allocate(byteCount: (maxN + 15) / 16 * nb * Int(CFLEX_KQ_LANES_BLOCK), alignment: 64)
        defer { packed.deallocate() }
        try c.weights.withUnsafeBytes { w in
            let rows: [UnsafeRawPointer?] = (0..<4).map { UnsafeRawPointer(w.baseAddress! + $0 * c.rowBytes) }
            var single = [[Float]]()
            for j in 0..<maxN {
                var y = [Float](repeating: .nan, count: 4)
                blocks.withUnsafeBufferPointer {
                    #expect(cflex_gemv4_kquant_isa(Int32(c.type.rawValue), Int32(CFLEX_ISA_SCALAR), rows, $0.baseAddress! + j * xstride, Int32(nb), &y) == 1)
                }
                single.append(y)
            }
            for n in [1, 12, 16, 17, 33, 64, 70] {
                cflex_kq_lanes_pack(blocks, Int32(xstride), Int32(n), Int32(nb), packed)
                for vnni in cflex_kq_lanes_cpu() != 0 ? [false, true] : [false] {
                    var y = [Float](repeating: .nan, count: n * ldy)
                    let kernel = vnni ? cflex_gemm4_kquant_lanes : cflex_gemm4_kquant_lanes_256
                    try #require(kernel(Int32(c.type.rawValue), rows, packed, Int32(n), Int32(nb), &y, Int32(ldy)) == 1)
                    for j in 0..<n {
                        #expect(y[j * ldy..<j * ldy + 4].map(\.bitPattern) == single[j].map(\.bitPattern),
                                "\(type) \(superBlocks) super-blocks n \(n) activation row \(j) vnni \(vnni)")
                        #expect(y[j * ldy + 4..<j * ldy + ldy].allSatisfy { $0.isNaN }, "wrote past its four results")
                    }
                }
            }
        }
    }
}

extension Float {
    static func pow10(_ e: Int) -> Float { e >= 0 ? (0..<e).reduce(1) { r, _ in r * 10 } : 1 / pow10(-e) }
}
