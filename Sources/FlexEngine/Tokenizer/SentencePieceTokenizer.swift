import FlexFormat

/// GGUF `llama` SentencePiece BPE (Gemma, Llama 2, Mistral): special-token split → spaces
/// become `▁` → characters merged by score → byte fallback.
///
/// Port of llama.cpp's `llm_tokenizer_spm` (tests compare ids on the fixture cases). There is
/// no pre-tokenizer: each raw-text fragment between special tokens starts as one symbol per
/// UTF-8 character, and the adjacent pair whose concatenation is a vocabulary token with the
/// highest score merges first (leftmost on ties), until no adjacent pair forms a token. A symbol
/// left over that is no token is emitted as its `<0xAB>` byte tokens. The pairs wait in a
/// priority queue, as in llama.cpp, so a fragment costs O(n log n) hash lookups.
public struct SentencePieceTokenizer: Tokenizer {
    let vocabulary: Vocabulary
    /// By token: the merge priority (SentencePiece's log-probability; higher merges first).
    let scores: [Float]
    /// By byte value: its `<0xAB>` token, else the token whose text is that one byte, else -1
    /// (llama.cpp `byte_to_token`).
    let byteTokens: [Int32]
    public let bosToken: Int32?
    public let eosToken: Int32?
    public let unknownToken: Int32?
    public let addsBOS: Bool
    /// Whether `encode` with `addSpecial` appends EOS (`tokenizer.ggml.add_eos_token`).
    public let addsEOS: Bool
    /// Whether text at the start, or right after a special token, gets a leading space
    /// (`tokenizer.ggml.add_space_prefix`; llama.cpp assumes true when the key is absent).
    public let addsSpacePrefix: Bool
    public let endOfGenerationTokens: Set<Int32>

    public var vocabularySize: Int { vocabulary.count }

    public init(gguf: GGUFFile) throws(TokenizerError) {
        let model = gguf.string("tokenizer.ggml.model") ?? "(none)"
        guard model == "llama" else { throw .unsupportedModel(model) }
        guard let tokens = gguf.stringArray("tokenizer.ggml.tokens") else { throw .missing("tokenizer.ggml.tokens") }
        // Scores are float32, or int32 in some conversions; without them every merge ties (llama.cpp: 0).
        let scores = gguf.floatArray("tokenizer.ggml.scores")?.map(Float.init)
            ?? gguf.intArray("tokenizer.ggml.scores")?.map(Float.init) ?? [Float](repeating: 0, count: tokens.count)
        guard scores.count >= tokens.count else { throw .missing("tokenizer.ggml.scores") }
        let types = gguf.intArray("tokenizer.ggml.token_type") ?? [Int64](repeating: TokenKind.normal.rawValue, count: tokens.count)
        guard types.count >= tokens.count else { throw .missing("tokenizer.ggml.token_type") }
        // llama.cpp's SentencePiece defaults: BOS 1, EOS 2, UNK 0, unless the file says otherwise.
        func tokenKey(_ k: String, default d: Int) -> Int32? {
            if let v = gguf.int(k), v >= 0, v < tokens.count { return Int32(v) }
            return d < tokens.count ? Int32(d) : nil
        }
        try self.init(tokens: tokens, scores: scores,
                      kinds: types.map { TokenKind(rawValue: $0) ?? .undefined },
                      bos: tokenKey("tokenizer.ggml.bos_token_id", default: 1),
                      eos: tokenKey("tokenizer.ggml.eos_token_id", default: 2),
                      unknown: tokenKey("tokenizer.ggml.unknown_token_id", default: 0),
                      addBOS: gguf.bool("tokenizer.ggml.add_bos_token") ?? true,
                      addEOS: gguf.bool("tokenizer.ggml.add_eos_token") ?? false,
                      addSpacePrefix: gguf.bool("tokenizer.ggml.add_space_prefix") ?? true,
                      eot: gguf.int("tokenizer.ggml.eot_token_id").flatMap { $0 >= 0 && $0 < tokens.count ? Int32($0) : nil })
    }

    public init(tokens: [String], scores: [Float], kinds: [TokenKind], bos: Int32?, eos: Int32?, unknown: Int32?,
                addBOS: Bool, addEOS: Bool = false, addSpacePrefix: Bool, eot: Int32? = nil) throws(TokenizerError) {
        if addBOS && bos == nil { throw .missing("tokenizer.ggml.bos_token_id") }
        if addEOS && eos == nil { throw .missing("tokenizer.ggml.eos_token_id") }
        vocabulary = Vocabulary(tokens: tokens, kinds: kinds, piece: Self.decodePiece)
        self.scores = scores.count >= tokens.count ? Array(scores.prefix(tokens.count))
            : scores + [Float](repeating: 0, count: tokens.count - scores.count)
        var byteTokens = [Int32](repeating: -1, count: 256)
        let hex = Array("0123456789ABCDEF".utf8)
        for b in 0..<256 {
            let name: [UInt8] = Array("<0x".utf8) + [hex[b >> 4], hex[b & 15], UInt8(ascii: ">")]
            byteTokens[b] = vocabulary.id(of: name) ?? vocabulary.id(of: [UInt8(b)]) ?? -1
        }
        self.byteTokens = byteTokens
        bosToken = bos
        eosToken = eos
        unknownToken = unknown
        addsBOS = addBOS
        addsEOS = addEOS
        addsSpacePrefix = addSpacePrefix
        endOfGenerationTokens = vocabulary.endOfGeneration(eos: eos, eot: eot)
    }

    public func tokenID(_ text: String) -> Int32? { vocabulary.id(of: text.utf8) }

    public func pieceBytes(_ token: Int32) -> ArraySlice<UInt8> { vocabulary.pieceBytes(token) }

    /// Port of the SentencePiece branch of llama.cpp's `llama_vocab::impl::tokenize`.
    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var out: [Int32] = []
        if addSpecial, addsBOS, let bos = bosToken { out.append(bos) }
        let utf8 = Array(text.utf8)
        var merger = Merger()
        var afterSpecial = true
        for fragment in vocabulary.partition(utf8, parseSpecial: parseSpecial) {
            switch fragment {
            case .special(let id):
                out.append(id)
                afterSpecial = true
            case .text(let range):
                merger.text.removeAll(keepingCapacity: true)
                if addsSpacePrefix && afterSpecial { merger.text.append(contentsOf: Self.spaceMark) }
                for b in utf8[range] {
                    if b == 0x20 { merger.text.append(contentsOf: Self.spaceMark) } else { merger.text.append(b) }
                }
                merger.run(self, into: &out)
                afterSpecial = false
            }
        }
        if addSpecial, addsEOS, let eos = eosToken { out.append(eos) }
        return out
    }

    /// As the protocol's, less the one leading space that `add_space_prefix` put before the text
    /// (llama.cpp `detokenize`), so that decoding what was encoded gives the text back.
    public func decode(_ tokens: [Int32]) -> String {
        var bytes: [UInt8] = []
        for t in tokens { bytes.append(contentsOf: pieceBytes(t)) }
        if addsSpacePrefix, let first = tokens.first, pieceBytes(first).first == 0x20 { bytes.removeFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// U+2581 "▁", SentencePiece's visible space.
    static let spaceMark: [UInt8] = [0xE2, 0x96, 0x81]

    /// Bytes a token stands for, as llama.cpp's `token_to_piece` for SentencePiece: control,
    /// user-defined and unknown tokens as their text, normal ones with `▁` as a space, byte
    /// tokens as that byte, unused and undefined ones as nothing.
    static func decodePiece(_ text: String, _ kind: TokenKind, into bytes: inout [UInt8]) {
        switch kind {
        case .control, .userDefined, .unknown:
            bytes.append(contentsOf: text.utf8)
        case .normal:
            let u = Array(text.utf8)
            var i = 0
            while i < u.count {
                if i + 2 < u.count, u[i] == 0xE2, u[i + 1] == 0x96, u[i + 2] == 0x81 {
                    bytes.append(0x20)
                    i += 3
                } else {
                    bytes.append(u[i])
                    i += 1
                }
            }
        case .byte:
            if text.hasPrefix("<0x"), text.hasSuffix(">"), let b = UInt8(text.dropFirst(3).dropLast(), radix: 16) {
                bytes.append(b)
            }
        case .unused, .undefined:
            break
        }
    }

    /// Length of the UTF-8 sequence a lead byte starts (llama.cpp `unicode_len_utf8`: a stray
    /// continuation byte counts as one).
    @inline(__always)
    static func sequenceLength(_ lead: UInt8) -> Int {
        switch lead >> 4 {
        case 0xC, 0xD: return 2
        case 0xE: return 3
        case 0xF: return 4
        default: return 1
        }
    }
}

extension SentencePieceTokenizer {
    /// One fragment's merge state (llama.cpp `llm_tokenizer_spm_session`), its buffers reused
    /// from fragment to fragment.
    struct Merger {
        /// The escaped fragment's UTF-8; symbols are ranges of it.
        var text: [UInt8] = []
        /// A doubly linked list of symbols over `text`; a symbol merged into its left neighbour has length 0.
        var start: [Int32] = [], length: [Int32] = [], prev: [Int32] = [], next: [Int32] = []
        var queue = MergeQueue<Pair>()

        mutating func run(_ tok: SentencePieceTokenizer, into out: inout [Int32]) {
            let n = text.count
            guard n > 0 else { return }
            start.removeAll(keepingCapacity: true)
            length.removeAll(keepingCapacity: true)
            prev.removeAll(keepingCapacity: true)
            next.removeAll(keepingCapacity: true)
            var offset = 0
            while offset < n {
                let len = min(SentencePieceTokenizer.sequenceLength(text[offset]), n - offset)
                prev.append(Int32(start.count) - 1)
                start.append(Int32(offset))
                length.append(Int32(len))
                offset += len
                next.append(offset == n ? -1 : Int32(start.count))
            }
            queue.removeAll()
            for i in 1..<start.count { tryPair(Int32(i - 1), Int32(i), tok) }
            while let pair = queue.pop() {
                let l = Int(pair.left), r = Int(pair.right)
                // Stale: one side has merged with something else since the pair was queued.
                if length[l] == 0 || length[r] == 0 || length[l] + length[r] != pair.size { continue }
                length[l] += length[r]
                length[r] = 0
                next[l] = next[r]
                if next[r] >= 0 { prev[Int(next[r])] = pair.left }
                tryPair(prev[l], pair.left, tok)
                tryPair(pair.left, next[l], tok)
            }
            var i: Int32 = 0
            while i >= 0 {
                let a = Int(start[Int(i)]), b = a + Int(length[Int(i)])
                if let id = tok.vocabulary.id(of: text[a..<b]) {
                    out.append(id)
                } else {
                    // Every merge made a token, so this is one character the vocabulary lacks.
                    for byte in text[a..<b] {
                        let id = tok.byteTokens[Int(byte)]
                        if id >= 0 { out.append(id) } else if let unk = tok.unknownToken { out.append(unk) }
                    }
                }
                i = next[Int(i)]
            }
        }

        /// Queues the pair `left`+`right` when their concatenation is a token.
        mutating func tryPair(_ left: Int32, _ right: Int32, _ tok: SentencePieceTokenizer) {
            guard left >= 0, right >= 0 else { return }
            let a = Int(start[Int(left)]), size = length[Int(left)] + length[Int(right)]
            guard let id = tok.vocabulary.id(of: text[a..<a + Int(size)]) else { return }
            queue.push(Pair(score: tok.scores[Int(id)], left: left, right: right, size: size))
        }
    }

    struct Pair: MergeCandidate {
        var score: Float
        var left: Int32
        var right: Int32
        /// Byte length of the merged text when queued: a pair whose sides have changed since is stale.
        var size: Int32

        /// Pops first: the higher score, then the leftmost (llama.cpp `llm_bigram_spm::comparator`).
        @inline(__always)
        func precedes(_ o: Pair) -> Bool { score > o.score || (score == o.score && left < o.left) }
    }
}
