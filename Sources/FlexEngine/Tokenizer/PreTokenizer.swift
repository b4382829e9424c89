/// Splits text into the words BPE runs on, reproducing the regexes llama.cpp uses per
/// `tokenizer.ggml.pre` — hand-written scanners rather than a regex engine, as llama.cpp's
/// own `unicode_regex_split_custom_*` are, because they are exact, fast and allocation-light.
///
/// - `gpt2`: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// - `smollm` (also starcoder, refact, command-r, codeshell): first split every `\p{N}` into its
///   own word, then `gpt2` on the rest.
/// - `llama3` (llama-bpe): `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
///   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// - `qwen2`: as llama3 with `\p{N}` taken one at a time.
public enum PreTokenizer: Sendable, Equatable {
    case gpt2(splitDigits: Bool)
    case llama3(maxDigits: Int)

    /// The pre-tokenizer for a GGUF `tokenizer.ggml.pre` value, or nil if FlexRun lacks it.
    public init?(ggufName: String) {
        switch ggufName {
        case "smollm", "starcoder", "refact", "command-r", "codeshell": self = .gpt2(splitDigits: true)
        case "gpt2", "gpt-2", "mpt", "olmo", "jais", "default": self = .gpt2(splitDigits: false)
        case "llama3", "llama-bpe", "llama-v3", "falcon3", "pixtral", "dbrx", "smaug-bpe": self = .llama3(maxDigits: 3)
        case "qwen2", "deepseek-r1-qwen", "stablelm2", "hunyuan", "megrez": self = .llama3(maxDigits: 1)
        default: return nil
        }
    }

    enum Class { case letter, number, whitespace, other }

    @inline(__always)
    static func classify(_ s: Unicode.Scalar) -> Class {
        if s.value < 0x80 {
            switch s.value {
            case 0x41...0x5A, 0x61...0x7A: return .letter
            case 0x30...0x39: return .number
            case 0x09...0x0D, 0x20: return .whitespace
            default: return .other
            }
        }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return s.properties.isWhitespace ? .whitespace : .other
        }
    }

    /// Splits one fragment of text (no special tokens inside) into words.
    public func split(_ text: Substring) -> [Substring] {
        let scalars = Array(text.unicodeScalars)
        var bounds: [Int] = []
        switch self {
        case .gpt2(let splitDigits):
            if splitDigits {
                // Regex 1 (\p{N}): every number scalar is its own fragment; regex 2 runs on the pieces.
                var start = 0
                for i in scalars.indices where Self.classify(scalars[i]) == .number {
                    if start < i { Self.gpt2(scalars, start, i, &bounds) }
                    bounds.append(i + 1)
                    start = i + 1
                }
                if start < scalars.count { Self.gpt2(scalars, start, scalars.count, &bounds) }
            } else {
                Self.gpt2(scalars, 0, scalars.count, &bounds)
            }
        case .llama3(let maxDigits):
            Self.llama3(scalars, 0, scalars.count, maxDigits: maxDigits, &bounds)
        }
        // Convert scalar offsets into substrings of the original text.
        var result: [Substring] = []
        result.reserveCapacity(bounds.count)
        var idx = text.unicodeScalars.startIndex
        var prev = 0
        for b in bounds where b > prev {
            let end = text.unicodeScalars.index(idx, offsetBy: b - prev)
            result.append(Substring(text.unicodeScalars[idx..<end]))
            idx = end
            prev = b
        }
        return result
    }

    /// Appends end offsets of the words of `s[start..<end]` (port of llama.cpp's gpt2 scanner).
    static func gpt2(_ s: [Unicode.Scalar], _ start: Int, _ end: Int, _ out: inout [Int]) {
        @inline(__always) func cls(_ i: Int) -> Class? { i < end ? classify(s[i]) : nil }
        @inline(__always) func ch(_ i: Int) -> UInt32 { i < end ? s[i].value : 0xFFFF_FFFF }
        var pos = start
        while pos < end {
            let c = ch(pos)
            // 's 't 're 've 'm 'll 'd
            if c == 0x27, pos + 1 < end {
                let c1 = ch(pos + 1)
                if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { pos += 2; out.append(pos); continue }
                if pos + 2 < end {
                    let c2 = ch(pos + 2)
                    if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) {
                        pos += 3; out.append(pos); continue
                    }
                }
            }
            let p2 = c == 0x20 ? pos + 1 : pos
            let k2 = cls(p2)
            //  ?\p{L}+   and   ?\p{N}+
            if k2 == .letter || k2 == .number {
                let k = k2!
                pos = p2
                while cls(pos) == k { pos += 1 }
                out.append(pos); continue
            }
            //  ?[^\s\p{L}\p{N}]+
            if k2 == .other {
                pos = p2
                while cls(pos) == .other { pos += 1 }
                out.append(pos); continue
            }
            var ws = 0
            while cls(pos + ws) == .whitespace { ws += 1 }
            // \s+(?!\S): leave the last space to prefix the next word
            if ws > 1, pos + ws < end { pos += ws - 1; out.append(pos); continue }
            if ws > 0 { pos += ws; out.append(pos); continue }
            pos += 1
            out.append(pos)
        }
    }

    /// Port of llama.cpp's llama3 scanner, with `maxDigits` 3 (llama3) or 1 (qwen2).
    static func llama3(_ s: [Unicode.Scalar], _ start: Int, _ end: Int, maxDigits: Int, _ out: inout [Int]) {
        @inline(__always) func cls(_ i: Int) -> Class? { i < end ? classify(s[i]) : nil }
        @inline(__always) func ch(_ i: Int) -> UInt32 { i < end ? s[i].value : 0xFFFF_FFFF }
        @inline(__always) func lower(_ v: UInt32) -> UInt32 { (0x41...0x5A).contains(v) ? v + 32 : v }
        @inline(__always) func isCRLF(_ v: UInt32) -> Bool { v == 0x0D || v == 0x0A }
        var pos = start
        while pos < end {
            let c = ch(pos)
            let k = cls(pos)
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if c == 0x27, pos + 1 < end {
                let c1 = lower(ch(pos + 1))
                if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { pos += 2; out.append(pos); continue }
                if pos + 2 < end {
                    let c2 = lower(ch(pos + 2))
                    if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) {
                        pos += 3; out.append(pos); continue
                    }
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(isCRLF(c) || k == .number) {
                if k == .letter || cls(pos + 1) == .letter {
                    pos += 1
                    while cls(pos) == .letter { pos += 1 }
                    out.append(pos); continue
                }
            }
            // \p{N}{1,maxDigits}
            if k == .number {
                let ini = pos
                while cls(pos) == .number && pos - ini < maxDigits { pos += 1 }
                out.append(pos); continue
            }
            //  ?[^\s\p{L}\p{N}]+[\r\n]*
            let p2 = c == 0x20 ? pos + 1 : pos
            if cls(p2) == .other {
                pos = p2
                while cls(pos) == .other { pos += 1 }
                while pos < end && isCRLF(ch(pos)) { pos += 1 }
                out.append(pos); continue
            }
            var ws = 0, lastCRLF = 0
            while cls(pos + ws) == .whitespace {
                if isCRLF(ch(pos + ws)) { lastCRLF = pos + ws + 1 }
                ws += 1
            }
            // \s*[\r\n]+
            if lastCRLF > 0 { pos = lastCRLF; out.append(pos); continue }
            // \s+(?!\S)
            if ws > 1, pos + ws < end { pos += ws - 1; out.append(pos); continue }
            if ws > 0 { pos += ws; out.append(pos); continue }
            pos += 1
            out.append(pos)
        }
    }
}
