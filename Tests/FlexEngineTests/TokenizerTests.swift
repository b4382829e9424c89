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
