import FlexSystem

/// How to open a model. Every field has a documented default; a value struct so callers can
/// build it once and reuse it.
public struct EngineOptions: Sendable {
    public var modelPath: String
    /// Compute threads (caller included). Default: online CPUs.
    public var threads: Int = Platform.onlineCPUs
    /// Context length in tokens; nil means min(2048, the model's trained context). The KV cache
    /// is sized for it up front.
    public var contextLength: Int? = nil
    /// Tokens per forward pass during prompt processing: larger amortises weight reads over
    /// more tokens, at (batch × vocab × 4) bytes of logits.
    public var batchSize: Int = 64
    /// Total memory the engine may use (weights, KV cache, buffers, runtime). Under a limit the
    /// engine plans a resident set and streams the other weights from disk (``MemoryPlan``).
    /// nil takes the enclosing cgroup's limit when ``followCgroupLimit`` and one is set, and
    /// otherwise runs the model from a memory mapping with no limit.
    public var memoryLimit: Int? = nil
    /// Use the enclosing cgroup's memory limit when ``memoryLimit`` is nil.
    public var followCgroupLimit = true
    /// Disk path for streamed weights: io_uring, with pread as the fallback.
    public var readBackend: ReadBackend = .auto
    /// mlock the resident weights and the staging ring when permitted (a refusal only warns).
    public var lockMemory = true
    /// Rearrange resident Q4_1/Q8_0 matrices so the decode kernels compute 8 rows at once
    /// (`Interleave`): the same logits, faster. Without a cap this copies those matrices out of
    /// the mapping at open (the mapped pages are released as it goes). Off only to measure it.
    public var interleaveWeights = true
    /// Staging slots for streamed weights: 2 overlaps one layer's reads with the previous
    /// layer's compute; more smooths uneven layers at the cost of resident bytes.
    public var ringSlots = 2
    /// Under a cap that cannot hold every weight: the head first (the default) or the layers.
    public var residency: Residency = .headFirst
    /// Batch rows a pass may return logits for; nil means the whole batch when the model fits in
    /// memory (no limit, or a limit above the in-memory estimate) and 1 under a tighter cap
    /// (generation needs 1; perplexity is faster with more).
    public var logitRows: Int? = nil
    /// Bytes to reserve for the runtime (tokenizer, metadata, code, stacks) when planning under a
    /// cap; nil measures what opening the model allocated and adds ``MemoryEstimate/codeAllowance``.
    /// Embedders whose own process shares the cgroup may want to reserve more.
    public var runtimeAllowance: Int? = nil
    /// What to do when the cap is below even the streaming minimum: `.off` refuses with the
    /// minimum (exact output); `.fit` skips blocks (``prunePolicy``, or greedy in ``pruneOrder``)
    /// until the plan fits; `.auto` also to meet ``minTokensPerSecond``.
    public var prune: PruneMode = .off
    /// RAP's own setting under a cap: nothing streams; the kept weights, KV cache, buffers and
    /// runtime must fit (with `.fit`, blocks are skipped until they do; else a cap that needs
    /// streaming is refused).
    public var residentOnly = false
    /// The order `.fit` drops blocks in: a pruning profile's (``PruningProfile/removalOrder(path:)``).
    public var pruneOrder: [BlockMask.Block]? = nil
    /// The policy `.fit` and `.auto` decide with (`--prune-policy`); nil is greedy over
    /// ``pruneOrder``.
    public var prunePolicy: (any PruningPolicy)? = nil
    /// `.auto`'s target: decode tokens per second over all sequences (`--min-tps`).
    public var minTokensPerSecond: Double? = nil
    /// `.auto`'s predictions of time per step (`flexrun calibrate`'s cached ``Calibration``).
    public var throughput: ThroughputModel? = nil
    /// Sliding attention windows per layer, in place of the model's (tests of the KV ring).
    package var attentionWindows: [Int?]? = nil
    /// The mlock call; tests substitute a refusing one.
    package var memoryLocker: MemoryLocker? = nil
    /// A streamed read that fails on purpose (tests, and the CLI's `FLEXRUN_READ_FAULT`).
    package var readFault: ReadFault? = nil
    /// Sequences a session holds at once (``Session``, `--parallel`): each gets its own KV
    /// pages, one logits row and one row of every pass. 1 for a single generation.
    public var maxSequences = 1
    /// Pages in the KV pool (16 positions each); nil gives every sequence room for the whole
    /// context. Under a cap the plan holds back the whole pool; without one, memory follows the
    /// pages in use.
    public var kvPages: Int? = nil
    /// Speculative decoding (`--speculate`): draft tokens by prompt lookup and verify them
    /// several per pass. Output stays exact (greedy ids unchanged; sampled tokens follow the
    /// same distribution, though not the same draws for a seed). Pays most under a cap, where a
    /// pass is bound by the disk; `.auto` turns itself off where it does not pay.
    public var speculation: SpeculationMode = .off
    /// Most tokens drafted for one pass (`--draft-max`).
    public var maxDraft = 8
    /// Blocks to skip (identity on the residual stream) when decoding and scoring text.
    public var skip: BlockMask = .none
    /// Blocks to skip when processing the prompt; nil means ``skip``. An attention block skipped
    /// here must be skipped in ``skip`` as well (decode cannot attend to keys never computed).
    public var prefillSkip: BlockMask? = nil

    public init(modelPath: String) { self.modelPath = modelPath }
}

/// What to generate.
public struct GenerateParameters: Sendable {
    /// Tokens to generate at most.
    public var maxTokens: Int = 256
    public var sampling = SamplingParameters()
    /// Wrap the prompt in the model's chat template.
    public var chat = false
    /// System message for chat; nil uses the template's default.
    public var system: String? = nil
    /// Stop at end-of-generation tokens (EOS, `<|im_end|>`, …).
    public var stopAtEndOfGeneration = true
    /// Set it from any thread to stop generation after the current token.
    public var cancellation: CancellationToken? = nil
    /// Keep the sequence's KV cache when it ends, for a next turn that continues it
    /// (``Session/add(tokens:parameters:continuing:)``); ``Session/release(_:)`` frees it.
    public var keepCache = false

    public init(maxTokens: Int = 256, sampling: SamplingParameters = SamplingParameters(), chat: Bool = false) {
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.chat = chat
    }
}

/// When the engine may skip blocks to run under a cap (`--prune`).
public enum PruneMode: String, Sendable, CaseIterable {
    /// Exact: stream what does not fit, refuse below the streaming minimum.
    case off
    /// Skip blocks only when even streaming cannot fit, fewest first in the profile's order.
    case fit
    /// As `fit`, and also skip blocks to reach ``EngineOptions/minTokensPerSecond``: the mask
    /// with the least quality loss predicted to meet it.
    case auto
}
