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

/// A block of a packed file that is stored compressed (or in byte planes): it can only be read
/// whole and decoded, so the planner keeps it resident whole or streams it whole.
public struct DecodedBlock: Sendable, Equatable {
    /// A matrix in the block: its geometry and where it starts in the decoded bytes.
    public struct Member: Sendable, Equatable {
        public let tensor: TensorExtent
        public let rawOffset: Int
    }
    /// The block as the file's index describes it (payload offset, sizes, codec, checksum,
    /// every tensor with its plane width).
    public let entry: BlockFile.Entry
    /// The matrices the forward pass uses from it.
    public let members: [Member]
    public var name: String { entry.name }
    public var payloadOffset: Int { entry.payloadOffset }
    public var storedBytes: Int { entry.storedSize }
    public var rawBytes: Int { entry.rawSize }
    /// Which block of its layer this is (nil for head and embedding blocks).
    public var kind: BlockMask.Kind? {
        switch entry.kind {
        case .attention: return .attention
        case .ffn: return .ffn
        default: return nil
        }
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
        /// Blocks stored compressed (their matrices are not in `attention` or `ffn`).
        public var decoded: [DecodedBlock] = []
        /// The matrices read as stored bytes (a GGUF's, or a packed file's raw blocks).
        public var tensors: [TensorExtent] { attention + ffn }

        public init(attention: [TensorExtent], ffn: [TensorExtent], decoded: [DecodedBlock] = []) {
            self.attention = attention
            self.ffn = ffn
            self.decoded = decoded
        }
    }

    public var layers: [Layer]
    /// The output projection (vocab × dim): read in full every token.
    public var head: TensorExtent
    /// The token embedding when it is a separate tensor; nil when tied to ``head``. Only one row
    /// per token is read from it.
    public var embedding: TensorExtent?
    /// Bytes of float vectors (norms, biases, rope factors) kept resident regardless.
    public var pinnedBytes: Int
    /// Compressed blocks holding the head or the token embedding: always resident, decoded at
    /// load (the head is read whole every token and the embedding row by row, neither of which a
    /// whole-block decode serves).
    public var residentDecoded: [DecodedBlock] = []

    public init(layers: [Layer], head: TensorExtent, embedding: TensorExtent?, pinnedBytes: Int) {
        self.layers = layers
        self.head = head
        self.embedding = embedding
        self.pinnedBytes = pinnedBytes
    }

    /// Every matrix byte a forward pass reads (embedding excluded: one row per token).
    public var matrixBytes: Int {
        head.bytes + layers.reduce(0) { $0 + $1.tensors.reduce(0) { $0 + $1.bytes } + $1.decoded.reduce(0) { $0 + $1.members.reduce(0) { $0 + $1.tensor.bytes } } }
    }
}

extension ModelWeights {
    /// The layout of this model's matrices in its file, leaving out the blocks `mask` skips.
    /// Matrices in a packed file's compressed blocks are grouped by block (``DecodedBlock``).
    public func layout(skipping mask: BlockMask) throws(EngineError) -> ModelLayout {
        var blocks: [String: (entry: BlockFile.Entry, members: [DecodedBlock.Member])] = [:]
        var order: [String] = []
        /// The matrix's extent when it is read as stored; nil when it is grouped into its block.
        func extent(_ m: QuantMatrix) throws(EngineError) -> TensorExtent? {
            let name = file.tensorName(at: m.data) ?? "?"
            if let offset = file.fileOffset(of: m.data) {
                return TensorExtent(name: name, fileOffset: offset, rows: m.rows, rowBytes: m.rowBytes)
            }
            guard let (entry, rawOffset) = file.decodedBlock(of: m.data) else {
                throw .invalidOption("\(file.path): tensor \(name) is neither on disk as stored nor in a decodable block")
            }
            if blocks[entry.name] == nil { blocks[entry.name] = (entry, []); order.append(entry.name) }
            blocks[entry.name]!.members.append(.init(tensor: TensorExtent(name: name, fileOffset: 0, rows: m.rows, rowBytes: m.rowBytes),
                                                     rawOffset: rawOffset))
            return nil
        }
        func decoded(_ names: [String]) -> [DecodedBlock] {
            names.compactMap { n in blocks[n].map { DecodedBlock(entry: $0.entry, members: $0.members) } }
        }
        var pinned = 4 * outputNorm.count + 4 * (ropeFrequencyFactors?.count ?? 0)
        var out: [ModelLayout.Layer] = []
        for (l, lw) in layers.enumerated() {
            let before = Set(order)
            var attn: [TensorExtent] = [], ffn: [TensorExtent] = []
            if !mask.skipsAttention(l) { for m in [lw.query, lw.key, lw.value, lw.output] { if let e = try extent(m) { attn.append(e) } } }
            if !mask.skipsFFN(l) { for m in [lw.gate, lw.up, lw.down] { if let e = try extent(m) { ffn.append(e) } } }
            pinned += 4 * (lw.attentionVectorCount + lw.ffnVectorCount)
            out.append(.init(attention: attn, ffn: ffn, decoded: decoded(order.filter { !before.contains($0) })))
        }
        let before = Set(order)
        let headExtent = try extent(output)
        let embeddingExtent = tiedOutput ? nil : try extent(tokenEmbedding)
        let resident = decoded(order.filter { !before.contains($0) })
        // A head or embedding in a decoded block is resident whole; its extent only names it.
        func named(_ m: QuantMatrix) -> TensorExtent {
            TensorExtent(name: file.tensorName(at: m.data) ?? "?", fileOffset: 0, rows: m.rows, rowBytes: m.rowBytes)
        }
        var layout = ModelLayout(layers: out, head: headExtent ?? named(output),
                                 embedding: tiedOutput ? nil : (embeddingExtent ?? named(tokenEmbedding)), pinnedBytes: pinned)
        layout.residentDecoded = resident
        return layout
    }
}
