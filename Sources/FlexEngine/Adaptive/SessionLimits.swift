import FlexSystem
import Synchronization

/// The session's memory cap and the pruning controller's decisions: a new cap's plan (exact),
/// or, with `--prune fit`, the mask the policy chooses for it, at open and at token boundaries.
extension Session {
    /// A new cap waiting for the stepping thread: a plan made already (exact), or a cap for the
    /// controller to decide a mask for at the token boundary (`--prune fit`).
    enum PendingLimit { case plan(MemoryPlan), fit(cap: Int) }

    /// `--prune fit` at open: when the cap is below the minimum, the greedy policy's mask over
    /// the profile's order, added to the options' skips; nil (options unchanged) when the model
    /// fits as it is. `layout` is the dense model's; the KV pool (`kvPages`), buffers and runtime
    /// are the session's own budgets, the KV shrinking with every attention block skipped.
    static func fit(options: inout EngineOptions, cap: Int, layout: ModelLayout, context: Int, kvDim: Int, kvPages: Int,
                    bufferBytes: Int, runtimeBytes: Int) throws(EngineError) -> PruneDecision? {
        guard let order = options.pruneOrder, !order.isEmpty else {
            throw .invalidOption("--prune fit needs a pruning profile (--profile) for the order to drop blocks in")
        }
        let sequences = options.maxSequences
        let memory = MemoryModel(layout: layout, kvBytesPerTokenPerLayer: PagedKVCache.bytesPerToken(keptLayers: 1, kvDim: kvDim),
                                 kvTokens: kvPages * PagedKVCache.defaultPageTokens, bufferBytes: bufferBytes, runtimeBytes: runtimeBytes,
                                 ringSlots: options.ringSlots)
        // Blocks skipped in either stage are skipped in both once pruning starts, so the plan and
        // the KV floor follow one mask.
        let base = options.skip.intersection(options.prefillSkip ?? options.skip)
        let residentOnly = options.residentOnly
        let needs = { (m: BlockMask) -> Int in residentOnly ? memory.residentFootprint(skipping: m) : memory.streamingMinimum(skipping: m) }
        let denseMinimum = needs(base)
        guard denseMinimum > cap else { return nil }
        let state = PruningState(batch: sequences, sequenceLength: context, cap: cap)
        let t0 = Platform.now()
        let chosen = GreedyPolicy(order: order, base: options.skip).decide(state) { needs($0) <= cap }
        let micros = (Platform.now() - t0) * 1e6
        guard let mask = chosen else {
            let everything = BlockMask(skipping: BlockMask.Block.all(layers: layout.layers.count))
            let floor = needs(everything)
            throw .invalidOption("memory limit \(ByteSize.format(cap)) is too small even with every block of the profile skipped "
                                 + "(that needs \(ByteSize.format(floor))); raise --mem-limit or lower --ctx or --parallel")
        }
        options.skip = mask
        options.prefillSkip = options.prefillSkip.map { BlockMask(skipping: $0.skipped.union(mask.skipped)) }
        return PruneDecision(reason: options.residentOnly ? .capBelowResidentFootprint : .capBelowStreamingMinimum, state: state,
                             skipped: BlockMask(skipping: mask.skipped.subtracting(base.skipped)),
                             denseMinimum: denseMinimum, minimum: needs(mask), decisionMicroseconds: micros)
    }

    /// Changes the memory cap, from any thread. The new plan is made (and checked) now, and
    /// applied by the stepping thread before its next pass, so running sequences continue with the
    /// same KV cache and output. Throws, leaving the old cap in force, below the minimum.
    ///
    /// With `--prune fit` the controller decides at the next token boundary which blocks to skip
    /// for the new cap (`GreedyPolicy` over the profile's order, from the user's skips): blocks
    /// come back when the cap grows, except attention blocks a live sequence already skipped.
    /// The KV pool stays as reserved at open. It throws only when even skipping every block of
    /// the order cannot fit.
    public func setMemoryLimit(_ bytes: Int) throws(EngineError) {
        if let memory = runtimeMemory {
            let everything = BlockMask(skipping: userSkip.skipped.union(pruneOrder))
            let floor = memory.streamingMinimum(skipping: everything)
            guard floor <= bytes else {
                throw .invalidOption("memory limit \(ByteSize.format(bytes)) is too small even with every block of the profile skipped "
                                     + "(that needs \(ByteSize.format(floor)))")
            }
            pendingPlan.withLock { $0 = .fit(cap: bytes) }
            return
        }
        let plan = try Session.plan(cap: bytes, model: model, estimate: memory, options: options)
        pendingPlan.withLock { $0 = .plan(plan) }
    }

    /// The plan for `cap`, with the KV pool, buffers and runtime share fixed at open.
    static func plan(cap: Int, model: Model, estimate: MemoryEstimate, options: EngineOptions) throws(EngineError) -> MemoryPlan {
        // Weights of a block either stage runs must be read; with different stage masks the
        // plan covers the union.
        let skip = options.skip.intersection(options.prefillSkip ?? options.skip)
        return try MemoryPlan.make(.init(layout: try model.weights.layout(skipping: skip), cap: cap, kvCacheBytes: estimate.kvCache,
                                         bufferBytes: estimate.buffers, runtimeBytes: estimate.runtime, ringSlots: options.ringSlots))
    }

    /// Applies a plan queued by ``setMemoryLimit(_:)``.
    func applyPendingPlan() throws(EngineError) {
        guard let pending = pendingPlan.withLock({ p -> PendingLimit? in defer { p = nil }; return p }) else { return }
        let plan: MemoryPlan
        switch pending {
        case .plan(let p): plan = p
        case .fit(let cap): plan = try decide(cap: cap)
        }
        let weights = model.weights, backend = options.readBackend
        let locker = self.locker, interleave = options.interleaveWeights
        model.dropInterleaved()
        try transformer.replaceSource { () throws(EngineError) in
            try WeightStreamer(plan: plan, weights: weights, backend: backend, locker: locker, interleave: interleave)
        }
        memoryLimit = plan.inputs.cap
        replanCount += 1
    }

    /// The controller at a token boundary: the mask for `cap`, applied to the session, and its plan.
    func decide(cap: Int) throws(EngineError) -> MemoryPlan {
        let memory = runtimeMemory!
        // Attention the session has no KV room for, or that a started sequence skipped, cannot
        // come back: those stay skipped.
        var base = BlockMask(skipping: userSkip.skipped.union(transformer.floor.skipped))
        if sequences.contains(where: \.started) {
            for l in maskHoles.union(prefillHoles) { base.skip(.init(.attention, l)) }
        }
        let state = PruningState(batch: max(1, sequences.count), sequenceLength: contextLength, cap: cap)
        let t0 = Platform.now()
        guard let chosen = GreedyPolicy(order: pruneOrder, base: base).decide(state, fits: { memory.streamingMinimum(skipping: $0) <= cap }) else {
            throw .invalidOption("memory limit \(ByteSize.format(cap)) is too small for any mask of the profile")
        }
        let micros = (Platform.now() - t0) * 1e6
        let plan = try MemoryPlan.make(memory.inputs(skipping: chosen, cap: cap))
        let prefill = options.prefillSkip.map { BlockMask(skipping: $0.skipped.union(chosen.skipped)) } ?? chosen
        mask = chosen
        prefillMask = prefill
        pruneDecisions.append(PruneDecision(reason: .capChanged, state: state,
                                            skipped: BlockMask(skipping: chosen.skipped.subtracting(userSkip.skipped)),
                                            denseMinimum: memory.streamingMinimum(skipping: base), minimum: memory.streamingMinimum(skipping: chosen),
                                            decisionMicroseconds: micros))
        return plan
    }
}
