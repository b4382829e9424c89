import Foundation
import Testing
@testable import FlexEngine

/// PDTrim's stage-aware search on the synthetic model (4 layers, 8 blocks), end to end; the
/// SmolLM2 study is in docs/PDTRIM.md.
@Suite struct StageAwareSearchTests {
    static func engine() throws -> Engine {
        var o = EngineOptions(modelPath: PruningTests.synth)
        o.contextLength = 128
        o.threads = 2
        return try Engine(options: o)
    }

    /// Windows of 24 prompt and 8 continuation tokens from devtext.
    static func windows(_ engine: Engine, count: Int) throws -> [StageAwareSearch.Window] {
        let text = try String(contentsOf: Fixtures.url("text/devtext.txt"), encoding: .utf8)
        let all = engine.tokenizer.encode(text, addSpecial: false, parseSpecial: false)
        return (0..<count).map { i in
            .init(prompt: Array(all[i * 32..<i * 32 + 24]), continuation: Array(all[i * 32 + 24..<i * 32 + 32]))
        }
    }

    /// Mean continuation NLL through the public hand-off path: the session opened on (prefill,
    /// decode), a state made by its prefill, the continuation scored by its decode mask.
    static func handOffLoss(_ engine: Engine, prefill: BlockMask, decode: BlockMask, _ windows: [StageAwareSearch.Window]) throws -> Double {
        try engine.session.setMask(decode, prefill: prefill)
        defer { try? engine.session.setMask(.none) }
        var total = 0.0, count = 0
        for w in windows {
            var p = GenerateParameters(maxTokens: 1, sampling: .greedy)
            p.stopAtEndOfGeneration = false
            let nll = try engine.session.scoreContinuation(of: engine.prefillState(tokens: w.prompt, parameters: p), tokens: w.continuation)
            total += nll.reduce(0, +)
            count += nll.count
        }
        return total / Double(count)
    }

    /// A decode mask given to scoring a dense prefill's state gives the numbers of a state made
    /// by a session whose decode mask it is (what lets the search prefill once per prefill mask).
    @Test func scoringWithADecodeMaskEqualsAHandOffMadeWithIt() throws {
        let engine = try Self.engine()
        let w = try Self.windows(engine, count: 1)[0]
        let decode = try BlockMask(parsing: "attn:1,ffn:2"), prefill = try BlockMask(parsing: "attn:1")
        var p = GenerateParameters(maxTokens: 1, sampling: .greedy)
        p.stopAtEndOfGeneration = false
        try engine.session.setMask(prefill, prefill: prefill)
        let state = try engine.prefillState(tokens: w.prompt, parameters: p)
        let scored = try engine.session.scoreContinuation(of: state, tokens: w.continuation, decodeMask: decode)
        try engine.session.setMask(decode, prefill: prefill)
        let reference = try engine.session.scoreContinuation(of: engine.prefillState(tokens: w.prompt, parameters: p), tokens: w.continuation)
        #expect(scored == reference)
        #expect(scored != (try engine.session.scoreContinuation(of: state, tokens: w.continuation, decodeMask: prefill)))
        // A decode mask that runs attention the prefill skipped has no keys to read: refused.
        #expect(throws: EngineError.self) { try engine.session.scoreContinuation(of: state, tokens: w.continuation, decodeMask: .none) }
    }

    @Test func profileHoldsNestedStageMasksScoredAsAHandOff() throws {
        let engine = try Self.engine()
        let windows = try Self.windows(engine, count: 4)
        let search = try StageAwareSearch(engine: engine, pruning: Array(windows.prefix(3)), distillation: [windows[3]])
        search.settings.budgets = [2, 4]
        search.settings.prefillShare = 0.5
        search.settings.shortlist = 1   // the pick is then the pruning windows' best, checked below
        let info = PruningProfile.Calibration(text: "devtext", firstToken: 0, tokenCount: 128, context: 32, scoreFrom: 24, chunks: [0, 1, 2, 3])
        let profile = try search.run(modelName: "synth", calibration: info)
        #expect(profile.method == .pdtrim)
        #expect(profile.budgets.map(\.removed) == [2, 4])
        let order = try profile.removalOrder()
        #expect(order.count == 4)
        for b in profile.budgets {
            let decode = try profile.mask(removing: b.removed), prefill = try profile.prefillMask(removing: b.removed)
            // Nested: the decode mask is the order's first k; the prefill mask is half of it, inside it.
            #expect(decode == BlockMask(skipping: order[..<b.removed]))
            #expect(prefill.skipped.count == b.removed / 2)
            #expect(prefill.skipped.isSubset(of: decode.skipped))
            // The profile's figure is the hand-off's, over all windows.
            let l = try Self.handOffLoss(engine, prefill: prefill, decode: decode, windows)
            #expect(abs(exp(l) - b.calibrationPerplexity) < 1e-9 * b.calibrationPerplexity)
        }
        // The first removal is the block whose loss alone, after dense prompts, is lowest.
        let pruning = Array(windows.prefix(3))
        let first = try BlockMask.Block.all(layers: 4).map { b in (b, try Self.handOffLoss(engine, prefill: .none, decode: BlockMask(skipping: [b]), pruning)) }
        #expect(order[0] == first.min { $0.1 < $1.1 }!.0, "\(first)")
        #expect(abs(exp(try Self.handOffLoss(engine, prefill: .none, decode: .none, windows)) - profile.densePerplexity) < 1e-9 * profile.densePerplexity)
        // The session is left dense.
        #expect(engine.session.mask == .none && engine.session.prefillMask == .none)
    }

    @Test func refusesWhatItCannotRun() throws {
        let engine = try Self.engine()
        let windows = try Self.windows(engine, count: 2)
        #expect(throws: EngineError.self) { try StageAwareSearch(engine: engine, pruning: windows, distillation: []) }
        let long = StageAwareSearch.Window(prompt: Array(repeating: 1, count: 120), continuation: Array(repeating: 1, count: 8))
        #expect(throws: EngineError.self) { try StageAwareSearch(engine: engine, pruning: [long], distillation: windows) }
        var o = EngineOptions(modelPath: PruningTests.synth)
        o.skip = try BlockMask(parsing: "ffn:1")
        #expect(throws: EngineError.self) { try StageAwareSearch(engine: Engine(options: o), pruning: windows, distillation: windows) }
    }
}
