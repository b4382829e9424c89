import FlexKernels

/// What distinguishes one decoder-only architecture from another, as data.
///
/// The forward pass in ``Transformer`` is shared; an architecture says how rope is laid out,
/// which FFN activation it uses, whether embeddings are scaled, its default layer pattern, and
/// which tokenizer pre-split it defaults to. Per-layer facts (window, rope base) are resolved
/// into ``ModelConfig/layers`` at open, and optional tensors (biases, QK-norms, post-norms) are
/// used wherever the file carries them. Adding an architecture is one file declaring its spec
/// plus one entry in ``ArchitectureTable``.
public struct ArchitectureSpec: Sendable {
    /// The GGUF `general.architecture` value and the prefix of its hyperparameter keys.
    public let name: String
    public let ropeStyle: RopeStyle
    /// Whether Q/K/V projections may carry biases (looked up as `blk.N.attn_q.bias`, …).
    public let allowsAttentionBias: Bool
    /// Pre-tokenizer to use when the GGUF names none.
    public let defaultPreTokenizer: String
    /// The gated FFN's activation: act(gate) · up.
    public var ffnActivation: FFNActivation = .silu
    /// Whether the embedding rows are multiplied by √n_embd before the first layer (Gemma).
    public var scalesEmbedding = false
    /// Sliding-window layers: when the file has `<arch>.attention.sliding_window`, every layer is
    /// local except each `pattern`-th (layer l is global when (l + 1) % pattern == 0), unless the
    /// file says otherwise in `<arch>.attention.sliding_window_pattern`. Nil: no local layers.
    public var defaultWindowPattern: Int? = nil
    /// Rope base of the local layers when the file has no `<arch>.rope.freq_base_swa`
    /// (nil: the global base).
    public var defaultLocalRopeBase: Double? = nil
}

/// The activation of a gated FFN.
public enum FFNActivation: Sendable {
    /// SiLU (SwiGLU): llama, qwen2.
    case silu
    /// GELU, tanh approximation (GeGLU): Gemma.
    case geluTanh
}

/// The architectures FlexRun runs, keyed by `general.architecture`.
public enum ArchitectureTable {
    public static let all: [String: ArchitectureSpec] = [
        ArchitectureSpec.llama.name: .llama,
        ArchitectureSpec.qwen2.name: .qwen2,
        ArchitectureSpec.gemma3.name: .gemma3,
    ]
}
