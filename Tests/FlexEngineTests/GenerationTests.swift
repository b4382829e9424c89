import Foundation
import Testing
@testable import FlexEngine

@Suite(.enabled(if: Fixtures.smolLM2Available), .serialized) struct SmolLM2GenerationTests {
    static func engine(context: Int? = 256) throws -> Engine {
        var o = EngineOptions(modelPath: try Fixtures.requireSmolLM2())
        o.contextLength = context
        o.threads = 2
        return try Engine(options: o)
    }

    /// Acceptance 4: greedy ids equal llama.cpp's up to the first step whose fp64 reference
    /// top-2 margin is below 0.2. The fixture records that step (5): there llama.cpp and the
    /// reference pick different tokens, so no engine can be held to either beyond it.
    @Test func greedyMatchesLlamaCppUntilFirstLowMarginStep() throws {
        let fixture = try Fixtures.json("smollm2/greedy.json") as! [String: Any]
        let prompt = fixture["prompt"] as! String
        let expected = (fixture["llama_cpp_ids"] as! [Int]).map(Int32.init)
        let firstLowMargin = fixture["first_step_with_margin_below_0.2"] as! Int
        let margins = fixture["reference_top2_margins_by_step"] as! [Double]
        #expect(firstLowMargin == margins.firstIndex { $0 < 0.2 })
        #expect(firstLowMargin == 5)

        let engine = try Self.engine()
        #expect(engine.tokenizer.encode(prompt) == (fixture["prompt_ids"] as! [Int]).map(Int32.init))
        var params = GenerateParameters(maxTokens: 64, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        let ids = try engine.generate(prompt: prompt, parameters: params).map(\.id)
        #expect(ids.count == 64)
        #expect(Array(ids.prefix(firstLowMargin)) == Array(expected.prefix(firstLowMargin)))
    }

    @Test func sameSeedSameText() throws {
        let engine = try Self.engine()
        var params = GenerateParameters(maxTokens: 24, sampling: SamplingParameters(temperature: 1.0, seed: 42))
        params.stopAtEndOfGeneration = false
        let a = try engine.generate(prompt: "Once upon a time", parameters: params).map(\.id)
        let b = try engine.generate(prompt: "Once upon a time", parameters: params).map(\.id)
        params.sampling.seed = 43
        let c = try engine.generate(prompt: "Once upon a time", parameters: params).map(\.id)
        #expect(a == b)
        #expect(a != c)
    }

    @Test func streamDeliversTokensThenStats() async throws {
        let engine = try Self.engine()
        var params = GenerateParameters(maxTokens: 8, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        var text = "", count = 0
        var stats: GenerationStats?
        for try await event in engine.stream(prompt: "The capital of France is", parameters: params) {
            switch event {
            case .token(_, let t): text += t; count += 1
            case .finished(let s): stats = s
            }
        }
        #expect(count == 8)
        #expect(stats?.generatedTokens == 8 && stats?.stopReason == .maxTokens)
        #expect(text.contains("Paris"))
    }

    @Test func cancellationStopsAtNextToken() throws {
        let engine = try Self.engine()
        let cancel = CancellationToken()
        var params = GenerateParameters(maxTokens: 50, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        params.cancellation = cancel
        var it = try engine.generate(prompt: "Count: one, two, three,", parameters: params)
        var n = 0
        while it.next() != nil {
            n += 1
            if n == 3 { cancel.cancel() }
        }
        #expect(n == 3)
        #expect(it.stats.stopReason == .cancelled)
        // A cancelled run still reports the time its passes took (it used to report zeros).
        #expect(it.stats.promptSeconds > 0 && it.stats.decodeSeconds > 0 && it.stats.generatedTokens == 3, "\(it.stats)")
    }

    @Test func chatTemplateIsChatMLWithDefaultSystem() throws {
        let engine = try Self.engine()
        guard case .chatML(let system)? = engine.chatTemplate else { Issue.record("no ChatML"); return }
        #expect(system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        let rendered = engine.chatTemplate!.render(user: "Hi")
        #expect(rendered.hasSuffix("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"))
        let ids = try engine.promptTokens("Hi", parameters: GenerateParameters(chat: true))
        #expect(ids.first == engine.tokenizer.tokenID("<|im_start|>"))
    }

    @Test func rejectsBadRequests() throws {
        let engine = try Self.engine(context: 16)
        #expect(throws: EngineError.self) { _ = try engine.generate(prompt: "") }
        #expect(throws: EngineError.self) { _ = try engine.generate(tokens: [-1]) }
        #expect(throws: EngineError.self) { _ = try engine.generate(tokens: [Int32(engine.config.vocabularySize)]) }
        #expect(throws: EngineError.self) { _ = try engine.generate(prompt: String(repeating: "word ", count: 40)) }
    }

    @Test func contextFullEndsGeneration() throws {
        let engine = try Self.engine(context: 12)
        var params = GenerateParameters(maxTokens: 100, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        var it = try engine.generate(prompt: "Hello there", parameters: params)
        while it.next() != nil {}
        #expect(it.stats.stopReason == .contextFull)
        #expect(it.stats.promptTokens + it.stats.generatedTokens == 13)
    }
}

/// Acceptance 3: perplexity within 1% of llama.cpp's on the dev text. Heavy: run it in the
/// optimised build (`swift test -c release`), where it takes about a minute on 2 cores.
@Suite(.enabled(if: Fixtures.smolLM2Available), .serialized) struct PerplexityTests {
    @Test(arguments: [512, 256])
    func matchesLlamaCppWithinOnePercent(_ ctx: Int) throws {
        let fixture = try Fixtures.json("smollm2/perplexity.json") as! [String: Any]
        let expected = ((fixture["ppl"] as! [String: Any])["\(ctx)"] as! [String: Any])
        let value = expected["value"] as! Double
        let chunks = expected["chunks"] as! Int
        var o = EngineOptions(modelPath: try Fixtures.requireSmolLM2())
        o.contextLength = ctx
        let engine = try Engine(options: o)
        let text = try String(contentsOf: Fixtures.url("text/devtext.txt"), encoding: .utf8)
        #expect(engine.tokenizer.encode(text).count == fixture["tokens"] as! Int)
        let r = try engine.perplexity(of: text, context: ctx)
        #expect(r.chunks == chunks)
        #expect(r.scoredTokens == chunks * (ctx - 1 - ctx / 2))
        #expect(abs(r.perplexity - value) / value < 0.01, "flexrun \(r.perplexity) vs llama.cpp \(value)")
    }
}

@Suite struct SamplerTests {
    @Test func greedyIsArgmax() {
        var s = Sampler(.greedy, vocabularySize: 4)
        var logits: [Float] = [0.1, 3, 2.9, -1]
        #expect(logits.withUnsafeMutableBufferPointer { s.sample($0) } == 1)
    }

    @Test func topKOneIsArgmaxAtAnyTemperature() {
        var s = Sampler(SamplingParameters(temperature: 5, topK: 1, seed: 9), vocabularySize: 5)
        for _ in 0..<20 {
            var logits: [Float] = [0, 1, 7, 2, 6.9]
            #expect(logits.withUnsafeMutableBufferPointer { s.sample($0) } == 2)
        }
    }

    @Test func minPDropsUnlikelyTokens() {
        var s = Sampler(SamplingParameters(temperature: 1, topK: 0, topP: 1, minP: 0.5, seed: 1), vocabularySize: 3)
        for _ in 0..<50 {
            var logits: [Float] = [5, 5, -5]
            #expect(logits.withUnsafeMutableBufferPointer { s.sample($0) } != 2)
        }
    }

    @Test func topPKeepsNucleus() {
        var s = Sampler(SamplingParameters(temperature: 1, topK: 0, topP: 0.5, minP: 0, seed: 3), vocabularySize: 3)
        for _ in 0..<50 {
            var logits: [Float] = [3, 0, 0]
            #expect(logits.withUnsafeMutableBufferPointer { s.sample($0) } == 0)
        }
    }

    @Test func repetitionPenaltyDiscouragesSeenTokens() {
        var s = Sampler(SamplingParameters(temperature: 0, repetitionPenalty: 2), vocabularySize: 3)
        s.accept(0)
        var logits: [Float] = [2, 1.5, 0]
        #expect(logits.withUnsafeMutableBufferPointer { s.sample($0) } == 1)
    }

    @Test func samplingFollowsDistribution() {
        var s = Sampler(SamplingParameters(temperature: 1, topK: 0, topP: 1, minP: 0, seed: 5), vocabularySize: 2)
        var ones = 0
        for _ in 0..<4000 {
            var logits: [Float] = [0, Float(log(3.0))]   // p = 0.25, 0.75
            if logits.withUnsafeMutableBufferPointer({ s.sample($0) }) == 1 { ones += 1 }
        }
        #expect(abs(Double(ones) / 4000 - 0.75) < 0.03)
    }
}

@Suite struct BlockMaskTests {
    @Test func parsesCLIList() throws {
        let m = try BlockMask(parsing: "attn:3,ffn:17")
        #expect(m.skipsAttention(3) && m.skipsFFN(17) && !m.skipsFFN(3))
        #expect(m.description == "attn:3,ffn:17")
        #expect(throws: BlockMask.ParseError.self) { try BlockMask(parsing: "mlp:1") }
        #expect(throws: BlockMask.ParseError.self) { try BlockMask(parsing: "attn:-1") }
        #expect(throws: BlockMask.ParseError.self) { try BlockMask(parsing: "") }
    }
}
