import FlexSystem
import Synchronization

/// The session's memory cap and the pruning controller's decisions: a new cap's plan (exact),
/// or, with `--prune fit|auto`, the mask the policy chooses, at open and at token boundaries.
extension Session {
    /// A new cap waiting for the stepping thread: a plan made already (exact), or a cap for the
    /// controller to decide a mask for at the token boundary (`--prune fit|auto`).
    enum PendingLimit { case plan(MemoryPlan), fit(cap: Int) }

    /// The policy `options` ask for: theirs, or greedy over the profile's order.
    static func policy(_ options: EngineOptions, layers: Int) throws(EngineError) -> any PruningPolicy {
        if let rl = options.prunePolicy as? RLPolicy, rl.layers != layers {
            throw .invalidOption("the RAP policy was trained for a \(rl.layers)-layer model; this one has \(layers)")
        }
        if let p = options.prunePolicy { return p }
        guard let order = options.pruneOrder, !order.isEmpty else {
            throw .invalidOption("\(OptionField.prune) \(options.prune.rawValue) needs \(OptionField.pruneOrder), the order to drop blocks in (from a pruning profile)")
        }
        return GreedyPolicy(order: order)
    }

    /// The controller's decision at open: the mask for `cap` added to the options' skips, and
    /// the decision to log (nil when the dense model fits and there is no target).
    static func decideAtOpen(_ controller: PruningController, options: inout EngineOptions, cap: Int) throws(EngineError) -> PruneDecision? {
        let base = options.skip.intersection(options.prefillSkip ?? options.skip)
        let (chosen, state, micros) = controller.choose(cap: cap, base: base, batch: options.maxSequences, current: base)
        guard let mask = chosen else {
            throw .invalidOption("memory limit \(ByteSize.format(cap)) is too small even with every block skipped "
                                 + "(that needs \(ByteSize.format(controller.floor))); raise \(OptionField.memoryLimit) or lower \(OptionField.contextLength) or \(OptionField.maxSequences)")
        }
        let denseNeed = state.denseNeed
        guard denseNeed > cap || controller.minTokensPerSecond != nil else { return nil }
        options.skip = options.skip.union(mask)
        options.prefillSkip = options.prefillSkip.map { $0.union(mask) }
        let reason: PruneDecision.Reason = denseNeed <= cap ? .throughputTarget
            : options.residentOnly ? .capBelowResidentFootprint : .capBelowStreamingMinimum
        return PruneDecision(reason: reason, policy: controller.policy.name, state: state,
                             skipped: BlockMask(skipping: mask.skipped.subtracting(base.skipped)), denseMinimum: denseNeed,
                             minimum: controller.need(mask),
                             predictedTokensPerSecond: controller.predictedTokensPerSecond(mask, cap: cap, batch: options.maxSequences),
                             releasedLayers: [], decisionMicroseconds: micros, at: 0)
    }

    /// Changes the memory cap, from any thread. The new plan is made (and checked) now, and
    /// applied by the stepping thread before its next pass, so running sequences continue with the
    /// same KV cache and output. Throws, leaving the old cap in force, below the minimum.
    ///
    /// With `--prune fit|auto` the controller decides at the next token boundary which blocks to
    /// skip for the new cap: blocks come back when the cap grows, except attention blocks a live
    /// sequence already skipped (they come back for new sequences only). Dropped attention
    /// blocks hand their KV pages back at once. It throws only when even skipping every block
    /// cannot fit.
    public func setMemoryLimit(_ bytes: Int) throws(EngineError) {
        if let controller {
            let floor = controller.floor
            guard floor <= bytes else {
                throw .invalidOption("memory limit \(ByteSize.format(bytes)) is too small even with every block skipped "
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
                                         bufferBytes: estimate.buffers, runtimeBytes: estimate.runtime, ringSlots: options.ringSlots,
                                         residency: options.residency))
    }

    /// Applies a plan queued by ``setMemoryLimit(_:)``.
    func applyPendingPlan() throws(EngineError) {
        if let lostStream { throw lostStream }
        guard let pending = pendingPlan.withLock({ p -> PendingLimit? in defer { p = nil }; return p }) else { return }
        switch pending {
        case .plan(let plan):
            try replaceSource(plan)
            memoryLimit = plan.inputs.cap
            replanCount += 1
        case .fit(let cap):
            try redecide(cap: cap, reason: .capChanged)
            memoryLimit = cap
        }
    }

    /// Streams the weights by `plan`. The old stream closes first (two would not fit under the
    /// cap). When the new one cannot open, the old plan's opens again, so the cap in force is
    /// still honoured, and the error is thrown; when that fails too, the session has lost its
    /// stream (``lostStream``). From memory (no old stream) a failure leaves the mapping, as before.
    private func replaceSource(_ plan: MemoryPlan) throws(EngineError) {
        let weights = model.weights, backend = options.readBackend
        let locker = self.locker, interleave = options.interleaveWeights, fault = options.readFault
        let previous = transformer.streamer?.plan
        model.dropInterleaved()
        defer { publishSource() }
        func open(_ plan: MemoryPlan) throws(EngineError) {
            try transformer.replaceSource { () throws(EngineError) in
                try WeightStreamer(plan: plan, weights: weights, backend: backend, locker: locker, interleave: interleave, fault: fault)
            }
        }
        do {
            try open(plan)
        } catch {
            guard let previous else { throw error }
            do {
                try open(previous)
            } catch {
                var cause = error.description
                if case .weightRead(let m) = error { cause = m }
                let lost = EngineError.weightRead("\(cause); the weight stream could not be reopened after a re-plan, so this session cannot run: open the model again")
                lostStream = lost
                throw lost
            }
            throw error
        }
    }

    /// The controller's checks at a token boundary, before the pass: the KV the next pass may
    /// take against the horizon planned for, and (auto) sequences joining or leaving.
    func controllerTick() throws(EngineError) {
        guard var controller, let cap = memoryLimit else { return }
        // Pages the next pass may take: one per sequence (a generated row crossing a page) plus
        // the prompt rows of a whole batch.
        let bound = transformer.cache.pagesInUse + sequences.count + (transformer.batch.capacity + transformer.cache.pageTokens - 1)
            / transformer.cache.pageTokens
        if controller.extendHorizon(to: bound) {
            self.controller = controller
            try redecide(cap: cap, reason: .kvGrowth)
        } else if controller.minTokensPerSecond != nil, !sequences.isEmpty, sequences.count != controller.decidedBatch {
            try redecide(cap: cap, reason: .sequencesChanged)
        } else if let scale = rateCorrection(controller) {
            controller.rateScale = scale
            self.controller = controller
            let before = pruneDecisions.count
            try redecide(cap: cap, reason: .throughputTarget, speedOnly: true)
            if pruneDecisions.count == before {
                // Same mask: measure it again against the corrected prediction.
                measuringDecision = DecisionMeter(predicted: self.controller?.predictedTokensPerSecond(mask, plan: transformer.streamer?.plan,
                                                                                                       batch: sequences.count))
            }
        }
    }

    /// Auto's feedback: the time model predicts from a calibration, and the disk's rate moves over
    /// a session (1.2 and 2.7 GB/s in two calibrations an hour apart), so once a decision has
    /// decoded for a second its measured rate corrects the model: a new scale on its predictions
    /// when they missed by more than 10 % in the direction that matters (the target missed, or
    /// met with room to spare, which means blocks were skipped for nothing). One correction moves
    /// the scale by at most 2×: a skipped attention block cannot come back for the running
    /// sequences, so one noisy window must not cost many of them. Nil: no correction.
    func rateCorrection(_ controller: PruningController) -> Double? {
        guard let target = controller.minTokensPerSecond, let predicted = measuringDecision.predicted, predicted > 0,
              measuringDecision.seconds >= 1, measuringDecision.passes >= 8 else { return nil }
        let measured = Double(measuringDecision.tokens) / measuringDecision.seconds
        let ratio = min(2, max(0.5, measured / predicted))
        let missed = measured < target && ratio < 0.9
        let wasted = measured > 1.2 * target && ratio > 1.1 && !mask.skipped.subtracting(userSkip.skipped).isEmpty
        guard missed || wasted else { return nil }
        return min(10, max(0.1, controller.rateScale * ratio))
    }

    /// The controller at a token boundary: the mask for `cap`, applied to the session with its
    /// plan; the KV pages of attention blocks it drops go back to the system.
    func redecide(cap: Int, reason: PruneDecision.Reason, speedOnly: Bool = false) throws(EngineError) {
        guard var controller else { return }
        // Attention the session has no KV room for, or that a started sequence skipped, cannot
        // come back: those stay skipped.
        var base = userSkip.intersection(userPrefillSkip).union(transformer.floor)
        for s in sequences where s.started && !s.attentionHoles.isEmpty {
            base = base.union(BlockMask(skipping: s.attentionHoles.map { BlockMask.Block(.attention, $0) }))
        }
        let (chosen, state, micros) = controller.choose(cap: cap, base: base, batch: sequences.count, current: mask, speedOnly: speedOnly)
        guard let chosen else {
            throw .invalidOption("memory limit \(ByteSize.format(cap)) is too small for any mask the policy can choose")
        }
        let plan = try MemoryPlan.make(controller.memory.inputs(skipping: chosen, cap: cap))
        let released = chosen.skippedAttentionLayers.subtracting(mask.skippedAttentionLayers).sorted()
        let changed = chosen != mask
        // The plan first: when its stream cannot open, the old mask stays with the old plan.
        if plan != transformer.streamer?.plan {
            try replaceSource(plan)
            replanCount += 1
        }
        mask = userSkip.union(chosen)
        prefillMask = userPrefillSkip.union(chosen)
        for l in released { transformer.cache.release(layer: l) }
        controller.decidedBatch = sequences.count
        self.controller = controller
        guard changed || reason == .capChanged else { return }
        pruneDecisions.append(PruneDecision(
            reason: reason, policy: controller.policy.name, state: state,
            skipped: BlockMask(skipping: chosen.skipped.subtracting(userSkip.skipped)), denseMinimum: state.denseNeed,
            minimum: controller.need(chosen), predictedTokensPerSecond: controller.predictedTokensPerSecond(chosen, plan: plan, batch: sequences.count),
            releasedLayers: released, decisionMicroseconds: micros, at: Platform.now() - openedAt))
        measuringDecision = DecisionMeter(rssPending: true, predicted: pruneDecisions.last?.predictedTokensPerSecond)
    }

    /// What the running decision has measured, and the rate the controller predicted for it.
    /// Pure decode passes only, after the first: a new plan's resident weights load during its
    /// first pass, and prompt rows cost time no generated token shows (counting either, auto's
    /// feedback once read 4 tok/s for a mask that ran at 37).
    struct DecisionMeter {
        var tokens = 0
        var seconds = 0.0
        var passes = 0
        var rssPending = false
        var predicted: Double?
    }

    /// After a pass: the decode rate and resident memory since the last decision, on its record.
    func measureDecision(decodeRows: Int, promptRows: Int, seconds: Double) {
        guard controller != nil, !pruneDecisions.isEmpty, decodeRows > 0, promptRows == 0 else { return }
        measuringDecision.passes += 1
        guard measuringDecision.passes > 1 else { return }
        measuringDecision.tokens += decodeRows
        measuringDecision.seconds += seconds
        let last = pruneDecisions.count - 1
        pruneDecisions[last].measuredTokensPerSecond = Double(measuringDecision.tokens) / max(1e-9, measuringDecision.seconds)
        if measuringDecision.rssPending {
            pruneDecisions[last].measuredResidentBytes = Platform.residentBytes()
            measuringDecision.rssPending = false
        }
    }
}
