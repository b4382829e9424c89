import Foundation
import Testing
@testable import FlexEngine
import FlexSystem

/// RAP's pieces that need no model: the memory model over a made-up layout, the greedy policy.
@Suite struct MemoryModelTests {
    static let model = MemoryModel(layout: MemoryPlanTests.layout(), kvBytesPerTokenPerLayer: 768, kvTokens: 8 * 2048,
                                   bufferBytes: 2 << 20, runtimeBytes: 20 << 20)

    @Test func attentionBlocksFreeTheirKVAndFFNBlocksOnlyWeights() throws {
        let m = Self.model
        let dense = m.residentFootprint(skipping: .none)
        let attn = try BlockMask(parsing: "attn:3"), ffn = try BlockMask(parsing: "ffn:3")
        #expect(m.kvBytes(skipping: .none) == 30 * 8 * 2048 * 768)
        #expect(m.kvBytes(skipping: attn) == 29 * 8 * 2048 * 768 && m.kvBytes(skipping: ffn) == m.kvBytes(skipping: .none))
        // 8 × 2048 positions: one attention layer's KV (12 MiB) outweighs an FFN block's weights (~2 MiB).
        #expect(dense - m.residentFootprint(skipping: attn) > dense - m.residentFootprint(skipping: ffn))
        #expect(m.streamingMinimum(skipping: .none) < dense)
        // The minimum is the planner's own: a plan at that cap exists, one byte less does not.
        let minimum = m.streamingMinimum(skipping: attn)
        #expect(throws: Never.self) { _ = try MemoryPlan(m.inputs(skipping: attn, cap: minimum)) }
        #expect(throws: MemoryPlan.PlanError.self) { _ = try MemoryPlan(m.inputs(skipping: attn, cap: minimum - 1)) }
    }

    /// Sliding-window layers hold their ring whatever the load: Gemma-like layers 0–4 of every 6
    /// local (window 512: 33 pages of 16 positions per slot, 2 slots), the rest full.
    @Test func windowedLayersCountTheirRingNotTheLoad() throws {
        let windows: [Int?] = (0..<30).map { $0 % 6 < 5 ? 512 : nil }
        let ring = PagedKVCache.windowedTokens(layers: 30, windows: windows, capacity: 8192, slots: 2)
        #expect(ring.compactMap { $0 } == Array(repeating: 2 * 33 * 16, count: 25) && ring.filter { $0 == nil }.count == 5)
        let m = MemoryModel(layout: MemoryPlanTests.layout(), kvBytesPerTokenPerLayer: 768, kvTokens: 8 * 2048,
                            bufferBytes: 2 << 20, runtimeBytes: 20 << 20, windowedTokens: ring)
        #expect(m.kvBytes(skipping: .none) == (5 * 8 * 2048 + 25 * 2 * 33 * 16) * 768)
        // Dropping a local layer's attention frees its ring; a global one's, the load's positions.
        #expect(m.kvBytes(skipping: .none) - m.kvBytes(skipping: try BlockMask(parsing: "attn:0")) == 2 * 33 * 16 * 768)
        #expect(m.kvBytes(skipping: .none) - m.kvBytes(skipping: try BlockMask(parsing: "attn:5")) == 8 * 2048 * 768)
        // The same counts as the cache itself reserves for its windowed layers.
        let cacheRing = PagedKVCache.capacityBytes(layers: 30, kvDim: 192, floor: .none, windows: windows, sequences: 2, capacity: 8192, pages: 0)
        #expect(cacheRing == 25 * 2 * 33 * 16 * 768)
    }

    /// The per-block table gives the planner's own numbers for any mask, to the byte.
    @Test func tableEqualsThePlannerForRandomMasks() {
        let m = Self.model
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let mask = BlockMask(skipping: BlockMask.Block.all(layers: 30).filter { _ in Bool.random(using: &rng) })
            let i = m.inputs(skipping: mask, cap: 0)
            #expect(m.streamingMinimum(skipping: mask) == MemoryPlan.minimumCap(i), "\(mask)")
            #expect(m.residentFootprint(skipping: mask) == i.fixedBytes + Builder.allResident(i.layout).residentBytes, "\(mask)")
        }
    }

    @Test func skippedBlocksLeaveTheLayout() throws {
        let l = MemoryPlanTests.layout().skipping(try BlockMask(parsing: "attn:0,ffn:2"))
        #expect(l.layers[0].attention.isEmpty && !l.layers[0].ffn.isEmpty && l.layers[2].ffn.isEmpty && !l.layers[1].attention.isEmpty)
    }

    /// The oracle takes the best measured mask that fits, whatever the order; greedy can do worse.
    @Test func oracleTakesTheBestMaskThatFits() throws {
        let dense = PruningProfile.QualityTable.Entry(family: "dense", count: 0, blocks: [], nll: 3.0, top1: 0.35)
        let entries = [
            PruningProfile.QualityTable.Entry(family: "attention", count: 1, blocks: ["attn:5"], nll: 3.1, top1: 0.34),
            PruningProfile.QualityTable.Entry(family: "ffn", count: 1, blocks: ["ffn:2"], nll: 3.4, top1: 0.30),
            PruningProfile.QualityTable.Entry(family: "budget", count: 2, blocks: ["attn:5", "ffn:2"], nll: 3.6, top1: 0.28),
        ]
        let table = PruningProfile.QualityTable(firstToken: 0, tokenCount: 2048, context: 128, dense: dense, entries: entries)
        let oracle = OraclePolicy(candidates: try PruningCandidates(table: table))
        let state = PruningState(batch: 1, sequenceLength: 128, cap: 0)
        // "Fits" = skips ffn:2 (say, the largest block): the oracle picks the cheaper single skip.
        #expect(oracle.decide(state, base: .none) { $0.skips(.init(.ffn, 2)) } == (try BlockMask(parsing: "ffn:2")))
        #expect(oracle.decide(state, base: .none) { _ in true } == BlockMask.none)
        #expect(oracle.decide(state, base: .none) { _ in false } == nil)
        // The base is in every answer.
        #expect(oracle.decide(state, base: try BlockMask(parsing: "ffn:9")) { _ in true } == (try BlockMask(parsing: "ffn:9")))
        // Greedy in the order attn:5, ffn:2 reaches the 2-block mask, worse than the oracle's.
        let greedy = GreedyPolicy(order: [.init(.attention, 5), .init(.ffn, 2)])
        #expect(greedy.decide(state, base: .none) { $0.skips(.init(.ffn, 2)) } == (try BlockMask(parsing: "attn:5,ffn:2")))
    }

    @Test func greedyDropsInOrderUntilItFits() throws {
        let m = Self.model
        let order = (0..<30).map { BlockMask.Block(.attention, $0) } + (0..<30).map { BlockMask.Block(.ffn, $0) }
        let policy = GreedyPolicy(order: order)
        let dense = m.streamingMinimum(skipping: .none)
        let state = PruningState(batch: 8, sequenceLength: 2048, cap: dense - 50 << 20)
        let mask = try #require(policy.decide(state, base: .none) { m.streamingMinimum(skipping: $0) <= state.cap })
        // The fewest blocks in order: the mask is a prefix of the order, one shorter does not fit.
        let k = mask.skipped.count
        #expect(mask == BlockMask(skipping: order.prefix(k)))
        #expect(m.streamingMinimum(skipping: BlockMask(skipping: order.prefix(k - 1))) > state.cap)
        // Fits already: the base mask; nothing fits: nil.
        #expect(policy.decide(state, base: .none) { _ in true } == BlockMask.none)
        #expect(policy.decide(state, base: .none) { _ in false } == nil)
        #expect(policy.decide(state, base: try BlockMask(parsing: "ffn:29")) { $0.skipped.count >= 3 }
                == (try BlockMask(parsing: "ffn:29,attn:0,attn:1")))
    }
}

/// `--prune fit` on SmolLM2: where exact streaming refuses, it skips blocks in GSI order until
/// the plan fits, and runs.
@Suite(.enabled(if: Fixtures.smolLM2Available), .serialized) struct PruneFitTests {
    /// The memory model's per-block table equals the planner on the real model's layout too.
    @Test func tableEqualsThePlannerOnSmolLM2() throws {
        let model = try Model(path: try Fixtures.requireSmolLM2(), streaming: true)
        let m = MemoryModel(layout: try model.weights.layout(skipping: .none), kvBytesPerTokenPerLayer: 768, kvTokens: 4096,
                            bufferBytes: 3 << 20, runtimeBytes: 19 << 20)
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<100 {
            let mask = BlockMask(skipping: BlockMask.Block.all(layers: 30).filter { _ in Int.random(in: 0..<4, using: &rng) == 0 })
            #expect(m.streamingMinimum(skipping: mask) == MemoryPlan.minimumCap(m.inputs(skipping: mask, cap: 0)), "\(mask)")
        }
    }

    /// The shipped GSI profile, options for `sequences` × `context` on SmolLM2 (2 threads, no
    /// cgroup, a fixed runtime share), and the dense in-memory footprint of that workload.
    static func workload(context: Int, sequences: Int = 1) throws -> (profile: PruningProfile, options: EngineOptions, dense: Int) {
        let profile = try PruningProfile.read(path: Fixtures.packageRoot.appendingPathComponent("docs/pruning/gsi.json").path)
        var o = EngineOptions(modelPath: try Fixtures.requireSmolLM2())
        o.threads = 2
        o.contextLength = context
        o.maxSequences = sequences
        o.followCgroupLimit = false
        // A fixed runtime share: the measured one (anonymous memory the open allocated) moves with
        // whatever other tests allocate at the same time, and the caps here are fractions of it.
        o.runtimeAllowance = 24 << 20
        return (profile, o, try Engine(options: o).memory.total)
    }

    @Test func fitRunsWhereStreamingRefuses() throws {
        var (profile, o, _) = try Self.workload(context: 256, sequences: 4)
        o.prune = .fit
        #expect(throws: EngineError.self) { _ = try Engine(options: o) }   // fit without an order
        o.pruneOrder = try profile.removalOrder()
        // 2 MiB under the dense streaming minimum (the horizon is the whole pool here).
        let probe = try Session(model: try Model(path: o.modelPath, streaming: true), options: { var p = o; p.memoryLimit = 1 << 30; return p }())
        o.memoryLimit = try #require(probe.controller).memory.streamingMinimum(skipping: .none) - (2 << 20)
        o.prune = .off
        #expect(throws: EngineError.self) { _ = try Engine(options: o) }   // --prune off: refused
        o.prune = .fit
        let engine = try Engine(options: o)
        let d = try #require(engine.session.pruneDecision)
        #expect(d.denseMinimum > o.memoryLimit! && d.minimum <= o.memoryLimit! && d.policy == "greedy")
        #expect(d.skipped == BlockMask(skipping: o.pruneOrder!.prefix(d.skipped.skipped.count)))
        let plan = try #require(engine.plan)
        #expect(plan.totalBytes <= o.memoryLimit!)
        #expect(engine.options.skip == d.skipped)
        var params = GenerateParameters(maxTokens: 8, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        var tokens = 0
        var it = try engine.generate(prompts: ["The capital of France is", "1, 2, 3,", "def f(x):", "Hello"], parameters: params)
        while let e = it.next() { if case .token = e { tokens += 1 } }
        #expect(it.error == nil && tokens == 32)
    }

    /// The KV cache is planned to a horizon: a cap the dense model fits while the sequences are
    /// short is run dense, and as they grow the controller drops attention blocks, handing their
    /// pages back, so the plan (with the KV it planned for) stays within the cap throughout.
    @Test func kvGrowthDropsAttentionAsSequencesGrow() throws {
        var (profile, o, dense) = try Self.workload(context: 768, sequences: 4)
        o.memoryLimit = dense
        o.prune = .fit
        o.pruneOrder = try profile.removalOrder()
        let model = try Model(path: o.modelPath, streaming: true)
        // A cap between the dense streaming minimum with the first horizon's KV and with the
        // whole pool's: dense at first, not at the end.
        let c = try #require(try Session(model: model, options: o).controller)
        let first = c.memory.streamingMinimum(skipping: .none)
        let full = c.memory.with(kvTokens: c.poolPages * c.pageTokens).streamingMinimum(skipping: .none)
        #expect(first < full)
        o.memoryLimit = (first + full) / 2
        let session = try Session(model: model, options: o)
        #expect(session.pruneDecision == nil && session.mask == .none)
        var params = GenerateParameters(maxTokens: 700, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        for p in ["The capital of France is", "1, 2, 3,", "def f(x):", "Hello"] { _ = try session.add(prompt: p, parameters: params) }
        var tokens = 0
        while try session.step({ e in if case .token = e { tokens += 1 } }) {
            let c = try #require(session.controller)
            #expect(session.kvCache.pagesInUse <= c.horizonPages)
            if let plan = session.plan { #expect(plan.totalBytes <= o.memoryLimit!) }
        }
        #expect(tokens == 4 * 700)
        let growth = session.pruneDecisions.filter { $0.reason == .kvGrowth }
        #expect(!growth.isEmpty)
        // Attention went first (its KV is what grew), and its pages were handed back.
        #expect(!session.mask.skippedAttentionLayers.isEmpty)
        #expect(Set(growth.flatMap(\.releasedLayers)) == session.mask.skippedAttentionLayers)
        #expect(growth.allSatisfy { $0.minimum <= o.memoryLimit! && $0.measuredTokensPerSecond ?? 0 > 0 })
    }

    /// `--resident-only` (RAP's setting): a cap that needs streaming is refused, and with fit the
    /// blocks skipped are enough for every kept weight and the KV cache to be resident.
    @Test func residentOnlyFitsEverythingKeptInMemory() throws {
        var (profile, o, dense) = try Self.workload(context: 256)
        o.memoryLimit = dense * 8 / 10
        o.residentOnly = true
        #expect(throws: EngineError.self) { _ = try Engine(options: o) }
        o.prune = .fit
        o.pruneOrder = try profile.removalOrder()
        let engine = try Engine(options: o)
        let d = try #require(engine.session.pruneDecision)
        #expect(d.reason == .capBelowResidentFootprint && d.minimum <= o.memoryLimit!)
        let plan = try #require(engine.plan)
        #expect(plan.isFullyResident && plan.totalBytes <= o.memoryLimit!)
        // Streaming at the same cap needs no pruning at all.
        o.residentOnly = false
        #expect(try Engine(options: o).session.pruneDecision == nil)
    }

    /// Acceptance 4's shape (scaled): the cap steps 100 % → 60 % → 40 % → 80 % of the dense
    /// footprint while 4 sequences generate; the controller re-decides at each step, every plan
    /// fits its cap, blocks come back when the cap grows (attention only where no sequence has
    /// skipped it), and every sequence completes.
    @Test func capStepsAreFollowedAtTokenBoundaries() throws {
        var (profile, o, dense) = try Self.workload(context: 256, sequences: 4)
        o.memoryLimit = dense
        o.prune = .fit
        o.pruneOrder = try profile.removalOrder()
        let model = try Model(path: o.modelPath, streaming: true)
        let session = try Session(model: model, options: o)
        var params = GenerateParameters(maxTokens: 48, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        for p in ["The capital of France is", "1, 2, 3,", "def f(x):", "Hello"] { _ = try session.add(prompt: p, parameters: params) }
        var tokens = 0, steps = 0
        var skippedAt: [Int: Int] = [:]
        let schedule = [10: 60, 20: 40, 30: 80]
        while try session.step({ e in if case .token = e { tokens += 1 } }) {
            steps += 1
            if let plan = session.plan { #expect(plan.totalBytes <= session.memoryLimit!, "step \(steps)") }
            if let f = schedule[steps] {
                if let previous = schedule.first(where: { $0.key == steps - 10 })?.value { skippedAt[previous] = session.mask.skipped.count }
                try session.setMemoryLimit(dense * f / 100)
            }
        }
        skippedAt[80] = session.mask.skipped.count
        #expect(tokens == 4 * 48)
        #expect(session.pruneDecisions.count == 3 && session.pruneDecisions.allSatisfy { $0.reason == .capChanged })
        #expect(session.replanCount == 3)
        // Tighter caps skip more; at 80 % FFN blocks came back (attention skipped at 40 % stays).
        #expect(skippedAt[60]! <= skippedAt[40]! && skippedAt[80]! <= skippedAt[40]!)
        #expect(session.pruneDecisions.map(\.state.cap) == [dense * 60 / 100, dense * 40 / 100, dense * 80 / 100])
        #expect(throws: EngineError.self) { try session.setMemoryLimit(1 << 20) }
    }
}

extension PruneFitTests {
    /// `--prune auto`'s feedback, with the measurements given (deterministic): a decision whose
    /// measured rate falls short of the target by more than 10 % of its prediction rescales the
    /// time model (by at most 2× at a time) and drops FFN blocks only, the fewest in profile
    /// order that meet the target; a mask that beats the target with room gets them back; a
    /// prediction that was right changes nothing.
    @Test func autoCorrectsItsTimeModelFromMeasurements() throws {
        var (profile, o, dense) = try Self.workload(context: 512, sequences: 2)
        o.memoryLimit = dense   // everything fits: only the target can make it skip
        o.pruneOrder = try profile.removalOrder()
        o.prune = .auto
        // A uniform model: 60 blocks of 0.1 ms, nothing else; dense predicts 2 / 6 ms = 333 tok/s.
        o.throughput = ThroughputModel(attentionSeconds: [1e-4, 1e-4], ffnSeconds: [1e-4, 1e-4], baseSeconds: [0, 0],
                                       positionSeconds: 0, diskBytesPerSecond: 1e12)
        let predicted = 2 / 6e-3
        o.minTokensPerSecond = 0.8 * predicted
        let session = try Session(model: try Model(path: o.modelPath, streaming: true), options: o)
        #expect(session.pruneDecision?.skipped == BlockMask.none)
        var params = GenerateParameters(maxTokens: 64, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        for p in ["The capital of France is", "1, 2, 3,"] { _ = try session.add(prompt: p, parameters: params) }
        for _ in 0..<4 { try session.step { _ in } }
        #expect(session.mask == .none)
        func measured(_ rate: Double) {
            session.measuringDecision = .init(tokens: Int(rate * 2), seconds: 2, passes: 20, predicted: session.measuringDecision.predicted)
        }
        // Half the prediction: scale 0.5, dense predicts 167 < 267; 23 FFN blocks give 60/37 × 167 = 270.
        let before = session.pruneDecisions.count
        measured(0.5 * predicted)
        try session.controllerTick()
        #expect(session.controller?.rateScale == 0.5)
        #expect(session.pruneDecisions.count == before + 1 && session.pruneDecisions.last?.reason == .throughputTarget)
        let ffn = BlockMask(skipping: o.pruneOrder!.filter { $0.kind == .ffn }.prefix(23))
        #expect(session.mask == ffn, "\(session.mask)")
        // Measured as predicted: nothing changes.
        measured(try #require(session.measuringDecision.predicted))
        try session.controllerTick()
        #expect(session.controller?.rateScale == 0.5 && session.mask == ffn && session.pruneDecisions.count == before + 1)
        // Far above the target while skipping: the scale goes back up and the blocks come back.
        measured(2 * (session.measuringDecision.predicted ?? 0))
        try session.controllerTick()
        #expect(abs((session.controller?.rateScale ?? 0) - 1) < 1e-3 && session.mask == .none)
        // A window shorter than a second corrects nothing.
        session.measuringDecision = .init(tokens: 10, seconds: 0.5, passes: 20, predicted: session.measuringDecision.predicted)
        try session.controllerTick()
        #expect(abs((session.controller?.rateScale ?? 0) - 1) < 1e-3 && session.mask == .none)
        while try session.step({ _ in }) {}
    }
}

/// The quality table's two measures on a real model: NLL equals the evaluator's memoised loss,
/// top-1 is a share, and skipping blocks does not make the model better at everything at once.
@Suite(.enabled(if: Fixtures.smolLM2Available), .serialized) struct QualityTableTests {
    @Test func qualityMatchesTheLossAndTop1IsAShare() throws {
        var o = EngineOptions(modelPath: try Fixtures.requireSmolLM2())
        o.threads = 2
        o.contextLength = 64
        o.batchSize = 64
        o.logitRows = 64
        let engine = try Engine(options: o)
        let text = try String(contentsOf: Fixtures.url("text/devtext.txt"), encoding: .utf8)
        let (sample, _) = engine.textSample(text, first: 0, count: 256, context: 64, scoreFrom: 8)
        let evaluator = try MaskEvaluator(engine: engine)
        let dense = try evaluator.quality(.none, on: sample)
        #expect(abs(dense.nll - (try evaluator.loss(.none, on: sample))) < 1e-12)
        #expect(dense.top1 > 0.2 && dense.top1 < 0.6)
        let gutted = try evaluator.quality(BlockMask(skipping: (0..<20).map { BlockMask.Block(.ffn, $0) }), on: sample)
        #expect(gutted.nll > dense.nll && gutted.top1 < dense.top1)
        // top-1 is a count over the scored positions.
        let hits = dense.top1 * Double(sample.scoredTokens)
        #expect(abs(hits - hits.rounded()) < 1e-9)
    }
}
