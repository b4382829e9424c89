import FlexSystem

/// RAP at run time in one session (`--prune fit|auto`): which mask runs for the cap in force,
/// the KV the sequences hold and will hold, and (auto) the throughput target.
///
/// The KV cache is planned to a horizon, not to the whole pool: memory follows the pages the
/// sequences write (the pool's storage is backed only when written), so the controller plans for
/// the pages in use plus room to grow, and decides again when the sequences would pass it. That
/// is how attention blocks are kept while the KV is small and dropped, freeing their pages at
/// once, as it grows. Decisions happen at token boundaries only.
struct PruningController: Sendable {
    let policy: any PruningPolicy
    /// The dense model's memory model; its KV positions are the horizon's.
    private(set) var memory: MemoryModel
    let residentOnly: Bool
    let minTokensPerSecond: Double?
    let throughput: ThroughputModel?
    let pageTokens: Int
    let poolPages: Int
    /// Pages planned for (all sequences together), and how far it grows each time.
    private(set) var horizonPages: Int
    let growthPages: Int
    /// Sequences held at the last decision (auto re-decides when they join or leave).
    var decidedBatch = 0
    /// Measured over predicted decode rate, from the decisions' own measurements (auto): scales
    /// every prediction, so a slower disk or CPU than calibrated is learned in a second.
    var rateScale = 1.0

    /// FFN blocks in the profile's order: what auto's feedback may drop or restore (see `choose`).
    let ffnOrder: [BlockMask.Block]

    init(policy: any PruningPolicy, memory: MemoryModel, residentOnly: Bool, minTokensPerSecond: Double?, throughput: ThroughputModel?,
         pageTokens: Int, poolPages: Int, sequences: Int, ffnOrder: [BlockMask.Block] = []) {
        self.policy = policy
        self.ffnOrder = ffnOrder.filter { $0.kind == .ffn }
        self.residentOnly = residentOnly
        self.minTokensPerSecond = minTokensPerSecond
        self.throughput = throughput
        self.pageTokens = pageTokens
        self.poolPages = poolPages
        // 256 positions per sequence at a time: a handful of replans over a 2,048-token run.
        growthPages = max(1, sequences * (256 / pageTokens))
        horizonPages = min(poolPages, growthPages)
        self.memory = memory.with(kvTokens: horizonPages * pageTokens)
    }

    /// Plans for at least `pages` pages in use (rounded up by a growth step); true when the
    /// horizon moved.
    mutating func extendHorizon(to pages: Int) -> Bool {
        guard pages > horizonPages, horizonPages < poolPages else { return false }
        horizonPages = min(poolPages, pages + growthPages)
        memory = memory.with(kvTokens: horizonPages * pageTokens)
        return true
    }

    /// What `mask` needs under the mode: its resident footprint, or its streaming minimum.
    func need(_ mask: BlockMask) -> Int { memory.need(skipping: mask, residentOnly: residentOnly) }

    /// The need with every block skipped: below it no mask runs.
    var floor: Int { need(BlockMask(skipping: BlockMask.Block.all(layers: memory.layers))) }

    /// The predicted decode rate of `mask` under `cap` with `batch` sequences (nil without a
    /// throughput model, or when it does not fit).
    func predictedTokensPerSecond(_ mask: BlockMask, cap: Int, batch: Int) -> Double? {
        guard throughput != nil, need(mask) <= cap else { return nil }
        return predictedTokensPerSecond(mask, plan: residentOnly ? nil : try? MemoryPlan.make(memory.inputs(skipping: mask, cap: cap)),
                                        batch: batch)
    }

    /// The same with `mask`'s plan made already (nil: nothing streams).
    func predictedTokensPerSecond(_ mask: BlockMask, plan: MemoryPlan?, batch: Int) -> Double? {
        guard let throughput else { return nil }
        let positions = horizonPages * pageTokens / max(1, batch)
        return rateScale * throughput.tokensPerSecond(skipping: mask, layers: memory.layers, batch: max(1, batch), positions: positions,
                                                      streamedBytes: plan?.readBytesPerPass(skipping: mask) ?? 0)
    }

    /// The state a policy decides from.
    func state(cap: Int, base: BlockMask, batch: Int, current: BlockMask) -> PruningState {
        PruningState(batch: max(1, batch), sequenceLength: horizonPages * pageTokens / max(1, batch), cap: cap, denseNeed: need(base),
                     weightBytes: memory.weightBytes(skipping: .none), kvBytes: memory.kvBytes(skipping: .none),
                     residentOnly: residentOnly, minTokensPerSecond: minTokensPerSecond,
                     denseTokensPerSecond: minTokensPerSecond == nil ? nil : predictedTokensPerSecond(base, cap: cap, batch: batch),
                     current: current)
    }

    /// The policy's mask for `cap` from `base`, and the time it took: admissible means fitting the
    /// cap and (auto) meeting the target; when no mask meets the target, the best that fits.
    ///
    /// `speedOnly`: a re-decision for the target alone (auto's feedback), with memory as it was.
    /// It moves FFN blocks only, the fewest in the profile's FFN order that meet the target, and
    /// keeps `current` when none do: an attention block dropped for speed could not come back for
    /// the running sequences, so a noisy measurement must not cost one (attention goes for
    /// memory, or when sequences join).
    func choose(cap: Int, base: BlockMask, batch: Int, current: BlockMask, speedOnly: Bool = false)
        -> (mask: BlockMask?, state: PruningState, micros: Double) {
        let s = state(cap: cap, base: base, batch: batch, current: current)
        let t0 = Platform.now()
        var mask: BlockMask?
        if let target = minTokensPerSecond, throughput != nil {
            let meets = { (m: BlockMask) in (predictedTokensPerSecond(m, cap: cap, batch: batch) ?? 0) >= target }
            if speedOnly {
                mask = GreedyPolicy(order: ffnOrder).decide(s, base: base.union(current.attentionOnly), fits: meets) ?? current
            } else {
                mask = policy.decide(s, base: base, fits: meets)
            }
        }
        if mask == nil { mask = policy.decide(s, base: base) { need($0) <= cap } }
        return (mask, s, (Platform.now() - t0) * 1e6)
    }
}
