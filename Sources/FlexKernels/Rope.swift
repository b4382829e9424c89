import Foundation

/// Rotary position embedding, in the two layouts ggml knows.
public enum RopeStyle: Sendable {
    /// Adjacent pairs (x[2i], x[2i+1]): llama-family GGUFs (their Q/K were permuted at conversion).
    case interleaved
    /// Halves (x[i], x[i + d/2]): GPT-NeoX style, used by qwen2 and gemma.
    case neox
}

/// Precomputed inverse frequencies for one model, so per-token rope is only sin/cos and FMAs.
public struct Rope: Sendable {
    public let style: RopeStyle
    public let dims: Int
    /// θ_i = base^(−2i/d) / factor_i, computed in double as the fp64 reference does.
    public let inverseFrequencies: [Double]

    /// - Parameter scale: multiplies every angle (linear position interpolation: 1 / factor).
    public init(style: RopeStyle, dims: Int, base: Double, frequencyFactors: [Float]? = nil, scale: Double = 1) {
        self.style = style
        self.dims = dims
        inverseFrequencies = (0..<dims / 2).map { i in
            let f = pow(base, -2.0 * Double(i) / Double(dims))
            return f / Double(frequencyFactors?[i] ?? 1) * scale
        }
    }

    /// Fills `cs` (2·dims/2 floats: cos then sin interleaved per pair) for `position`.
    public func table(position: Int, into cs: UnsafeMutablePointer<Float>) {
        for i in 0..<dims / 2 {
            let theta = Double(position) * inverseFrequencies[i]
            cs[2 * i] = Float(cos(theta))
            cs[2 * i + 1] = Float(sin(theta))
        }
    }

    /// Rotates `heads` consecutive head vectors of `dims` in place with a table from ``table(position:into:)``.
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, headStride: Int, table cs: UnsafePointer<Float>) {
        let half = dims / 2
        for h in 0..<heads {
            let v = x + h * headStride
            for i in 0..<half {
                let c = cs[2 * i], s = cs[2 * i + 1]
                let (a, b) = style == .interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                let x0 = v[a], x1 = v[b]
                v[a] = x0 * c - x1 * s
                v[b] = x0 * s + x1 * c
            }
        }
    }
}
