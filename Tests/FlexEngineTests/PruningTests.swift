import Foundation
import Testing
@testable import FlexEngine
import FlexFormat

/// The pruning toolkit on the synthetic models (4 layers, 8 blocks): fast enough to run every
/// method end to end. The real-model numbers are in docs/PRUNING.md.
@Suite struct PruningTests {
    static let synth = Fixtures.url("synth/synth-llama-mixed.gguf").path

    static func evaluator(context: Int = 32) throws -> MaskEvaluator {
        var o = EngineOptions(modelPath: synth)
        o.contextLength = context
        o.batchSize = context
        o.logitRows = context
        o.threads = 2
        return try MaskEvaluator(engine: Engine(options: o))
    }

    static func sample(_ ev: MaskEvaluator, first: Int = 0, chunks: Int = 3, context: Int = 32) throws -> TextSample {
        let text = try String(contentsOf: Fixtures.url("text/devtext.txt"), encoding: .utf8)
        return ev.engine.textSample(text, first: first, count: chunks * context, context: context, scoreFrom: 4).0
    }

    /// Self-draft acceptance: agreement is the share of positions whose greedy choices match,
    /// itself everywhere, and the top-4 share holds at least the top-1 one.
    @Test func agreementCountsMatchingGreedyChoices() throws {
        let ev = try Self.evaluator()
        let s = try Self.sample(ev)
        let mask = BlockMask(skipping: [.init(.ffn, 1), .init(.attention, 2)])
        let dense = try ev.greedyChoices(.none, on: s)
        let masked = try ev.greedyChoices(mask, on: s)
        #expect(dense.count == s.scoredTokens)
        let same = Double(zip(dense, masked).filter { $0 == $1 }.count) / Double(dense.count)
        let a = try ev.agreement(mask, on: s)
        #expect(a.top1 == same)
        #expect(a.top1 < 1, "the mask changes some choices, or this test could not fail")
        #expect(a.topK >= a.top1)
        #expect(try ev.agreement(mask, topK: 1, on: s).topK == a.top1)
        #expect(try ev.agreement(.none, on: s) == (1, 1))
        #expect(try ev.agreement(mask, reference: mask, on: s) == (1, 1))
    }

    @Test func resumedPassesEqualFullPasses() throws {
        let ev = try Self.evaluator()
        let s = try Self.sample(ev)
        let base = BlockMask(skipping: [.init(.ffn, 1)])
        let candidates = ev.blocks.filter { !base.skips($0) }
        let resumed = try ev.candidateLosses(base: base, candidates: candidates, on: s)
        let fresh = try Self.evaluator()
        for (c, l) in zip(candidates, resumed) {
            #expect(try fresh.loss(base.skipping(c), on: s) == l, "\(c)")
        }
        #expect(fresh.passes == candidates.count * s.chunks.count)
        // Memoised: asking again runs nothing.
        let before = ev.passes
        _ = try ev.candidateLosses(base: base, candidates: candidates, on: s)
        #expect(ev.passes == before)
    }

    @Test func skippingEveryBlockIsWorseThanNone() throws {
        let ev = try Self.evaluator()
        let s = try Self.sample(ev)
        let dense = try ev.loss(.none, on: s)
        #expect(dense.isFinite && dense > 0)
        #expect(try ev.loss(BlockMask(skipping: ev.blocks), on: s) != dense)
    }

    @Test func greedySequentialImportance() throws {
        let ev = try Self.evaluator()
        let s = try Self.sample(ev)
        let info = PruningProfile.Calibration(text: "devtext", firstToken: 0, tokenCount: 96, context: 32, scoreFrom: 4, chunks: [0, 1, 2])
        let profile = try PruningAnalysis(evaluator: ev, calibration: s, calibrationInfo: info, modelName: "synth").run(.gsi)
        let order = try #require(profile.order)
        #expect(Set(order).count == 8 && profile.budgets.map(\.removed) == Array(1...8))
        // Step 1 is the best single removal; every budget's perplexity is its mask's, and the
        // masks nest (greedy: each adds one block to the previous).
        let single = try ev.candidateLosses(base: .none, candidates: ev.blocks, on: s)
        #expect(ev.blocks[single.indices.min { single[$0] < single[$1] }!].description == order[0])
        for b in profile.budgets {
            let mask = try profile.mask(removing: b.removed)
            #expect(abs(exp(try ev.loss(mask, on: s)) - b.calibrationPerplexity) < 1e-9)
            #expect(Set(b.blocks) == Set(order.prefix(b.removed)))
            #expect(b.parameterBytes == mask.skipped.reduce(0) { $0 + ev.parameterBytes($1) })
        }
        // Attention blocks free 2 × kvDim f16 per token (synth: kvDim 128).
        let attention = profile.budgets.last!.blocks.filter { $0.hasPrefix("attn") }.count
        #expect(profile.budgets.last!.kvBytesPerToken == attention * 2 * 128 * 2)
    }

    @Test func resumedAnalysisReplaysItsMemo() throws {
        let s = try Self.sample(try Self.evaluator())
        let info = PruningProfile.Calibration(text: "devtext", firstToken: 0, tokenCount: 96, context: 32, scoreFrom: 4, chunks: [0, 1, 2])
        let full = try Self.evaluator()
        let reference = try PruningAnalysis(evaluator: full, calibration: s, calibrationInfo: info, modelName: "synth").run(.gsi)
        // An interrupted run saved part of its scores: the rerun continues from them.
        let resumed = try Self.evaluator()
        var partial = MaskEvaluator.Memo()
        for (k, v) in full.memo.scores.sorted(by: { $0.key < $1.key }).prefix(full.memo.scores.count / 2) { partial.scores[k] = v }
        resumed.memo = partial
        let again = try PruningAnalysis(evaluator: resumed, calibration: s, calibrationInfo: info, modelName: "synth").run(.gsi)
        #expect(again.budgets == reference.budgets && again.order == reference.order)
        #expect(again.passes < reference.passes)
    }

    @Test(arguments: [PruningMethod.oneshot, .bi, .angular])
    func orderingMethodsGiveEveryBudget(_ method: PruningMethod) throws {
        let ev = try Self.evaluator()
        let s = try Self.sample(ev)
        let info = PruningProfile.Calibration(text: "devtext", firstToken: 0, tokenCount: 96, context: 32, scoreFrom: 4, chunks: [0, 1, 2])
        let p = try PruningAnalysis(evaluator: ev, calibration: s, calibrationInfo: info, modelName: "synth").run(method)
        #expect(p.budgets.map(\.removed) == Array(1...8))
        for b in p.budgets { #expect(Set(b.blocks).count == b.removed) }
        if method == .angular {
            // Whole contiguous layers; an odd budget keeps the window's first attention block.
            for b in p.budgets {
                let layers = Set(b.blocks.map { Int($0.split(separator: ":")[1])! }).sorted()
                #expect(layers == Array(layers.first!...layers.last!))
                #expect(layers.count == (b.removed + 1) / 2)
            }
        }
    }

    @Test func evolutionarySearchNeverLosesToItsSeeds() throws {
        let ev = try Self.evaluator()
        let s = try Self.sample(ev, chunks: 6)
        let info = PruningProfile.Calibration(text: "devtext", firstToken: 0, tokenCount: 192, context: 32, scoreFrom: 4, chunks: Array(0..<6))
        var a = PruningAnalysis(evaluator: ev, calibration: s, calibrationInfo: info, modelName: "synth")
        a.evolution.budgets = [2, 4]
        a.evolution.selectedChunks = 3
        a.evolution.generations = 4
        a.evolution.offspring = 6
        let seed = BlockMask(skipping: [.init(.attention, 0), .init(.ffn, 3)])
        a.evolution.seeds = [2: [seed]]
        let p = try a.run(.evop)
        #expect(p.budgets.map(\.removed) == [2, 4])
        #expect(p.calibration.chunks.count == 3 && Set(p.calibration.chunks).count == 3)
        let selected = s.selecting(p.calibration.chunks)
        #expect(p.budgets[0].calibrationPerplexity <= exp(try ev.loss(seed, on: selected)))
    }

    @Test func kMeansPicksOneRepresentativePerCluster() {
        var rng = RandomSource(seed: 7)
        let points: [[Float]] = [[0, 0], [0.1, 0], [10, 10], [10.2, 10], [-10, 5], [-10, 5.1]]
        let picks = KMeans.representatives(of: points, clusters: 3, rng: &rng)
        #expect(Set(picks.map { $0 / 2 }) == [0, 1, 2])
    }

    @Test func profileRoundTripAndErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-profile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = PruningProfile(method: .gsi, model: "m.gguf", layers: 4,
                               calibration: .init(text: "t", firstToken: 0, tokenCount: 64, context: 32, scoreFrom: 4, chunks: [0, 1]),
                               densePerplexity: 10, order: ["ffn:3", "attn:1"],
                               budgets: [.init(removed: 1, blocks: ["ffn:3"], calibrationPerplexity: 11, parameterBytes: 100, kvBytesPerToken: 0),
                                         .init(removed: 2, blocks: ["attn:1", "ffn:3"], calibrationPerplexity: 12, parameterBytes: 150, kvBytesPerToken: 512)],
                               seconds: 1, passes: 2)
        let path = dir.appendingPathComponent("p.json").path
        try p.write(path: path)
        #expect(try PruningProfile.read(path: path) == p)
        #expect(try p.mask(removing: 2) == BlockMask(parsing: "attn:1,ffn:3"))
        #expect(throws: PruningProfile.ProfileError.self) { try p.mask(removing: 5) }
        // Without prefill masks the file stays version 1, which older readers read.
        #expect(try String(contentsOfFile: path, encoding: .utf8).contains("\"version\" : 1"))
        #expect(try p.prefillMask(removing: 2) == p.mask(removing: 2))
        // With them (pdtrim), version 2; the prefill mask is the budget's own.
        var staged = p
        staged.method = .pdtrim
        staged.budgets[1].prefillBlocks = ["ffn:3"]
        try staged.write(path: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8).contains("\"version\" : 2"))
        var read = try PruningProfile.read(path: path)
        #expect(read.version == 2)
        read.version = 1
        #expect(read == staged)
        #expect(try read.prefillMask(removing: 2) == BlockMask(parsing: "ffn:3"))
        #expect(try read.mask(removing: 2) == BlockMask(parsing: "attn:1,ffn:3"))
        #expect(try read.prefillMask(removing: 1) == BlockMask(parsing: "ffn:3"))
        let future = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "\"version\" : 2", with: "\"version\" : 3")
        try future.write(toFile: path, atomically: true, encoding: .utf8)
        do { _ = try PruningProfile.read(path: path); Issue.record("a version 3 profile was read") } catch {
            #expect(error.description.contains("format version 3"))
        }
        try "{}".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: PruningProfile.ProfileError.self) { try PruningProfile.read(path: path) }
    }

    @Test func prefillAndDecodeMasksDiffer() throws {
        let prompt: [Int32] = [84, 104, 101, 32, 113, 117, 105, 99, 107]
        let decodeOnly = BlockMask(skipping: [.init(.ffn, 2), .init(.attention, 1)])
        var o = EngineOptions(modelPath: Self.synth)
        o.skip = decodeOnly
        o.prefillSkip = BlockMask.none
        o.contextLength = 64
        var params = GenerateParameters(maxTokens: 6, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        var it = try Engine(options: o).generate(tokens: prompt, parameters: params)
        var ids: [Int32] = []
        while let t = it.next() { ids.append(t.id) }

        // The same by hand: the prompt through the dense model, each new token through the pruned one.
        let weights = try ModelWeights(file: GGUFFile(path: Self.synth))
        let tf = Transformer(weights: weights, contextLength: 64, maxBatch: 16, threads: 2)
        func argmax(_ l: UnsafeBufferPointer<Float>) -> Int32 { Int32(l.indices.max { l[$0] < l[$1] }!) }
        try prompt.withUnsafeBufferPointer { try tf.forward($0, logitRows: (prompt.count - 1)..<prompt.count, mask: BlockMask.none) }
        var expected = [argmax(tf.logits(row: 0))]
        while expected.count < 6 {
            try [expected.last!].withUnsafeBufferPointer { try tf.forward($0, logitRows: 0..<1, mask: decodeOnly) }
            expected.append(argmax(tf.logits(row: 0)))
        }
        #expect(ids == expected)
        // Prefill skipping an attention block that decode runs is refused.
        var bad = EngineOptions(modelPath: Self.synth)
        bad.prefillSkip = BlockMask(skipping: [.init(.attention, 1)])
        #expect(throws: EngineError.self) { try Engine(options: bad) }
    }

    @Test func evaluatorRefusesCapsAndMasks() throws {
        var o = EngineOptions(modelPath: Self.synth)
        o.skip = BlockMask(skipping: [.init(.ffn, 0)])
        #expect(throws: EngineError.self) { try MaskEvaluator(engine: Engine(options: o)) }
    }
}
