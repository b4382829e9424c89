import FlexKernels

/// What distinguishes one decoder-only architecture from another, as data.
///
/// The forward pass in ``Transformer`` is shared; an architecture says how rope is laid out,
/// which optional tensors it may carry, and which tokenizer pre-split it defaults to. Adding
/// an architecture is one file declaring its spec plus one entry in ``ArchitectureTable``.
public struct ArchitectureSpec: Sendable {
    /// The GGUF `general.architecture` value and the prefix of its hyperparameter keys.
    public let name: String
    public let ropeStyle: RopeStyle
    /// Whether Q/K/V projections may carry biases (looked up as `blk.N.attn_q.bias`, …).
    public let allowsAttentionBias: Bool
    /// Pre-tokenizer to use when the GGUF names none.
    public let defaultPreTokenizer: String
}

/// The architectures FlexRun runs, keyed by `general.architecture`.
public enum ArchitectureTable {
    public static let all: [String: ArchitectureSpec] = [
        ArchitectureSpec.llama.name: .llama,
        ArchitectureSpec.qwen2.name: .qwen2,
    ]
}
