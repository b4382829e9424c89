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
    /// Runtime: tokenizer tables and parsed metadata (measured at open) plus ``codeAllowance``.
    public let runtime: Int

    /// Code pages and thread stacks, on top of what the open measurably allocated. Swept inside a
    /// memory cgroup at a 50% cap on SmolLM2 (docs/BENCHMARKS.md): with 5 MiB left for code the
    /// process thrashed on its own code pages (15,000–45,000 major faults, 0.5–2 tok/s); with 9 MiB
    /// about 700–1,100 major faults; with 17 MiB about 200. 14 MiB keeps clear of the cliff while
    /// every MiB less here is a MiB more of resident weights, so one less streamed per token.
    public static let codeAllowance = 14 << 20
    /// Used instead of the measurement where /proc is missing: SmolLM2's (about 5 MiB) rounded up.
    public static let parsedAllowance = 8 << 20
    /// The in-memory estimate's runtime share before a model is open.
    public static let runtimeAllowance = parsedAllowance + codeAllowance

    public var total: Int { weights + kvCache + buffers + runtime }

    public var breakdown: String {
        (weights > 0 ? "weights \(ByteSize.format(weights)) + " : "") + "KV cache \(ByteSize.format(kvCache)) + buffers \(ByteSize.format(buffers)) + runtime \(ByteSize.format(runtime))"
    }
}
