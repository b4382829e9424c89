import FlexFormat

/// Plain scalar dequantization: the reference every optimised kernel is tested against.
///
/// Ports of ggml's `dequantize_row_*` (ggml-quants.c), written for clarity over speed:
/// one element at a time, straight from the block layouts in ``BlockQ4_0`` and friends.
public enum ReferenceDequantize {
    @inline(__always) static func f16(_ p: UnsafeRawPointer, _ off: Int) -> Float {
        Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: off, as: UInt16.self)))
    }
    @inline(__always) static func u8(_ p: UnsafeRawPointer, _ off: Int) -> UInt8 { p.load(fromByteOffset: off, as: UInt8.self) }
    @inline(__always) static func i8(_ p: UnsafeRawPointer, _ off: Int) -> Int8 { p.load(fromByteOffset: off, as: Int8.self) }

    /// Dequantizes `count` elements (a whole number of blocks) from `src` into `dst`.
    public static func row(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        let nb = count / type.blockElements
        switch type {
        case .f32:
            for i in 0..<count { dst[i] = src.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .f16:
            for i in 0..<count { dst[i] = f16(src, 2 * i) }
        case .bf16:
            for i in 0..<count { dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
        case .q4_0:
            for b in 0..<nb {
                let p = src + b * 18, y = dst + b * 32
                let d = f16(p, 0)
                for j in 0..<16 {
                    let q = u8(p, 2 + j)
                    y[j] = Float(Int(q & 0xF) - 8) * d
                    y[j + 16] = Float(Int(q >> 4) - 8) * d
                }
            }
        case .q4_1:
            for b in 0..<nb {
                let p = src + b * 20, y = dst + b * 32
                let d = f16(p, 0), m = f16(p, 2)
                for j in 0..<16 {
                    let q = u8(p, 4 + j)
                    y[j] = Float(q & 0xF) * d + m
                    y[j + 16] = Float(q >> 4) * d + m
                }
            }
        case .q5_0:
            for b in 0..<nb {
                let p = src + b * 22, y = dst + b * 32
                let d = f16(p, 0)
                let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
                for j in 0..<16 {
                    let q = u8(p, 6 + j)
                    let h0 = Int((qh >> UInt32(j)) & 1) << 4
                    let h1 = Int((qh >> UInt32(j + 16)) & 1) << 4
                    y[j] = Float((Int(q & 0xF) | h0) - 16) * d
                    y[j + 16] = Float((Int(q >> 4) | h1) - 16) * d
                }
            }
        case .q5_1:
            for b in 0..<nb {
                let p = src + b * 24, y = dst + b * 32
                let d = f16(p, 0), m = f16(p, 2)
                let qh = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                for j in 0..<16 {
                    let q = u8(p, 8 + j)
                    let h0 = Int((qh >> UInt32(j)) & 1) << 4
                    let h1 = Int((qh >> UInt32(j + 16)) & 1) << 4
                    y[j] = Float(Int(q & 0xF) | h0) * d + m
                    y[j + 16] = Float(Int(q >> 4) | h1) * d + m
                }
            }
        case .q8_0:
            for b in 0..<nb {
                let p = src + b * 34, y = dst + b * 32
                let d = f16(p, 0)
                for j in 0..<32 { y[j] = Float(i8(p, 2 + j)) * d }
            }
        case .q4_K:
            for b in 0..<nb {
                let p = src + b * 144, y = dst + b * 256
                let d = f16(p, 0), dmin = f16(p, 2)
                let scales = p + 4, qs = p + 16
                for g in 0..<4 {
                    let (sc1, m1) = scaleMinK4(2 * g, scales)
                    let (sc2, m2) = scaleMinK4(2 * g + 1, scales)
                    for l in 0..<32 {
                        let q = u8(qs, 32 * g + l)
                        y[64 * g + l] = d * Float(sc1) * Float(q & 0xF) - dmin * Float(m1)
                        y[64 * g + 32 + l] = d * Float(sc2) * Float(q >> 4) - dmin * Float(m2)
                    }
                }
            }
        case .q5_K:
            for b in 0..<nb {
                let p = src + b * 176, y = dst + b * 256
                let d = f16(p, 0), dmin = f16(p, 2)
                let scales = p + 4, qh = p + 16, qs = p + 48
                for g in 0..<4 {
                    let (sc1, m1) = scaleMinK4(2 * g, scales)
                    let (sc2, m2) = scaleMinK4(2 * g + 1, scales)
                    let u1 = UInt8(1) << UInt8(2 * g), u2 = UInt8(2) << UInt8(2 * g)
                    for l in 0..<32 {
                        let q = u8(qs, 32 * g + l), h = u8(qh, l)
                        let lo = Float(Int(q & 0xF) + (h & u1 != 0 ? 16 : 0))
                        let hi = Float(Int(q >> 4) + (h & u2 != 0 ? 16 : 0))
                        y[64 * g + l] = d * Float(sc1) * lo - dmin * Float(m1)
                        y[64 * g + 32 + l] = d * Float(sc2) * hi - dmin * Float(m2)
                    }
                }
            }
        case .q6_K:
            for b in 0..<nb {
                let p = src + b * 210, y = dst + b * 256
                let d = f16(p, 208)
                for half in 0..<2 {
                    let ql = p + 64 * half, qh = p + 128 + 32 * half, sc = p + 192 + 8 * half
                    let yy = y + 128 * half
                    for l in 0..<32 {
                        let s = l / 16
                        let h = u8(qh, l)
                        let q1 = Int((u8(ql, l) & 0xF) | ((h >> 0) & 3) << 4) - 32
                        let q2 = Int((u8(ql, l + 32) & 0xF) | ((h >> 2) & 3) << 4) - 32
                        let q3 = Int((u8(ql, l) >> 4) | ((h >> 4) & 3) << 4) - 32
                        let q4 = Int((u8(ql, l + 32) >> 4) | ((h >> 6) & 3) << 4) - 32
                        yy[l] = d * Float(i8(sc, s)) * Float(q1)
                        yy[l + 32] = d * Float(i8(sc, s + 2)) * Float(q2)
                        yy[l + 64] = d * Float(i8(sc, s + 4)) * Float(q3)
                        yy[l + 96] = d * Float(i8(sc, s + 6)) * Float(q4)
                    }
                }
            }
        }
    }

    /// Unpacks sub-block `j`'s 6-bit scale and min from the 12 packed bytes (ggml `get_scale_min_k4`).
    @inline(__always)
    static func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (UInt8, UInt8) {
        if j < 4 {
            return (u8(q, j) & 63, u8(q, j + 4) & 63)
        }
        let sc = (u8(q, j + 4) & 0xF) | ((u8(q, j - 4) >> 6) << 4)
        let m = (u8(q, j + 4) >> 4) | ((u8(q, j) >> 6) << 4)
        return (sc, m)
    }
}
