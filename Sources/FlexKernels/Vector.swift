import CFlexKernels
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

    /// e^x in eight lanes: Cephes' expf (range reduction by ln 2 in two parts, a degree-6
    /// polynomial, the exponent set in the bits), within 2 ulp of `expf` for x in [-87.3, 88]
    /// and clamped outside it (0 and large stay 0 and large for the gates below).
    /// Why: the gates called libm's `expf`/`tanhf` one element at a time; on a Gemma 3 270M
    /// prompt that was 9 % of the whole run (perf), more than attention. The gates now run its C
    /// port (CFlexKernels/vector.c); this one is the reference the tests hold the port to.
    @inline(__always)
    public static func exp8(_ v: SIMD8<Float>) -> SIMD8<Float> {
        let x = v.clamped(lowerBound: SIMD8(repeating: -87.3), upperBound: SIMD8(repeating: 88.0))
        // Rounding by the 1.5·2²³ shift, and 2^n from the sum's own bits: Swift's generic
        // SIMD conversions (`rounded`, `SIMD8<Int32>(_:rounding:)`) ran element by element and
        // cost more than the polynomial (perf on a Gemma prompt).
        let shifter = SIMD8<Float>(repeating: 12582912)   // 1.5 · 2²³
        let t = x * 1.44269504088896341 + shifter
        let n = t - shifter                                // round-to-nearest-even of x·log2(e)
        var r = x.addingProduct(n, SIMD8(repeating: -0.693359375))
        r = r.addingProduct(n, SIMD8(repeating: 2.12194440e-4))
        var p = SIMD8<Float>(repeating: 1.9875691500e-4)
        p = (p * r) + 1.3981999507e-3
        p = (p * r) + 8.3334519073e-3
        p = (p * r) + 4.1665795894e-2
        p = (p * r) + 1.6666665459e-1
        p = (p * r) + 5.0000001201e-1
        let e = (p * (r * r)) + r + 1
        let bits = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        return e * unsafeBitCast(bits, to: SIMD8<Float>.self)
    }

    /// a[i] = silu(a[i]) · b[i], the SwiGLU gate: g / (1 + e^-g), with ``exp8(_:)`` in eight lanes;
    /// the last partial vector goes through the same lanes, so an element's value never depends on
    /// where it falls. The loop is C (CFlexKernels/vector.c, the same arithmetic as the Swift SIMD
    /// code it replaced, which the tests keep as the reference): compiled for AVX2 and for baseline
    /// x86-64, chosen at load.
    public static func swiglu(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        cflex_swiglu(a, b, n)
    }

    /// a[i] = gelu(a[i]) · b[i], the GeGLU gate (Gemma), GELU in its tanh approximation
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as the models were trained; computed as
    /// x / (1 + e^(-2u)), the same function (0.5·(1 + tanh u) is the logistic of 2u). C, as ``swiglu(_:_:_:)``.
    public static func geglu(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        cflex_geglu(a, b, n)
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
