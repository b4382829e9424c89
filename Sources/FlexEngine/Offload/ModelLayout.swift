import FlexFormat
import FlexKernels

/// Where one weight matrix lies in the model file: what the planner divides and the streamer reads.
public struct TensorExtent: Sendable, Equatable {
    public let name: String
    public let fileOffset: Int
    public let rows: Int
    public let rowBytes: Int
    public var bytes: Int { rows * rowBytes }

    public init(name: String, fileOffset: Int, rows: Int, rowBytes: Int) {
        self.name = name
        self.fileOffset = fileOffset
        self.rows = rows
        self.rowBytes = rowBytes
    }
}

/// The file geometry of every matrix the forward pass reads, by block: the planner's whole input
/// about the model. Vectors (norms, biases) are not here: they are dequantized to floats at open
/// and always resident ("pinned").
public struct ModelLayout: Sendable, Equatable {
    public struct Layer: Sendable, Equatable {
        /// Q, K, V, O; empty when the attention block is skipped.
        public var attention: [TensorExtent]
        /// Gate, up, down; empty when the FFN block is skipped.
        public var ffn: [TensorExtent]
        public var tensors: [TensorExtent] { attention + ffn }
    }

    public var layers: [Layer]
    /// The output projection (vocab × dim): read in full every token.
    public var head: TensorExtent
    /// The token embedding when it is a separate tensor; nil when tied to ``head``. Only one row
    /// per token is read from it.
    public var embedding: TensorExtent?
    /// Bytes of float vectors (norms, biases, rope factors) kept resident regardless.
    public var pinnedBytes: Int

    public init(layers: [Layer], head: TensorExtent, embedding: TensorExtent?, pinnedBytes: Int) {
        self.layers = layers
        self.head = head
        self.embedding = embedding
        self.pinnedBytes = pinnedBytes
    }

    /// Every matrix byte a forward pass reads (embedding excluded: one row per token).
    public var matrixBytes: Int { head.bytes + layers.reduce(0) { $0 + $1.tensors.reduce(0) { $0 + $1.bytes } } }
}

extension ModelWeights {
    /// The layout of this model's matrices in its file, leaving out the blocks `mask` skips.
    /// Throws when a matrix is not on disk as it is computed on (a block file's compressed
    /// block): the offload runtime streams stored bytes straight into the kernels' buffers.
    public func layout(skipping mask: BlockMask) throws(EngineError) -> ModelLayout {
        func extent(_ m: QuantMatrix) throws(EngineError) -> TensorExtent {
            let name = file.tensorName(at: m.data) ?? "?"
            guard let offset = file.fileOffset(of: m.data) else {
                throw .invalidOption("\(file.path): tensor \(name) is in a compressed block, and under a memory limit "
                                     + "weights stream from disk as stored: pack with --codec none to stream this model")
            }
            return TensorExtent(name: name, fileOffset: offset, rows: m.rows, rowBytes: m.rowBytes)
        }
        var pinned = 4 * outputNorm.count + 4 * (ropeFrequencyFactors?.count ?? 0)
        var out: [ModelLayout.Layer] = []
        for (l, lw) in layers.enumerated() {
            let attn = mask.skipsAttention(l) ? [] : try [lw.query, lw.key, lw.value, lw.output].map(extent)
            let ffn = mask.skipsFFN(l) ? [] : try [lw.gate, lw.up, lw.down].map(extent)
            pinned += 4 * (lw.attentionNorm.count + lw.ffnNorm.count + (lw.queryBias?.count ?? 0)
                           + (lw.keyBias?.count ?? 0) + (lw.valueBias?.count ?? 0))
            out.append(.init(attention: attn, ffn: ffn))
        }
        return ModelLayout(layers: out, head: try extent(output), embedding: tiedOutput ? nil : try extent(tokenEmbedding), pinnedBytes: pinned)
    }
}
