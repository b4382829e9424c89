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
    /// Runtime allowance: Swift runtime, code, tokenizer tables, thread stacks.
    public let runtime: Int

    /// Measured on SmolLM2 inside a memory cgroup at a 50% cap (docs/BENCHMARKS.md): about 8 MiB
    /// of anonymous memory beyond the planned buffers (tokenizer tables, parsed metadata, stacks)
    /// and 18 MiB of mapped library code, of which the kernel keeps the hot part. Anonymous
    /// memory is what can OOM; code pages are reclaimable. 24 MiB covers the anonymous part three
    /// times over and leaves the code its hot set; every MiB less here is a MiB more of resident
    /// weights, so one less MiB streamed per token.
    public static let runtimeAllowance = 24 << 20

    public var total: Int { weights + kvCache + buffers + runtime }

    public var breakdown: String {
        (weights > 0 ? "weights \(ByteSize.format(weights)) + " : "") + "KV cache \(ByteSize.format(kvCache)) + buffers \(ByteSize.format(buffers)) + runtime \(ByteSize.format(runtime))"
    }
}
