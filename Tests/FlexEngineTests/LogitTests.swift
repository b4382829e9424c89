import Foundation
import Testing
@testable import FlexEngine
import FlexFormat

/// Teacher-forced logits against the independent fp64 reference (acceptance 1 of the foundation).
@Suite struct LogitTests {
    /// Runs `tokens` through the model in batches and returns logits for every position.
    static func teacherForced(model path: String, tokens: [Int32], mask: BlockMask = .none, batch: Int = 16) throws -> [[Float]] {
        let weights = try ModelWeights(file: GGUFFile(path: path))
        let tf = Transformer(weights: weights, contextLength: 128, maxBatch: batch, threads: 2, mask: mask)
        var out: [[Float]] = []
        var i = 0
        while i < tokens.count {
            let chunk = Array(tokens[i..<min(tokens.count, i + batch)])
            try chunk.withUnsafeBufferPointer { try tf.forward($0, logitRows: 0..<chunk.count) }
            for r in 0..<chunk.count { out.append(Array(tf.logits(row: r))) }
            i += chunk.count
        }
        return out
    }

    static func mask(_ pairs: [[Any]]) -> BlockMask {
        BlockMask(skipping: pairs.map { BlockMask.Block($0[0] as! String == "attn" ? .attention : .ffn, $0[1] as! Int) })
    }

    struct SynthCase: CustomTestStringConvertible, Sendable {
        let model: String
        let skip: Bool
        var testDescription: String { "\(model)\(skip ? " skipping attn:1,ffn:2" : "")" }
    }

    @Test(arguments: [
        SynthCase(model: "synth-llama-mixed.gguf", skip: false), SynthCase(model: "synth-llama-mixed.gguf", skip: true),
        SynthCase(model: "synth-qwen2-mixed.gguf", skip: false), SynthCase(model: "synth-qwen2-mixed.gguf", skip: true),
    ])
    func syntheticModelsMatchReference(_ c: SynthCase) throws {
        try checkSynthetic(c, batch: 16)
    }

    /// One token per pass: the decode path (16-bit integer kernels, for the synthetic models'
    /// Q4_K/Q5_K/Q6_K layers too) rather than the float path of a batch.
    @Test(arguments: [
        SynthCase(model: "synth-llama-mixed.gguf", skip: false), SynthCase(model: "synth-qwen2-mixed.gguf", skip: false),
    ])
    func syntheticModelsDecodeWithinBounds(_ c: SynthCase) throws {
        try checkSynthetic(c, batch: 1)
    }

    func checkSynthetic(_ c: SynthCase, batch: Int) throws {
        let entries = try Fixtures.json("synth/logprobs.json") as! [[String: Any]]
        let e = entries.first { $0["model"] as! String == c.model }!
        let tokens = (e["tokens"] as! [Int]).map(Int32.init)
        let shape = e["shape"] as! [Int]
        let mask = c.skip ? Self.mask(e["skipped_blocks"] as! [[Any]]) : .none
        let ref = try Fixtures.floats("synth/" + (e[c.skip ? "skip_file" : "file"] as! String))
        let logits = try Self.teacherForced(model: Fixtures.url("synth/" + c.model).path, tokens: tokens, mask: mask, batch: batch)
        let r = LogitComparison.compare(reference: ref, engineLogits: Array(logits.prefix(shape[0])), vocab: shape[1])
        #expect(r.withinBounds, "mean KL \(r.meanKL), max KL \(r.maxKL) at \(r.worstPosition), top-20 Δ \(r.maxTopDelta)")
    }

    @Test(.enabled(if: Fixtures.smolLM2Available), arguments: ["prompt-continuation", "paragraph", "paragraph-skip"])
    func smolLM2MatchesReference(_ name: String) throws {
        let path = try Fixtures.requireSmolLM2()
        let entries = try Fixtures.json("smollm2/logprobs.json") as! [[String: Any]]
        let e = entries.first { $0["name"] as! String == name }!
        let tokens = (e["tokens"] as! [Int]).map(Int32.init)
        let shape = e["shape"] as! [Int]
        let mask = (e["skipped_blocks"] as? [[Any]]).map(Self.mask) ?? .none
        let ref = try Fixtures.floats("smollm2/" + (e["file"] as! String))
        let logits = try Self.teacherForced(model: path, tokens: tokens, mask: mask)
        let r = LogitComparison.compare(reference: ref, engineLogits: Array(logits.prefix(shape[0])), vocab: shape[1])
        #expect(r.withinBounds, "mean KL \(r.meanKL), max KL \(r.maxKL) at \(r.worstPosition), top-20 Δ \(r.maxTopDelta)")
        // The argmax of every position must also agree with the reference's where recorded.
        let argmax = logits.prefix(shape[0]).map { row in row.indices.max { row[$0] < row[$1] }! }
        let refArgmax = e["argmax"] as! [Int]
        let agree = zip(argmax, refArgmax).filter { $0 == $1 }.count
        #expect(agree >= refArgmax.count - 2, "argmax agrees at \(agree) of \(refArgmax.count) positions")
    }
}
