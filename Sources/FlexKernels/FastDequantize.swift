import CFlexKernels
import FlexFormat

/// SIMD dequantization for the formats on the hot path of the shipped models.
///
/// Each routine produces bit-identical output to ``ReferenceDequantize`` (tests check this on
/// random blocks): the arithmetic is the same, only done 16 lanes at a time. Formats without
/// a SIMD routine yet use the reference.
public enum FastDequantize {
    @inline(__always)
    static func store(_ v: SIMD16<Float>, _ y: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(y).storeBytes(of: v, as: SIMD16<Float>.self)
    }

    @inline(__always)
    static func nibbles(_ p: UnsafeRawPointer, _ off: Int) -> (lo: SIMD16<Float>, hi: SIMD16<Float>) {
        let raw = p.loadUnaligned(fromByteOffset: off, as: SIMD16<UInt8>.self)
        let lo = SIMD16<Int32>(truncatingIfNeeded: raw & 0x0F)
        let hi = SIMD16<Int32>(truncatingIfNeeded: raw &>> 4)
        return (SIMD16<Float>(lo), SIMD16<Float>(hi))
    }

    @inline(__always)
    static func f16(_ p: UnsafeRawPointer, _ off: Int) -> Float {
        Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: off, as: UInt16.self)))
    }

    public static func row(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        let nb = count / type.blockElements
        switch type {
        case .f32:
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: 4 * count)
        case .f16:
            var i = 0
            while i + 8 <= count {
                let h = src.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<Float16>.self)
                UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD8<Float>(h), as: SIMD8<Float>.self)
                i += 8
            }
            while i < count { dst[i] = f16(src, 2 * i); i += 1 }
        case .q4_0:
            for b in 0..<nb {
                let p = src + b * 18, y = dst + b * 32
                let d = f16(p, 0)
                let (lo, hi) = nibbles(p, 2)
                store((lo - 8) * d, y)
                store((hi - 8) * d, y + 16)
            }
        case .q4_1:
            for b in 0..<nb {
                let p = src + b * 20
                q4_1(d: f16(p, 0), m: f16(p, 2), p.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self), dst + b * 32)
            }
        case .q8_0:
            for b in 0..<nb {
                let p = src + b * 34
                q8_0(d: f16(p, 0), p.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self),
                     p.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self), dst + b * 32)
            }
        default:
            ReferenceDequantize.row(type, src, dst, count: count)
        }
    }

    /// One Q4_1 block: elements 0–15 from the low nibbles of `qs`, 16–31 from the high ones.
    @inline(__always)
    static func q4_1(d: Float, m: Float, _ qs: SIMD16<UInt8>, _ y: UnsafeMutablePointer<Float>) {
        store(SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: qs & 0x0F)) * d + m, y)
        store(SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: qs &>> 4)) * d + m, y + 16)
    }

    @inline(__always)
    static func q8_0(d: Float, _ q0: SIMD16<Int8>, _ q1: SIMD16<Int8>, _ y: UnsafeMutablePointer<Float>) {
        store(SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q0)) * d, y)
        store(SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q1)) * d, y + 16)
    }

    /// Row `lane` (0–7) of the x8 group at `group` (layout in `cflex_kernels.h`): its quant bytes
    /// are gathered four at a time from the group's chunks, then dequantized as a row-major block
    /// would be, so both layouts give the same floats.
    public static func interleavedRow(_ type: GGMLType, group: UnsafeRawPointer, lane r: Int, _ dst: UnsafeMutablePointer<Float>,
                                      count: Int) {
        let nb = count / 32
        let slot = Int(cflex_x8_slot(Int32(r)))
        @inline(__always) func quad(_ p: UnsafeRawPointer, _ off: Int) -> UInt32 { p.loadUnaligned(fromByteOffset: off, as: UInt32.self) }
        switch type {
        case .q4_1:
            for b in 0..<nb {
                let p = group + b * 160, q = 32 + slot
                let qs = SIMD4<UInt32>(quad(p, q), quad(p, q + 32), quad(p, q + 64), quad(p, q + 96))
                q4_1(d: f16(p, 2 * r), m: f16(p, 16 + 2 * r), unsafeBitCast(qs, to: SIMD16<UInt8>.self), dst + b * 32)
            }
        case .q8_0:
            for b in 0..<nb {
                let p = group + b * 272, q = 16 + slot
                let q0 = SIMD4<UInt32>(quad(p, q), quad(p, q + 32), quad(p, q + 64), quad(p, q + 96))
                let q1 = SIMD4<UInt32>(quad(p, q + 128), quad(p, q + 160), quad(p, q + 192), quad(p, q + 224))
                q8_0(d: f16(p, 2 * r), unsafeBitCast(q0, to: SIMD16<Int8>.self), unsafeBitCast(q1, to: SIMD16<Int8>.self), dst + b * 32)
            }
        case .q4_K, .q5_K, .q6_K:
            // Each super-block of the row back to ggml's bytes (kquants_x8.c), decoded as a row-major one.
            let groupBytes = 8 * type.blockBytes
            var block: SIMD32<UInt64> = .zero   // 256 bytes, at least one super-block
            withUnsafeMutableBytes(of: &block) { blk in
                let o = blk.baseAddress!
                for i in 0..<count / 256 {
                    cflex_x8k_block(Int32(type.rawValue), group + i * groupBytes, Int32(r), o)
                    row(type, UnsafeRawPointer(o), dst + 256 * i, count: 256)
                }
            }
        case .q5_0, .q5_1:
            // Reassemble the row's ggml block and decode it as a row-major one: the same floats.
            let m = type == .q5_1 ? 2 : 0, groupBytes = 8 * type.blockBytes
            var block: (UInt64, UInt64, UInt64) = (0, 0, 0)   // 22 or 24 bytes used
            withUnsafeMutableBytes(of: &block) { blk in
                let o = blk.baseAddress!
                for b in 0..<nb {
                    let p = group + b * groupBytes
                    o.copyMemory(from: p + 2 * r, byteCount: 2)
                    if m > 0 { o.advanced(by: 2).copyMemory(from: p + 16 + 2 * r, byteCount: 2) }
                    o.advanced(by: 2 + m).copyMemory(from: p + 16 + 8 * m + 4 * r, byteCount: 4)
                    for t in 0..<4 { o.advanced(by: 6 + m + 4 * t).copyMemory(from: p + 48 + 8 * m + 32 * t + slot, byteCount: 4) }
                    row(type, UnsafeRawPointer(o), dst + b * 32, count: 32)
                }
            }
        default:
            preconditionFailure("\(type) has no x8 layout")
        }
    }
}
