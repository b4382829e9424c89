import FlexKernels
import FlexSystem

/// The forward pass: tokens at positions in, logits out, KV cache updated.
///
/// One `forward` reads top to bottom like llama2.c's, but over a batch of tokens, so prompt
/// processing pays each weight pass once per batch instead of once per token.
public final class Transformer {
    public let weights: ModelWeights
    public let config: ModelConfig
    public let contextLength: Int
    /// Blocks skipped when decoding (one new token per pass) and when scoring text.
    public let mask: BlockMask
    /// Blocks skipped when processing a prompt. PDTrim prunes the stages differently; an
    /// attention block skipped here must be skipped in ``mask`` too, since decode could not
    /// attend to prompt positions whose keys and values were never computed.
    public let prefillMask: BlockMask
    let pool: WorkerPool
    let state: RunState
    let cache: KVCache
    let rope: Rope
    /// Under a memory cap, the owner of resident and streamed weights; nil runs from the mapping.
    private(set) var streamer: WeightStreamer?
    /// Without a cap, x8 copies of the Q4_1/Q8_0 matrices, used in place of the mapping's.
    private var interleaved: InterleavedWeights?

    /// Positions already in the KV cache: the next token goes at this position.
    public private(set) var position = 0

    /// `logitRows` bounds how many batch rows one forward pass can return logits for (each row is
    /// vocab floats, 192 KiB for SmolLM2): generation needs 1, perplexity a whole batch.
    init(weights: ModelWeights, contextLength: Int, maxBatch: Int, threads: Int, mask: BlockMask = .none,
         prefillMask: BlockMask? = nil, logitRows: Int? = nil, streamer: WeightStreamer? = nil,
         interleaved: InterleavedWeights? = nil) {
        let prefillMask = prefillMask ?? mask
        precondition(prefillMask.skippedAttentionLayers.isSubset(of: mask.skippedAttentionLayers))
        precondition(streamer == nil || interleaved == nil)
        self.streamer = streamer
        self.interleaved = interleaved
        self.weights = weights
        config = weights.config
        self.contextLength = contextLength
        self.mask = mask
        self.prefillMask = prefillMask
        pool = WorkerPool(threads: threads)
        state = RunState(config: config, maxBatch: maxBatch, logitRows: min(maxBatch, logitRows ?? maxBatch), context: contextLength,
                         threads: threads, maxRow: weights.maxRowLength)
        cache = KVCache(layers: config.layerCount, capacity: contextLength, kvDim: config.kvDim, mask: prefillMask)
        rope = Rope(style: weights.spec.ropeStyle, dims: config.headDim, base: config.ropeBase,
                    frequencyFactors: weights.ropeFrequencyFactors)
    }

    public var maxBatch: Int { state.maxBatch }
    /// Most batch rows one pass can return logits for.
    public var maxLogitRows: Int { state.logitRows }

    /// Swaps the weight source at a token boundary (a new cap): the old streamer's reads are
    /// drained and its buffers freed before the new one loads, so the two never coexist.
    /// The in-memory copies go too: a cap means the mapping's (page cache) weights are read again.
    func replaceStreamer(_ make: () throws(EngineError) -> WeightStreamer) throws(EngineError) {
        interleaved = nil
        streamer = nil
        streamer = try make()
    }
    public var vocabularySize: Int { config.vocabularySize }

    /// Bytes of the in-memory x8 copies (no cap), 0 otherwise.
    var interleavedBytes: Int { interleaved?.byteCount ?? 0 }

    /// Bytes allocated for activations and the KV cache.
    public var bufferBytes: Int { state.byteCount }
    public var kvCacheBytes: Int { cache.byteCount }

    /// Forgets the cached positions (new sequence); buffers are kept.
    public func reset() { position = 0 }

    /// Row `i` of the logits written by the last ``forward(_:logitRows:)`` (vocab floats).
    public func logits(row i: Int) -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: state.logits.pointer + i * config.vocabularySize, count: config.vocabularySize)
    }

    /// Which mask a pass uses: a prompt is prefill, generated tokens and scored text are decode.
    public enum Stage: Sendable { case prefill, decode }

    /// Runs `tokens` (at most ``maxBatch``) at the next positions and computes logits for the
    /// batch rows in `logitRows` into ``logits(row:)`` rows 0, 1, … in order.
    /// Token ids must be valid (the ``Engine`` checks user input).
    /// Throws only when streamed weights cannot be read (a failing disk, a file changed under us).
    public func forward(_ tokens: UnsafeBufferPointer<Int32>, logitRows: Range<Int>, stage: Stage = .decode) throws(EngineError) {
        try forward(tokens, logitRows: logitRows, mask: stage == .prefill ? prefillMask : mask)
    }

    /// The pass behind ``forward(_:logitRows:stage:)``, open to the pruning evaluators: any
    /// `mask` whose skipped attention layers include the open mask's, a `probe` that sees the
    /// residual stream around every block, and `resumeAt`, which starts at that block (index in
    /// execution order) from a residual the probe restores. Resuming relies on the KV cache of
    /// earlier layers still holding this batch (same positions, same tokens): evaluating many
    /// masks that differ only from block b on then costs the blocks after b, not the whole model.
    package func forward(_ tokens: UnsafeBufferPointer<Int32>, logitRows: Range<Int>, mask: BlockMask,
                         resumeAt: Int = 0, probe: (any ResidualProbe)? = nil) throws(EngineError) {
        let n = tokens.count
        precondition(n >= 1 && n <= maxBatch && position + n <= contextLength && logitRows.count <= maxLogitRows)
        precondition(resumeAt == 0 || (probe != nil && streamer == nil))
        let c = config
        let d = c.embeddingLength, qd = c.queryDim, kvd = c.kvDim, ff = c.feedForwardLength
        let x = state.x.pointer, xb = state.xb.pointer
        let q = state.q.pointer, k = state.k.pointer, v = state.v.pointer
        let att = state.attention.pointer, hb = state.hb.pointer, hb2 = state.hb2.pointer
        let workspace = state.workspace
        let ropeTable = state.ropeTable.pointer, hd = c.headDim

        func matmul(_ w: QuantMatrix, _ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, rows: Int = n, ldy: Int? = nil) {
            MatMul.compute(w, x: input, ldx: w.cols, y: output, ldy: ldy ?? w.rows, batch: rows, pool: pool, workspace: workspace)
        }

        let streamer = self.streamer
        for b in 0..<n {
            if resumeAt == 0 {
                if let streamer { try streamer.embeddingRow(Int(tokens[b]), into: x + b * d) }
                else { (interleaved?.tokenEmbedding ?? weights.tokenEmbedding).dequantizeRow(Int(tokens[b]), into: x + b * d) }
            }
            rope.table(position: position + b, into: ropeTable + b * hd)
        }
        if resumeAt > 0 { probe!.restore(block: resumeAt, into: x, rows: n) }

        for l in 0..<c.layerCount {
            if 2 * l + 1 < resumeAt { continue }
            let lw = try streamer?.layer(l) ?? interleaved?.layers[l] ?? weights.layers[l]
            let attentionBlock = 2 * l
            let resumedPast = attentionBlock < resumeAt   // resuming at this layer's FFN
            if !resumedPast { probe?.before(block: attentionBlock, x: x, rows: n) }
            if !resumedPast && !mask.skipsAttention(l) {
                for b in 0..<n {
                    Vector.rmsNorm(x + b * d, weight: lw.attentionNorm, eps: c.rmsEpsilon, into: xb + b * d, d)
                }
                MatMul.computeShared(lw.query, q, lw.key, k, lw.value, v, x: xb, batch: n, pool: pool, workspace: workspace)
                if let bias = lw.queryBias { for b in 0..<n { Vector.add(q + b * qd, bias, qd) } }
                if let bias = lw.keyBias { for b in 0..<n { Vector.add(k + b * kvd, bias, kvd) } }
                if let bias = lw.valueBias { for b in 0..<n { Vector.add(v + b * kvd, bias, kvd) } }
                for b in 0..<n {
                    rope.apply(q + b * qd, heads: c.headCount, headStride: hd, table: ropeTable + b * hd)
                    rope.apply(k + b * kvd, heads: c.kvHeadCount, headStride: hd, table: ropeTable + b * hd)
                    precondition(cache.slotOfLayer[l] != nil, "attention of layer \(l) runs but has no KV cache")
                    let kc = cache.key(layer: l, position: position + b), vc = cache.value(layer: l, position: position + b)
                    for i in 0..<kvd {
                        kc[i] = Float16(k[b * kvd + i])
                        vc[i] = Float16(v[b * kvd + i])
                    }
                }
                attend(layer: l, batch: n)
                matmul(lw.output, att, xb)
                Vector.add(x, xb, n * d)   // residual: the batch rows are contiguous
            }
            if !resumedPast { probe?.after(block: attentionBlock, x: x, rows: n) }
            probe?.before(block: attentionBlock + 1, x: x, rows: n)
            if !mask.skipsFFN(l) {
                for b in 0..<n {
                    Vector.rmsNorm(x + b * d, weight: lw.ffnNorm, eps: c.rmsEpsilon, into: xb + b * d, d)
                }
                MatMul.computeShared(lw.gate, hb, lw.up, hb2, nil, nil, x: xb, batch: n, pool: pool, workspace: workspace)
                Vector.swiglu(hb, hb2, n * ff)
                matmul(lw.down, hb, xb)
                Vector.add(x, xb, n * d)   // residual: the batch rows are contiguous
            }
            probe?.after(block: attentionBlock + 1, x: x, rows: n)
            try streamer?.finishLayer(l)
        }
        probe?.final(x: x, rows: n)

        let rows = logitRows.clamped(to: 0..<n)
        if !rows.isEmpty {
            for (i, b) in rows.enumerated() {
                Vector.rmsNorm(x + b * d, weight: weights.outputNorm, eps: c.rmsEpsilon, into: xb + i * d, d)
            }
            if let streamer {
                if streamer.head.rows > 0 { matmul(streamer.head, xb, state.logits.pointer, rows: rows.count, ldy: c.vocabularySize) }
            } else {
                matmul(interleaved?.output ?? weights.output, xb, state.logits.pointer, rows: rows.count)
            }
        }
        if let streamer {
            // Streamed head rows come in stage order even when no logits are wanted (an inner
            // prefill batch): the prefetch cycle has already read them.
            for (i, chunk) in streamer.headChunks.enumerated() {
                let m = try streamer.headChunk(i)
                if !rows.isEmpty { matmul(m, xb, state.logits.pointer + chunk.rows.lowerBound, rows: rows.count, ldy: c.vocabularySize) }
                try streamer.finishHeadChunk()
            }
        }
        position += n
    }

    /// Attention for every (token, head) of the batch, spread over the pool.
    private func attend(layer l: Int, batch n: Int) {
        let c = config
        var job = AttentionJob(
            q: state.q.pointer, out: state.attention.pointer, scores: state.scores.pointer, scoresStride: state.scoresStride,
            keys: cache.key(layer: l, position: 0), values: cache.value(layer: l, position: 0),
            start: position, heads: c.headCount, group: c.headCount / c.kvHeadCount, headDim: c.headDim,
            queryDim: c.queryDim, kvDim: c.kvDim, scale: 1 / Float(c.headDim).squareRoot())
        withUnsafePointer(to: &job) { pool.parallelFor(n * c.headCount, context: $0, AttentionJob.run) }
    }
}

/// One layer's attention over a batch as a pool job: task = (token, head).
struct AttentionJob {
    let q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>
    let scores: UnsafeMutablePointer<Float>, scoresStride: Int
    let keys: UnsafeMutablePointer<Float16>, values: UnsafeMutablePointer<Float16>
    let start: Int, heads: Int, group: Int, headDim: Int, queryDim: Int, kvDim: Int, scale: Float

    static let run: WorkerPool.TaskFunction = { ctx, task, thread in
        let j = ctx.assumingMemoryBound(to: AttentionJob.self).pointee
        let b = task / j.heads, h = task % j.heads
        let g = h / j.group, hd = j.headDim
        Attention.head(query: j.q + b * j.queryDim + h * hd, keys: j.keys + g * hd, values: j.values + g * hd,
                       stride: j.kvDim, count: j.start + b + 1, headDim: hd, scale: j.scale,
                       scores: j.scores + thread * j.scoresStride, out: j.out + b * j.queryDim + h * hd)
    }
}
