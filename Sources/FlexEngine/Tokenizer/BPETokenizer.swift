import FlexFormat

/// GGUF `gpt2` byte-level BPE: special-token split → pre-tokenizer → byte-level map → BPE merges.
///
/// Matches llama.cpp's `llm_tokenizer_bpe` (tests compare ids on the fixture cases): the lowest
/// ranked adjacent pair is merged first, leftmost on ties; a merged symbol missing from the
/// vocabulary falls back to its byte tokens. The token table, its lookup and the special-token
/// split are the ``Vocabulary`` it shares with ``SentencePieceTokenizer``.
public struct BPETokenizer: Tokenizer {
    let vocabulary: Vocabulary
    let ranks: [String: Int32]
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
        var ranks: [String: Int32] = [:]
        ranks.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() where ranks[m] == nil { ranks[m] = Int32(i) }
        self.ranks = ranks
        self.preTokenizer = preTokenizer
        bosToken = bos
        eosToken = eos
        addsBOS = addBOS
        endOfGenerationTokens = vocabulary.endOfGeneration(eos: eos, eot: eot)
    }

    public func tokenID(_ text: String) -> Int32? { vocabulary.id(of: text.utf8) }

    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var out: [Int32] = []
        if addSpecial, addsBOS, let bos = bosToken { out.append(bos) }
        let utf8 = text.utf8
        for fragment in vocabulary.partition(Array(utf8), parseSpecial: parseSpecial) {
            switch fragment {
            case .special(let id): out.append(id)
            case .text(let r):
                // Fragment bounds lie between characters (a special token is whole UTF-8).
                let s = text[utf8.index(utf8.startIndex, offsetBy: r.lowerBound)..<utf8.index(utf8.startIndex, offsetBy: r.upperBound)]
                for word in preTokenizer.split(s) { bpe(word, into: &out) }
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

    /// Byte-level BPE of one pre-tokenized word.
    func bpe(_ word: Substring, into out: inout [Int32]) {
        var symbols = ByteLevel.encode(word)
        if symbols.isEmpty { return }
        while symbols.count > 1 {
            var best = Int32.max, at = -1
            for i in 0..<symbols.count - 1 {
                if let r = ranks[symbols[i] + " " + symbols[i + 1]], r < best { best = r; at = i }
            }
            if at < 0 { break }
            symbols[at] += symbols[at + 1]
            symbols.remove(at: at + 1)
        }
        for s in symbols {
            if let id = vocabulary.id(of: s.utf8) {
                out.append(id)
            } else {
                // Not in the vocabulary: fall back to the single-byte tokens it is made of.
                for ch in s.unicodeScalars { if let id = vocabulary.id(of: String(ch).utf8) { out.append(id) } }
            }
        }
    }
}
