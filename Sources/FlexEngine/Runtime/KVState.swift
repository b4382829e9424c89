import FlexFormat
import Foundation

/// A sequence's state after its prompt, movable to another process: the KV rows, the tokens
/// they belong to, the token sampled next, and the sampler's state (docs/FORMAT.md, "KV state
/// files"). llama.cpp's `llama_state_seq_save_file` is the same idea.
///
/// Why it holds the next token and the random state, not only the cache: decoding from a state
/// must give exactly the tokens one uninterrupted run gives, so the first token comes from the
/// prompt's own logits (on the side that ran the prompt) and sampling continues from the same
/// random stream.
///
/// Per layer the rows kept and their positions are listed, so that a layer may keep fewer
/// positions than the sequence holds: a windowed layer keeps its window, and token-aware
/// pruning (PDTrim) keeps the first and last tokens of selected layers.
public struct KVState: Sendable, Equatable {
    public static let magic: [UInt8] = Array("FLEXKVST".utf8)
    public static let version: UInt32 = 1

    /// ``Model/fingerprint`` of the model that made it.
    public var fingerprint: UInt64
    public var architecture: String
    public var layerCount: Int
    public var kvDim: Int
    /// The session's masks when the prompt ran: blocks skipped while decoding and while prefilling.
    public var decodeMask: BlockMask
    public var prefillMask: BlockMask
    /// Tokens at positions 0..<tokens.count (the prompt).
    public var tokens: [Int32]
    /// Generated tokens not yet in the cache: the next token to run (empty when generation ended
    /// at the prompt, on an end-of-generation token).
    public var pending: [Int32]
    public var sampling: SamplingParameters
    public var random: RandomSource.State
    /// Per layer whose attention ran: the positions kept, as ranges, and their K and V rows.
    public var layers: [LayerRows]

    public struct LayerRows: Sendable, Equatable {
        public var layer: Int
        /// Ascending, disjoint ranges of positions.
        public var positions: [Range<Int>]
        /// f16 bits: for each kept position in order, its K row then its V row (kvDim each).
        public var rows: [UInt16]
        public var positionCount: Int { positions.reduce(0) { $0 + $1.count } }
    }

    /// Bytes of K and V the state moves (the rows, without the header).
    public var rowBytes: Int { layers.reduce(0) { $0 + $1.rows.count * 2 } }

    // MARK: - File format

    struct Header: Codable {
        var fingerprint: String
        var architecture: String
        var layers: Int
        var kv_dim: Int
        var decode_skip: [Int]
        var prefill_skip: [Int]
        var tokens: [Int32]
        var pending: [Int32]
        var sampling: Sampling
        var kept: [Kept]

        struct Sampling: Codable {
            var temperature: Float
            var top_k: Int
            var top_p: Float
            var min_p: Float
            var repetition_penalty: Float
            var repetition_window: Int
            var seed: String
            var random: [String]
        }
        struct Kept: Codable {
            var layer: Int
            var positions: [[Int]]
        }
    }

    /// The file's bytes: magic, version, header length, JSON header, rows, XXH64 of all before it.
    public func encoded() -> [UInt8] {
        let header = Header(
            fingerprint: String(fingerprint, radix: 16), architecture: architecture, layers: layerCount, kv_dim: kvDim,
            decode_skip: decodeMask.skipped.map(\.index).sorted(), prefill_skip: prefillMask.skipped.map(\.index).sorted(),
            tokens: tokens, pending: pending,
            sampling: .init(temperature: sampling.temperature, top_k: sampling.topK, top_p: sampling.topP, min_p: sampling.minP,
                            repetition_penalty: sampling.repetitionPenalty, repetition_window: sampling.repetitionWindow,
                            seed: String(sampling.seed), random: random.words.map { String($0) }),
            kept: layers.map { Header.Kept(layer: $0.layer, positions: $0.positions.map { [$0.lowerBound, $0.upperBound] }) })
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = (try? encoder.encode(header)).map { Array($0) } ?? []
        var out = Self.magic
        out.reserveCapacity(24 + json.count + rowBytes)
        func put32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        put32(Self.version)
        put32(UInt32(json.count))
        out += json
        for l in layers { l.rows.withUnsafeBytes { out.append(contentsOf: $0) } }
        let sum = out.withUnsafeBytes { XXHash64.hash($0) }
        withUnsafeBytes(of: sum.littleEndian) { out.append(contentsOf: $0) }
        return out
    }

    /// Reads a state file's bytes. Every refusal is one line: not a state file, another version,
    /// truncated, corrupted (the checksum), or a header that does not add up.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(EngineError) -> KVState {
        guard bytes.count >= 16, Array(bytes[0..<8]) == magic else { throw .state("not a FlexRun KV state file") }
        func u32(_ at: Int) -> UInt32 { UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
        let version = u32(8)
        guard version == Self.version else { throw .state("state file version \(version); this FlexRun reads version \(Self.version)") }
        let headerLength = Int(u32(12))
        guard bytes.count >= 16 + 8, headerLength <= bytes.count - 24 else { throw .state("the state file is truncated") }
        let sumAt = bytes.count - 8
        let stored = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: sumAt, as: UInt64.self))
        guard XXHash64.hash(UnsafeRawBufferPointer(rebasing: bytes[0..<sumAt])) == stored else {
            throw .state("the state file is corrupted or truncated (checksum mismatch)")
        }
        let header: Header
        do { header = try JSONDecoder().decode(Header.self, from: Data(bytes[16..<16 + headerLength])) } catch {
            throw .state("the state file's header cannot be read")
        }
        guard let fingerprint = UInt64(header.fingerprint, radix: 16), header.layers > 0, header.layers <= 4096,
              header.kv_dim > 0, header.kv_dim <= 1 << 16, header.sampling.random.count == 4,
              let seed = UInt64(header.sampling.seed) else { throw .state("the state file's header is inconsistent") }
        let words = header.sampling.random.compactMap { UInt64($0) }
        guard words.count == 4 else { throw .state("the state file's header is inconsistent") }
        func mask(_ indices: [Int]) throws(EngineError) -> BlockMask {
            guard indices.allSatisfy({ (0..<2 * header.layers).contains($0) }) else { throw .state("the state file's header is inconsistent") }
            return BlockMask(skipping: indices.map(BlockMask.Block.init(index:)))
        }
        var layers: [LayerRows] = []
        var at = 16 + headerLength
        for k in header.kept {
            var ranges: [Range<Int>] = []
            var last = 0
            for r in k.positions {
                guard r.count == 2, r[0] >= last, r[1] > r[0], r[1] <= 1 << 24 else { throw .state("the state file's header is inconsistent") }
                ranges.append(r[0]..<r[1])
                last = r[1]
            }
            guard (0..<header.layers).contains(k.layer), layers.last.map({ $0.layer < k.layer }) ?? true else {
                throw .state("the state file's header is inconsistent")
            }
            let count = ranges.reduce(0) { $0 + $1.count } * 2 * header.kv_dim
            guard count * 2 <= sumAt - at else { throw .state("the state file is truncated") }
            let rows = [UInt16](unsafeUninitializedCapacity: count) { buffer, n in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[at..<at + count * 2]))
                n = count
            }
            at += count * 2
            layers.append(LayerRows(layer: k.layer, positions: ranges, rows: rows))
        }
        guard at == sumAt else { throw .state("the state file's rows do not match its header") }
        let s = header.sampling
        return KVState(
            fingerprint: fingerprint, architecture: header.architecture, layerCount: header.layers, kvDim: header.kv_dim,
            decodeMask: try mask(header.decode_skip), prefillMask: try mask(header.prefill_skip),
            tokens: header.tokens, pending: header.pending,
            sampling: SamplingParameters(temperature: s.temperature, topK: s.top_k, topP: s.top_p, minP: s.min_p,
                                         repetitionPenalty: s.repetition_penalty, repetitionWindow: s.repetition_window, seed: seed),
            random: RandomSource.State(words: words), layers: layers)
    }
}

/// Token-aware KV pruning of a hand-off (PDTrim): in `layers`, only the first `first` and the
/// last `last` positions' K and V cross; the other layers hand over everything. Attention over a
/// pruned layer then reads the kept positions, with their true rope positions (docs/PDTRIM.md).
public struct KVPruning: Sendable, Equatable, Codable {
    public var layers: Set<Int>
    public var first: Int
    public var last: Int
    public init(layers: Set<Int>, first: Int, last: Int) {
        self.layers = layers
        self.first = first
        self.last = last
    }
}
