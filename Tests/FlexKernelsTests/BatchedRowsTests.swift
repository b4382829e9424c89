import Testing
@testable import FlexKernels
import CFlexKernels
import FlexFormat

/// The batched four-row kernels of the 32-element formats (`cflex_gemv4n_q4_1/q5_0/q5_1/q8_0`,
/// `rows4n.c`): for every activation row, the bits of the four-row decode kernel run on that row
/// alone, on every instruction set this machine has. That is what lets prompt rows take them: a
/// prompt row then gets exactly the numbers of a generated one.
@Suite struct BatchedRowsTests {
    static let types: [GGMLType] = [.q4_1, .q5_0, .q5_1, .q8_0]
    /// Scalar always; AVX2 where the build and CPU have it. These row-major batched kernels have
    /// no AVX-512 variant (rows4n.c: where the CPU has AVX-512 the resident rows are x8 groups, and
    /// the rows that reach these kernels are streamed; the engine's entry point takes AVX2 there),
    /// so the `_isa` entry refuses AVX-512: checked below.
    static let isas: [Int32] = [Int32(CFLEX_ISA_SCALAR), Int32(CFLEX_ISA_AVX2)]
        .filter { cflex_isa_available($0) != 0 }

    static func decodeKernel(_ type: GGMLType) -> IntegerDot.FourRowKernel {
        switch type {
        case .q4_1: return cflex_gemv4_q4_1
        case .q5_0: return cflex_gemv4_q5_0
        case .q5_1: return cflex_gemv4_q5_1
        default: return cflex_gemv4_q8_0
        }
    }

    static func batchedKernel(_ type: GGMLType) -> IntegerDot.FourRowBatchKernel {
        switch type {
        case .q4_1: return cflex_gemv4n_q4_1
        case .q5_0: return cflex_gemv4n_q5_0
        case .q5_1: return cflex_gemv4n_q5_1
        default: return cflex_gemv4n_q8_0
        }
    }

    /// Odd block counts (1, 3, 7) and SmolLM2's 18; odd batch sizes, and 67: past the kernel's chunk
    /// of 64 activation rows (and its pairs of rows, with one left over). Activation rows are strided (xstride > the row's blocks), their
    /// blocks' magnitudes spread over four orders (so the float steps' order shows), and results land
    /// with a row stride, as ``MatMul`` passes them.
    @Test(arguments: types, [1, 3, 7, 18])
    func batchedMatchesDecodeKernelPerActivationRow(_ type: GGMLType, _ nb: Int) {
        let cols = 32 * nb, xstride = nb + 3, ldy = 7, maxN = 67
        let rowBytes = nb * type.blockBytes
        let weights = randomBlocks(type, blocks: 4 * nb, seed: 77 &+ UInt64(nb))
        var rng = TestRNG(seed: 4243 &+ UInt64(type.rawValue))
        var raw = [[Float]]()
        var blocks = [cflex_q16_block](repeating: cflex_q16_block(), count: maxN * xstride)
        for j in 0..<maxN {
            var x = [Float](repeating: 0, count: cols)
            for blk in 0..<nb {
                let magnitude = Float.pow10(Int(rng.next() % 5) - 2)
                for i in 0..<32 { x[32 * blk + i] = magnitude * (Float(rng.next() % 20001) / 10_000 - 1) }
            }
            raw.append(x)
            blocks.withUnsafeMutableBufferPointer { cflex_quantize_q16(x, $0.baseAddress! + j * xstride, Int32(cols)) }
        }
        weights.withUnsafeBytes { w in
            let rows: [UnsafeRawPointer?] = (0..<4).map { UnsafeRawPointer(w.baseAddress! + $0 * rowBytes) }
            // The decode kernel, one activation row at a time; checked against the reference
            // dequantizer (in Double) so that the comparisons below are not between two wrong answers.
            var single = [[Float]]()
            var reference = [Float](repeating: 0, count: cols)
            for j in 0..<maxN {
                var y = [Float](repeating: .nan, count: 4)
                blocks.withUnsafeBufferPointer { Self.decodeKernel(type)(rows, $0.baseAddress! + j * xstride, Int32(nb), &y) }
                single.append(y)
                let x = roundTripQ16(raw[j])
                for r in 0..<4 {
                    ReferenceDequantize.row(type, w.baseAddress! + r * rowBytes, &reference, count: cols)
                    var s = 0.0, m = 0.0
                    for i in 0..<cols { s += Double(reference[i]) * Double(x[i]); m += abs(Double(reference[i]) * Double(x[i])) }
                    #expect(abs(Double(y[r]) - s) <= 1e-5 * m + 1e-30, "\(type) decode kernel row \(r) activation \(j): \(y[r]) vs \(s)")
                }
            }
            for n in [1, 3, 5, 8, 9, 17, 67] {
                for isa in Self.isas {
                    var y = [Float](repeating: .nan, count: n * ldy)
                    let ok = cflex_gemv4n_q32_isa(Int32(type.rawValue), isa, rows, blocks, Int32(xstride), Int32(n), Int32(nb), &y, Int32(ldy))
                    #expect(ok == 1)
                    for j in 0..<n {
                        #expect(y[j * ldy..<j * ldy + 4].map(\.bitPattern) == single[j].map(\.bitPattern),
                                "\(type) \(nb) blocks isa \(isa) n \(n) activation row \(j)")
                        #expect(y[j * ldy + 4..<(j + 1) * ldy].allSatisfy { $0.isNaN }, "wrote past its four results")
                    }
                }
                var refused = [Float](repeating: .nan, count: n * ldy)
                #expect(cflex_gemv4n_q32_isa(Int32(type.rawValue), Int32(CFLEX_ISA_AVX512), rows, blocks, Int32(xstride), Int32(n),
                                             Int32(nb), &refused, Int32(ldy)) == 0, "an AVX-512 variant exists now: test it")
                #expect(refused.allSatisfy { $0.isNaN })
                // The entry point the engine calls (the instruction set picked at load).
                var y = [Float](repeating: .nan, count: n * ldy)
                Self.batchedKernel(type)(rows, blocks, Int32(xstride), Int32(n), Int32(nb), &y, Int32(ldy))
                for j in 0..<n {
                    #expect(y[j * ldy..<j * ldy + 4].map(\.bitPattern) == single[j].map(\.bitPattern), "\(type) entry point n \(n) row \(j)")
                }
            }
        }
    }

    /// Repeated row pointers (how ``MatMul`` fills the four with 1-3 rows left over) and rows at
    /// unrelated addresses: each result is its own row's.
    @Test(arguments: types)
    func repeatedRowsGiveTheirOwnResults(_ type: GGMLType) {
        let nb = 5, rowBytes = nb * type.blockBytes, n = 3
        let weights = randomBlocks(type, blocks: 4 * nb, seed: 91)
        var rng = TestRNG(seed: 17)
        let x = (0..<(n * 32 * nb)).map { _ in Float(rng.next() % 2000) / 1000 - 1 }
        var blocks = [cflex_q16_block](repeating: cflex_q16_block(), count: n * nb)
        cflex_quantize_q16(x, &blocks, Int32(x.count))
        weights.withUnsafeBytes { w in
            let all: [UnsafeRawPointer?] = (0..<4).map { UnsafeRawPointer(w.baseAddress! + $0 * rowBytes) }
            var full = [Float](repeating: .nan, count: 4 * n)
            Self.batchedKernel(type)(all, blocks, Int32(nb), Int32(n), Int32(nb), &full, 4)
            let mixed: [UnsafeRawPointer?] = [all[2], all[0], all[2], all[2]]
            var y = [Float](repeating: .nan, count: 4 * n)
            Self.batchedKernel(type)(mixed, blocks, Int32(nb), Int32(n), Int32(nb), &y, 4)
            for j in 0..<n {
                #expect(y[4 * j..<4 * j + 4].map(\.bitPattern) == [2, 0, 2, 2].map { full[4 * j + $0].bitPattern }, "\(type) activation \(j)")
                #expect(full[4 * j..<4 * j + 4].allSatisfy { $0.isFinite })
            }
        }
    }
}
