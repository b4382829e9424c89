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
                let p = src + b * 20, y = dst + b * 32
                let d = f16(p, 0), m = f16(p, 2)
                let (lo, hi) = nibbles(p, 4)
                store(lo * d + m, y)
                store(hi * d + m, y + 16)
            }
        case .q8_0:
            for b in 0..<nb {
                let p = src + b * 34, y = dst + b * 32
                let d = f16(p, 0)
                let q0 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)))
                let q1 = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)))
                store(q0 * d, y)
                store(q1 * d, y + 16)
            }
        default:
            ReferenceDequantize.row(type, src, dst, count: count)
        }
    }
}
