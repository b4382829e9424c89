import Glibc

/// Small vector primitives shared by the kernels: dot products, norms, activations, softmax, rope.
public enum Vector {
    @inline(__always)
    public static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always)
    public static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }

    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
        var i = 0
        while i + 16 <= n {
            s0.addProduct(load8(a + i), load8(b + i))
            s1.addProduct(load8(a + i + 8), load8(b + i + 8))
            i += 16
        }
        while i + 8 <= n { s0.addProduct(load8(a + i), load8(b + i)); i += 8 }
        var r = (s0 + s1).sum()
        while i < n { r += a[i] * b[i]; i += 1 }
        return r
    }

    /// y = x / sqrt(mean(x²) + eps) · weight (RMSNorm, as llama.cpp `ggml_rms_norm` then mul).
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, eps: Float,
                               into y: UnsafeMutablePointer<Float>, _ n: Int) {
        var ss = 0.0
        for i in 0..<n { ss += Double(x[i]) * Double(x[i]) }
        let scale = Float(1.0 / (ss / Double(n) + Double(eps)).squareRoot())
        for i in 0..<n { y[i] = x[i] * scale * weight[i] }
    }

    /// In-place softmax over `n` values; returns nothing, numerically stable (max subtracted).
    public static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        var m = -Float.infinity
        for i in 0..<n { m = max(m, x[i]) }
        var sum: Float = 0
        for i in 0..<n { let e = expf(x[i] - m); x[i] = e; sum += e }
        let inv = 1 / sum
        for i in 0..<n { x[i] *= inv }
    }

    /// a[i] = silu(a[i]) · b[i], the SwiGLU gate.
    public static func swiglu(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        for i in 0..<n {
            let g = a[i]
            a[i] = g / (1 + expf(-g)) * b[i]
        }
    }

    /// a[i] = gelu(a[i]) · b[i], the GeGLU gate (Gemma), GELU in its tanh approximation
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as the models were trained.
    public static func geglu(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        let c: Float = 0.7978845608028654   // √(2/π)
        for i in 0..<n {
            let g = a[i]
            a[i] = 0.5 * g * (1 + tanhf(c * (g + 0.044715 * g * g * g))) * b[i]
        }
    }

    /// x *= s
    public static func scale(_ x: UnsafeMutablePointer<Float>, _ s: Float, _ n: Int) {
        for i in 0..<n { x[i] *= s }
    }

    /// y += x
    public static func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { store8(load8(y + i) + load8(x + i), y + i); i += 8 }
        while i < n { y[i] += x[i]; i += 1 }
    }
}
