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
}
