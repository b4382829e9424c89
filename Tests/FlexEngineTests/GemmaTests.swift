import Foundation
import Testing
@testable import FlexEngine
import FlexFormat

/// Gemma 3 270M against llama.cpp's outputs in `../shared/fixtures/gemma3/`.
@Suite(.enabled(if: Fixtures.gemma3Available)) struct GemmaTests {
    /// The architecture is read from the file: five local layers (window 512, rope base 10k) per
    /// global one (rope base 1e6), QK-norm, post-norms, GeGLU, scaled embeddings, a tied head.
    @Test func architectureIsReadFromTheFile() throws {
        let weights = try ModelWeights(file: GGUFFile(path: try Fixtures.requireGemma3()))
        let c = weights.config
        #expect(c.layerCount == 18 && c.embeddingLength == 640 && c.headDim == 256 && c.kvHeadCount == 1 && c.headCount == 4)
        let global = c.layers.indices.filter { c.layers[$0].window == nil }
        #expect(global == [5, 11, 17])
        #expect(c.layers.allSatisfy { $0.window == nil ? $0.ropeBase == 1e6 : ($0.window == 512 && $0.ropeBase == 10_000) })
        #expect(c.attentionScale == 1.0 / 16)
        #expect(weights.tiedOutput)
        #expect(weights.layers.allSatisfy { $0.queryNorm != nil && $0.keyNorm != nil && $0.postAttentionNorm != nil && $0.postFFNNorm != nil })
        #expect(weights.spec.ffnActivation == .geluTanh && weights.spec.scalesEmbedding)
    }

    /// Greedy ids: the reference continuation is teacher-forced, and at every step our top-1 must
    /// be llama.cpp's wherever our own margin (top-1 minus top-2 logit) is clear of the two
    /// engines' logit differences. Teacher forcing checks all 64 steps, not only those before a
    /// first near-tie.
    @Test func greedyMatchesLlamaCppWhereTheMarginIsClear() throws {
        let fixture = try Fixtures.json("gemma3/greedy.json") as! [String: Any]
        let prompt = (fixture["prompt_ids"] as! [Int]).map(Int32.init)
        let reference = (fixture["llama_cpp_ids"] as! [Int]).map(Int32.init)
        let weights = try ModelWeights(file: GGUFFile(path: try Fixtures.requireGemma3()))
        let tf = Transformer(weights: weights, contextLength: 128, maxBatch: prompt.count, threads: 2)
        var steps: [(id: Int32, margin: Float)] = []
        func top2() -> (Int32, Float) {
            let l = tf.logits(row: 0)
            var best = 0, second = -Float.infinity
            for i in 1..<l.count where l[i] > l[best] { best = i }
            for i in 0..<l.count where i != best && l[i] > second { second = l[i] }
            return (Int32(best), l[best] - second)
        }
        try prompt.withUnsafeBufferPointer { try tf.forward($0, logitRows: prompt.count - 1..<prompt.count) }
        for next in reference {
            steps.append(top2())
            try [next].withUnsafeBufferPointer { try tf.forward($0, logitRows: 0..<1) }
        }
        let clear: Float = 0.5
        var checked = 0
        for (i, s) in steps.enumerated() where s.margin >= clear {
            checked += 1
            #expect(s.id == reference[i], "step \(i): \(s.id) with margin \(s.margin), llama.cpp \(reference[i])")
        }
        #expect(checked >= reference.count / 2, "only \(checked) of \(reference.count) steps have a margin ≥ \(clear)")
        print("gemma3 greedy: \(checked)/\(reference.count) steps clear; margins \(steps.map { String(format: "%.2f", $0.margin) }.joined(separator: " "))")
        print("gemma3 greedy: ours \(steps.map(\.id))")
    }

    /// The plan counts the KV a long context really costs: at ctx 8192 the three global layers
    /// hold every position, the fifteen local ones a ring of their 512-position window.
    @Test func longContextKVIsTheWindowedFigure() throws {
        let model = try Model(path: try Fixtures.requireGemma3())
        var options = EngineOptions(modelPath: model.path)
        options.contextLength = 8192
        let session = try Session(model: model, options: options)
        let kvRow = 2 * 256 * 2                      // K and V of one position in one layer, f16
        let pages = 8192 / 16                        // one sequence's full-context pages
        let ring = 512 / 16 + 1                      // ring pages per slot (window + the page being written)
        let slots = 2                                // the sequence and the scoring slot
        let expected = 3 * pages * 16 * kvRow + 15 * slots * ring * 16 * kvRow
        #expect(session.memory.kvCache == expected)
        let dense = 18 * 8192 * kvRow
        #expect(session.memory.kvCache * 3 < dense, "windowed \(session.memory.kvCache) vs dense \(dense)")
    }

    /// Perplexity of the whole devtext within 1% of llama-perplexity's on the same file.
    @Test(arguments: [512, 256])
    func perplexityMatchesLlamaCppWithinOnePercent(_ ctx: Int) throws {
        let fixture = try Fixtures.json("gemma3/perplexity.json") as! [String: Any]
        let expected = ((fixture["ppl"] as! [String: Any])["\(ctx)"] as! [String: Any])
        let value = expected["value"] as! Double
        var o = EngineOptions(modelPath: try Fixtures.requireGemma3())
        o.contextLength = ctx
        let engine = try Engine(options: o)
        let text = try String(contentsOf: Fixtures.url("text/devtext.txt"), encoding: .utf8)
        let r = try engine.perplexity(of: text, context: ctx)
        #expect(r.chunks == expected["chunks"] as! Int)
        #expect(abs(r.perplexity - value) / value < 0.01, "flexrun \(r.perplexity) vs llama.cpp \(value)")
        print("gemma3 perplexity ctx \(ctx): \(r.perplexity) vs llama.cpp \(value) (\(r.tokensPerSecond) tok/s)")
    }
}
