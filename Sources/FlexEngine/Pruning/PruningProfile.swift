import FlexSystem
import Foundation

/// The pruning methods `flexrun prune analyze` offers (DESIGN.md §3; docs/PRUNING.md).
public enum PruningMethod: String, CaseIterable, Sendable, Codable {
    /// RAP's Greedy Sequential Importance: remove, one at a time, the block whose removal
    /// hurts calibration perplexity least given the blocks already removed.
    case gsi
    /// Rank by the perplexity increase of removing each block alone (dense model).
    case oneshot
    /// ShortGPT's Block Influence, 1 − cos(block input, block output).
    case bi
    /// Gromov et al.'s angular distance between layers: removes whole contiguous layers.
    case angular
    /// EvoP: calibration chunks sampled by clustering, then an evolutionary mask search.
    case evop
    /// PDTrim's stage-aware removal: per budget a decode mask and a gentler prefill mask, chosen
    /// on the loss of a continuation decoded after a prompt (``StageAwareSearch``).
    case pdtrim
}

/// What one analysis found: for each budget of k removed blocks, the mask and what it costs
/// and frees. docs/PRUNING.md documents the format; ``version`` is its major version: 2 when
/// the budgets carry prefill masks of their own (pdtrim), which a version-1 reader would
/// silently run as one mask for both stages; 1 otherwise, so older readers keep reading those.
public struct PruningProfile: Codable, Sendable, Equatable {
    public static let formatName = "flexrun-pruning-profile"
    public static let currentVersion = 2
    /// The versions this build reads.
    public static let readableVersions = 1...2

    public struct Calibration: Codable, Sendable, Equatable {
        /// The text file as given, and the token range of it used.
        public var text: String
        public var firstToken: Int
        public var tokenCount: Int
        public var context: Int
        public var scoreFrom: Int
        /// Chunks of the range (0-based) that were scored: all of them, or EvoP's selection.
        public var chunks: [Int]

        public init(text: String, firstToken: Int, tokenCount: Int, context: Int, scoreFrom: Int, chunks: [Int]) {
            self.text = text; self.firstToken = firstToken; self.tokenCount = tokenCount
            self.context = context; self.scoreFrom = scoreFrom; self.chunks = chunks
        }
    }

    public struct Budget: Codable, Sendable, Equatable {
        /// k, the number of blocks removed.
        public var removed: Int
        /// The skipped blocks, as `attn:3` / `ffn:17`, in execution order.
        public var blocks: [String]
        /// exp(mean NLL) on the calibration chunks with these blocks skipped.
        public var calibrationPerplexity: Double
        /// Parameter bytes (as stored in the model file) the skipped blocks free.
        public var parameterBytes: Int
        /// KV-cache bytes per token the skipped attention blocks free.
        public var kvBytesPerToken: Int
        /// The blocks skipped while the prompt runs, when they differ from ``blocks`` (pdtrim;
        /// a subset of them). Absent: the prompt skips ``blocks`` too.
        public var prefillBlocks: [String]?

        public init(removed: Int, blocks: [String], calibrationPerplexity: Double, parameterBytes: Int, kvBytesPerToken: Int,
                    prefillBlocks: [String]? = nil) {
            self.removed = removed; self.blocks = blocks; self.calibrationPerplexity = calibrationPerplexity
            self.parameterBytes = parameterBytes; self.kvBytesPerToken = kvBytesPerToken; self.prefillBlocks = prefillBlocks
        }
    }

    public var format = PruningProfile.formatName
    /// 1, or 2 when a budget has ``Budget/prefillBlocks`` (set by ``write(path:)``).
    public var version = 1
    public var method: PruningMethod
    /// File name of the model analysed, and its shape.
    public var model: String
    public var layers: Int
    public var calibration: Calibration
    public var densePerplexity: Double
    /// Removal order, for the methods that produce one (gsi, oneshot, bi).
    public var order: [String]?
    public var budgets: [Budget]
    /// Wall time of the analysis and forward passes run (passes replayed from a checkpoint excluded).
    public var seconds: Double
    public var passes: Int
    /// Measured quality of the masks a pruning controller can choose (`flexrun prune quality`);
    /// absent until measured. An optional field: version-1 readers without it ignore it.
    public var quality: QualityTable?

    /// Calibration NLL and top-1 next-token accuracy per mask, on the profile's calibration
    /// tokens: the table RAP's policies are trained and judged on (never the held-out split).
    public struct QualityTable: Codable, Sendable, Equatable {
        public struct Entry: Codable, Sendable, Equatable {
            /// `attention` or `ffn` (the first `count` blocks of that kind in the removal order),
            /// or `budget` (the profile's mask removing `count` blocks).
            public var family: String
            public var count: Int
            public var blocks: [String]
            public var nll: Double
            public var top1: Double

            public init(family: String, count: Int, blocks: [String], nll: Double, top1: Double) {
                self.family = family; self.count = count; self.blocks = blocks; self.nll = nll; self.top1 = top1
            }
        }
        public var firstToken: Int
        public var tokenCount: Int
        public var context: Int
        public var dense: Entry
        public var entries: [Entry]

        public init(firstToken: Int, tokenCount: Int, context: Int, dense: Entry, entries: [Entry]) {
            self.firstToken = firstToken; self.tokenCount = tokenCount; self.context = context; self.dense = dense; self.entries = entries
        }
    }

    public enum ProfileError: Error, CustomStringConvertible, Sendable {
        case unreadable(String, reason: String)
        case unsupported(String, version: Int)
        case noBudget(String, removed: Int, available: [Int])
        case badBlock(String, block: String)

        public var description: String {
            switch self {
            case let .unreadable(path, reason): "pruning profile \(path) is not readable: \(reason)"
            case let .unsupported(path, version):
                "pruning profile \(path) has format version \(version); this flexrun reads versions "
                    + "\(PruningProfile.readableVersions.lowerBound)–\(PruningProfile.readableVersions.upperBound)"
            case let .noBudget(path, k, available):
                "pruning profile \(path) has no mask removing \(k) blocks (it has: \(available.map(String.init).joined(separator: ", ")))"
            case let .badBlock(path, block): "pruning profile \(path) names an invalid block '\(block)'"
            }
        }
    }

    public static func read(path: String) throws(ProfileError) -> PruningProfile {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw .unreadable(path, reason: (error as NSError).localizedDescription)
        }
        return try decode(data, path: path)
    }

    /// A profile from its JSON bytes; `path` names them in errors. The fuzz target `profile`
    /// calls it (and the profile's mask and order accessors) on arbitrary bytes.
    public static func decode(_ data: Data, path: String) throws(ProfileError) -> PruningProfile {
        // The header first, so a future major version gets its own message, not a decoding error.
        struct Header: Decodable { let format: String; let version: Int }
        guard let header = try? JSONDecoder().decode(Header.self, from: data), header.format == formatName else {
            throw .unreadable(path, reason: "not a \(formatName) JSON file")
        }
        guard readableVersions.contains(header.version) else { throw .unsupported(path, version: header.version) }
        do { return try JSONDecoder().decode(PruningProfile.self, from: data) } catch {
            throw .unreadable(path, reason: "\(error)")
        }
    }

    /// Writes the profile through an `OutputFile` (temporary file, then rename), so no half
    /// profile is left, not even when SIGINT or SIGTERM lands mid-write.
    public func write(path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        var profile = self
        profile.version = budgets.contains { $0.prefillBlocks != nil } ? 2 : 1
        var out = try OutputFile(path: path)
        try out.write(Array(try encoder.encode(profile)))
        try out.commit()
    }

    /// Every block in the order the method would remove them: `order` where the method produced
    /// one, else the blocks as they join the budgets' masks, smallest budget first.
    public func removalOrder(path: String = "profile") throws(ProfileError) -> [BlockMask.Block] {
        var out: [BlockMask.Block] = []
        var seen = Set<BlockMask.Block>()
        let names = order ?? budgets.sorted { $0.removed < $1.removed }.flatMap(\.blocks)
        for text in names {
            guard let m = try? BlockMask(parsing: text), m.skipped.count == 1 else { throw .badBlock(path, block: text) }
            let b = m.skipped.first!
            if seen.insert(b).inserted { out.append(b) }
        }
        return out
    }

    /// The mask that removes `k` blocks (k = 0 is the dense model): the decode mask, for pdtrim.
    public func mask(removing k: Int, path: String = "profile") throws(ProfileError) -> BlockMask {
        if k == 0 { return .none }
        return try Self.mask(budget(k, path: path).blocks, path: path)
    }

    /// The mask the prompt runs with at budget `k`: the budget's own prefill mask (pdtrim), else
    /// ``mask(removing:path:)``.
    public func prefillMask(removing k: Int, path: String = "profile") throws(ProfileError) -> BlockMask {
        if k == 0 { return .none }
        let b = try budget(k, path: path)
        return try Self.mask(b.prefillBlocks ?? b.blocks, path: path)
    }

    private func budget(_ k: Int, path: String) throws(ProfileError) -> Budget {
        guard let b = budgets.first(where: { $0.removed == k }) else {
            throw .noBudget(path, removed: k, available: budgets.map(\.removed))
        }
        return b
    }

    private static func mask(_ blocks: [String], path: String) throws(ProfileError) -> BlockMask {
        var mask = BlockMask.none
        for text in blocks {
            guard let m = try? BlockMask(parsing: text), m.skipped.count == 1 else { throw .badBlock(path, block: text) }
            mask.skip(m.skipped.first!)
        }
        return mask
    }
}
