import FlexFormat

/// The blueprint of a model: hyperparameters only, no weights (llama2.c's `Config`).
public struct ModelConfig: Sendable, Equatable {
    public let architecture: String
    public let layerCount: Int
    public let embeddingLength: Int
    public let feedForwardLength: Int
    public let headCount: Int
    public let kvHeadCount: Int
    public let headDim: Int
    public let vocabularySize: Int
    public let trainedContextLength: Int
    public let ropeBase: Double
    public let rmsEpsilon: Float

    /// Per layer, the sliding attention window in positions (nil: the layer attends to every
    /// earlier position). The KV cache keeps only a ring of the window for such a layer. No
    /// supported architecture sets it yet (Gemma 3's local layers will).
    public var attentionWindows: [Int?]

    public var queryDim: Int { headCount * headDim }
    public var kvDim: Int { kvHeadCount * headDim }
    /// Query heads sharing one KV head (GQA).
    public var attentionGroup: Int { headCount / kvHeadCount }

    /// Reads the hyperparameters under `<arch>.` and checks they are mutually consistent.
    public init(gguf: GGUFFile, spec: ArchitectureSpec) throws(GGUFError) {
        let a = spec.name
        architecture = a
        layerCount = try gguf.requireInt("\(a).block_count")
        embeddingLength = try gguf.requireInt("\(a).embedding_length")
        feedForwardLength = try gguf.requireInt("\(a).feed_forward_length")
        headCount = try gguf.requireInt("\(a).attention.head_count")
        kvHeadCount = gguf.int("\(a).attention.head_count_kv") ?? headCount
        guard layerCount >= 1, layerCount <= 1024 else { throw .badKey("\(a).block_count", reason: "\(layerCount) layers") }
        guard headCount >= 1, kvHeadCount >= 1, headCount % kvHeadCount == 0 else {
            throw .badKey("\(a).attention.head_count_kv", reason: "\(kvHeadCount) KV heads do not divide \(headCount) heads")
        }
        headDim = gguf.int("\(a).attention.key_length") ?? (embeddingLength / headCount)
        guard headDim >= 2, headDim % 2 == 0, headDim <= 1024 else {
            throw .badKey("\(a).attention.key_length", reason: "head dimension \(headDim)")
        }
        guard let embd = gguf.tensor(named: "token_embd.weight"), embd.shape.count == 2 else {
            throw .missingTensor("token_embd.weight")
        }
        vocabularySize = embd.shape[1]
        trainedContextLength = gguf.int("\(a).context_length") ?? 2048
        ropeBase = gguf.double("\(a).rope.freq_base") ?? 10000
        rmsEpsilon = Float(gguf.double("\(a).attention.layer_norm_rms_epsilon") ?? 1e-5)
        attentionWindows = Array(repeating: nil, count: layerCount)
    }

    /// Bytes of f16 KV cache per token over all layers (K and V).
    public var kvBytesPerToken: Int { 2 * layerCount * kvDim * MemoryLayout<Float16>.size }
}
