import CFlexKernels
import Glibc

/// Causal attention over an f16 KV cache.
///
/// ``head(query:keys:values:stride:count:headDim:scale:scores:out:)`` is the plain reference, one
/// query head over contiguous positions; the engine runs ``pagedGroup(queries:group:keys:values:pages:pageTokens:pageStride:stride:count:headDim:scale:scores:scoresStride:rows:out:)``,
/// a KV head's GQA group over a sequence's pages, tested against it. Repeated K/V are never
/// materialised. Scores go to caller-provided scratch (one per thread).
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

    /// Attention of the `group` query heads that share one KV head (GQA) over a paged KV cache:
    /// position t of the sequence lives in page `pages[t / pageTokens]` (with a ring of `ring`
    /// pages, `pages[(t / pageTokens) % ring]`), row `t % pageTokens`. Positions `first..<count`
    /// are attended: 0 for full attention, the window's start for a sliding-window layer.
    ///
    /// Each key and value row is widened from f16 once for all heads of the group. Scores are
    /// computed 8 keys at a time (eight accumulators reduced together: one reduction per 8 keys
    /// instead of one per key), and the weighted sum of values keeps 64 output lanes in registers
    /// across all positions. The order of every sum depends only on the positions (`first`,
    /// `count`, page offsets), so a sequence gets the same bits whatever pages and batch it has.
    ///
    /// - Parameters:
    ///   - queries: the first head's `headDim` floats; head h is at `+ h * headDim`.
    ///   - keys/values: this layer's and this KV head's vector in page 0, row 0; page p starts
    ///     `p * pageStride` elements further, and rows within a page are `stride` apart.
    ///   - scores: scratch of `group * scoresStride` floats, `scoresStride >= count - first`.
    ///   - rows: scratch of `8 * headDim` floats (eight key rows widened to f32). The caller's, per
    ///     thread: a temporary allocation of this size would come from the heap on every call.
    ///   - out: the first head's output; head h's at `+ h * headDim`.
    public static func pagedGroup(queries: UnsafePointer<Float>, group: Int, keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>,
                                  pages: UnsafePointer<Int32>, pageTokens: Int, pageStride: Int, stride: Int, first: Int = 0,
                                  count: Int, ring: Int = 0, headDim: Int, scale: Float, scores: UnsafeMutablePointer<Float>,
                                  scoresStride: Int, rows: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        precondition(headDim % 8 == 0 && group >= 1 && first >= 0 && first < count)
        // The loop is C (CFlexKernels/vector.c, the same arithmetic as the Swift SIMD code it
        // replaced): compiled for AVX2 and for baseline x86-64, chosen at load.
        let k = UnsafeRawPointer(keys).assumingMemoryBound(to: UInt16.self)
        let v = UnsafeRawPointer(values).assumingMemoryBound(to: UInt16.self)
        cflex_attention_group(queries, group, k, v, pages, pageTokens, pageStride, stride, first, count, ring, headDim, scale,
                              scores, scoresStride, rows, out)
    }
}
