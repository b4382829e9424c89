import FlexSystem

/// What running a model fully in memory costs, by category: the engine's own tally, used for
/// the `--mem-limit` check and reported in stats.
public struct MemoryEstimate: Sendable, Equatable {
    /// Tensor bytes of the model (mapped from the GGUF and touched once loaded).
    public let weights: Int
    /// f16 KV cache for the whole context.
    public let kvCache: Int
    /// Activation buffers, logits and per-thread scratch.
    public let buffers: Int
    /// Runtime allowance: Swift runtime, code, tokenizer tables, thread stacks. Measured on
    /// SmolLM2 (RSS minus the categories above, about 20 MiB) and rounded up.
    public let runtime: Int

    public static let runtimeAllowance = 32 << 20

    public var total: Int { weights + kvCache + buffers + runtime }

    public var breakdown: String {
        (weights > 0 ? "weights \(ByteSize.format(weights)) + " : "") + "KV cache \(ByteSize.format(kvCache)) + buffers \(ByteSize.format(buffers)) + runtime \(ByteSize.format(runtime))"
    }
}
