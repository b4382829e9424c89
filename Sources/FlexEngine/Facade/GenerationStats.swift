/// What one generation did and how fast: the numbers `--stats` prints.
public struct GenerationStats: Sendable, Equatable {
    public enum StopReason: String, Sendable { case endOfGeneration = "end of generation", maxTokens = "token limit", contextFull = "context full", cancelled, error }

    public var loadSeconds: Double = 0
    /// Prompt tokens run through the model (those taken from a kept cache are not).
    public var promptTokens = 0
    /// Prompt tokens whose KV came from a kept cache (a chat's earlier turns).
    public var reusedPromptTokens = 0
    public var promptSeconds: Double = 0
    public var generatedTokens = 0
    public var decodeSeconds: Double = 0
    public var peakResidentBytes: Int? = nil
    /// Bytes read from disk for weights during this generation (0 when fully resident).
    public var bytesReadFromDisk = 0
    /// Of those, bytes read while decoding (after the prompt pass).
    public var decodeBytesRead = 0
    /// The process's major page faults while this sequence decoded (after its prompt): under a
    /// tight cgroup, code pages the kernel evicted and the process read back. More than a few
    /// per token means the cap is squeezing the code, not the weights.
    public var decodeMajorFaults = 0
    /// Time the forward pass waited for streamed weights (prefetch stalls).
    public var stallSeconds: Double = 0
    /// The memory cap in force at the end (nil: none).
    public var memoryLimit: Int? = nil
    /// Caps applied during the engine's life by ``Engine/setMemoryLimit(_:)``.
    public var replans = 0
    public var blocksSkipped = 0
    /// Speculative decoding: decode passes run, tokens drafted and drafts accepted, and the
    /// time spent finding drafts (``SpeculationMode``). Without speculation a pass is a token.
    public var decodePasses = 0
    public var draftedTokens = 0
    public var acceptedTokens = 0
    public var draftSeconds: Double = 0
    public var stopReason: StopReason = .maxTokens

    public var promptTokensPerSecond: Double { promptSeconds > 0 ? Double(promptTokens) / promptSeconds : 0 }
    /// Decode rate over tokens after the first (the first comes from the prompt pass).
    public var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(max(0, generatedTokens - 1)) / decodeSeconds : 0 }
    /// Disk bytes per decoded token (the first token comes from the prompt pass).
    /// Tokens per decode pass (1 without speculation).
    public var tokensPerPass: Double { decodePasses > 0 ? Double(max(0, generatedTokens - 1)) / Double(decodePasses) : 0 }
    /// Share of drafted tokens accepted.
    public var acceptanceRate: Double { draftedTokens > 0 ? Double(acceptedTokens) / Double(draftedTokens) : 0 }
    public var decodeBytesPerToken: Double { generatedTokens > 1 ? Double(decodeBytesRead) / Double(generatedTokens - 1) : 0 }
}

/// What the async stream yields.
public enum GenerationEvent: Sendable {
    /// Newly completed text (may be empty while a multi-byte character is incomplete) and its token.
    case token(id: Int32, text: String)
    case finished(GenerationStats)
}

/// What the offload runtime set up at open: for `--stats` and the sweep.
public struct OffloadSummary: Sendable, Equatable {
    /// "io_uring", "pread (reason)" or "none (fully resident)".
    public let reader: String
    public let lockedBytes: Int
    /// The mlock error when locking was refused (the engine runs unlocked).
    public let lockRefusal: String?
    public let residentLoadSeconds: Double
    /// Whether weights are read with O_DIRECT. False where the filesystem refuses it (ramfs,
    /// tmpfs before Linux 6.6, some FUSE and network filesystems): the reads then go through
    /// the page cache, which a cgroup charges to the process until it reclaims it.
    public let directIO: Bool
}
