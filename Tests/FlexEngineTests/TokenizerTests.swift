import Foundation
import Testing
@testable import FlexEngine
import FlexFormat

/// Golden encodings from llama.cpp (`llama_tokenize`, add_special and parse_special on).
@Suite(.enabled(if: Fixtures.smolLM2Available)) struct SmolLM2TokenizerTests {
    typealias Case = TokenizerCase
    static let cases = TokenizerCase.load("smollm2/tokenizer-cases.json")

    static let tokenizer: BPETokenizer? = {
        guard let path = Fixtures.smolLM2 else { return nil }
        return try? BPETokenizer(gguf: GGUFFile(path: path))
    }()

    @Test func fixtureHasAllCases() { #expect(Self.cases.count == 16) }

    @Test(arguments: cases)
    func idsMatchLlamaCpp(_ c: Case) throws {
        _ = try Fixtures.requireSmolLM2()
        let tok = try #require(Self.tokenizer)
        #expect(tok.encode(c.text) == c.ids)
    }

    @Test(arguments: cases)
    func detokenizeRoundTrips(_ c: Case) throws {
        _ = try Fixtures.requireSmolLM2()
        let tok = try #require(Self.tokenizer)
        #expect(tok.decode(tok.encode(c.text)) == c.text)
    }

    @Test func smolLM2AddsNoBOSAndStopsAtImEnd() throws {
        _ = try Fixtures.requireSmolLM2()
        let tok = try #require(Self.tokenizer)
        #expect(tok.addsBOS == false)
        let imEnd = try #require(tok.tokenID("<|im_end|>"))
        #expect(tok.endOfGenerationTokens.contains(imEnd))
    }

    /// The merge queue against the rule it implements, written the slow, obvious way (the first
    /// version of `BPETokenizer`): rescan every adjacent pair, merge the lowest-ranked, leftmost on
    /// ties. Seeded random words of 1–300 bytes: ASCII, accented and CJK text, emoji and raw
    /// byte-level characters, including the bytes SmolLM2's vocabulary lacks.
    @Test func mergeQueueMatchesRescanningEveryPair() throws {
        let path = try Fixtures.requireSmolLM2()
        let tok = try #require(Self.tokenizer)
        let gguf = try GGUFFile(path: path)
        let merges = try #require(gguf.stringArray("tokenizer.ggml.merges"))
        var ranks: [String: Int] = [:]
        for (i, m) in merges.enumerated() where ranks[m] == nil { ranks[m] = i }
        func slow(_ word: Substring) -> [Int32] {
            var symbols = ByteLevel.encode(word)
            while symbols.count > 1 {
                var best = Int.max, at = -1
                for i in 0..<symbols.count - 1 {
                    if let r = ranks[symbols[i] + " " + symbols[i + 1]], r < best { best = r; at = i }
                }
                if at < 0 { break }
                symbols[at] += symbols[at + 1]
                symbols.remove(at: at + 1)
            }
            return symbols.flatMap { s in
                tok.tokenID(s).map { [$0] } ?? s.unicodeScalars.compactMap { tok.tokenID(String($0)) }
            }
        }
        let alphabet = Array("the quick brown fox jumps over 0123456789 éàüß ñ — 日本語の文字 🙂🚀 \n\t".unicodeScalars)
            + (0..<256).map { ByteLevel.byteToScalar[$0] }
        var rng = RandomSource(seed: 0x5EED_B9E)
        var words = 0, tokens = 0
        for _ in 0..<300 {
            let n = Int(rng.next() % 300) + 1
            var s = ""
            // Runs of one kind, so that long merge chains form, with random breaks between them.
            while s.unicodeScalars.count < n {
                let run = Int(rng.next() % 12) + 1, base = Int(rng.next() % UInt64(alphabet.count))
                for k in 0..<run { s.unicodeScalars.append(alphabet[(base + k * Int(rng.next() % 3)) % alphabet.count]) }
            }
            var fast: [Int32] = [], reference: [Int32] = []
            for word in tok.preTokenizer.split(Substring(s)) {
                reference += slow(word)
                words += 1
            }
            fast = tok.encode(s, addSpecial: false, parseSpecial: false)
            tokens += fast.count
            #expect(fast == reference, "\(s.debugDescription)")
        }
        #expect(words > 1_000 && tokens > 5_000)
    }

    @Test func specialTextIsLiteralWhenNotParsed() throws {
        _ = try Fixtures.requireSmolLM2()
        let tok = try #require(Self.tokenizer)
        let imStart = try #require(tok.tokenID("<|im_start|>"))
        #expect(tok.encode("<|im_start|>", addSpecial: true, parseSpecial: true) == [imStart])
        #expect(!tok.encode("<|im_start|>", addSpecial: true, parseSpecial: false).contains(imStart))
    }
}

@Suite struct PreTokenizerTests {
    @Test func gpt2KeepsLastSpaceForNextWord() {
        let words = PreTokenizer.gpt2(splitDigits: false).split("  leading and\n\nx 12")
        // \s+(?!\S) backtracks to leave one whitespace before "x"; that one is taken alone by \s+.
        #expect(words == [" ", " leading", " and", "\n", "\n", "x", " 12"])
    }

    @Test func smollmSplitsEveryDigit() {
        #expect(PreTokenizer.gpt2(splitDigits: true).split("a 123") == ["a", " ", "1", "2", "3"])
    }

    @Test func llama3GroupsThreeDigitsAndNewlines() {
        let words = PreTokenizer.llama3(maxDigits: 3).split("12345 x!\n\n  y's")
        #expect(words == ["123", "45", " x", "!\n\n", " ", " y", "'s"])
    }

    @Test func qwen2TakesOneDigit() {
        #expect(PreTokenizer.llama3(maxDigits: 1).split("123") == ["1", "2", "3"])
    }
}

@Suite struct UTF8StreamDecoderTests {
    @Test func holdsBackSplitCodePoints() {
        var d = UTF8StreamDecoder()
        let rocket = Array("🚀".utf8)
        #expect(d.append(rocket[0..<1]) == "")
        #expect(d.append(rocket[1..<3]) == "")
        #expect(d.append(rocket[3..<4] + Array("é".utf8)) == "🚀é")
        #expect(d.flush() == "")
    }

    @Test func invalidBytesBecomeReplacement() {
        var d = UTF8StreamDecoder()
        #expect(d.append([0x61, 0xFF, 0x62]) == "a\u{FFFD}b")
        #expect(d.append([0xE2, 0x82]) == "")
        #expect(d.flush() == "\u{FFFD}")
    }
}
