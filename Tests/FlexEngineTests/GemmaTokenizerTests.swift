import Foundation
import Testing
@testable import FlexEngine
import FlexFormat

/// Gemma 3's SentencePiece vocabulary against llama.cpp (`llama_tokenize`, add_special and
/// parse_special on), on the real 262k-token file.
@Suite(.enabled(if: Fixtures.gemma3Available)) struct GemmaTokenizerTests {
    typealias Case = TokenizerCase
    static let cases = TokenizerCase.load("gemma3/tokenizer-cases.json")

    static let file: GGUFFile? = Fixtures.gemma3.flatMap { try? GGUFFile(path: $0) }
    static let tokenizer: SentencePieceTokenizer? = file.flatMap { try? SentencePieceTokenizer(gguf: $0) }

    @Test func fixtureHasAllCases() { #expect(Self.cases.count == 16) }

    @Test(arguments: cases)
    func idsMatchLlamaCpp(_ c: Case) throws {
        _ = try Fixtures.requireGemma3()
        let tok = try #require(Self.tokenizer)
        #expect(tok.encode(c.text) == c.ids)
    }

    @Test(arguments: cases)
    func detokenizeRoundTrips(_ c: Case) throws {
        _ = try Fixtures.requireGemma3()
        let tok = try #require(Self.tokenizer)
        let ids = tok.encode(c.text)
        #expect(ids.first == tok.bosToken)
        #expect(tok.decode(Array(ids.dropFirst())) == c.text)
    }

    /// Streaming piece by piece never shows half a character and reassembles the text exactly,
    /// including where byte fallback splits one character over several tokens (Ⅻ).
    @Test(arguments: cases.filter { $0.text.utf8.contains { $0 >= 0x80 } })
    func streamingPiecesReassemble(_ c: Case) throws {
        _ = try Fixtures.requireGemma3()
        let tok = try #require(Self.tokenizer)
        var decoder = UTF8StreamDecoder()
        var streamed = ""
        for id in tok.encode(c.text, addSpecial: false, parseSpecial: true) {
            let piece = decoder.append(tok.pieceBytes(id))
            #expect(String(validating: Array(piece.utf8), as: UTF8.self) != nil && !piece.contains("\u{FFFD}"))
            streamed += piece
        }
        streamed += decoder.flush()
        #expect(streamed == c.text)
    }

    @Test func byteFallbackSplitsACharacterOverTokens() throws {
        _ = try Fixtures.requireGemma3()
        let tok = try #require(Self.tokenizer)
        // U+216B ROMAN NUMERAL TWELVE is no Gemma token: three byte tokens, none valid UTF-8 alone.
        let ids = tok.encode("Ⅻ", addSpecial: false, parseSpecial: false)
        #expect(ids.map { Array(tok.pieceBytes($0)) } == [[0xE2], [0x85], [0xAB]])
        var decoder = UTF8StreamDecoder()
        #expect(decoder.append(tok.pieceBytes(ids[0])) == "")
        #expect(decoder.append(tok.pieceBytes(ids[1])) == "")
        #expect(decoder.append(tok.pieceBytes(ids[2])) == "Ⅻ")
    }

    @Test func headerFacts() throws {
        _ = try Fixtures.requireGemma3()
        let tok = try #require(Self.tokenizer)
        #expect(tok.vocabularySize == 262_144)
        #expect(tok.bosToken == 2 && tok.eosToken == 1 && tok.unknownToken == 3)
        #expect(tok.addsBOS && !tok.addsEOS && !tok.addsSpacePrefix)
        let endOfTurn = try #require(tok.tokenID("<end_of_turn>"))
        #expect(tok.endOfGenerationTokens == [1, endOfTurn])
        #expect(tok.tokenID("<0x0A>") == 248 && tok.byteTokens[0x0A] == 248)
    }

    /// llama.cpp's split rule: control tokens are text unless parse_special; user-defined
    /// tokens (Gemma's runs of newlines, spaces and tabs, HTML tags) are matched always.
    @Test func specialTokensParseByKind() throws {
        _ = try Fixtures.requireGemma3()
        let tok = try #require(Self.tokenizer)
        let start = try #require(tok.tokenID("<start_of_turn>"))
        let blank = try #require(tok.tokenID("\n\n"))
        let twoSpaces = try #require(tok.tokenID("  "))
        #expect(tok.vocabulary.kinds[Int(start)] == .control && tok.vocabulary.kinds[Int(blank)] == .userDefined)
        #expect(tok.encode("<start_of_turn>", addSpecial: false, parseSpecial: true) == [start])
        let literal = tok.encode("<start_of_turn>", addSpecial: false, parseSpecial: false)
        #expect(!literal.contains(start) && literal.count > 1)
        #expect(tok.decode(literal) == "<start_of_turn>")
        #expect(tok.encode("a\n\nb  c", addSpecial: false, parseSpecial: false).contains(blank))
        #expect(tok.encode("a\n\nb  c", addSpecial: false, parseSpecial: false).contains(twoSpaces))
    }

    /// Perplexity's tokenization (BOS, specials as text) of the dev text gives llama-perplexity's
    /// chunk counts (fixture: 17 chunks of 512, 35 of 256), and decodes back to the text.
    @Test func devTextTokenCountMatchesLlamaPerplexityChunks() throws {
        _ = try Fixtures.requireGemma3()
        let tok = try #require(Self.tokenizer)
        let text = try String(contentsOf: Fixtures.url("text/devtext.txt"), encoding: .utf8)
        let start = Date()
        let ids = tok.encode(text, addSpecial: true, parseSpecial: false)
        let seconds = Date().timeIntervalSince(start)
        print("gemma3 devtext: \(text.utf8.count) bytes → \(ids.count) tokens in \(String(format: "%.1f", seconds * 1000)) ms "
              + "(\(String(format: "%.0f", Double(ids.count) / seconds)) tokens/s)")
        #expect(ids.count / 512 == 17 && ids.count / 256 == 35)
        #expect(tok.decode(Array(ids.dropFirst())) == text)
    }

    @Test func vocabularyLoadsQuickly() throws {
        _ = try Fixtures.requireGemma3()
        let file = try #require(Self.file)
        let start = Date()
        let tok = try SentencePieceTokenizer(gguf: file)
        let seconds = Date().timeIntervalSince(start)
        print("gemma3 tokenizer: \(tok.vocabularySize) tokens loaded in \(String(format: "%.0f", seconds * 1000)) ms")
        // Aimed at well under a second; the bound leaves room for a loaded two-core machine.
        #expect(seconds < 2)
    }

    @Test func factoryPicksSentencePiece() throws {
        _ = try Fixtures.requireGemma3()
        let file = try #require(Self.file)
        let tok = try TokenizerModel.tokenizer(for: file)
        #expect(tok is SentencePieceTokenizer)
        #expect(tok.encode("Hello, world!") == [2, 9259, 236764, 1902, 236888])
    }

    /// This Gemma file is the base model: it carries no chat template, so `--chat` is refused.
    @Test func baseModelHasNoChatTemplate() throws {
        _ = try Fixtures.requireGemma3()
        let file = try #require(Self.file)
        #expect(file.string("tokenizer.chat_template") == nil)
        #expect(ChatTemplate(jinja: file.string("tokenizer.chat_template")) == nil)
    }
}

/// The SentencePiece algorithm on small vocabularies built here, so each rule is pinned
/// without a model file.
@Suite struct SentencePieceRulesTests {
    /// A vocabulary of `(text, score, kind)`, ids in order, with byte tokens for a few bytes.
    static func tokenizer(_ entries: [(String, Float, TokenKind)], addSpacePrefix: Bool = false,
                          bytes: [UInt8] = []) throws -> SentencePieceTokenizer {
        let all = [("<unk>", 0, .unknown), ("<s>", 0, .control), ("</s>", 0, .control)] + entries
            + bytes.map { (String(format: "<0x%02X>", $0), Float(0), TokenKind.byte) }
        return try SentencePieceTokenizer(tokens: all.map(\.0), scores: all.map(\.1), kinds: all.map(\.2),
                                          bos: 1, eos: 2, unknown: 0, addBOS: true, addSpacePrefix: addSpacePrefix)
    }

    @Test func highestScoreMergesFirst() throws {
        // "ab" outscores "bc": a|b|c → ab|c, though "bc" would also be a token.
        let tok = try Self.tokenizer([("a", -1, .normal), ("b", -1, .normal), ("c", -1, .normal),
                                      ("ab", -2, .normal), ("bc", -3, .normal)])
        #expect(tok.encode("abc", addSpecial: false, parseSpecial: false) == [6, 5])
        // With "bc" the better one, it wins instead.
        let other = try Self.tokenizer([("a", -1, .normal), ("b", -1, .normal), ("c", -1, .normal),
                                        ("ab", -3, .normal), ("bc", -2, .normal)])
        #expect(other.encode("abc", addSpecial: false, parseSpecial: false) == [3, 7])
    }

    @Test func equalScoresMergeLeftmostFirst() throws {
        let tok = try Self.tokenizer([("a", -1, .normal), ("aa", -2, .normal)])
        // a|a|a: both pairs score the same; the left one merges, leaving the last "a".
        #expect(tok.encode("aaa", addSpecial: false, parseSpecial: false) == [4, 3])
    }

    @Test func mergesContinueThroughIntermediateTokens() throws {
        let tok = try Self.tokenizer([("▁", -1, .normal), ("h", -1, .normal), ("i", -1, .normal),
                                      ("hi", -2, .normal), ("▁hi", -3, .normal)])
        #expect(tok.encode(" hi", addSpecial: true, parseSpecial: false) == [1, 7])
    }

    @Test func unknownCharactersFallBackToByteTokens() throws {
        let tok = try Self.tokenizer([("a", -1, .normal)], bytes: [0xC3, 0xA9])
        // "é" is no token: its two UTF-8 bytes are.
        let ids = tok.encode("aé", addSpecial: false, parseSpecial: false)
        #expect(ids == [3, 4, 5])
        #expect(tok.decode(ids) == "aé")
        // Without byte tokens for a character, each of its bytes becomes <unk>.
        #expect(tok.encode("€", addSpecial: false, parseSpecial: false) == [0, 0, 0])
    }

    @Test func spacePrefixGoesBeforeTextAfterSpecials() throws {
        let tok = try Self.tokenizer([("▁", -1, .normal), ("x", -1, .normal), ("▁x", -2, .normal),
                                      ("<sep>", 0, .control)], addSpacePrefix: true)
        let sep: Int32 = 6
        // At the start and right after a special token, the text gets a leading "▁".
        #expect(tok.encode("x<sep>x", addSpecial: false, parseSpecial: true) == [5, sep, 5])
        #expect(tok.encode("x", addSpecial: true, parseSpecial: true) == [1, 5])
        // Decoding drops that one added space again.
        #expect(tok.decode(tok.encode("x x", addSpecial: false, parseSpecial: false)) == "x x")
        let noPrefix = try Self.tokenizer([("▁", -1, .normal), ("x", -1, .normal), ("▁x", -2, .normal)])
        #expect(noPrefix.encode("x", addSpecial: false, parseSpecial: false) == [4])
    }

    @Test func controlTokensNeedParseSpecialUserDefinedDoNot() throws {
        let tok = try Self.tokenizer([("<", -1, .normal), (">", -1, .normal), ("t", -1, .normal),
                                      ("<t>", 0, .control), ("<u>", 0, .userDefined), ("u", -1, .normal)])
        #expect(tok.encode("<t>", addSpecial: false, parseSpecial: true) == [6])
        #expect(tok.encode("<t>", addSpecial: false, parseSpecial: false) == [3, 5, 4])
        #expect(tok.encode("<u>", addSpecial: false, parseSpecial: false) == [7])
        #expect(tok.encode("<u>", addSpecial: false, parseSpecial: true) == [7])
    }

    /// llama.cpp splits at the longest special tokens first: in "abcde" the longer "bcde" wins
    /// over "ab", though "ab" starts first (a leftmost-longest scan would take "ab").
    @Test func longerSpecialTokensSplitFirst() throws {
        let tok = try Self.tokenizer([("a", -1, .normal), ("e", -1, .normal),
                                      ("ab", 0, .userDefined), ("bcde", 0, .userDefined)])
        #expect(tok.encode("abcde", addSpecial: false, parseSpecial: false) == [3, 6])
        #expect(tok.encode("abab", addSpecial: false, parseSpecial: false) == [5, 5])
        #expect(tok.encode("aba", addSpecial: false, parseSpecial: false) == [5, 3])
    }

    @Test func emptyTextIsJustBOS() throws {
        let tok = try Self.tokenizer([("a", -1, .normal)], addSpacePrefix: true)
        #expect(tok.encode("", addSpecial: true, parseSpecial: true) == [1])
        #expect(tok.encode("", addSpecial: false, parseSpecial: true) == [])
    }

    @Test func piecesFollowTokenKinds() throws {
        let tok = try Self.tokenizer([("▁a▁b", -1, .normal), ("<ctl>", 0, .control), ("▁u", 0, .userDefined),
                                      ("<unused0>", 0, .unused)], bytes: [0x41])
        #expect(Array(tok.pieceBytes(3)) == Array(" a b".utf8))
        #expect(Array(tok.pieceBytes(4)) == Array("<ctl>".utf8))
        // User-defined tokens render as written, "▁" and all (llama.cpp token_to_piece).
        #expect(Array(tok.pieceBytes(5)) == Array("▁u".utf8))
        #expect(tok.pieceBytes(6).isEmpty)
        #expect(Array(tok.pieceBytes(7)) == [0x41])
    }
}

/// `tokenizer.ggml.model` picks the tokenizer; anything else is a typed refusal.
@Suite struct TokenizerModelTests {
    /// A tensorless GGUF with string metadata only.
    static func gguf(_ strings: [(String, String)]) throws -> String {
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        func str(_ s: String) -> [UInt8] { le(UInt64(s.utf8.count)) + Array(s.utf8) }
        var bytes = Array("GGUF".utf8) + le(UInt32(3)) + le(UInt64(0)) + le(UInt64(strings.count + 1))
        for (k, v) in strings { bytes += str(k) + le(UInt32(8)) + str(v) }
        bytes += str("tokenizer.ggml.tokens") + le(UInt32(9)) + le(UInt32(8)) + le(UInt64(2)) + str("a") + str("b")
        while bytes.count % 32 != 0 { bytes.append(0) }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-tokmodel-\(UUID().uuidString).gguf")
        try Data(bytes).write(to: url)
        return url.path
    }

    @Test func unknownModelIsATypedError() throws {
        let path = try Self.gguf([("tokenizer.ggml.model", "bert")])
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try GGUFFile(path: path)
        #expect(throws: TokenizerError.unsupportedModel("bert")) { try TokenizerModel.tokenizer(for: file) }
        let message = TokenizerError.unsupportedModel("bert").description
        #expect(message.contains("'bert'") && message.contains("gpt2") && message.contains("llama"))
    }

    @Test func missingModelNameIsRefusedToo() throws {
        let path = try Self.gguf([])
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: TokenizerError.unsupportedModel("(none)")) { try TokenizerModel.tokenizer(for: GGUFFile(path: path)) }
    }

    @Test func llamaModelWithoutScoresStillLoads() throws {
        let path = try Self.gguf([("tokenizer.ggml.model", "llama")])
        defer { try? FileManager.default.removeItem(atPath: path) }
        let tok = try TokenizerModel.tokenizer(for: GGUFFile(path: path))
        #expect(tok is SentencePieceTokenizer && tok.vocabularySize == 2)
        // llama.cpp's defaults: BOS 1 ("b" here), added; no space prefix key → prefix on.
        #expect(tok.encode("ab", addSpecial: true, parseSpecial: false).first == 1)
    }

    @Test(.enabled(if: Fixtures.smolLM2Available)) func factoryPicksBPEForSmolLM2() throws {
        let tok = try TokenizerModel.tokenizer(for: GGUFFile(path: Fixtures.requireSmolLM2()))
        #expect(tok is BPETokenizer)
    }
}

@Suite struct GemmaChatTemplateTests {
    /// Gemma 3's template as google/gemma-3-*-it ship it (tokenizer_config.json), decoded from
    /// JSON: its string literals hold real newlines.
    static let gemma3 = """
    {{ bos_token }}
    {%- if messages[0]['role'] == 'system' -%}
        {%- if messages[0]['content'] is string -%}
            {%- set first_user_prefix = messages[0]['content'] + '

    ' -%}
        {%- else -%}
            {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

    ' -%}
        {%- endif -%}
        {%- set loop_messages = messages[1:] -%}
    {%- else -%}
        {%- set first_user_prefix = "" -%}
        {%- set loop_messages = messages -%}
    {%- endif -%}
    {%- for message in loop_messages -%}
        {%- if (message['role'] == 'assistant') -%}
            {%- set role = "model" -%}
        {%- else -%}
            {%- set role = message['role'] -%}
        {%- endif -%}
        {{ '<start_of_turn>' + role + '
    ' + (first_user_prefix if loop.first else "") }}
        {%- if message['content'] is string -%}
            {{ message['content'] | trim }}
        {%- endif -%}
        {{ '<end_of_turn>
    ' }}
    {%- endfor -%}
    {%- if add_generation_prompt -%}
        {{'<start_of_turn>model
    '}}
    {%- endif -%}
    """

    @Test func detectsGemmaAndItsBlankLineSeparator() {
        #expect(ChatTemplate(jinja: Self.gemma3) == .gemma(systemSeparator: "\n\n"))
    }

    @Test func rendersGemmaTurns() throws {
        let t = try #require(ChatTemplate(jinja: Self.gemma3))
        #expect(t.render(user: "Hi") == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
        // The system message opens the user turn; the user's text is trimmed, the system's not.
        #expect(t.render(user: "  Hi\n", system: "Be brief.") ==
                "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n")
    }

    @Test func escapedSeparatorIsRead() {
        // Some conversions carry the literal with a Jinja escape and a single newline.
        let t = Self.gemma3.replacingOccurrences(of: "'\n\n' -%}", with: "'\\n' -%}")
        #expect(ChatTemplate(jinja: t) == .gemma(systemSeparator: "\n"))
        #expect(ChatTemplate(jinja: t)?.render(user: "q", system: "s") == "<start_of_turn>user\ns\nq<end_of_turn>\n<start_of_turn>model\n")
    }

    @Test(.enabled(if: Fixtures.gemma3Available)) func renderedTurnTokenizesToGemmaControlTokens() throws {
        let tok = try SentencePieceTokenizer(gguf: GGUFFile(path: Fixtures.requireGemma3()))
        let ids = tok.encode(ChatTemplate.gemma(systemSeparator: "\n\n").render(user: "Hi"))
        let start = try #require(tok.tokenID("<start_of_turn>")), end = try #require(tok.tokenID("<end_of_turn>"))
        #expect(ids.first == 2 && ids.filter { $0 == start }.count == 2 && ids.filter { $0 == end }.count == 1)
        #expect(tok.endOfGenerationTokens.contains(end))
    }
}
