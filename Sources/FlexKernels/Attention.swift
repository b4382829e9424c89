import Glibc

/// Causal attention for one query head over an f16 KV cache.
///
/// GQA is handled by the caller pointing several query heads at the same K/V head: repeated
/// K/V are never materialised. Scores go to caller-provided scratch (one per thread).
public enum Attention {
    @inline(__always)
    static func load8(_ p: UnsafePointer<Float16>) -> SIMD8<Float> {
        SIMD8<Float>(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float16>.self))
    }

    /// - Parameters:
    ///   - query: `headDim` floats.
    ///   - keys/values: position 0's head vector; position t is at `+ t * stride`.
    ///   - count: number of positions attended (0…count−1).
    ///   - scores: scratch of at least `count` floats.
    ///   - out: `headDim` floats, overwritten.
    public static func head(query: UnsafePointer<Float>, keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>,
                            stride: Int, count: Int, headDim: Int, scale: Float,
                            scores: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        precondition(headDim % 8 == 0)
        for t in 0..<count {
            let k = keys + t * stride
            var acc = SIMD8<Float>()
            var i = 0
            while i < headDim {
                acc.addProduct(Vector.load8(query + i), load8(k + i))
                i += 8
            }
            scores[t] = acc.sum() * scale
        }
        Vector.softmax(scores, count)
        var i = 0
        while i < headDim { Vector.store8(SIMD8<Float>(), out + i); i += 8 }
        for t in 0..<count {
            let v = values + t * stride
            let p = SIMD8<Float>(repeating: scores[t])
            i = 0
            while i < headDim {
                var o = Vector.load8(out + i)
                o.addProduct(p, load8(v + i))
                Vector.store8(o, out + i)
                i += 8
            }
        }
    }
}
