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

    /// ``head(query:keys:values:stride:count:headDim:scale:scores:out:)`` over a paged KV cache:
    /// position t of a sequence lives in page `pages[t / pageTokens]`, row `t % pageTokens`.
    /// The arithmetic is the same, position by position, as the contiguous version, so a
    /// sequence gives the same result whichever pages it was handed.
    ///
    /// - Parameters:
    ///   - keys/values: this layer's and this KV head's vector in page 0, row 0; page p starts
    ///     `p * pageStride` elements further, and rows within a page are `stride` apart.
    ///   - pages: the sequence's page table, at least ⌈count / pageTokens⌉ entries.
    public static func pagedHead(query: UnsafePointer<Float>, keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>,
                                 pages: UnsafePointer<Int32>, pageTokens: Int, pageStride: Int, stride: Int, count: Int,
                                 headDim: Int, scale: Float, scores: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        precondition(headDim % 8 == 0)
        var t = 0, page = 0
        while t < count {
            let base = Int(pages[page]) * pageStride
            let n = min(pageTokens, count - t)
            for r in 0..<n {
                let k = keys + base + r * stride
                var acc = SIMD8<Float>()
                var i = 0
                while i < headDim {
                    acc.addProduct(Vector.load8(query + i), load8(k + i))
                    i += 8
                }
                scores[t + r] = acc.sum() * scale
            }
            t += n
            page += 1
        }
        Vector.softmax(scores, count)
        var i = 0
        while i < headDim { Vector.store8(SIMD8<Float>(), out + i); i += 8 }
        t = 0; page = 0
        while t < count {
            let base = Int(pages[page]) * pageStride
            let n = min(pageTokens, count - t)
            for r in 0..<n {
                let v = values + base + r * stride
                let p = SIMD8<Float>(repeating: scores[t + r])
                i = 0
                while i < headDim {
                    var o = Vector.load8(out + i)
                    o.addProduct(p, load8(v + i))
                    Vector.store8(o, out + i)
                    i += 8
                }
            }
            t += n
            page += 1
        }
    }
}
