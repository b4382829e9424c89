/// The token table every tokenizer reads: each token's kind and bytes, an exact text → id
/// lookup, and the split of raw text at special tokens.
///
/// Built once per model from the GGUF arrays. Everything is flat: the texts and the decoded
/// pieces are one byte array each with offsets, and the lookup is one open-addressed table of
/// ids. A 262k-token vocabulary (Gemma) then loads into a handful of arrays, not 262k
/// dictionary entries and strings.
struct Vocabulary: Sendable {
    let kinds: [TokenKind]
    /// UTF-8 of every token's vocabulary text: token `t` is `textBytes[textStart[t]..<textStart[t + 1]]`.
    let textBytes: [UInt8]
    let textStart: [Int32]
    /// Token ids by text hash, linear probing, -1 empty; a power of two at most half full.
    let slots: [Int32]
    /// The bytes each token stands for, laid out as the texts: streaming a token copies nothing.
    let pieceBytesFlat: [UInt8]
    let pieceStart: [Int32]
    let specials: SpecialTokens

    var count: Int { kinds.count }

    /// `piece` appends the bytes a token stands for; it is the one thing the tokenizers
    /// disagree on (GPT-2's byte alphabet, SentencePiece's `▁` and `<0xAB>`).
    init(tokens: [String], kinds: [TokenKind], piece: (String, TokenKind, inout [UInt8]) -> Void) {
        // Tokens past the end of `tokenizer.ggml.token_type` are normal, as llama.cpp reads them.
        let kinds = kinds.count >= tokens.count ? Array(kinds.prefix(tokens.count))
            : kinds + [TokenKind](repeating: .normal, count: tokens.count - kinds.count)
        self.kinds = kinds
        var text: [UInt8] = [], starts: [Int32] = [0]
        var flat: [UInt8] = [], pieceStarts: [Int32] = [0]
        text.reserveCapacity(tokens.count * 8)
        starts.reserveCapacity(tokens.count + 1)
        flat.reserveCapacity(tokens.count * 8)
        pieceStarts.reserveCapacity(tokens.count + 1)
        for (t, kind) in zip(tokens, kinds) {
            text.append(contentsOf: t.utf8)
            starts.append(Int32(text.count))
            piece(t, kind, &flat)
            pieceStarts.append(Int32(flat.count))
        }
        textBytes = text
        textStart = starts
        pieceBytesFlat = flat
        pieceStart = pieceStarts

        var size = 16
        while size < 2 * tokens.count { size *= 2 }
        var slots = [Int32](repeating: -1, count: size)
        for t in tokens.indices {
            let bytes = text[Int(starts[t])..<Int(starts[t + 1])]
            var i = Self.hash(bytes) & (size - 1)
            // A duplicate text keeps its first id, as a dictionary filled in order would.
            while slots[i] >= 0 && !Self.equal(text, starts, slots[i], bytes) { i = (i + 1) & (size - 1) }
            if slots[i] < 0 { slots[i] = Int32(t) }
        }
        self.slots = slots
        specials = SpecialTokens(text: text, starts: starts, kinds: kinds)
    }

    /// FNV-1a over the bytes, folded so the low bits (the slot) see the high ones.
    @inline(__always)
    static func hash(_ bytes: some Sequence<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0100_0000_01b3 }
        return Int(truncatingIfNeeded: h ^ (h >> 32))
    }

    @inline(__always)
    static func equal(_ text: [UInt8], _ starts: [Int32], _ token: Int32, _ bytes: some Collection<UInt8>) -> Bool {
        let a = Int(starts[Int(token)]), b = Int(starts[Int(token) + 1])
        return b - a == bytes.count && text[a..<b].elementsEqual(bytes)
    }

    /// The token whose vocabulary text is exactly `bytes`, of any kind.
    @inline(__always)
    func id(of bytes: some Collection<UInt8>) -> Int32? {
        let mask = slots.count - 1
        var i = Self.hash(bytes) & mask
        while true {
            let t = slots[i]
            if t < 0 { return nil }
            if Self.equal(textBytes, textStart, t, bytes) { return t }
            i = (i + 1) & mask
        }
    }

    func pieceBytes(_ token: Int32) -> ArraySlice<UInt8> {
        guard token >= 0, Int(token) + 1 < pieceStart.count else { return [] }
        return pieceBytesFlat[Int(pieceStart[Int(token)])..<Int(pieceStart[Int(token) + 1])]
    }

    /// Tokens that end generation: EOS, EOT, and the usual chat terminators when the vocabulary
    /// has them as control tokens (llama.cpp marks `<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`,
    /// `<|endoftext|>` … by name the same way).
    func endOfGeneration(eos: Int32?, eot: Int32?) -> Set<Int32> {
        var eog = Set([eos, eot].compactMap { $0 })
        for name in ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "<|end|>", "</s>"] {
            if let id = id(of: name.utf8), kinds[Int(id)] == .control { eog.insert(id) }
        }
        return eog
    }

    enum Fragment: Equatable { case text(Range<Int>), special(Int32) }

    /// Splits UTF-8 text into raw-text byte ranges and special tokens found verbatim in it.
    ///
    /// Port of llama.cpp's `tokenizer_st_partition`. Its rule: special tokens are taken one at a
    /// time, longest text first, and each splits every remaining text fragment at its
    /// leftmost non-overlapping occurrences. User-defined tokens are always matched; control and
    /// unknown ones only with `parseSpecial`. llama.cpp scans the text once per special token,
    /// which for Gemma's 6,400 specials is 6,400 passes; here one pass over a byte trie finds
    /// every occurrence of every special, and the occurrences are then accepted in llama.cpp's
    /// order (by token rank, then position) unless they overlap one accepted before. That is the
    /// same result: a token's occurrence is found by llama.cpp exactly when it lies in text that
    /// no longer-ranked token claimed and starts after the previous occurrence it took.
    func partition(_ utf8: [UInt8], parseSpecial: Bool) -> [Fragment] {
        let n = utf8.count
        guard n > 0 else { return [] }
        var found: [(rank: Int32, start: Int32)] = []
        for i in 0..<n where specials.startsSpecial[Int(utf8[i])] {
            var node = 0, j = i
            while j < n, let child = specials.edges[node << 8 | Int(utf8[j])] {
                node = Int(child)
                j += 1
                let rank = specials.terminal[node]
                if rank >= 0, parseSpecial || specials.alwaysParsed[Int(rank)] { found.append((rank, Int32(i))) }
            }
        }
        guard !found.isEmpty else { return [.text(0..<n)] }
        found.sort { $0.rank != $1.rank ? $0.rank < $1.rank : $0.start < $1.start }
        var claimed = [Bool](repeating: false, count: n)
        var accepted: [(start: Int, end: Int, id: Int32)] = []
        for f in found {
            let id = specials.ordered[Int(f.rank)]
            let start = Int(f.start), end = start + Int(textStart[Int(id) + 1] - textStart[Int(id)])
            if claimed[start..<end].contains(true) { continue }
            for k in start..<end { claimed[k] = true }
            accepted.append((start, end, id))
        }
        accepted.sort { $0.start < $1.start }
        var fragments: [Fragment] = []
        var pos = 0
        for a in accepted {
            if a.start > pos { fragments.append(.text(pos..<a.start)) }
            fragments.append(.special(a.id))
            pos = a.end
        }
        if pos < n { fragments.append(.text(pos..<n)) }
        return fragments
    }
}

/// The control, user-defined and unknown tokens, as a byte trie for ``Vocabulary/partition(_:parseSpecial:)``.
struct SpecialTokens: Sendable {
    /// Token ids by rank: longest text first, lower id first among equals (llama.cpp sorts by
    /// length only, with an unstable sort; equal-length specials overlapping in text is the only
    /// case where the tie order could show).
    let ordered: [Int32]
    /// By rank: user-defined tokens, matched even without `parseSpecial`.
    let alwaysParsed: [Bool]
    /// Trie edges, `node << 8 | byte` → child node; node 0 is the root.
    let edges: [Int: Int32]
    /// By node: the rank of the token whose text ends there, or -1.
    let terminal: [Int32]
    /// Bytes some special token starts with: the scan skips every other position at once.
    let startsSpecial: [Bool]

    init(text: [UInt8], starts: [Int32], kinds: [TokenKind]) {
        func length(_ t: Int) -> Int32 { starts[t + 1] - starts[t] }
        let ordered = kinds.indices
            .filter { [.control, .userDefined, .unknown].contains(kinds[$0]) && length($0) > 0 }
            .sorted { length($0) != length($1) ? length($0) > length($1) : $0 < $1 }
        self.ordered = ordered.map { Int32($0) }
        alwaysParsed = ordered.map { kinds[$0] == .userDefined }
        var edges: [Int: Int32] = [:]
        var terminal: [Int32] = [-1]
        var startsSpecial = [Bool](repeating: false, count: 256)
        for (rank, t) in ordered.enumerated() {
            var node = 0
            for b in text[Int(starts[t])..<Int(starts[t + 1])] {
                if let child = edges[node << 8 | Int(b)] {
                    node = Int(child)
                } else {
                    terminal.append(-1)
                    edges[node << 8 | Int(b)] = Int32(terminal.count - 1)
                    node = terminal.count - 1
                }
            }
            // Two specials with one text: the first ranked keeps it (llama.cpp refuses duplicates).
            if terminal[node] < 0 { terminal[node] = Int32(rank) }
            startsSpecial[Int(text[Int(starts[t])])] = true
        }
        self.edges = edges
        self.terminal = terminal
        self.startsSpecial = startsSpecial
    }
}
