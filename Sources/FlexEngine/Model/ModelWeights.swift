import FlexFormat
import FlexKernels

/// One transformer layer's weights (llama2.c's `TransformerWeights`, per layer).
/// Matrix shapes are (rows × cols) = (out features × in features).
public struct LayerWeights: Sendable {
    public let attentionNorm: [Float]      // (dim)
    public let query: QuantMatrix          // (n_head·head_dim × dim)
    public let key: QuantMatrix            // (n_kv·head_dim × dim)
    public let value: QuantMatrix          // (n_kv·head_dim × dim)
    public let output: QuantMatrix         // (dim × n_head·head_dim)
    public let queryBias: [Float]?         // (n_head·head_dim), qwen2
    public let keyBias: [Float]?           // (n_kv·head_dim)
    public let valueBias: [Float]?         // (n_kv·head_dim)
    public let queryNorm: [Float]?         // (head_dim), per-head RMSNorm of Q after projection (QK-norm: Gemma 3)
    public let keyNorm: [Float]?           // (head_dim), the same for K
    public let postAttentionNorm: [Float]? // (dim), RMSNorm of the attention block's output before the residual (Gemma)
    public let ffnNorm: [Float]            // (dim)
    public let postFFNNorm: [Float]?       // (dim), RMSNorm of the FFN block's output before the residual (Gemma)
    public let gate: QuantMatrix           // (ff × dim)
    public let up: QuantMatrix             // (ff × dim)
    public let down: QuantMatrix           // (dim × ff)

    /// Bytes of the attention block's parameters (norm, Q, K, V, O, biases) as stored.
    public var attentionBytes: Int {
        query.byteCount + key.byteCount + value.byteCount + output.byteCount + 4 * attentionVectorCount
    }
    /// Bytes of the FFN block's parameters (norm, gate, up, down) as stored.
    public var ffnBytes: Int { gate.byteCount + up.byteCount + down.byteCount + 4 * ffnVectorCount }

    /// Floats of the attention block's vectors (norms, biases), which stay in memory under any cap.
    public var attentionVectorCount: Int {
        attentionNorm.count + (queryBias?.count ?? 0) + (keyBias?.count ?? 0) + (valueBias?.count ?? 0)
            + (queryNorm?.count ?? 0) + (keyNorm?.count ?? 0) + (postAttentionNorm?.count ?? 0)
    }
    /// Floats of the FFN block's vectors.
    public var ffnVectorCount: Int { ffnNorm.count + (postFFNNorm?.count ?? 0) }

    /// The seven matrices, in the order `replacingMatrices(_:)` numbers them: Q, K, V, O, gate, up, down.
    public var matrices: [QuantMatrix] { [query, key, value, output, gate, up, down] }

    /// The same layer (norms, biases) with matrix `i` of ``matrices`` replaced by `f(i, matrix)`:
    /// how other owners of the bytes (x8 copies, the streamer's resident and slot views) present a layer.
    @inline(__always)
    func replacingMatrices(_ f: (Int, QuantMatrix) -> QuantMatrix) -> LayerWeights {
        LayerWeights(attentionNorm: attentionNorm, query: f(0, query), key: f(1, key), value: f(2, value), output: f(3, output),
                     queryBias: queryBias, keyBias: keyBias, valueBias: valueBias, queryNorm: queryNorm, keyNorm: keyNorm,
                     postAttentionNorm: postAttentionNorm, ffnNorm: ffnNorm, postFFNNorm: postFFNNorm,
                     gate: f(4, gate), up: f(5, up), down: f(6, down))
    }
}

/// Views of every weight of a model inside its mapped GGUF file, checked against the config.
///
/// Holds the `GGUFFile` so the mapping (and thus every `QuantMatrix` view) outlives all users.
public final class ModelWeights: @unchecked Sendable {
    // @unchecked Sendable: immutable after init; the views point into a read-only mapping we keep alive.
    public let file: GGUFFile
    public let config: ModelConfig
    public let spec: ArchitectureSpec
    public let tokenEmbedding: QuantMatrix   // (vocab × dim)
    public let outputNorm: [Float]           // (dim)
    public let output: QuantMatrix           // (vocab × dim), tied to tokenEmbedding when absent
    public let tiedOutput: Bool
    public let layers: [LayerWeights]
    public let ropeFrequencyFactors: [Float]?

    public init(file: GGUFFile) throws(GGUFError) {
        guard let archName = file.string("general.architecture") else { throw .missingKey("general.architecture") }
        guard let spec = ArchitectureTable.all[archName] else {
            let known = ArchitectureTable.all.keys.sorted().joined(separator: ", ")
            throw .badKey("general.architecture", reason: "architecture '\(archName)' is not supported (supported: \(known))")
        }
        let config = try ModelConfig(gguf: file, spec: spec)
        let d = config.embeddingLength

        func matrix(_ name: String, rows: Int, cols: Int) throws(GGUFError) -> QuantMatrix {
            guard let t = file.tensor(named: name) else { throw .missingTensor(name) }
            guard t.shape.count == 2, t.shape[0] == cols, t.shape[1] == rows else {
                throw .badTensorShape(name: name, reason: "shape \(t.shape) but the model config needs [\(cols), \(rows)]")
            }
            return QuantMatrix(type: t.type, data: file.tensorBytes(t).baseAddress!, rows: rows, cols: cols)
        }
        func vector(_ name: String, count: Int) throws(GGUFError) -> [Float] {
            guard let t = file.tensor(named: name) else { throw .missingTensor(name) }
            guard t.elementCount == count, t.shape.count <= 2 else {
                throw .badTensorShape(name: name, reason: "shape \(t.shape) but the model config needs [\(count)]")
            }
            var out = [Float](repeating: 0, count: count)
            out.withUnsafeMutableBufferPointer { ReferenceDequantize.row(t.type, file.tensorBytes(t).baseAddress!, $0.baseAddress!, count: count) }
            return out
        }
        func optionalVector(_ name: String, count: Int) throws(GGUFError) -> [Float]? {
            file.tensor(named: name) == nil ? nil : try vector(name, count: count)
        }

        let vocab = config.vocabularySize
        tokenEmbedding = try matrix("token_embd.weight", rows: vocab, cols: d)
        outputNorm = try vector("output_norm.weight", count: d)
        if file.tensor(named: "output.weight") != nil {
            output = try matrix("output.weight", rows: vocab, cols: d)
            tiedOutput = false
        } else {
            output = tokenEmbedding
            tiedOutput = true
        }
        ropeFrequencyFactors = try optionalVector("rope_freqs.weight", count: config.headDim / 2)

        var layers: [LayerWeights] = []
        for l in 0..<config.layerCount {
            let p = "blk.\(l)."
            let qd = config.queryDim, kv = config.kvDim, ff = config.feedForwardLength
            layers.append(LayerWeights(
                attentionNorm: try vector(p + "attn_norm.weight", count: d),
                query: try matrix(p + "attn_q.weight", rows: qd, cols: d),
                key: try matrix(p + "attn_k.weight", rows: kv, cols: d),
                value: try matrix(p + "attn_v.weight", rows: kv, cols: d),
                output: try matrix(p + "attn_output.weight", rows: d, cols: qd),
                queryBias: spec.allowsAttentionBias ? try optionalVector(p + "attn_q.bias", count: qd) : nil,
                keyBias: spec.allowsAttentionBias ? try optionalVector(p + "attn_k.bias", count: kv) : nil,
                valueBias: spec.allowsAttentionBias ? try optionalVector(p + "attn_v.bias", count: kv) : nil,
                queryNorm: try optionalVector(p + "attn_q_norm.weight", count: config.headDim),
                keyNorm: try optionalVector(p + "attn_k_norm.weight", count: config.headDim),
                postAttentionNorm: try optionalVector(p + "post_attention_norm.weight", count: d),
                ffnNorm: try vector(p + "ffn_norm.weight", count: d),
                postFFNNorm: try optionalVector(p + "post_ffw_norm.weight", count: d),
                gate: try matrix(p + "ffn_gate.weight", rows: ff, cols: d),
                up: try matrix(p + "ffn_up.weight", rows: ff, cols: d),
                down: try matrix(p + "ffn_down.weight", rows: d, cols: ff)))
        }
        self.file = file
        self.config = config
        self.spec = spec
        self.layers = layers
    }

    /// The widest matrix row any kernel dequantizes: sizes per-thread scratch.
    public var maxRowLength: Int { max(config.embeddingLength, config.feedForwardLength, config.queryDim) }
}
