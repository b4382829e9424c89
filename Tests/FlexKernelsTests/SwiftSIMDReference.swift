import FlexKernels
import Glibc

/// The Swift SIMD code that CFlexKernels/vector.c replaced (Attention.pagedGroup, Vector.swiglu and
/// geglu), kept here as the reference the C port is held to bit for bit (SwiftSIMDPortTests). In a
/// test build without `-Xcc -mavx2` its FMAs are libm calls: slow, the same bits.
enum SwiftSIMDReference {
    @inline(__always)
    static func load8(_ p: UnsafePointer<Float16>) -> SIMD8<Float> {
        SIMD8<Float>(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float16>.self))
    }

    static func pagedGroup(queries: UnsafePointer<Float>, group: Int, keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>,
                           pages: UnsafePointer<Int32>, pageTokens: Int, pageStride: Int, stride: Int, first: Int = 0,
                           count: Int, ring: Int = 0, headDim: Int, scale: Float, scores: UnsafeMutablePointer<Float>,
                           scoresStride: Int, rows: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
        var t = first
        while t < count {
            let r0 = t % pageTokens
            let index = t / pageTokens
            let base = Int(pages[ring > 0 ? index % ring : index]) * pageStride
            let end = r0 + min(pageTokens - r0, count - t)
            var r = r0
            while r < end {
                let kb = min(8, end - r)
                for j in 0..<kb {
                    let k = keys + base + (r + j) * stride
                    var i = 0
                    while i < headDim { Vector.store8(load8(k + i), rows + j * headDim + i); i += 8 }
                }
                for h in 0..<group {
                    let q = queries + h * headDim
                    let dst = scores + h * scoresStride + (t - first) + (r - r0)
                    if kb == 8 {
                        Vector.store8(dot8(q, rows, headDim) * scale, dst)
                    } else {
                        for j in 0..<kb {
                            var acc = SIMD8<Float>()
                            var i = 0
                            while i < headDim { acc.addProduct(Vector.load8(q + i), Vector.load8(rows + j * headDim + i)); i += 8 }
                            dst[j] = acc.sum() * scale
                        }
                    }
                }
                r += kb
            }
            t += end - r0
        }
        for h in 0..<group {
            let p = scores + h * scoresStride
            Vector.softmax(p, count - first)
            weightedValues(p, values: values, pages: pages, pageTokens: pageTokens, pageStride: pageStride, stride: stride, first: first,
                           count: count, ring: ring, headDim: headDim, out: out + h * headDim)
        }
    }

    /// q · rows[j] for the 8 rows (each `n` floats, contiguous): eight accumulators, then a
    /// transposing reduction (pairs, quads, eights), so the 8 sums cost 7 combines, not 8 full reductions.
    @inline(__always)
    static func dot8(_ q: UnsafePointer<Float>, _ rows: UnsafePointer<Float>, _ n: Int) -> SIMD8<Float> {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var a4 = SIMD8<Float>(), a5 = SIMD8<Float>(), a6 = SIMD8<Float>(), a7 = SIMD8<Float>()
        var i = 0
        while i < n {
            let x = Vector.load8(q + i)
            a0.addProduct(x, Vector.load8(rows + i))
            a1.addProduct(x, Vector.load8(rows + n + i))
            a2.addProduct(x, Vector.load8(rows + 2 * n + i))
            a3.addProduct(x, Vector.load8(rows + 3 * n + i))
            a4.addProduct(x, Vector.load8(rows + 4 * n + i))
            a5.addProduct(x, Vector.load8(rows + 5 * n + i))
            a6.addProduct(x, Vector.load8(rows + 6 * n + i))
            a7.addProduct(x, Vector.load8(rows + 7 * n + i))
            i += 8
        }
        @inline(__always) func fold(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
            SIMD8(lowHalf: a.evenHalf + a.oddHalf, highHalf: b.evenHalf + b.oddHalf)
        }
        return fold(fold(fold(a0, a1), fold(a2, a3)), fold(fold(a4, a5), fold(a6, a7)))
    }

    /// out = Σ_t p[t − first] · value row t over `first..<count`, for one head, in position order.
    /// With 64 dims the output stays in eight registers over all positions. The page walk is
    /// written out in both branches: with it in a helper taking a closure, the captured
    /// accumulators lived in memory and batched decode lost ~5 % (A/B, 3 rounds).
    @inline(__always)
    static func weightedValues(_ p: UnsafePointer<Float>, values: UnsafePointer<Float16>, pages: UnsafePointer<Int32>, pageTokens: Int,
                               pageStride: Int, stride: Int, first: Int, count: Int, ring: Int, headDim: Int,
                               out: UnsafeMutablePointer<Float>) {
        var c = 0
        while c < headDim {
            if headDim - c >= 64 {
                var o0 = SIMD8<Float>(), o1 = SIMD8<Float>(), o2 = SIMD8<Float>(), o3 = SIMD8<Float>()
                var o4 = SIMD8<Float>(), o5 = SIMD8<Float>(), o6 = SIMD8<Float>(), o7 = SIMD8<Float>()
                var t = first
                while t < count {
                    let r0 = t % pageTokens, index = t / pageTokens
                    let base = Int(pages[ring > 0 ? index % ring : index]) * pageStride
                    let n = min(pageTokens - r0, count - t)
                    let pt = p + (t - first) - r0
                    for r in r0..<(r0 + n) {
                        let v = values + base + r * stride + c
                        let w = SIMD8<Float>(repeating: pt[r])
                        o0.addProduct(w, load8(v)); o1.addProduct(w, load8(v + 8))
                        o2.addProduct(w, load8(v + 16)); o3.addProduct(w, load8(v + 24))
                        o4.addProduct(w, load8(v + 32)); o5.addProduct(w, load8(v + 40))
                        o6.addProduct(w, load8(v + 48)); o7.addProduct(w, load8(v + 56))
                    }
                    t += n
                }
                let o = out + c
                Vector.store8(o0, o); Vector.store8(o1, o + 8); Vector.store8(o2, o + 16); Vector.store8(o3, o + 24)
                Vector.store8(o4, o + 32); Vector.store8(o5, o + 40); Vector.store8(o6, o + 48); Vector.store8(o7, o + 56)
                c += 64
            } else {
                var acc = SIMD8<Float>()
                var t = first
                while t < count {
                    let r0 = t % pageTokens, index = t / pageTokens
                    let base = Int(pages[ring > 0 ? index % ring : index]) * pageStride
                    let n = min(pageTokens - r0, count - t)
                    let pt = p + (t - first) - r0
                    for r in r0..<(r0 + n) { acc.addProduct(SIMD8<Float>(repeating: pt[r]), load8(values + base + r * stride + c)) }
                    t += n
                }
                Vector.store8(acc, out + c)
                c += 8
            }
        }
    }

    @inline(__always)
    static func gated(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int,
                      _ gate: (SIMD8<Float>) -> SIMD8<Float>) {
        var i = 0
        while i + 8 <= n {
            Vector.store8(gate(Vector.load8(a + i)) * Vector.load8(b + i), a + i)
            i += 8
        }
        if i < n {
            var g = SIMD8<Float>(), h = SIMD8<Float>()
            for k in 0..<(n - i) { g[k] = a[i + k]; h[k] = b[i + k] }
            let r = gate(g) * h
            for k in 0..<(n - i) { a[i + k] = r[k] }
        }
    }

    /// a[i] = silu(a[i]) · b[i], the SwiGLU gate: g / (1 + e^-g).
    static func swiglu(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        gated(a, b, n) { g in g / (1 + Vector.exp8(-g)) }
    }

    /// a[i] = gelu(a[i]) · b[i], the GeGLU gate (Gemma), GELU in its tanh approximation
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as the models were trained; computed as
    /// x / (1 + e^(-2u)), the same function (0.5·(1 + tanh u) is the logistic of 2u).
    static func geglu(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        let c: Float = 0.7978845608028654   // √(2/π)
        gated(a, b, n) { g in
            let u = c * (g + 0.044715 * g * g * g)
            return g / (1 + Vector.exp8(-2 * u))
        }
    }
}
