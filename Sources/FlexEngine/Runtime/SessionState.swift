import FlexSystem

/// KV state hand-off (``KVState``): a kept cache out of one session, and into another, in
/// another process. The session that ran the prompt samples the first token from the prompt's
/// logits; the one that continues starts decoding from that token, at the next position, with
/// the sampler's random stream where the first left it, so the ids are those of one run.
extension Session {
    /// The kept cache of `id` (a sequence run with ``GenerateParameters/keepCache``) as a state.
    /// Windowed layers hand over their window only: the rest is never read again.
    public func exportState(of id: SequenceID) throws(EngineError) -> KVState {
        guard let kept = retained[id] else {
            throw .state("sequence \(id) has no kept cache (run it with keepCache, and export it once it has finished)")
        }
        guard kept.pending.count == 1 else {
            throw .state(kept.pending.isEmpty ? "generation ended with the prompt (an end-of-generation token): nothing to continue"
                                              : "the sequence generated past its first token; export right after the prompt")
        }
        let n = kept.history.count
        let kvDim = transformer.cache.kvDim
        var layers: [KVState.LayerRows] = []
        for l in 0..<model.config.layerCount where transformer.cache.slotOfLayer[l] != nil && !kept.attentionHoles.contains(l) {
            let start = transformer.cache.windowOfLayer[l].map { max(0, n - $0) } ?? 0
            guard start < n else { continue }
            var rows = [UInt16]()
            rows.reserveCapacity((n - start) * 2 * kvDim)
            for p in start..<n {
                let (k, v) = transformer.cache.rows(kept.slot, layer: l, position: p)
                for i in 0..<kvDim { rows.append(k[i].bitPattern) }
                for i in 0..<kvDim { rows.append(v[i].bitPattern) }
            }
            layers.append(KVState.LayerRows(layer: l, positions: [start..<n], rows: rows))
        }
        return KVState(fingerprint: model.fingerprint, architecture: model.config.architecture, layerCount: model.config.layerCount,
                       kvDim: kvDim, decodeMask: mask, prefillMask: prefillMask, tokens: kept.history, pending: kept.pending,
                       sampling: kept.sampling, random: kept.random, layers: layers)
    }

    /// Continues a state as a new sequence of this session: its cache filled from the state's
    /// rows, decoding from the state's pending token with the state's sampling parameters (those
    /// of `parameters` are replaced; its token limit and stop settings hold, counting the pending
    /// token). Returns the sequence and that first token, which the caller reports before the
    /// ones later steps produce. Refuses, with one line, a state of another model, another mask,
    /// one that does not fit the context, or one whose rows do not cover what attention reads.
    public func add(state: KVState, parameters: GenerateParameters = GenerateParameters()) throws(EngineError) -> (SequenceID, GeneratedToken) {
        guard state.fingerprint == model.fingerprint, state.layerCount == model.config.layerCount,
              state.kvDim == transformer.cache.kvDim else {
            throw .state("the state was made with another model (\(state.architecture), \(state.layerCount) layers, fingerprint "
                         + "\(String(state.fingerprint, radix: 16)); this model's is \(String(model.fingerprint, radix: 16)))")
        }
        guard state.decodeMask == mask, state.prefillMask == prefillMask else {
            func name(_ m: BlockMask) -> String { m.skipped.isEmpty ? "none" : "\(m)" }
            throw .state("the state was made skipping \(name(state.decodeMask)) (prefill \(name(state.prefillMask))); "
                         + "this session skips \(name(mask)) (prefill \(name(prefillMask))): open it with the same \(OptionField.skip)")
        }
        let n = state.tokens.count
        guard let first = state.pending.first, state.pending.count == 1, n > 0 else { throw .state("the state has no token to continue from") }
        guard n + 1 < contextLength else {
            throw .state("the state holds \(n) positions but the context holds \(contextLength); raise \(OptionField.contextLength)")
        }
        let vocabulary = model.config.vocabularySize
        guard (state.tokens + state.pending).allSatisfy({ $0 >= 0 && Int($0) < vocabulary }) else { throw .state("the state holds token ids outside the vocabulary") }
        // Every layer whose attention this session runs must have the rows attention will read.
        var byLayer: [Int: KVState.LayerRows] = [:]
        for l in state.layers { byLayer[l.layer] = l }
        for l in 0..<model.config.layerCount where transformer.cache.slotOfLayer[l] != nil && !mask.skipsAttention(l) {
            let start = transformer.cache.windowOfLayer[l].map { max(0, n - $0) } ?? 0
            guard let rows = byLayer[l], rows.positions.first?.lowerBound ?? n <= start, rows.positions.last?.upperBound == n,
                  rows.positions.count == 1, rows.rows.count == rows.positionCount * 2 * state.kvDim else {
                throw .state("the state lacks layer \(l)'s keys for positions \(start)..<\(n)")
            }
        }
        transformer.releaseScoring()
        guard sequences.count + retained.count < maxSequences, let slot = transformer.cache.open() else {
            throw .invalidOption("the session already holds \(maxSequences) sequences (raise \(OptionField.maxSequences))")
        }
        do { _ = try transformer.cache.append(slot, count: n) } catch {
            transformer.cache.close(slot)
            throw .state("no room in the KV cache for the state's \(n) positions")
        }
        let kvDim = state.kvDim
        for rows in state.layers where transformer.cache.slotOfLayer[rows.layer] != nil {
            let start = rows.positions[0].lowerBound
            // A windowed layer's ring holds the window only: earlier positions are not written.
            let from = transformer.cache.windowOfLayer[rows.layer].map { max(start, n - $0) } ?? start
            rows.rows.withUnsafeBufferPointer { r in
                for p in from..<n {
                    let (k, v) = transformer.cache.rows(slot, layer: rows.layer, position: p)
                    let at = (p - start) * 2 * kvDim
                    for i in 0..<kvDim { k[i] = Float16(bitPattern: r[at + i]) }
                    for i in 0..<kvDim { v[i] = Float16(bitPattern: r[at + kvDim + i]) }
                }
            }
        }
        var params = parameters
        params.sampling = state.sampling
        let id = SequenceID(value: nextID)
        nextID += 1
        var s = SequenceState(id: id, prompt: state.tokens, parameters: params, slot: slot, vocabulary: vocabulary,
                              capacity: min(params.maxTokens, contextLength))
        s.sampler.randomState = state.random
        s.sampler.accept(first)
        s.consumed = n
        s.started = true
        s.decoding = true
        s.tokens = [first]
        s.pendingToken = first
        s.countersAtDecode = streamCounters
        s.countersAtStart = streamCounters
        s.stats.reusedPromptTokens = n
        s.stats.generatedTokens = 1
        s.stats.loadSeconds = model.loadSeconds
        s.stats.blocksSkipped = mask.skipped.count
        let text = s.decoder.append(model.tokenizer.pieceBytes(first))
        sequences.append(s)
        return (id, GeneratedToken(id: first, text: text))
    }
}
