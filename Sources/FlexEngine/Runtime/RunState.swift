import FlexKernels
import FlexSystem

/// Every activation buffer of a forward pass, allocated once (llama2.c's `RunState`).
///
/// Sized for `maxBatch` tokens per pass so prefill processes a batch per weight pass and
/// decode reuses the same memory: nothing on the hot path allocates.
public struct RunState: ~Copyable {
    public let maxBatch: Int
    public let logitRows: Int
    let x: AlignedBuffer<Float>          // (batch, dim) residual stream
    let xb: AlignedBuffer<Float>         // (batch, dim) normed input / block output
    let q: AlignedBuffer<Float>          // (batch, n_head·head_dim)
    let k: AlignedBuffer<Float>          // (batch, kv_dim)
    let v: AlignedBuffer<Float>          // (batch, kv_dim)
    let attention: AlignedBuffer<Float>  // (batch, n_head·head_dim) attention output
    let hb: AlignedBuffer<Float>         // (batch, ff) gate, then SwiGLU
    let hb2: AlignedBuffer<Float>        // (batch, ff) up
    let logits: AlignedBuffer<Float>     // (logitRows, vocab)
    let ropeTable: AlignedBuffer<Float>  // (ropes, batch, head_dim) cos/sin pairs per position, per distinct rope
    let scores: AlignedBuffer<Float>     // (threads, group, context) attention scores of one KV head's query heads
    let keyRows: AlignedBuffer<Float>    // (threads, 8, head_dim) key rows widened for attention
    let matmul: MatMulScratch            // per-thread dequantized rows, per-token 8-bit activations
    let scoresStride: Int

    init(config: ModelConfig, maxBatch: Int, logitRows: Int, context: Int, threads: Int, maxRow: Int) {
        self.maxBatch = maxBatch
        self.logitRows = logitRows
        x = AlignedBuffer(count: maxBatch * config.embeddingLength)
        xb = AlignedBuffer(count: maxBatch * config.embeddingLength)
        q = AlignedBuffer(count: maxBatch * config.queryDim)
        k = AlignedBuffer(count: maxBatch * config.kvDim)
        v = AlignedBuffer(count: maxBatch * config.kvDim)
        attention = AlignedBuffer(count: maxBatch * config.queryDim)
        hb = AlignedBuffer(count: maxBatch * config.feedForwardLength)
        hb2 = AlignedBuffer(count: maxBatch * config.feedForwardLength)
        logits = AlignedBuffer(count: logitRows * config.vocabularySize)
        ropeTable = AlignedBuffer(count: config.ropeCount * maxBatch * config.headDim)
        scoresStride = (context + 15) / 16 * 16
        scores = AlignedBuffer(count: threads * config.attentionGroup * scoresStride)
        keyRows = AlignedBuffer(count: threads * 8 * config.headDim)
        matmul = MatMulScratch(threads: threads, maxCols: maxRow, maxBatch: maxBatch)
    }

    var workspace: MatMulWorkspace { matmul.workspace }

    /// Bytes these buffers take, for the memory tally and the cap check.
    static func bytes(config: ModelConfig, maxBatch: Int, logitRows: Int, context: Int, threads: Int, maxRow: Int) -> Int {
        let perToken = 2 * config.embeddingLength + 2 * config.queryDim + 2 * config.kvDim + 2 * config.feedForwardLength
        return 4 * (maxBatch * perToken + logitRows * config.vocabularySize + config.ropeCount * maxBatch * config.headDim + threads * config.attentionGroup * (context + 16)
                + threads * 8 * config.headDim)
            + MatMulScratch.bytes(threads: threads, maxCols: maxRow, maxBatch: maxBatch)
    }

    public var byteCount: Int {
        x.byteCount + xb.byteCount + q.byteCount + k.byteCount + v.byteCount + attention.byteCount + hb.byteCount
            + hb2.byteCount + logits.byteCount + ropeTable.byteCount + scores.byteCount + keyRows.byteCount + matmul.byteCount
    }
}
