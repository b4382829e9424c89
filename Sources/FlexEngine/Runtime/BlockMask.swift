/// Which prunable blocks of a model are skipped (DESIGN.md §2).
///
/// A layer has two blocks: attention (norm, Q, K, V, O) and FFN (norm, gate, up, down).
/// A skipped block is the identity on the residual stream; a skipped attention block also
/// owns no KV cache.
public struct BlockMask: Sendable, Equatable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable, CaseIterable { case attention = "attn", ffn }

    public struct Block: Sendable, Hashable, Comparable, CustomStringConvertible {
        public let kind: Kind
        public let layer: Int
        public init(_ kind: Kind, _ layer: Int) { self.kind = kind; self.layer = layer }
        public var description: String { "\(kind.rawValue):\(layer)" }
        /// Position in execution order: attention of layer l is 2l, its FFN 2l + 1.
        public var index: Int { 2 * layer + (kind == .ffn ? 1 : 0) }
        public init(index: Int) { self.init(index % 2 == 0 ? .attention : .ffn, index / 2) }
        /// Execution order, without forming the index (a block made in code may have any layer).
        public static func < (a: Block, b: Block) -> Bool {
            a.layer != b.layer ? a.layer < b.layer : (a.kind == .attention && b.kind == .ffn)
        }
        /// Every block of a model with `layers` layers, in execution order.
        public static func all(layers: Int) -> [Block] { (0..<2 * layers).map(Block.init(index:)) }
    }

    public private(set) var skipped: Set<Block>

    public init(skipping blocks: some Sequence<Block> = []) { skipped = Set(blocks) }

    public static let none = BlockMask()

    public func skipsAttention(_ layer: Int) -> Bool { skipped.contains(Block(.attention, layer)) }
    public func skipsFFN(_ layer: Int) -> Bool { skipped.contains(Block(.ffn, layer)) }

    public mutating func skip(_ block: Block) { skipped.insert(block) }
    public func skipping(_ block: Block) -> BlockMask { var m = self; m.skip(block); return m }
    public func skips(_ block: Block) -> Bool { skipped.contains(block) }
    /// Skipped in both masks: what neither stage runs, so no weights need be read for it.
    public func intersection(_ other: BlockMask) -> BlockMask { BlockMask(skipping: skipped.intersection(other.skipped)) }
    /// Blocks either mask skips.
    public func union(_ other: BlockMask) -> BlockMask { other.skipped.isEmpty ? self : BlockMask(skipping: skipped.union(other.skipped)) }
    public func isSubset(of other: BlockMask) -> Bool { skipped.isSubset(of: other.skipped) }
    /// Attention blocks skipped, as layers: they need no KV cache.
    public var skippedAttentionLayers: Set<Int> { Set(skipped.filter { $0.kind == .attention }.map(\.layer)) }
    /// This mask's attention blocks only: the layers that get no KV room when it is a floor.
    public var attentionOnly: BlockMask { BlockMask(skipping: skipped.filter { $0.kind == .attention }) }

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let text: String
        public var description: String { "invalid block list '\(text)': expected e.g. attn:3,ffn:17" }
    }

    /// Parses `attn:3,ffn:17` (the CLI's `--skip`).
    public init(parsing text: String) throws(ParseError) {
        var blocks: [Block] = []
        for item in text.split(separator: ",") {
            let parts = item.split(separator: ":")
            // Layers past 2^30 are no model's, and 2 × layer (a block's index) must not overflow.
            guard parts.count == 2, let kind = Kind(rawValue: parts[0].lowercased()), let layer = Int(parts[1]), layer >= 0,
                  layer < 1 << 30 else {
                throw ParseError(text: text)
            }
            blocks.append(Block(kind, layer))
        }
        guard !blocks.isEmpty else { throw ParseError(text: text) }
        self.init(skipping: blocks)
    }

    /// Parses a list of block names as files store them (`["attn:3", "ffn:17"]`); empty is none.
    public init(parsingBlocks list: [String]) throws(ParseError) {
        self = list.isEmpty ? .none : try BlockMask(parsing: list.joined(separator: ","))
    }

    public var description: String { skipped.isEmpty ? "none" : skipped.sorted().map(\.description).joined(separator: ",") }
}
