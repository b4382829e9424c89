import FlexFormat

/// Errors loading a tokenizer from GGUF metadata.
public enum TokenizerError: Error, CustomStringConvertible, Sendable {
    case unsupportedModel(String)
    case unsupportedPreTokenizer(String)
    case missing(String)

    public var description: String {
        switch self {
        case .unsupportedModel(let m): return "tokenizer model '\(m)' is not supported (FlexRun reads 'gpt2' byte-level BPE)"
        case .unsupportedPreTokenizer(let p): return "pre-tokenizer '\(p)' is not supported (supported: smollm, gpt2, llama3/llama-bpe, qwen2)"
        case .missing(let k): return "tokenizer metadata '\(k)' is missing or malformed"
        }
    }
}

/// GGUF `gpt2` byte-level BPE: special-token split → pre-tokenizer → byte-level map → BPE merges.
///
/// Matches llama.cpp's `llm_tokenizer_bpe` (tests compare ids on the fixture cases): the lowest
/// ranked adjacent pair is merged first, leftmost on ties; a merged symbol missing from the
/// vocabulary falls back to its byte tokens.
public struct BPETokenizer: Tokenizer {
    let tokens: [String]
    let kinds: [TokenKind]
    let idOf: [String: Int32]
    let ranks: [String: Int32]
    /// Control/user-defined tokens matched verbatim in text, longest first.
    let specials: [(text: String, id: Int32)]
    /// Bytes of every token, decoded once into one flat buffer (`pieceStart[t]..<pieceStart[t+1]`):
    /// streaming a token then costs no allocation, and loading costs two arrays, not 49k.
    let pieceBytesFlat: [UInt8]
    let pieceStart: [Int32]
    public let preTokenizer: PreTokenizer
    public let bosToken: Int32?
    public let eosToken: Int32?
    public let addsBOS: Bool
    public let endOfGenerationTokens: Set<Int32>

    public var vocabularySize: Int { tokens.count }

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
        self.tokens = tokens
        self.kinds = kinds
        var idOf: [String: Int32] = [:]
        idOf.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where idOf[t] == nil { idOf[t] = Int32(i) }
        self.idOf = idOf
        var ranks: [String: Int32] = [:]
        ranks.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() where ranks[m] == nil { ranks[m] = Int32(i) }
        self.ranks = ranks
        self.specials = tokens.indices
            .filter { [.control, .userDefined, .unknown].contains(kinds[$0]) && !tokens[$0].isEmpty }
            .map { (tokens[$0], Int32($0)) }
            .sorted { $0.text.utf8.count > $1.text.utf8.count }
        self.preTokenizer = preTokenizer
        var flat: [UInt8] = []
        var starts: [Int32] = [0]
        flat.reserveCapacity(tokens.count * 8)
        starts.reserveCapacity(tokens.count + 1)
        for i in tokens.indices {
            Self.decodePiece(tokens[i], kinds[i], into: &flat)
            starts.append(Int32(flat.count))
        }
        self.pieceBytesFlat = flat
        self.pieceStart = starts
        bosToken = bos
        eosToken = eos
        addsBOS = addBOS
        // End of generation: EOS, EOT, and the usual chat terminators when the vocabulary has them
        // (llama.cpp does the same: `<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `<|endoftext|>`).
        var eog = Set([eos, eot].compactMap { $0 })
        for name in ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "<|end|>", "</s>"] {
            if let id = idOf[name], kinds[Int(id)] == .control { eog.insert(id) }
        }
        endOfGenerationTokens = eog
    }

    public func tokenID(_ text: String) -> Int32? { idOf[text] }

    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var out: [Int32] = []
        if addSpecial, addsBOS, let bos = bosToken { out.append(bos) }
        for fragment in partition(text, parseSpecial: parseSpecial) {
            switch fragment {
            case .special(let id): out.append(id)
            case .text(let s):
                for word in preTokenizer.split(s) { bpe(word, into: &out) }
            }
        }
        return out
    }

    public func pieceBytes(_ token: Int32) -> ArraySlice<UInt8> {
        guard token >= 0, Int(token) + 1 < pieceStart.count else { return [] }
        return pieceBytesFlat[Int(pieceStart[Int(token)])..<Int(pieceStart[Int(token) + 1])]
    }

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

    enum Fragment { case text(Substring), special(Int32) }

    /// Splits raw text at every occurrence of a special token, longest tokens first
    /// (llama.cpp `tokenizer_st_partition`).
    func partition(_ text: String, parseSpecial: Bool) -> [Fragment] {
        var fragments: [Fragment] = [.text(Substring(text))]
        guard parseSpecial else { return fragments }
        for (special, id) in specials {
            var next: [Fragment] = []
            for f in fragments {
                guard case .text(var rest) = f, rest.range(of: special) != nil else { next.append(f); continue }
                while let r = rest.range(of: special) {
                    if r.lowerBound > rest.startIndex { next.append(.text(Substring(rest.unicodeScalars[rest.startIndex..<r.lowerBound]))) }
                    next.append(.special(id))
                    rest = Substring(rest.unicodeScalars[r.upperBound...])
                }
                if !rest.isEmpty { next.append(.text(rest)) }
            }
            fragments = next
        }
        return fragments
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
            if let id = idOf[s] {
                out.append(id)
            } else {
                // Not in the vocabulary: fall back to the single-byte tokens it is made of.
                for ch in s.unicodeScalars { if let id = idOf[String(ch)] { out.append(id) } }
            }
        }
    }
}

extension Substring {
    /// First occurrence of `needle`, compared scalar by scalar (not by grapheme), so a special
    /// token is found even when the text after it starts with a combining mark, as in llama.cpp.
    func range(of needle: String) -> Range<Substring.Index>? {
        let n = Array(needle.unicodeScalars)
        guard let first = n.first else { return nil }
        let u = unicodeScalars
        var i = u.startIndex
        while i < u.endIndex {
            if u[i] == first {
                var j = i, k = 0
                while k < n.count, j < u.endIndex, u[j] == n[k] { j = u.index(after: j); k += 1 }
                if k == n.count { return i..<j }
            }
            i = u.index(after: i)
        }
        return nil
    }
}
