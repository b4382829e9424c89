import FlexSystem
import Foundation

/// KV state hand-off (``KVState``): a kept cache out of one session, and into another, in
/// another process. The session that ran the prompt samples the first token from the prompt's
/// logits; the one that continues starts decoding from that token, at the next position, with
/// the sampler's random stream where the first left it, so the ids are those of one run.
extension Session {
    /// The kept cache of `id` (a sequence run with ``GenerateParameters/keepCache``) as a state.
    /// Windowed layers hand over their window only: the rest is never read again.
    public func exportState(of id: SequenceID, pruning: KVPruning? = nil) throws(EngineError) -> KVState {
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
            var ranges = [start..<n]
            // Token-aware pruning: the first F and last R positions of a selected full layer.
            if let pruning, pruning.layers.contains(l), transformer.cache.windowOfLayer[l] == nil, pruning.first + pruning.last < n {
                ranges = [0..<pruning.first, (n - pruning.last)..<n].filter { !$0.isEmpty }
            }
            var rows = [UInt16]()
            rows.reserveCapacity(ranges.reduce(0) { $0 + $1.count } * 2 * kvDim)
            for range in ranges {
                for p in range {
                    let (k, v) = transformer.cache.rows(kept.slot, layer: l, position: p)
                    for i in 0..<kvDim { rows.append(k[i].bitPattern) }
                    for i in 0..<kvDim { rows.append(v[i].bitPattern) }
                }
            }
            layers.append(KVState.LayerRows(layer: l, positions: ranges, rows: rows))
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
        guard let first = state.pending.first, state.pending.count == 1 else { throw .state("the state has no token to continue from") }
        let slot = try importRows(state)
        let n = state.tokens.count
        var params = parameters
        params.sampling = state.sampling
        var s = newSequence(prompt: state.tokens, parameters: params, slot: slot)
        s.sampler.randomState = state.random
        s.sampler.accept(first)
        s.consumed = n
        s.started = true
        s.decoding = true
        s.tokens = [first]
        s.pendingToken = first
        s.countersAtDecode = s.countersAtStart
        s.stats.reusedPromptTokens = n
        s.stats.generatedTokens = 1
        let text = s.decoder.append(model.tokenizer.pieceBytes(first))
        sequences.append(s)
        return (s.id, GeneratedToken(id: first, text: text))
    }

    /// Checks `state` against this session and writes its rows into a new slot: the model, the
    /// masks, the context, and rows for every position attention will read. A layer pruned to its
    /// first F and last R positions gets its last R rows stored shifted down by the hole between
    /// them (``PagedKVCache/setHole(_:layer:_:)``).
    /// `decodeMask` (scoring only) replaces the session's mask: the state may then come from
    /// another decode mask, as long as it has the rows that mask's attention reads.
    func importRows(_ state: KVState, decodeMask: BlockMask? = nil) throws(EngineError) -> PagedKVCache.Slot {
        guard state.fingerprint == model.fingerprint, state.layerCount == model.config.layerCount,
              state.kvDim == transformer.cache.kvDim else {
            throw .state("the state was made with another model (\(state.architecture), \(state.layerCount) layers, fingerprint "
                         + "\(String(state.fingerprint, radix: 16)); this model's is \(String(model.fingerprint, radix: 16)))")
        }
        let mask = decodeMask ?? self.mask
        guard decodeMask != nil || (state.decodeMask == mask && state.prefillMask == prefillMask) else {
            func name(_ m: BlockMask) -> String { m.skipped.isEmpty ? "none" : "\(m)" }
            throw .state("the state was made skipping \(name(state.decodeMask)) (prefill \(name(state.prefillMask))); "
                         + "this session skips \(name(mask)) (prefill \(name(prefillMask))): open it with the same \(OptionField.skip)")
        }
        let n = state.tokens.count
        guard n > 0 else { throw .state("the state holds no positions") }
        guard n + 1 < contextLength else {
            throw .state("the state holds \(n) positions but the context holds \(contextLength); raise \(OptionField.contextLength)")
        }
        let vocabulary = model.config.vocabularySize
        guard (state.tokens + state.pending).allSatisfy({ $0 >= 0 && Int($0) < vocabulary }) else { throw .state("the state holds token ids outside the vocabulary") }
        // Every layer whose attention this session runs must have the rows attention will read:
        // all positions from the window's start, or (a full layer) the first F and the last R.
        var byLayer: [Int: KVState.LayerRows] = [:]
        for l in state.layers { byLayer[l.layer] = l }
        for l in 0..<model.config.layerCount where transformer.cache.slotOfLayer[l] != nil && !mask.skipsAttention(l) {
            let window = transformer.cache.windowOfLayer[l]
            let start = window.map { max(0, n - $0) } ?? 0
            guard let rows = byLayer[l], rows.positions.last?.upperBound == n, rows.rows.count == rows.positionCount * 2 * state.kvDim,
                  (rows.positions.count == 1 && rows.positions[0].lowerBound <= start)
                    || (rows.positions.count == 2 && window == nil && rows.positions[0].lowerBound == 0) else {
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
            // A pruned layer's hole: its second range is stored right after its first.
            let hole = rows.positions.count == 2 ? rows.positions[1].lowerBound - rows.positions[0].upperBound : 0
            if hole > 0 { transformer.cache.setHole(slot, layer: rows.layer, hole) }
            var at = 0
            rows.rows.withUnsafeBufferPointer { r in
                for (i, range) in rows.positions.enumerated() {
                    // A windowed layer's ring holds the window only: earlier positions are not written.
                    let from = transformer.cache.windowOfLayer[rows.layer].map { max(range.lowerBound, n - $0) } ?? range.lowerBound
                    at += (from - range.lowerBound) * 2 * kvDim
                    for p in from..<range.upperBound {
                        let (k, v) = transformer.cache.rows(slot, layer: rows.layer, position: i == 1 ? p - hole : p)
                        for i in 0..<kvDim { k[i] = Float16(bitPattern: r[at + i]) }
                        for i in 0..<kvDim { v[i] = Float16(bitPattern: r[at + kvDim + i]) }
                        at += 2 * kvDim
                    }
                }
            }
        }
        return slot
    }

    /// Teacher-forced continuation of a state: runs `tokens` after the state's positions and
    /// returns the negative log-likelihood of each of `tokens[1...]` given what precedes it (the
    /// first comes from the prompt's own logits, on the side that made the state, and does not
    /// depend on what the state hands over). The study of token-aware pruning compares these
    /// with and without pruning (docs/PDTRIM.md). With `decodeMask` the continuation runs that mask
    /// instead of the session's, whatever decode mask the state was made with (the stage-aware
    /// search scores many decode masks on one prefill); it must not run an attention block whose
    /// keys the state lacks.
    public func scoreContinuation(of state: KVState, tokens: [Int32], decodeMask: BlockMask? = nil) throws(EngineError) -> [Double] {
        guard tokens.count >= 2 else { return [] }
        guard sequences.isEmpty else { throw .invalidOption("scoring a continuation needs an idle session") }
        guard state.tokens.count + tokens.count <= contextLength else {
            throw .state("the state's \(state.tokens.count) positions and \(tokens.count) tokens pass the context, \(contextLength)")
        }
        let slot = try importRows(state, decodeMask: decodeMask)
        defer { transformer.cache.close(slot) }
        let mask = decodeMask ?? self.mask
        let batch = transformer.batch
        var nll: [Double] = []
        var i = 0
        while i < tokens.count - 1 {
            batch.clear()
            let k = min(batch.free, transformer.maxLogitRows, tokens.count - 1 - i)
            let position: Int
            do { position = try transformer.cache.append(slot, count: k) } catch { throw .state("no room in the KV cache to score") }
            for j in 0..<k { _ = batch.add(token: tokens[i + j], position: position + j, slot: slot, logits: true) }
            batch.decodeRows = 0
            try transformer.forward(batch, mask: mask)
            for j in 0..<k {
                let logits = transformer.logits(row: j)
                var m = -Float.infinity
                for v in logits { m = max(m, v) }
                var sum = 0.0
                for v in logits { sum += Double(expf(v - m)) }
                nll.append(log(sum) + Double(m) - Double(logits[Int(tokens[i + j + 1])]))
            }
            i += k
        }
        return nll
    }
}
