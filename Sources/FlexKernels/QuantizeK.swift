import FlexFormat

/// ggml's reference K-quant quantizers: float rows → Q4_K, Q5_K and Q6_K super-blocks of 256.
///
/// Ports of `quantize_row_q{4,5,6}_K_ref` (ggml-quants.c) and their helpers `nearest_int`,
/// `make_qkx2_quants` and `make_qx_quants`, kept operation for operation: every sum is taken in
/// the same order and every product rounded where C rounds it (Swift, like ggml-base's build,
/// never fuses a multiply-add), so the blocks are ggml's bit for bit. llama.cpp's quantizer uses
/// exactly these when it has no importance matrix, so a file requantized here is the file
/// `llama-quantize` writes from the same floats (`Tools/kquant_fixture.py` checks it).
extension Quantize {
    /// Round to nearest, ties to even, through the float mantissa (ggml `nearest_int`); valid for
    /// |x| ≤ 4194303, which every caller respects.
    @inline(__always) static func nearestInt(_ x: Float) -> Int {
        Int(Int32(bitPattern: (x + 12582912).bitPattern & 0x007F_FFFF)) - 0x0040_0000
    }

    /// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below it is all zero.
    static let groupMaxEps: Float = 1e-15

    /// Codes 0…nmax for `n` values with a scale and a min (x ≈ scale·L − min), chosen by a grid
    /// search over `nstep + 1` candidate scales minimising the weighted (absolute or squared)
    /// error; the min is at most 0 (ggml `make_qkx2_quants`). Returns (scale, min as a positive
    /// offset).
    static func makeQKX2Quants(n: Int, nmax: Int, _ x: UnsafePointer<Float>, weights: UnsafePointer<Float>,
                               _ L: UnsafeMutablePointer<UInt8>, _ laux: UnsafeMutablePointer<UInt8>,
                               rmin: Float, rdelta: Float, nstep: Int, useMAD: Bool) -> (scale: Float, min: Float) {
        var min = x[0], max = x[0]
        var sumW = weights[0], sumX = sumW * x[0]
        for i in 1..<n {
            if x[i] < min { min = x[i] }
            if x[i] > max { max = x[i] }
            let w = weights[i]
            sumW += w
            sumX += w * x[i]
        }
        if min > 0 { min = 0 }
        if max == min {
            for i in 0..<n { L[i] = 0 }
            return (0, -min)
        }
        let fmax = Float(nmax)
        var iscale = fmax / (max - min)
        var scale = 1 / iscale
        var bestError: Float = 0
        for i in 0..<n {
            let l = nearestInt(iscale * (x[i] - min))
            L[i] = UInt8(Swift.max(0, Swift.min(nmax, l)))
            var diff = scale * Float(L[i]) + min - x[i]
            diff = useMAD ? abs(diff) : diff * diff
            bestError += weights[i] * diff
        }
        if nstep < 1 { return (scale, -min) }
        for step in 0...nstep {
            iscale = (rmin + rdelta * Float(step) + fmax) / (max - min)
            var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
            for i in 0..<n {
                let l = Swift.max(0, Swift.min(nmax, nearestInt(iscale * (x[i] - min))))
                laux[i] = UInt8(l)
                let w = weights[i], fl = Float(l)
                sumL += w * fl
                sumL2 += w * fl * fl
                sumXL += w * fl * x[i]
            }
            let D = sumW * sumL2 - sumL * sumL
            guard D > 0 else { continue }
            var thisScale = (sumW * sumXL - sumX * sumL) / D
            var thisMin = (sumL2 * sumX - sumL * sumXL) / D
            if thisMin > 0 {
                thisMin = 0
                thisScale = sumXL / sumL2
            }
            var curError: Float = 0
            for i in 0..<n {
                var diff = thisScale * Float(laux[i]) + thisMin - x[i]
                diff = useMAD ? abs(diff) : diff * diff
                curError += weights[i] * diff
            }
            if curError < bestError {
                for i in 0..<n { L[i] = laux[i] }
                bestError = curError
                scale = thisScale
                min = thisMin
            }
        }
        return (scale, -min)
    }

    /// Signed codes −nmax…nmax−1 (stored + nmax) for `n` values with one scale, refined by
    /// trying 18 nearby scales and keeping the best x²-weighted least-squares fit (ggml
    /// `make_qx_quants` with `rmse_type` 1 and no importance weights, as Q6_K calls it).
    static func makeQXQuants(n: Int, nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>) -> Float {
        var max: Float = 0, amax: Float = 0
        for i in 0..<n where abs(x[i]) > amax {
            amax = abs(x[i])
            max = x[i]
        }
        if amax < groupMaxEps {
            for i in 0..<n { L[i] = 0 }
            return 0
        }
        let fmax = Float(nmax)
        var iscale = -fmax / max
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = Swift.max(-nmax, Swift.min(nmax - 1, nearestInt(iscale * x[i])))
            L[i] = Int8(l + nmax)
            let w = x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        var scale = sumL2 != 0 ? sumLX / sumL2 : 0
        var best = scale * sumLX
        for step in -9...9 where step != 0 {
            iscale = -(fmax + 0.1 * Float(step)) / max
            sumLX = 0
            sumL2 = 0
            for i in 0..<n {
                let l = Swift.max(-nmax, Swift.min(nmax - 1, nearestInt(iscale * x[i])))
                let w = x[i] * x[i], fl = Float(l)
                sumLX += w * x[i] * fl
                sumL2 += w * fl * fl
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n { L[i] = Int8(nmax + Swift.max(-nmax, Swift.min(nmax - 1, nearestInt(iscale * x[i])))) }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }

    @inline(__always) static func f16(_ x: Float) -> UInt16 { Float16(x).bitPattern }
    @inline(__always) static func f32(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

    /// Q4_K (`bits` 4) or Q5_K (`bits` 5): 8 sub-blocks of 32 with a 6-bit scale and min each,
    /// under an f16 super-scale and super-min (ggml `quantize_row_q4_K_ref`/`quantize_row_q5_K_ref`).
    static func kQuantWithMins(bits: Int, _ x: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
        let nmax = (1 << bits) - 1
        let blockBytes = bits == 4 ? 144 : 176
        // ggml's grid search: Q4_K tries scales nmax−1 … nmax+1, Q5_K nmax−0.5 … nmax+1.
        let (rmin, nstep): (Float, Int) = bits == 4 ? (-1, 20) : (-0.5, 15)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256 + 32) { buf in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 + 16) { fbuf in
            let L = buf.baseAddress!, laux = L + 256
            let weights = fbuf.baseAddress!, scales = weights + 32, mins = scales + 8
            for b in 0..<count / 256 {
                let xb = x + 256 * b, y = dst + b * blockBytes
                var maxScale: Float = 0, maxMin: Float = 0
                for j in 0..<8 {
                    let xs = xb + 32 * j
                    var sumX2: Float = 0
                    for l in 0..<32 { sumX2 += xs[l] * xs[l] }
                    let avX = (sumX2 / 32).squareRoot()
                    for l in 0..<32 { weights[l] = avX + abs(xs[l]) }
                    (scales[j], mins[j]) = makeQKX2Quants(n: 32, nmax: nmax, xs, weights: weights, L + 32 * j, laux,
                                                          rmin: rmin, rdelta: 0.1, nstep: nstep, useMAD: false)
                    if scales[j] > maxScale { maxScale = scales[j] }
                    if mins[j] > maxMin { maxMin = mins[j] }
                }
                let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
                let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
                let sc = y + 4
                for j in 0..<12 { sc.storeBytes(of: 0, toByteOffset: j, as: UInt8.self) }
                for j in 0..<8 {
                    // C stores nearest_int's result in a uint8_t before clamping it to 63.
                    let ls = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(invScale * scales[j])))
                    let lm = Swift.min(63, UInt8(truncatingIfNeeded: nearestInt(invMin * mins[j])))
                    if j < 4 {
                        sc.storeBytes(of: ls, toByteOffset: j, as: UInt8.self)
                        sc.storeBytes(of: lm, toByteOffset: j + 4, as: UInt8.self)
                    } else {
                        sc.storeBytes(of: (ls & 0xF) | (lm & 0xF) << 4, toByteOffset: j + 4, as: UInt8.self)
                        sc.storeBytes(of: sc.load(fromByteOffset: j - 4, as: UInt8.self) | (ls >> 4) << 6, toByteOffset: j - 4, as: UInt8.self)
                        sc.storeBytes(of: sc.load(fromByteOffset: j, as: UInt8.self) | (lm >> 4) << 6, toByteOffset: j, as: UInt8.self)
                    }
                }
                let d = f16(maxScale / 63), dmin = f16(maxMin / 63)
                y.storeBytes(of: d.littleEndian, as: UInt16.self)
                y.storeBytes(of: dmin.littleEndian, toByteOffset: 2, as: UInt16.self)
                // Requantize with the stored (6-bit, f16) scales; a sub-block whose scale is 0
                // keeps the grid search's codes, as in ggml.
                for j in 0..<8 {
                    let (s, m) = ReferenceDequantize.scaleMinK4(j, UnsafeRawPointer(sc))
                    let dj = f32(d) * Float(s)
                    if dj == 0 { continue }
                    let dm = f32(dmin) * Float(m)
                    for i in 0..<32 {
                        L[32 * j + i] = UInt8(Swift.max(0, Swift.min(nmax, nearestInt((xb[32 * j + i] + dm) / dj))))
                    }
                }
                if bits == 4 {
                    let qs = y + 16
                    for g in 0..<4 {
                        for l in 0..<32 {
                            qs.storeBytes(of: L[64 * g + l] | L[64 * g + l + 32] << 4, toByteOffset: 32 * g + l, as: UInt8.self)
                        }
                    }
                } else {
                    let qh = y + 16, ql = y + 48
                    for l in 0..<32 { qh.storeBytes(of: 0, toByteOffset: l, as: UInt8.self) }
                    for g in 0..<4 {
                        let m1 = UInt8(1) << (2 * g), m2 = UInt8(2) << (2 * g)
                        for l in 0..<32 {
                            var l1 = L[64 * g + l], l2 = L[64 * g + l + 32], h = qh.load(fromByteOffset: l, as: UInt8.self)
                            if l1 > 15 { l1 -= 16; h |= m1 }
                            if l2 > 15 { l2 -= 16; h |= m2 }
                            qh.storeBytes(of: h, toByteOffset: l, as: UInt8.self)
                            ql.storeBytes(of: l1 | l2 << 4, toByteOffset: 32 * g + l, as: UInt8.self)
                        }
                    }
                }
            }
        }
        }
    }

    /// Q6_K: 16 sub-blocks of 16 with signed 8-bit scales under one f16 scale (ggml
    /// `quantize_row_q6_K_ref`).
    static func q6_K(_ x: UnsafePointer<Float>, count: Int, into dst: UnsafeMutableRawPointer) {
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: 256) { lbuf in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { scales in
            let L = lbuf.baseAddress!
            for b in 0..<count / 256 {
                let xb = x + 256 * b, y = dst + b * 210
                var maxScale: Float = 0, maxAbsScale: Float = 0
                for ib in 0..<16 {
                    let scale = makeQXQuants(n: 16, nmax: 32, xb + 16 * ib, L + 16 * ib)
                    scales[ib] = scale
                    if abs(scale) > maxAbsScale {
                        maxAbsScale = abs(scale)
                        maxScale = scale
                    }
                }
                if maxAbsScale < groupMaxEps {
                    for i in 0..<210 { y.storeBytes(of: 0, toByteOffset: i, as: UInt8.self) }
                    continue
                }
                let iscale = -128 / maxScale
                let d = f16(1 / iscale)
                y.storeBytes(of: d.littleEndian, toByteOffset: 208, as: UInt16.self)
                let sc = y + 192
                for ib in 0..<16 {
                    sc.storeBytes(of: Int8(truncatingIfNeeded: Swift.min(127, nearestInt(iscale * scales[ib]))), toByteOffset: ib, as: Int8.self)
                }
                for j in 0..<16 {
                    let dj = f32(d) * Float(sc.load(fromByteOffset: j, as: Int8.self))
                    if dj == 0 { continue }
                    for i in 0..<16 {
                        L[16 * j + i] = Int8(Swift.max(-32, Swift.min(31, nearestInt(xb[16 * j + i] / dj))) + 32)
                    }
                }
                for half in 0..<2 {
                    let ql = y + 64 * half, qh = y + 128 + 32 * half, Lh = L + 128 * half
                    for l in 0..<32 {
                        let q1 = UInt8(Lh[l]), q2 = UInt8(Lh[l + 32]), q3 = UInt8(Lh[l + 64]), q4 = UInt8(Lh[l + 96])
                        ql.storeBytes(of: (q1 & 0xF) | (q3 & 0xF) << 4, toByteOffset: l, as: UInt8.self)
                        ql.storeBytes(of: (q2 & 0xF) | (q4 & 0xF) << 4, toByteOffset: l + 32, as: UInt8.self)
                        qh.storeBytes(of: q1 >> 4 | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6, toByteOffset: l, as: UInt8.self)
                    }
                }
            }
        }
        }
    }
}
