import FlexFormat

/// GGUF `gpt2` byte-level BPE: special-token split → pre-tokenizer → byte-level map → BPE merges.
///
/// Matches llama.cpp's `llm_tokenizer_bpe` (tests compare ids on the fixture cases): the lowest
/// ranked adjacent pair is merged first, leftmost on ties; a merged symbol missing from the
/// vocabulary falls back to its byte tokens. The token table, its lookup and the special-token
/// split are the `Vocabulary` it shares with ``SentencePieceTokenizer``.
///
/// Symbols are integers and the merges a table keyed by a pair of them, so a merge step is one
/// hash of 8 bytes, and the candidate pairs wait in a `MergeQueue`: a word of n bytes costs
/// O(n log n). (The first version rescanned every adjacent pair per merge, joining their strings
/// for a dictionary lookup: O(n²) string allocations, 300–2,000 fuzz inputs a second, and
/// seconds for one long word.)
public struct BPETokenizer: Tokenizer {
    let vocabulary: Vocabulary
    let symbols: SymbolTable
    public let preTokenizer: PreTokenizer
    public let bosToken: Int32?
    public let eosToken: Int32?
    public let addsBOS: Bool
    public let endOfGenerationTokens: Set<Int32>

    public var vocabularySize: Int { vocabulary.count }

    public init(gguf: GGUFFile) throws(TokenizerError) {
        let model = gguf.string("tokenizer.ggml.model") ?? "(none)"
        guard model == "gpt2" else { throw .unsupportedModel(model) }
        guard let tokens = gguf.stringArray("tokenizer.ggml.tokens") else { throw .missing("tokenizer.ggml.tokens") }
        guard let merges = gguf.stringArray("tokenizer.ggml.merges") else { throw .missing("tokenizer.ggml.merges") }
        let pre = gguf.string("tokenizer.ggml.pre")
            ?? ArchitectureTable.all[gguf.string("general.architecture") ?? ""]?.defaultPreTokenizer ?? "default"
        guard let preTokenizer = PreTokenizer(ggufName: pre) else { throw .unsupportedPreTokenizer(pre) }
        let types = gguf.intArray("tokenizer.ggml.token_type") ?? []
        let kinds = tokens.indices.map { i in i < types.count ? TokenKind(rawValue: types[i]) ?? .normal : .normal }
        func tokenKey(_ k: String) -> Int32? {
            guard let v = gguf.int(k), v >= 0, v < tokens.count else { return nil }
            return Int32(v)
        }
        let bos = tokenKey("tokenizer.ggml.bos_token_id")
        let eos = tokenKey("tokenizer.ggml.eos_token_id")
        try self.init(tokens: tokens, kinds: kinds, merges: merges, preTokenizer: preTokenizer, bos: bos, eos: eos,
                      addBOS: gguf.bool("tokenizer.ggml.add_bos_token") ?? false,
                      eot: tokenKey("tokenizer.ggml.eot_token_id"))
    }

    public init(tokens: [String], kinds: [TokenKind], merges: [String], preTokenizer: PreTokenizer,
                bos: Int32?, eos: Int32?, addBOS: Bool, eot: Int32? = nil) throws(TokenizerError) {
        vocabulary = Vocabulary(tokens: tokens, kinds: kinds, piece: Self.decodePiece)
        symbols = SymbolTable(vocabulary: vocabulary, merges: merges)
        self.preTokenizer = preTokenizer
        bosToken = bos
        eosToken = eos
        addsBOS = addBOS
        endOfGenerationTokens = vocabulary.endOfGeneration(eos: eos, eot: eot)
    }

    public func tokenID(_ text: String) -> Int32? { vocabulary.id(of: text.utf8) }

    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var out: [Int32] = []
        var merger = Merger()
        if addSpecial, addsBOS, let bos = bosToken { out.append(bos) }
        let utf8 = text.utf8
        for fragment in vocabulary.partition(Array(utf8), parseSpecial: parseSpecial) {
            switch fragment {
            case .special(let id): out.append(id)
            case .text(let r):
                // Fragment bounds lie between characters (a special token is whole UTF-8).
                let s = text[utf8.index(utf8.startIndex, offsetBy: r.lowerBound)..<utf8.index(utf8.startIndex, offsetBy: r.upperBound)]
                for word in preTokenizer.split(s) { merger.run(word, symbols, into: &out) }
            }
        }
        return out
    }

    public func pieceBytes(_ token: Int32) -> ArraySlice<UInt8> { vocabulary.pieceBytes(token) }

    static func decodePiece(_ text: String, _ kind: TokenKind, into bytes: inout [UInt8]) {
        switch kind {
        case .control, .userDefined, .unknown: bytes.append(contentsOf: text.utf8)
        case .byte:
            // <0xAB> tokens (SentencePiece-style byte fallback) stand for one raw byte.
            if text.hasPrefix("<0x"), text.hasSuffix(">"), let b = UInt8(text.dropFirst(3).dropLast(), radix: 16) {
                bytes.append(b)
            } else {
                bytes.append(contentsOf: text.utf8)
            }
        default:
            ByteLevel.decode(text, into: &bytes)
        }
    }
}

extension BPETokenizer {
    /// Every string BPE can meet as a symbol, as an integer, and the merges between them.
    ///
    /// A vocabulary token's symbol is its token id; strings that are no token (a byte the
    /// vocabulary lacks, a merge whose result it lacks) get ids from `vocabulary.count` on, with
    /// their characters' tokens for the fallback at the end.
    struct SymbolTable: Sendable {
        struct Merge: Sendable {
            /// The merge's line in `tokenizer.ggml.merges`: lower merges first.
            var rank: Int32
            var result: Int32
        }
        let vocabularyCount: Int
        /// By byte value: the symbol of its byte-level character.
        let byteSymbol: [Int32]
        /// By (left << 32 | right) symbol pair.
        let merges: [UInt64: Merge]
        /// By extra symbol: the tokens of its characters that the vocabulary has.
        let fallback: [[Int32]]

        init(vocabulary: Vocabulary, merges lines: [String]) {
            vocabularyCount = vocabulary.count
            var extraIDs: [String: Int32] = [:], extra: [String] = []
            func intern(_ s: String) -> Int32 {
                if let id = vocabulary.id(of: s.utf8) { return id }
                if let id = extraIDs[s] { return id }
                let id = Int32(vocabulary.count + extra.count)
                extraIDs[s] = id
                extra.append(s)
                return id
            }
            byteSymbol = ByteLevel.byteToScalar.map { intern(String(Character($0))) }
            var merges: [UInt64: Merge] = [:]
            merges.reserveCapacity(lines.count)
            for (rank, line) in lines.enumerated() {
                // A line is "left right". Byte-level symbols hold no space, but every split is
                // registered so that odd vocabularies merge as the string form "a" + " " + "b" did.
                let u = Array(line.utf8)
                for p in u.indices where u[p] == 0x20 {
                    let left = String(decoding: u[..<p], as: UTF8.self), right = String(decoding: u[(p + 1)...], as: UTF8.self)
                    let key = UInt64(UInt32(bitPattern: intern(left))) << 32 | UInt64(UInt32(bitPattern: intern(right)))
                    if merges[key] == nil { merges[key] = Merge(rank: Int32(rank), result: intern(left + right)) }
                }
            }
            self.merges = merges
            fallback = extra.map { s in s.unicodeScalars.compactMap { vocabulary.id(of: String($0).utf8) } }
        }

        func merge(_ left: Int32, _ right: Int32) -> Merge? {
            merges[UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))]
        }
    }

    struct Pair: MergeCandidate {
        var rank: Int32
        /// Symbol positions in the word; `leftSymbol`/`rightSymbol` are what they held when queued.
        var left: Int32, right: Int32
        var leftSymbol: Int32, rightSymbol: Int32
        var result: Int32

        /// Pops first: the lower rank, then the leftmost (llama.cpp `llm_bigram_bpe::comparator`).
        @inline(__always)
        func precedes(_ o: Pair) -> Bool { rank < o.rank || (rank == o.rank && left < o.left) }
    }

    /// One word's merge state: a doubly linked list of symbols; a symbol merged into its left
    /// neighbour becomes -1.
    struct Merger {
        var symbol: [Int32] = [], prev: [Int32] = [], next: [Int32] = []
        var queue = MergeQueue<Pair>()

        mutating func run(_ word: Substring, _ table: SymbolTable, into out: inout [Int32]) {
            symbol.removeAll(keepingCapacity: true)
            prev.removeAll(keepingCapacity: true)
            next.removeAll(keepingCapacity: true)
            queue.removeAll()
            for b in word.utf8 {
                prev.append(Int32(symbol.count) - 1)
                next.append(Int32(symbol.count) + 1)
                symbol.append(table.byteSymbol[Int(b)])
            }
            guard !symbol.isEmpty else { return }
            next[next.count - 1] = -1
            for i in 1..<symbol.count { tryPair(Int32(i - 1), Int32(i), table) }
            while let p = queue.pop() {
                let l = Int(p.left), r = Int(p.right)
                // Stale: a side has merged with something else since the pair was queued.
                guard symbol[l] == p.leftSymbol, symbol[r] == p.rightSymbol, next[l] == p.right else { continue }
                symbol[l] = p.result
                symbol[r] = -1
                next[l] = next[r]
                if next[r] >= 0 { prev[Int(next[r])] = p.left }
                tryPair(prev[l], p.left, table)
                tryPair(p.left, next[l], table)
            }
            var i: Int32 = 0
            while i >= 0 {
                let s = symbol[Int(i)]
                if Int(s) < table.vocabularyCount {
                    out.append(s)
                } else {
                    // Not in the vocabulary: fall back to the single-character tokens it is made of.
                    out.append(contentsOf: table.fallback[Int(s) - table.vocabularyCount])
                }
                i = next[Int(i)]
            }
        }

        mutating func tryPair(_ left: Int32, _ right: Int32, _ table: SymbolTable) {
            guard left >= 0, right >= 0, let m = table.merge(symbol[Int(left)], symbol[Int(right)]) else { return }
            queue.push(Pair(rank: m.rank, left: left, right: right, leftSymbol: symbol[Int(left)],
                            rightSymbol: symbol[Int(right)], result: m.result))
        }
    }
}
