/// A sequence's id within its session, in the order sequences were added.
public struct SequenceID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let value: Int
    public static func < (a: SequenceID, b: SequenceID) -> Bool { a.value < b.value }
    public var description: String { "\(value)" }
}

/// What a session's ``Session/step(_:)`` produces.
public enum SequenceEvent: Sendable {
    /// A sequence's next token.
    case token(SequenceID, GeneratedToken)
    /// A sequence ended; its KV pages are back in the pool.
    case finished(SequenceID, GenerationStats)
}

/// A session's KV pool at a glance (``Session/kvCache``).
public struct KVCacheUsage: Sendable, Equatable {
    public let pageTokens: Int
    public let pageBytes: Int
    public let pagesInUse: Int
    public let peakPages: Int
    public let pageCapacity: Int
    public var bytesInUse: Int { pagesInUse * pageBytes }
    public var peakBytes: Int { peakPages * pageBytes }
    public var capacityBytes: Int { pageCapacity * pageBytes }
}

/// One sequence of a session: its prompt, progress, sampler and statistics.
struct SequenceState {
    let id: SequenceID
    let prompt: [Int32]
    let parameters: GenerateParameters
    let slot: PagedKVCache.Slot
    var sampler: Sampler
    var decoder = UTF8StreamDecoder()
    /// Prompt tokens already run.
    var consumed = 0
    /// The prompt is done: the sequence generates one row per step.
    var decoding = false
    /// Some pass has run rows of it (its attention holes are then fixed).
    var started = false
    var promptRowsThisStep = false
    var cancelled = false
    var stop: GenerationStats.StopReason? = nil
    var pendingToken: Int32? = nil
    /// This pass's drafted tokens (speculative decoding): where they start in the session's
    /// draft buffer, how many, how many were accepted, and whether the chain has been resolved.
    var draftStart = 0
    var draftCount = 0
    /// What the lookup match behind this pass's draft said of it (how often such drafts are
    /// accepted differs 30-fold between kinds).
    var draftKind = PromptLookup.Kind.long
    var acceptedThisStep = 0
    var verifiedThisStep = false
    var tokens: [Int32] = []
    /// Attention layers skipped by some pass over this sequence: their keys have holes.
    var attentionHoles: Set<Int> = []
    var stats = GenerationStats()
    var countersAtStart = StreamCounters()
    var countersAtDecode = StreamCounters()
    var majorFaultsAtDecode = 0

    init(id: SequenceID, prompt: [Int32], parameters: GenerateParameters, slot: PagedKVCache.Slot, vocabulary: Int, capacity: Int) {
        self.id = id
        self.prompt = prompt
        self.parameters = parameters
        self.slot = slot
        sampler = Sampler(parameters.sampling, vocabularySize: vocabulary)
        for t in prompt { sampler.accept(t) }
        tokens.reserveCapacity(max(0, capacity))
    }
}
