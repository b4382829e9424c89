import FlexKernels
import FlexSystem

/// The forward pass: a batch of rows (a token of some sequence at some position each) in,
/// logits out, the KV cache updated. The one driver of every pass: generation (``Session``),
/// perplexity and the pruning evaluators all come through `forward(_:mask:resumeAt:probe:)`.
///
/// One `forward` reads top to bottom like llama2.c's, over a batch, so prompt processing and
/// batched decoding pay each weight pass once per batch instead of once per token.
public final class Transformer {
    public let config: ModelConfig
    let weights: ModelWeights
    /// Positions one sequence may hold.
    public let contextLength: Int
    /// Attention blocks skipped in every pass: their layers get no KV room at all. A pass may skip
    /// more blocks than this, never fewer.
    public let floor: BlockMask
    let pool: WorkerPool
    let state: RunState
    var cache: PagedKVCache
    /// The distinct ropes of the layers (Gemma 3's local and global bases), and each layer's index
    /// into them: one cos/sin table per rope and row is filled per pass.
    let ropes: [Rope]
    let ropeOfLayer: [Int]
    /// Multiplier of embedding rows (√n_embd for Gemma, else nil).
    let embeddingScale: Float?
    let batch: ForwardBatch
    /// Where the weights come from: the mapping, its x8 copies, or the offload runtime.
    private(set) var source: any WeightSource

    /// The scoring sequence of ``forward(_:logitRows:stage:)`` (perplexity, pruning), opened on first use.
    private var scoringSlot: PagedKVCache.Slot?
    /// Positions already in the scoring sequence: its next token goes at this position.
    public private(set) var position = 0
    /// The masks in force, per stage: the scoring path's, and the ones a ``Session`` runs and
    /// changes between passes (it keeps them here, so scoring always uses the masks in force).
    public internal(set) var mask: BlockMask
    public internal(set) var prefillMask: BlockMask

    /// - Parameters:
    ///   - sequences: most sequences held at once (KV slots); one more slot serves the scoring path.
    ///   - kvPages: pages in the KV pool; nil gives every sequence room for the whole context.
    ///   - logitRows: most batch rows one pass returns logits for (each row is vocab floats,
    ///     192 KiB for SmolLM2): generation needs one per sequence, perplexity a whole batch.
    init(weights: ModelWeights, source: any WeightSource, contextLength: Int, maxBatch: Int, threads: Int,
         mask: BlockMask = .none, prefillMask: BlockMask? = nil, logitRows: Int? = nil, sequences: Int = 1,
         kvPages: Int? = nil, windows: [Int?]? = nil) throws(EngineError) {
        let prefillMask = prefillMask ?? mask
        precondition(prefillMask.skippedAttentionLayers.isSubset(of: mask.skippedAttentionLayers))
        self.weights = weights
        self.source = source
        config = weights.config
        self.contextLength = contextLength
        self.mask = mask
        self.prefillMask = prefillMask
        floor = prefillMask.attentionOnly
        pool = WorkerPool(threads: threads)
        let config = weights.config
        let spec = weights.spec
        let (shapes, ofLayer) = config.ropes
        ropes = shapes.map {
            Rope(style: spec.ropeStyle, dims: config.headDim, base: $0.base, frequencyFactors: weights.ropeFrequencyFactors, scale: $0.scale)
        }
        ropeOfLayer = ofLayer
        embeddingScale = spec.scalesEmbedding ? Float(config.embeddingLength).squareRoot() : nil
        state = RunState(config: config, maxBatch: maxBatch, logitRows: min(maxBatch, logitRows ?? maxBatch), context: contextLength,
                         threads: threads, maxRow: weights.maxRowLength)
        cache = try PagedKVCache(layers: config.layerCount, kvDim: config.kvDim, floor: floor, sequences: sequences + 1,
                                 capacity: contextLength, pages: kvPages, windows: windows ?? config.attentionWindows)
        batch = ForwardBatch(capacity: maxBatch)
    }

    /// Convenience for tests: the model's mapping as the source, one sequence.
    convenience init(weights: ModelWeights, contextLength: Int, maxBatch: Int, threads: Int, mask: BlockMask = .none) {
        try! self.init(weights: weights, source: InMemoryWeights(weights), contextLength: contextLength, maxBatch: maxBatch,
                       threads: threads, mask: mask)
    }

    public var maxBatch: Int { state.maxBatch }
    /// Most batch rows one pass can return logits for.
    public var maxLogitRows: Int { state.logitRows }
    public var vocabularySize: Int { config.vocabularySize }

    /// Swaps the weight source at a pass boundary (a new cap). The old source goes first, so
    /// a streamer's reads are drained and its buffers freed before the new one loads and the two
    /// never coexist.
    func replaceSource(_ make: () throws(EngineError) -> any WeightSource) throws(EngineError) {
        source = InMemoryWeights(weights)
        source = try make()
    }

    var streamer: WeightStreamer? { source as? WeightStreamer }

    /// Bytes allocated for activations.
    public var bufferBytes: Int { state.byteCount }
    /// Bytes the KV pool may grow to.
    public var kvCacheBytes: Int { cache.capacityBytes }

    /// Forgets the scoring sequence's positions; its pages are kept, so a pass that resumes at a
    /// later block finds the earlier layers' keys where it left them.
    public func reset() {
        position = 0
        if let s = scoringSlot { cache.truncate(s, to: 0, keepPages: true) }
    }

    /// Gives the scoring sequence's pages back to the pool.
    func releaseScoring() {
        if let s = scoringSlot { cache.close(s); scoringSlot = nil }
        position = 0
    }

    /// Row `i` of the logits written by the last pass (vocab floats).
    public func logits(row i: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: state.logits.pointer + i * config.vocabularySize, count: config.vocabularySize)
    }

    /// Which mask a scoring pass uses: a prompt is prefill, generated tokens and scored text are decode.
    public enum Stage: Sendable { case prefill, decode }

    /// Runs `tokens` (at most ``maxBatch``) at the scoring sequence's next positions and computes
    /// logits for the batch rows in `logitRows` into ``logits(row:)`` rows 0, 1, … in order.
    /// Rows take the matmul path their batch size picks (as before batching).
    /// Token ids must be valid. Throws only when streamed weights cannot be read.
    public func forward(_ tokens: UnsafeBufferPointer<Int32>, logitRows: Range<Int>, stage: Stage = .decode) throws(EngineError) {
        try forward(tokens, logitRows: logitRows, mask: stage == .prefill ? prefillMask : mask)
    }

    /// The scoring pass with any mask (at least ``floor``), a `probe` that sees the residual
    /// stream around every block, and `resumeAt`, which starts at that block (index in execution
    /// order) from a residual the probe restores. Resuming relies on the KV cache of earlier
    /// layers still holding this batch (same positions, same tokens; ``reset()`` keeps the pages):
    /// evaluating many masks that differ only from block b on then costs the blocks after b.
    package func forward(_ tokens: UnsafeBufferPointer<Int32>, logitRows: Range<Int>, mask: BlockMask,
                         resumeAt: Int = 0, probe: (any ResidualProbe)? = nil) throws(EngineError) {
        let n = tokens.count
        precondition(n >= 1 && n <= maxBatch && position + n <= contextLength && logitRows.count <= maxLogitRows)
        let slot: Int
        if let s = scoringSlot { slot = s } else {
            guard let s = cache.open() else { preconditionFailure("the scoring slot is always free") }
            scoringSlot = s
            slot = s
        }
        do { _ = try cache.append(slot, count: n) } catch {
            throw .invalidOption("the KV cache has no room for \(n) more positions: end the running sequences first")
        }
        batch.clear()
        batch.uniformPath = .bySize
        batch.headPath = .bySize
        let rows = logitRows.clamped(to: 0..<n)
        for i in 0..<n { batch.add(token: tokens[i], position: position + i, slot: slot, logits: rows.contains(i)) }
        try forward(batch, mask: mask, resumeAt: resumeAt, probe: probe)
        position += n
    }

    /// Runs the rows of `batch` with `mask`, whose KV positions the caller has appended. Logits of
    /// the batch's logit rows land in ``logits(row:)`` rows 0, 1, … in order.
    func forward(_ batch: ForwardBatch, mask: BlockMask, resumeAt: Int = 0, probe: (any ResidualProbe)? = nil) throws(EngineError) {
        let n = batch.count
        precondition(n >= 1 && n <= maxBatch && batch.logitCount <= maxLogitRows)
        precondition(floor.isSubset(of: mask), "a pass must skip the attention blocks that have no KV cache")
        precondition(resumeAt == 0 || (probe != nil && streamer == nil))
        let c = config
        let d = c.embeddingLength, qd = c.queryDim, kvd = c.kvDim, ff = c.feedForwardLength
        let x = state.x.pointer, xb = state.xb.pointer
        let q = state.q.pointer, k = state.k.pointer, v = state.v.pointer
        let att = state.attention.pointer, hb = state.hb.pointer, hb2 = state.hb2.pointer
        let workspace = state.workspace
        let ropeTable = state.ropeTable.pointer, hd = c.headDim
        let nd = batch.uniformPath == nil ? batch.decodeRows : n   // rows [0, nd) and [nd, n) take one path each

        /// `w` over the batch rows, each run of rows on its own path.
        func matmul(_ w: QuantMatrix, _ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>) {
            if nd > 0 {
                MatMul.compute(w, x: input, ldx: w.cols, y: output, ldy: w.rows, batch: nd, pool: pool, workspace: workspace,
                               path: batch.path(decode: true))
            }
            if nd < n {
                MatMul.compute(w, x: input + nd * w.cols, ldx: w.cols, y: output + nd * w.rows, ldy: w.rows, batch: n - nd, pool: pool,
                               workspace: workspace, path: batch.path(decode: false))
            }
        }
        func shared(_ w0: QuantMatrix, _ y0: UnsafeMutablePointer<Float>, _ w1: QuantMatrix, _ y1: UnsafeMutablePointer<Float>,
                    _ w2: QuantMatrix?, _ y2: UnsafeMutablePointer<Float>?, _ input: UnsafePointer<Float>) {
            if nd > 0 {
                MatMul.computeShared(w0, y0, w1, y1, w2, y2, x: input, batch: nd, pool: pool, workspace: workspace,
                                     path: batch.path(decode: true))
            }
            if nd < n {
                let cols = w0.cols
                MatMul.computeShared(w0, y0 + nd * w0.rows, w1, y1 + nd * w1.rows, w2, y2.map { $0 + nd * w2!.rows },
                                     x: input + nd * cols, batch: n - nd, pool: pool, workspace: workspace, path: batch.path(decode: false))
            }
        }

        /// xb = rmsNorm(x) per batch row: a block's input.
        func normRows(weight: UnsafePointer<Float>) {
            eachRows(n, work: d) { rows in
                for b in rows { Vector.rmsNorm(x + b * d, weight: weight, eps: c.rmsEpsilon, into: xb + b * d, d) }
            }
        }
        /// x += xb per batch row (a block's output), through the block's post-norm where it has one.
        func addResidual(postNorm: UnsafePointer<Float>?) {
            eachRows(n, work: d) { rows in
                for b in rows {
                    if let postNorm { Vector.rmsNorm(xb + b * d, weight: postNorm, eps: c.rmsEpsilon, into: xb + b * d, d) }
                    Vector.add(x + b * d, xb + b * d, d)
                }
            }
        }

        let source = self.source
        // Stages issued from here on read only the blocks this mask runs; the next pass most
        // likely runs the same one.
        source.schedule(mask)
        let ropeStride = maxBatch * hd   // one table per rope, each of maxBatch rows
        for b in 0..<n {
            if resumeAt == 0 {
                try source.embeddingRow(Int(batch.tokens[b]), into: x + b * d)
                if let s = embeddingScale { Vector.scale(x + b * d, s, d) }
            }
            for (r, rope) in ropes.enumerated() { rope.table(position: batch.positions[b], into: ropeTable + r * ropeStride + b * hd) }
            batch.tables[b] = cache.table(batch.slots[b])
            batch.ringTables[b] = cache.ringLength > 0 ? cache.ringTable(batch.slots[b]) : nil
        }
        if resumeAt > 0 { probe!.restore(block: resumeAt, into: x, rows: n) }

        for l in 0..<c.layerCount {
            if 2 * l + 1 < resumeAt { continue }
            let lw = try source.layer(l, attention: !mask.skipsAttention(l) && 2 * l >= resumeAt, ffn: !mask.skipsFFN(l))
            let attentionBlock = 2 * l
            let resumedPast = attentionBlock < resumeAt   // resuming at this layer's FFN
            if !resumedPast { probe?.before(block: attentionBlock, x: x, rows: n) }
            if !resumedPast && !mask.skipsAttention(l) {
                normRows(weight: lw.attentionNorm)
                shared(lw.query, q, lw.key, k, lw.value, v, xb)
                if let bias = lw.queryBias { for b in 0..<n { Vector.add(q + b * qd, bias, qd) } }
                if let bias = lw.keyBias { for b in 0..<n { Vector.add(k + b * kvd, bias, kvd) } }
                if let bias = lw.valueBias { for b in 0..<n { Vector.add(v + b * kvd, bias, kvd) } }
                let rope = ropes[ropeOfLayer[l]], table = ropeTable + ropeOfLayer[l] * ropeStride
                for b in 0..<n { batch.holes[b] = cache.hole(batch.slots[b], layer: l) }
                eachRows(n, work: qd + 2 * kvd) { rows in
                    for b in rows {
                        if let norm = lw.queryNorm {
                            for h in b * c.headCount..<(b + 1) * c.headCount {
                                Vector.rmsNorm(q + h * hd, weight: norm, eps: c.rmsEpsilon, into: q + h * hd, hd)
                            }
                        }
                        if let norm = lw.keyNorm {
                            for h in b * c.kvHeadCount..<(b + 1) * c.kvHeadCount {
                                Vector.rmsNorm(k + h * hd, weight: norm, eps: c.rmsEpsilon, into: k + h * hd, hd)
                            }
                        }
                        rope.apply(q + b * qd, heads: c.headCount, headStride: hd, table: table + b * hd)
                        rope.apply(k + b * kvd, heads: c.kvHeadCount, headStride: hd, table: table + b * hd)
                        let (kc, vc) = cache.rows(batch.slots[b], layer: l, position: batch.positions[b] - batch.holes[b])
                        for i in 0..<kvd {
                            kc[i] = Float16(k[b * kvd + i])
                            vc[i] = Float16(v[b * kvd + i])
                        }
                    }
                }
                attend(layer: l, batch: batch)
                matmul(lw.output, att, xb)
                addResidual(postNorm: lw.postAttentionNorm)
            }
            if !resumedPast { probe?.after(block: attentionBlock, x: x, rows: n) }
            probe?.before(block: attentionBlock + 1, x: x, rows: n)
            if !mask.skipsFFN(l) {
                normRows(weight: lw.ffnNorm)
                shared(lw.gate, hb, lw.up, hb2, nil, nil, xb)
                let activation = weights.spec.ffnActivation
                eachRows(n, work: ff) { rows in
                    let (a, g, count) = (hb + rows.lowerBound * ff, hb2 + rows.lowerBound * ff, rows.count * ff)
                    switch activation {
                    case .silu: Vector.swiglu(a, g, count)
                    case .geluTanh: Vector.geglu(a, g, count)
                    }
                }
                matmul(lw.down, hb, xb)
                addResidual(postNorm: lw.postFFNNorm)
            }
            probe?.after(block: attentionBlock + 1, x: x, rows: n)
            try source.finishLayer(l)
        }
        probe?.final(x: x, rows: n)

        // The head, for the logit rows only (perplexity scores half the rows; decode one per sequence).
        let m = batch.logitCount
        for i in 0..<m {
            Vector.rmsNorm(x + batch.logitRows[i] * d, weight: weights.outputNorm, eps: c.rmsEpsilon, into: xb + i * d, d)
        }
        let vocab = c.vocabularySize, logits = state.logits.pointer
        let head = source.residentHead
        if m > 0 && head.rows > 0 {
            MatMul.compute(head, x: xb, ldx: d, y: logits, ldy: vocab, batch: m, pool: pool, workspace: workspace, path: batch.headPath)
        }
        // Streamed head rows come in stage order even when no logits are wanted (an inner
        // prefill batch): the prefetch cycle has already read them.
        for i in 0..<source.headChunkCount {
            let chunk = try source.headChunk(i)
            if m > 0 {
                MatMul.compute(chunk.matrix, x: xb, ldx: d, y: logits + chunk.rows.lowerBound, ldy: vocab, batch: m, pool: pool,
                               workspace: workspace, path: batch.headPath)
            }
            try source.finishHeadChunk()
        }
    }

    /// Runs `body` over the batch rows `0..<n`, split across the pool when the batch is big enough
    /// to repay a fork/join (a prompt); a decode step's few rows stay on this thread and allocate
    /// nothing. Each row's arithmetic is the same either way, so no result depends on the split.
    /// Why: norms, rope, the KV write and the gate ran on one thread while the others waited; on a
    /// Gemma 3 270M prompt the gate alone was 9 % of the run.
    private func eachRows(_ n: Int, work: Int, _ body: (Range<Int>) -> Void) {
        let threads = pool.threadCount
        guard threads > 1, n >= 2, n * work >= 1 << 15 else { body(0..<n); return }
        let per = (n + 4 * threads - 1) / (4 * threads)
        pool.parallelFor((n + per - 1) / per) { t, _ in body(t * per..<min(n, (t + 1) * per)) }
    }

    /// Attention for every (row, KV head) of the batch, spread over the pool.
    private func attend(layer l: Int, batch: ForwardBatch) {
        let c = config
        let view = cache.layerView(layer: l)
        precondition(view.window == nil || (0..<batch.count).allSatisfy { batch.holes[$0] == 0 })
        var job = AttentionJob(
            q: state.q.pointer, out: state.attention.pointer, scores: state.scores.pointer, scoresStride: state.scoresStride,
            keyRows: state.keyRows.pointer,
            keys: view.keys, values: view.values, tables: view.window == nil ? batch.tables : batch.ringTables, positions: batch.positions,
            holes: batch.holes, pageTokens: cache.pageTokens, pageStride: view.pageStride, window: view.window ?? 0, ring: view.ring,
            heads: c.headCount, group: c.attentionGroup, headDim: c.headDim,
            queryDim: c.queryDim, kvDim: c.kvDim, scale: c.attentionScale)
        withUnsafePointer(to: &job) { pool.parallelFor(batch.count * c.kvHeadCount, context: $0, AttentionJob.run) }
    }
}

/// One layer's attention over a batch as a pool job: task = (row, KV head), which serves the
/// query heads sharing that KV head (GQA). Each row attends to positions 0…its own of its own
/// sequence, through that sequence's page table.
struct AttentionJob {
    let q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>
    let scores: UnsafeMutablePointer<Float>, scoresStride: Int
    let keyRows: UnsafeMutablePointer<Float>
    let keys: UnsafeMutablePointer<Float16>, values: UnsafeMutablePointer<Float16>
    let tables: UnsafeMutablePointer<UnsafePointer<Int32>?>, positions: UnsafeMutablePointer<Int>
    /// Per row, positions its sequence's layer left out (token-aware pruning): it reads the
    /// shifted range 0…position − hole.
    let holes: UnsafeMutablePointer<Int>
    let pageTokens: Int, pageStride: Int
    /// Sliding window in positions (0: none) and the ring's length in pages (0: no ring).
    let window: Int, ring: Int
    let heads: Int, group: Int, headDim: Int, queryDim: Int, kvDim: Int, scale: Float

    static let run: WorkerPool.TaskFunction = { ctx, task, thread in
        let j = ctx.assumingMemoryBound(to: AttentionJob.self).pointee
        let kvHeads = j.heads / j.group
        let b = task / kvHeads, g = task % kvHeads
        let h = g * j.group, hd = j.headDim
        Attention.pagedGroup(queries: j.q + b * j.queryDim + h * hd, group: j.group, keys: j.keys + g * hd, values: j.values + g * hd,
                             pages: j.tables[b]!, pageTokens: j.pageTokens, pageStride: j.pageStride, stride: j.kvDim,
                             first: j.window > 0 ? max(0, j.positions[b] + 1 - j.window) : 0,
                             count: j.positions[b] + 1 - j.holes[b], ring: j.ring, headDim: hd, scale: j.scale,
                             scores: j.scores + thread * j.group * j.scoresStride, scoresStride: j.scoresStride,
                             rows: j.keyRows + thread * 8 * hd, out: j.out + b * j.queryDim + h * hd)
    }
}
