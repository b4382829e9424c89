import FlexKernels

/// Where the forward pass gets its weights: the one seam between the executor and the three
/// ways a model's bytes can be held (the file mapping, x8 copies of it, or the offload runtime's
/// resident set plus streamed stages).
///
/// The forward pass visits it in a fixed order: embedding rows, then every layer (``layer(_:)``
/// then ``finishLayer(_:)``), then the head's in-memory rows and its streamed chunks in order.
/// A streaming source relies on that order to prefetch; an in-memory one ignores it.
protocol WeightSource: AnyObject {
    /// Dequantizes `token`'s embedding row into `dst`.
    func embeddingRow(_ token: Int, into dst: UnsafeMutablePointer<Float>) throws(EngineError)
    /// Layer `l`'s matrices, usable until ``finishLayer(_:)``; only the blocks the pass runs
    /// (`attention`, `ffn`) need be there.
    func layer(_ l: Int, attention: Bool, ffn: Bool) throws(EngineError) -> LayerWeights
    func finishLayer(_ l: Int) throws(EngineError)
    /// The head's rows held in memory: all of them, or a streamer's resident prefix (maybe none).
    var residentHead: QuantMatrix { get }
    /// Streamed chunks of the head after ``residentHead``, visited every pass in order.
    var headChunkCount: Int { get }
    /// Chunk `i`: which head rows it holds and the matrix of those rows.
    func headChunk(_ i: Int) throws(EngineError) -> (rows: Range<Int>, matrix: QuantMatrix)
    func finishHeadChunk() throws(EngineError)
    /// Tells a streaming source which blocks the passes from now on run, so it reads nothing for
    /// the others. Every pass calls it with its own mask before its first layer; stages already
    /// read ahead under another mask are completed when acquired.
    func schedule(_ mask: BlockMask)
}

/// Weights already in memory: the model's mapping, or x8 copies of its Q4_1/Q8_0 matrices.
final class InMemoryWeights: WeightSource {
    let layers: [LayerWeights]
    let output: QuantMatrix
    let tokenEmbedding: QuantMatrix
    /// Keeps the x8 copies alive while this source uses them.
    let owner: AnyObject?

    init(_ weights: ModelWeights) {
        layers = weights.layers
        output = weights.output
        tokenEmbedding = weights.tokenEmbedding
        owner = nil
    }

    init(_ copies: InterleavedWeights) {
        layers = copies.layers
        output = copies.output
        tokenEmbedding = copies.tokenEmbedding
        owner = copies
    }

    func embeddingRow(_ token: Int, into dst: UnsafeMutablePointer<Float>) { tokenEmbedding.dequantizeRow(token, into: dst) }
    func layer(_ l: Int, attention: Bool, ffn: Bool) -> LayerWeights { layers[l] }
    func finishLayer(_ l: Int) {}
    var residentHead: QuantMatrix { output }
    var headChunkCount: Int { 0 }
    func headChunk(_ i: Int) -> (rows: Range<Int>, matrix: QuantMatrix) { preconditionFailure("an in-memory head has no chunks") }
    func finishHeadChunk() {}
    func schedule(_ mask: BlockMask) {}
}
