import Foundation

/// RAP's agent's network: a small multilayer perceptron (inputs → hidden → hidden → one Q-value
/// per action, ReLU between), with its own backpropagation and Adam, so training and deciding
/// need no Python or ML stack. About 17K parameters for SmolLM2's 121 actions: a decision is a
/// few microseconds of arithmetic.
///
/// Why hand-written: the network is tiny, runs one row at a time at decision time, and must be
/// bit-reproducible from a seed; a general tensor library would be most of the binary.
public struct QNetwork: Sendable, Equatable, Codable {
    /// Widths: inputs, hidden..., outputs.
    public let widths: [Int]
    /// Per layer, weights row-major [out][in] and biases [out].
    public var weights: [[Float]]
    public var biases: [[Float]]

    /// He-initialised from `seed`.
    public init(widths: [Int], seed: UInt64) {
        precondition(widths.count >= 2 && widths.allSatisfy { $0 >= 1 })
        self.widths = widths
        var rng = RandomSource(seed: seed)
        weights = []
        biases = []
        for l in 0..<(widths.count - 1) {
            let fanIn = widths[l], fanOut = widths[l + 1]
            let scale = Float((2.0 / Double(fanIn)).squareRoot())
            weights.append((0..<(fanIn * fanOut)).map { _ in QNetwork.gaussian(&rng) * scale })
            biases.append(Array(repeating: 0, count: fanOut))
        }
    }

    /// Sets the output layer to zero: a residual network (``RLPolicy``) starts as no correction.
    public mutating func zeroOutput() {
        let last = weights.count - 1
        weights[last] = Array(repeating: 0, count: weights[last].count)
        biases[last] = Array(repeating: 0, count: biases[last].count)
    }

    public var parameterCount: Int { weights.reduce(0) { $0 + $1.count } + biases.reduce(0) { $0 + $1.count } }
    /// Why the shapes disagree, nil when they agree: at least two widths, each at least 1, and
    /// per layer a weight matrix of widths[l] × widths[l + 1] and a bias per output. A network
    /// read from a file must pass this before it runs: ``forward(_:into:scratch:)`` indexes raw
    /// buffers (a short bias row from a file read past its end, found by the `policy` fuzz target).
    public var shapeError: String? {
        guard widths.count >= 2, widths.allSatisfy({ $0 >= 1 && $0 <= 1 << 16 }) else { return "widths \(widths) (2 or more, each 1 to 65536)" }
        guard weights.count == widths.count - 1, biases.count == widths.count - 1 else {
            return "\(weights.count) weight and \(biases.count) bias layers for \(widths.count) widths"
        }
        for l in weights.indices where weights[l].count != widths[l] * widths[l + 1] || biases[l].count != widths[l + 1] {
            return "layer \(l) has \(weights[l].count) weights and \(biases[l].count) biases for \(widths[l]) → \(widths[l + 1])"
        }
        return nil
    }

    public var inputs: Int { widths[0] }
    public var outputs: Int { widths[widths.count - 1] }

    static func gaussian(_ rng: inout RandomSource) -> Float {
        // Box–Muller on two uniforms in (0, 1].
        let u = Double(rng.nextUnit()) + 1.0 / 16_777_216.0, v = Double(rng.nextUnit())
        return Float((-2 * log(u)).squareRoot() * cos(2 * Double.pi * v))
    }

    /// Q-values for one input into `out` (outputs long). `scratch` holds two hidden rows; the
    /// decision path passes preallocated buffers.
    public func forward(_ x: UnsafeBufferPointer<Float>, into out: UnsafeMutableBufferPointer<Float>,
                        scratch: UnsafeMutableBufferPointer<Float>) {
        let widest = widths.dropFirst().dropLast().max() ?? 0
        precondition(x.count >= inputs && out.count >= outputs && scratch.count >= 2 * widest)
        var src = UnsafeBufferPointer(rebasing: x[0..<inputs])
        var flip = 0
        for l in 0..<(widths.count - 1) {
            let n = widths[l], m = widths[l + 1], last = l == widths.count - 2
            precondition(weights[l].count >= n * m && biases[l].count >= m, "QNetwork layer \(l): shapes disagree")
            let dst = last ? out : UnsafeMutableBufferPointer(rebasing: scratch[(flip * widest)..<(flip * widest + m)])
            weights[l].withUnsafeBufferPointer { w in
                biases[l].withUnsafeBufferPointer { b in
                    for o in 0..<m {
                        var acc = b[o]
                        let row = o * n
                        for i in 0..<n { acc += w[row + i] * src[i] }
                        dst[o] = last ? acc : max(0, acc)
                    }
                }
            }
            src = UnsafeBufferPointer(dst)
            flip ^= 1
        }
    }

    /// Q-values for one input (allocates; for tests and training).
    public func callAsFunction(_ x: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: outputs)
        var scratch = [Float](repeating: 0, count: 2 * max(1, widths.dropFirst().dropLast().max() ?? 1))
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { o in scratch.withUnsafeMutableBufferPointer { s in forward(xp, into: o, scratch: s) } }
        }
        return out
    }
}

/// Minibatch training of a ``QNetwork`` on squared error at one output per sample (the action
/// taken), with Adam. Each sample's gradient is exact backpropagation through the ReLU layers.
public struct QNetworkTrainer: Sendable {
    public var network: QNetwork
    public var learningRate: Float
    let beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8
    private var m: [[Float]], v: [[Float]], mb: [[Float]], vb: [[Float]]
    private var t = 0

    public init(network: QNetwork, learningRate: Float = 1e-3) {
        self.network = network
        self.learningRate = learningRate
        m = network.weights.map { Array(repeating: 0, count: $0.count) }
        v = m
        mb = network.biases.map { Array(repeating: 0, count: $0.count) }
        vb = mb
    }

    /// One Adam step on the mean of (Q(x, a) − target)² over the batch; returns that loss.
    @discardableResult
    public mutating func step(inputs: [[Float]], actions: [Int], targets: [Float]) -> Float {
        let L = network.widths.count - 1
        var gw = network.weights.map { [Float](repeating: 0, count: $0.count) }
        var gb = network.biases.map { [Float](repeating: 0, count: $0.count) }
        var loss: Float = 0
        let scale = 1 / Float(inputs.count)
        for (k, x) in inputs.enumerated() {
            // Forward, keeping every layer's activations.
            var acts: [[Float]] = [x]
            for l in 0..<L {
                let n = network.widths[l], mOut = network.widths[l + 1]
                var y = [Float](repeating: 0, count: mOut)
                let w = network.weights[l], b = network.biases[l], a = acts[l]
                for o in 0..<mOut {
                    var acc = b[o]
                    for i in 0..<n { acc += w[o * n + i] * a[i] }
                    y[o] = l == L - 1 ? acc : max(0, acc)
                }
                acts.append(y)
            }
            let action = actions[k]
            let err = acts[L][action] - targets[k]
            loss += err * err * scale
            // Backward: only the taken action's output carries error.
            var delta = [Float](repeating: 0, count: network.widths[L])
            delta[action] = 2 * err * scale
            for l in stride(from: L - 1, through: 0, by: -1) {
                let n = network.widths[l], mOut = network.widths[l + 1], a = acts[l]
                var prev = [Float](repeating: 0, count: n)
                let w = network.weights[l]
                for o in 0..<mOut where delta[o] != 0 {
                    let d = delta[o]
                    gb[l][o] += d
                    let row = o * n
                    for i in 0..<n {
                        gw[l][row + i] += d * a[i]
                        prev[i] += d * w[row + i]
                    }
                }
                if l > 0 { for i in 0..<n where a[i] <= 0 { prev[i] = 0 } }
                delta = prev
            }
        }
        t += 1
        let c1 = 1 - pow(beta1, Float(t)), c2 = 1 - pow(beta2, Float(t))
        for l in 0..<L {
            adam(&network.weights[l], gw[l], &m[l], &v[l], c1, c2)
            adam(&network.biases[l], gb[l], &mb[l], &vb[l], c1, c2)
        }
        return loss
    }

    private func adam(_ p: inout [Float], _ g: [Float], _ m: inout [Float], _ v: inout [Float], _ c1: Float, _ c2: Float) {
        for i in p.indices {
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
            p[i] -= learningRate * (m[i] / c1) / ((v[i] / c2).squareRoot() + epsilon)
        }
    }
}
