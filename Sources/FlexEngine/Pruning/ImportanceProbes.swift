import FlexSystem
import Glibc

/// The one-pass importance metrics, gathered over the dense model's residual stream.
///
/// - ShortGPT's **Block Influence** (Men et al., 2024): BI = 1 − mean over tokens of
///   cos(block input, block output). We take it per block (attention and FFN apart, as the
///   other methods do), so it ranks the same 60 units as GSI.
/// - **Angular distance** (Gromov et al., 2024, "The Unreasonable Ineffectiveness of the Deeper
///   Layers"): d(l, l+n) = arccos(cos(x_l, x_{l+n})) / π between the inputs of layers l and l+n,
///   averaged over tokens, for every l and n. Removing n layers removes the window that
///   minimises it. It is a layer-level method by construction.
final class ImportanceProbe: ResidualProbe {
    let layers: Int, width: Int
    /// Σ cos over tokens per block, and the token count.
    private(set) var cosineSums: [Double]
    private(set) var tokens = 0
    /// Σ angular distance over tokens for the pair (l, m), l < m ≤ layers, at index l·(layers+1)+m.
    private(set) var angularSums: [Double]
    private let input: AlignedBuffer<Float>      // the current block's input
    private let layerInputs: AlignedBuffer<Float> // inputs of layers 0…L−1 and the final state

    init(layers: Int, width: Int, rows: Int) {
        self.layers = layers
        self.width = width
        cosineSums = [Double](repeating: 0, count: 2 * layers)
        angularSums = [Double](repeating: 0, count: (layers + 1) * (layers + 1))
        input = AlignedBuffer(count: rows * width)
        layerInputs = AlignedBuffer(count: (layers + 1) * rows * width)
    }

    func before(block: Int, x: UnsafePointer<Float>, rows: Int) {
        input.pointer.update(from: x, count: rows * width)
        if block % 2 == 0 { (layerInputs.pointer + block / 2 * rows * width).update(from: x, count: rows * width) }
    }

    func after(block: Int, x: UnsafePointer<Float>, rows: Int) {
        var s = 0.0
        for r in 0..<rows { s += Self.cosine(input.pointer + r * width, x + r * width, width) }
        cosineSums[block] += s
    }

    func final(x: UnsafePointer<Float>, rows: Int) {
        let stride = rows * width
        (layerInputs.pointer + layers * stride).update(from: x, count: stride)
        for l in 0..<layers {
            for m in (l + 1)...layers {
                var s = 0.0
                for r in 0..<rows {
                    let c = Self.cosine(layerInputs.pointer + l * stride + r * width, layerInputs.pointer + m * stride + r * width, width)
                    s += acos(Swift.min(1, Swift.max(-1, c))) / Double.pi
                }
                angularSums[l * (layers + 1) + m] += s
            }
        }
        tokens += rows
    }

    /// Block Influence per block, in execution order.
    var blockInfluence: [Double] { cosineSums.map { 1 - $0 / Double(tokens) } }

    /// Mean angular distance between the inputs of layers l and l + n (layer L is the output).
    func angularDistance(from l: Int, span n: Int) -> Double { angularSums[l * (layers + 1) + l + n] / Double(tokens) }

    static func cosine(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Double {
        var ab: Float = 0, aa: Float = 0, bb: Float = 0
        for i in 0..<n { ab += a[i] * b[i]; aa += a[i] * a[i]; bb += b[i] * b[i] }
        let d = (Double(aa) * Double(bb)).squareRoot()
        return d > 0 ? Double(ab) / d : 1
    }
}

/// The mean final hidden state of each chunk: EvoP's chunk embedding for calibration sampling.
final class PooledStateProbe: ResidualProbe {
    let width: Int
    private(set) var pooled: [[Float]] = []
    init(width: Int) { self.width = width }
    func final(x: UnsafePointer<Float>, rows: Int) {
        var mean = [Float](repeating: 0, count: width)
        for r in 0..<rows { for i in 0..<width { mean[i] += x[r * width + i] } }
        pooled.append(mean.map { $0 / Float(rows) })
    }
}
