import FlexFormat
import Glibc

/// Float rows → ggml quant blocks: what `flexrun pack --requant` writes.
///
/// `plain` follows ggml's reference quantizers (`quantize_row_*_ref`), so a requantized file is
/// the file llama.cpp's own tools would write from the same floats. `CompressionAware` trades a
/// little precision for codes that an entropy coder (zstd's Huffman stage) stores in fewer bits.
public enum Quantize {
    /// The types a model can be requantized to.
    public static let targets: [GGMLType] = [.q8_0, .q6_K, .q5_K, .q5_1, .q5_0, .q4_K, .q4_1, .q4_0]

    /// Quantizes `count` floats (a whole number of `type`'s blocks) into `type`'s blocks at `dst`.
    public static func plain(_ type: GGMLType, _ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
        precondition(count % type.blockElements == 0 && targets.contains(type), "cannot quantize \(count) floats to \(type)")
        switch type {
        case .q4_K: return kQuantWithMins(bits: 4, src, count: count, into: dst)
        case .q5_K: return kQuantWithMins(bits: 5, src, count: count, into: dst)
        case .q6_K: return q6_K(src, count: count, into: dst)
        default: break
        }
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 32) { q in
        for b in 0..<count / 32 {
            let x = src + 32 * b, out = dst + b * type.blockBytes
            switch type {
            case .q8_0:
                var amax: Float = 0
                for i in 0..<32 { amax = max(amax, abs(x[i])) }
                let d = amax / 127, id: Float = d != 0 ? 1 / d : 0
                out.storeBytes(of: Float16(d).bitPattern, as: UInt16.self)
                for i in 0..<32 { out.storeBytes(of: Int8((x[i] * id).rounded()), toByteOffset: 2 + i, as: Int8.self) }
            case .q4_0, .q5_0:
                // The signed value of largest magnitude maps to the most negative code.
                let levels: Float = type == .q4_0 ? -8 : -16, top = type == .q4_0 ? 15 : 31
                var amax: Float = 0, mx: Float = 0
                for i in 0..<32 where abs(x[i]) > amax { amax = abs(x[i]); mx = x[i] }
                let d = mx / levels, id: Float = d != 0 ? 1 / d : 0
                out.storeBytes(of: Float16(d).bitPattern, as: UInt16.self)
                // One addition, as C's `x*id + 8.5f`: two would round twice.
                let offset = 0.5 - levels
                for i in 0..<32 { q[i] = min(top, Int(x[i] * id + offset)) }
                storeNibbles(q, high: type == .q5_0, out)
            case .q4_1, .q5_1:
                var lo = x[0], hi = x[0]
                for i in 1..<32 { lo = min(lo, x[i]); hi = max(hi, x[i]) }
                let top = type == .q4_1 ? 15 : 31
                let d = (hi - lo) / Float(top), id: Float = d != 0 ? 1 / d : 0
                out.storeBytes(of: Float16(d).bitPattern, as: UInt16.self)
                out.storeBytes(of: Float16(lo).bitPattern, toByteOffset: 2, as: UInt16.self)
                // ggml clamps Q4_1's codes to 15 but not Q5_1's; (hi − lo)·id + 0.5 stays below 32.
                for i in 0..<32 { q[i] = min(top, Int((x[i] - lo) * id + 0.5)) }
                storeNibbles(q, high: type == .q5_1, out + 2)
            default: fatalError("unreachable")
            }
        }
        }
    }

    /// Q4_0/Q4_1/Q5_0/Q5_1 codes after the scale(s): element j's low four bits in byte j's low
    /// nibble, element j+16's in its high nibble; Q5's fifth bits in a 32-bit mask before them.
    private static func storeNibbles(_ q: UnsafeMutableBufferPointer<Int>, high: Bool, _ out: UnsafeMutableRawPointer) {
        var p = out + 2
        if high {
            var qh: UInt32 = 0
            for j in 0..<16 {
                qh |= UInt32((q[j] >> 4) & 1) << j
                qh |= UInt32((q[j + 16] >> 4) & 1) << (j + 16)
            }
            p.storeBytes(of: qh.littleEndian, toByteOffset: 0, as: UInt32.self)
            p += 4
        }
        for j in 0..<16 { p.storeBytes(of: UInt8(q[j] & 0xF) | UInt8(q[j + 16] & 0xF) << 4, toByteOffset: j, as: UInt8.self) }
    }
}

extension Quantize {
    /// Entropy-constrained Q8_0 (rate-distortion optimised quantization, as video coders do).
    ///
    /// GGUF's Q8_0 spreads every block over ±127, so its codes carry ~7 bits of entropy and zstd
    /// gains little. Here each block picks its step from a ladder (amax/127 … amax/7) and each
    /// element may round one step toward zero, minimising
    ///
    ///     squared error / mean square of the tensor  +  λ · bits of the codes,
    ///
    /// where a code's bits are −log₂ of its frequency in the tensor (measured on a first pass and
    /// refined once), and a block's scale costs 16 bits unless it is the tensor's shared step (see
    /// below). λ = 0 is plain Q8_0. The output is ordinary Q8_0, so the kernels and any
    /// GGUF reader use it unchanged; only the entropy coder sees the difference.
    public struct CompressionAware: Sendable {
        public var lambda: Double
        /// Passes of (choose codes → re-measure code frequencies).
        public var passes = 2
        static let ladder: [Float] = [127, 111, 95, 79, 63, 55, 47, 39, 31, 27, 23, 19, 15, 11, 7]

        public init(lambda: Double) { self.lambda = lambda }

        /// Quantizes a whole tensor (`count` floats, a multiple of 32) into Q8_0 blocks at `dst`.
        public func q8_0(_ src: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
            precondition(count % 32 == 0)
            guard lambda > 0 else { return Quantize.plain(.q8_0, src, count: count, into: dst) }
            var meanSquare = 0.0
            for i in 0..<count { meanSquare += Double(src[i] * src[i]) }
            meanSquare = max(meanSquare / Double(count), 1e-30)
            let blocks = count / 32
            // First code frequencies: those of plain Q8_0.
            Quantize.plain(.q8_0, src, count: count, into: dst)
            var bits = Self.bitsTable(dst, blocks: blocks)
            let scale = Float(1 / meanSquare), lam = Float(lambda)
            // The tensor's shared step: at high rate a uniform quantizer's squared error per weight
            // is Δ²/12 and each halving of Δ costs one bit, so the step whose error falls by λ per
            // bit is Δ = √(6 λ · mean square / ln 2). Blocks that take it store a scale identical
            // to their neighbours', which zstd stores in almost no bits; any other scale costs 16.
            let shared = Float(Float16(Float((6 * lambda * meanSquare / M_LN2).squareRoot())))
            var bestCodes = [Int8](repeating: 0, count: 32), codes = bestCodes
            for _ in 0..<passes {
                for b in 0..<blocks {
                    let x = src + 32 * b
                    var amax: Float = 0
                    for i in 0..<32 { amax = max(amax, abs(x[i])) }
                    let out = dst + 34 * b
                    guard amax > 0 else {
                        out.storeBytes(of: UInt16(0), as: UInt16.self)
                        for i in 0..<32 { out.storeBytes(of: 0, toByteOffset: 2 + i, as: Int8.self) }
                        continue
                    }
                    var best = Float.infinity, bestD: Float = 0
                    // Candidate −1 is the shared step, the others the ladder's.
                    for c in -1..<Self.ladder.count {
                        let d = c < 0 ? shared : Float(Float16(amax / Self.ladder[c])), id = 1 / d
                        guard d > 0, d.isFinite else { continue }
                        var cost: Float = d == shared ? 0 : lam * 16
                        for i in 0..<32 {
                            let q = max(-127, min(127, (x[i] * id).rounded()))
                            let e0 = x[i] - d * q, c0 = e0 * e0 * scale + lam * bits[Int(q) + 128]
                            var pick = q, c = c0
                            if q != 0 {
                                let q1 = q - (q > 0 ? 1 : -1)
                                let e1 = x[i] - d * q1, c1 = e1 * e1 * scale + lam * bits[Int(q1) + 128]
                                if c1 < c0 { pick = q1; c = c1 }
                            }
                            codes[i] = Int8(pick)
                            cost += c
                        }
                        if cost < best { best = cost; bestD = d; swap(&bestCodes, &codes) }
                    }
                    out.storeBytes(of: Float16(bestD).bitPattern, as: UInt16.self)
                    for i in 0..<32 { out.storeBytes(of: bestCodes[i], toByteOffset: 2 + i, as: Int8.self) }
                }
                bits = Self.bitsTable(dst, blocks: blocks)
            }
        }

        /// −log₂ frequency of each code (index code + 128) in Q8_0 blocks; unseen codes cost as
        /// much as a code seen once.
        static func bitsTable(_ blocks: UnsafeRawPointer, blocks count: Int) -> [Float] {
            var hist = [Int](repeating: 0, count: 256)
            for b in 0..<count {
                for i in 0..<32 { hist[Int(blocks.load(fromByteOffset: 34 * b + 2 + i, as: Int8.self)) + 128] += 1 }
            }
            let total = Double(32 * count)
            return hist.map { Float(-log2(Double(max($0, 1)) / total)) }
        }
    }
}
