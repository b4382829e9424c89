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

    /// Scale of the attention scores: `<arch>.attention.scale` when the file has it, else
    /// 1/√head_dim (Gemma 3's `query_pre_attn_scalar` is its head dimension).
    public let attentionScale: Float

    /// What each layer is, as data (the forward pass reads these, never the architecture's name).
    public var layers: [LayerShape]

    /// One layer's attention shape.
    public struct LayerShape: Sendable, Equatable {
        /// The sliding attention window in positions (nil: the layer attends to every earlier
        /// position). The KV cache keeps only a ring of the window for such a layer.
        public var window: Int?
        /// This layer's rope base (Gemma 3's local layers use another one than its global layers).
        public var ropeBase: Double
        /// Multiplier of rope angles: 1 / `rope.scaling.factor` on global layers (linear position
        /// interpolation, as llama.cpp's `freq_scale`), 1 elsewhere.
        public var ropeScale: Double = 1
    }

    /// A rope's identity: layers with the same base and scale share one cos/sin table per pass.
    public struct RopeShape: Sendable, Equatable { public let base: Double, scale: Double }

    /// The distinct ropes over the layers, in order of first use, and each layer's index into them.
    public var ropes: (shapes: [RopeShape], ofLayer: [Int]) {
        var shapes: [RopeShape] = [], ofLayer: [Int] = []
        for l in layers {
            let r = RopeShape(base: l.ropeBase, scale: l.ropeScale)
            if let i = shapes.firstIndex(of: r) { ofLayer.append(i) } else { ofLayer.append(shapes.count); shapes.append(r) }
        }
        return (shapes, ofLayer)
    }

    /// Distinct ropes over the layers: one cos/sin table each per pass.
    public var ropeCount: Int { ropes.shapes.count }

    /// Per layer, the sliding attention window in positions (nil: every earlier position).
    public var attentionWindows: [Int?] {
        get { layers.map(\.window) }
        set { for l in layers.indices { layers[l].window = l < newValue.count ? newValue[l] : nil } }
    }

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
        if let valueDim = gguf.int("\(a).attention.value_length"), valueDim != headDim {
            throw .badKey("\(a).attention.value_length", reason: "value heads of \(valueDim) but key heads of \(headDim) (FlexRun needs them equal)")
        }
        guard let embd = gguf.tensor(named: "token_embd.weight"), embd.shape.count == 2 else {
            throw .missingTensor("token_embd.weight")
        }
        vocabularySize = embd.shape[1]
        trainedContextLength = gguf.int("\(a).context_length") ?? 2048
        ropeBase = gguf.double("\(a).rope.freq_base") ?? 10000
        rmsEpsilon = Float(gguf.double("\(a).attention.layer_norm_rms_epsilon") ?? 1e-5)
        if let scale = gguf.double("\(a).attention.scale") {
            guard scale > 0, scale.isFinite else { throw .badKey("\(a).attention.scale", reason: "scale \(scale)") }
            attentionScale = Float(scale)
        } else {
            attentionScale = 1 / Float(headDim).squareRoot()
        }
        layers = try Self.layerShapes(gguf: gguf, spec: spec, layerCount: layerCount, globalBase: ropeBase)
    }

    /// Resolves the local/global layer pattern: a window from `<arch>.attention.sliding_window`,
    /// applied to the layers the file's pattern (`sliding_window_pattern`, a number or one flag per
    /// layer) or the architecture's default pattern marks local; those layers take the local rope base.
    static func layerShapes(gguf: GGUFFile, spec: ArchitectureSpec, layerCount: Int, globalBase: Double) throws(GGUFError) -> [LayerShape] {
        let a = spec.name
        var scale = 1.0
        if let factor = gguf.double("\(a).rope.scaling.factor"), factor != 0 {
            guard factor > 0, factor.isFinite else { throw .badKey("\(a).rope.scaling.factor", reason: "factor \(factor)") }
            scale = 1 / factor
        }
        let global = LayerShape(window: nil, ropeBase: globalBase, ropeScale: scale)
        guard let window = gguf.int("\(a).attention.sliding_window") else { return Array(repeating: global, count: layerCount) }
        guard window >= 1 else { throw .badKey("\(a).attention.sliding_window", reason: "window \(window)") }
        let localBase = gguf.double("\(a).rope.freq_base_swa") ?? spec.defaultLocalRopeBase ?? globalBase
        let isLocal: [Bool]
        if let flags = gguf.boolArray("\(a).attention.sliding_window_pattern") {
            guard flags.count == layerCount else {
                throw .badKey("\(a).attention.sliding_window_pattern", reason: "\(flags.count) flags for \(layerCount) layers")
            }
            isLocal = flags
        } else if let pattern = gguf.int("\(a).attention.sliding_window_pattern") ?? spec.defaultWindowPattern {
            guard pattern >= 1 else { throw .badKey("\(a).attention.sliding_window_pattern", reason: "pattern \(pattern)") }
            // llama.cpp's rule: layer l is local unless it is the last of each run of `pattern`.
            isLocal = (0..<layerCount).map { pattern > 1 && ($0 % pattern) < pattern - 1 }
        } else {
            isLocal = Array(repeating: true, count: layerCount)
        }
        return isLocal.map { $0 ? LayerShape(window: window, ropeBase: localBase) : global }
    }

    /// Bytes of f16 KV cache per token over all layers (K and V).
    public var kvBytesPerToken: Int { 2 * layerCount * kvDim * MemoryLayout<Float16>.size }
}
