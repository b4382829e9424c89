import FlexFormat

/// Dot products of one quantized weight row with float activations, dequantizing in registers.
///
/// The decode hot path (batch 1): no scratch row is written, and the activations stay in full
/// precision, so results equal the reference up to float summation order. The affine part of a
/// block folds into a per-block activation sum: Σ (d·q + m)·x = d·Σ q·x + m·Σ x, and Q4_0's
/// (q − 8) likewise, so a block costs four int→float conversions and five FMAs.
public enum FusedDot {
    public typealias Kernel = (UnsafeRawPointer, UnsafePointer<Float>, UnsafePointer<Float>, Int) -> Float

    /// The fused kernel for `type`, or nil where the dequantize-to-scratch path is used.
    public static func kernel(for type: GGMLType) -> Kernel? {
        switch type {
        case .q4_0: return q4_0
        case .q4_1: return q4_1
        case .q8_0: return q8_0
        default: return nil
        }
    }

    /// Σ of each 32-element block of `x` (`n` a multiple of 32) into `sums`.
    @inline(__always)
    public static func blockSums(_ x: UnsafePointer<Float>, _ sums: UnsafeMutablePointer<Float>, _ n: Int) {
        for b in 0..<n / 32 {
            let p = UnsafeRawPointer(x + 32 * b)
            let s = p.loadUnaligned(as: SIMD8<Float>.self) + p.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self)
                + p.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self) + p.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self)
            sums[b] = s.sum()
        }
    }

    @inline(__always)
    static func f16(_ p: UnsafeRawPointer, _ off: Int) -> Float {
        Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: off, as: UInt16.self)))
    }

    /// Σ over the 32 nibbles at `p` (low nibbles = elements 0–15, high = 16–31) of q·x.
    @inline(__always)
    static func nibbleDot(_ p: UnsafeRawPointer, _ x: UnsafeRawPointer) -> SIMD8<Float> {
        let raw = p.loadUnaligned(as: SIMD16<UInt8>.self)
        let lo = raw & 0x0F, hi = raw &>> 4
        var s = SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: lo.lowHalf)) * x.loadUnaligned(as: SIMD8<Float>.self)
        s.addProduct(SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: lo.highHalf)), x.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self))
        s.addProduct(SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: hi.lowHalf)), x.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self))
        s.addProduct(SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: hi.highHalf)), x.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self))
        return s
    }

    public static func q4_1(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ sums: UnsafePointer<Float>, _ nb: Int) -> Float {
        var acc = SIMD8<Float>()
        var offset: Float = 0
        for b in 0..<nb {
            let blk = w + b * 20
            acc.addProduct(SIMD8(repeating: f16(blk, 0)), nibbleDot(blk + 4, UnsafeRawPointer(x + 32 * b)))
            offset += f16(blk, 2) * sums[b]
        }
        return acc.sum() + offset
    }

    public static func q4_0(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ sums: UnsafePointer<Float>, _ nb: Int) -> Float {
        var acc = SIMD8<Float>()
        var offset: Float = 0
        for b in 0..<nb {
            let blk = w + b * 18
            let d = f16(blk, 0)
            acc.addProduct(SIMD8(repeating: d), nibbleDot(blk + 2, UnsafeRawPointer(x + 32 * b)))
            offset -= 8 * d * sums[b]
        }
        return acc.sum() + offset
    }

    public static func q8_0(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ sums: UnsafePointer<Float>, _ nb: Int) -> Float {
        var acc = SIMD8<Float>()
        for b in 0..<nb {
            let blk = w + b * 34
            let xb = UnsafeRawPointer(x + 32 * b)
            let q0 = blk.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)
            let q1 = blk.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)
            var s = SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: q0.lowHalf)) * xb.loadUnaligned(as: SIMD8<Float>.self)
            s.addProduct(SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: q0.highHalf)), xb.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self))
            s.addProduct(SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: q1.lowHalf)), xb.loadUnaligned(fromByteOffset: 64, as: SIMD8<Float>.self))
            s.addProduct(SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: q1.highHalf)), xb.loadUnaligned(fromByteOffset: 96, as: SIMD8<Float>.self))
            acc.addProduct(SIMD8(repeating: f16(blk, 0)), s)
        }
        return acc.sum()
    }
}
