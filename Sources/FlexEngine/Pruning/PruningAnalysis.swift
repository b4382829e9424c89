import FlexSystem
import Foundation

/// Runs one pruning method over a calibration sample and returns its ``PruningProfile``.
///
/// Every method ends in the same place: a mask per budget k, scored on calibration text. The
/// ordering methods (gsi, oneshot, bi) take the first k blocks of their order; angular takes a
/// window of whole layers; evop searches each requested k. All scoring goes through the
/// evaluator's memo, so `checkpoint` (called after each unit of work) can save it and a rerun
/// with the same settings replays what was done and carries on.
public struct PruningAnalysis {
    public struct Progress: Sendable {
        /// Scores done and expected in all (an estimate for evop), and a short status.
        public let done: Int
        public let total: Int
        public let status: String
    }

    /// EvoP's knobs (DESIGN.md §3): CCDS picks `selectedChunks` of the pool by k-means over the
    /// dense model's pooled final states; the search is EvoPress-style (1+λ) with level-switch
    /// mutation and two-step selection.
    public struct EvolutionSettings: Sendable {
        public var budgets: [Int] = [6, 12, 18]
        public var selectedChunks = 4
        public var generations = 30
        public var offspring = 16
        /// Offspring that pass the one-chunk screen to a full score.
        public var survivors = 3
        public var seed: UInt64 = 1
        /// Masks to start from, per budget (for example GSI's, from its profile).
        public var seeds: [Int: [BlockMask]] = [:]
        public init() {}
    }

    public let evaluator: MaskEvaluator
    public let calibration: TextSample
    public let calibrationInfo: PruningProfile.Calibration
    public let modelName: String
    public var evolution = EvolutionSettings()
    public var progress: (Progress) -> Void = { _ in }
    public var checkpoint: () -> Void = {}

    public init(evaluator: MaskEvaluator, calibration: TextSample, calibrationInfo: PruningProfile.Calibration, modelName: String) {
        self.evaluator = evaluator
        self.calibration = calibration
        self.calibrationInfo = calibrationInfo
        self.modelName = modelName
    }

    public func run(_ method: PruningMethod) throws(EngineError) -> PruningProfile {
        let start = Platform.now(), passes = evaluator.passes
        var profile: PruningProfile
        switch method {
        case .gsi: profile = try greedySequential()
        case .oneshot: profile = try ordered(method, order: oneShotOrder())
        case .bi: profile = try ordered(method, order: blockInfluenceOrder())
        case .angular: profile = try angular()
        case .evop: profile = try evolutionary()
        case .pdtrim:
            // Scored on continuations after a prompt, not on chunks: another evaluator.
            throw .invalidOption("pdtrim runs through StageAwareSearch (flexrun prune analyze --method pdtrim)")
        }
        profile.seconds = Platform.now() - start
        profile.passes = evaluator.passes - passes
        return profile
    }

    // MARK: GSI

    /// Σ(2L − i) scores: at each step, every remaining block is tried alone on top of the
    /// blocks removed so far (scored by resuming at the block, see ``MaskEvaluator``).
    func greedySequential() throws(EngineError) -> PruningProfile {
        let blocks = evaluator.blocks
        let total = blocks.count * (blocks.count + 1) / 2
        var mask = BlockMask.none, order: [BlockMask.Block] = [], losses: [Double] = []
        var done = 0
        for step in 0..<blocks.count {
            let candidates = blocks.filter { !mask.skips($0) }
            let l = try evaluator.candidateLosses(base: mask, candidates: candidates, on: calibration)
            let best = l.indices.min { l[$0] < l[$1] }!
            mask.skip(candidates[best])
            order.append(candidates[best])
            losses.append(l[best])
            done += candidates.count
            progress(Progress(done: done, total: total, status: "step \(step + 1)/\(blocks.count): removed \(candidates[best]), ppl \(Self.format(exp(l[best])))"))
            checkpoint()
        }
        return try profile(.gsi, order: order, budgets: (1...order.count).map { (Array(order[..<$0]), losses[$0 - 1]) })
    }

    // MARK: One-shot rankings

    /// Each block removed alone from the dense model, ranked by the loss it leaves.
    func oneShotOrder() throws(EngineError) -> [BlockMask.Block] {
        let blocks = evaluator.blocks
        progress(Progress(done: 0, total: 2 * blocks.count, status: "single-block removals"))
        let l = try evaluator.candidateLosses(base: .none, candidates: blocks, on: calibration)
        checkpoint()
        return ranked(blocks, by: l)
    }

    func blockInfluenceOrder() throws(EngineError) -> [BlockMask.Block] {
        ranked(evaluator.blocks, by: try importance(on: calibration).blockInfluence)
    }

    /// Blocks in ascending order of `score` (ties in execution order): the cheapest to lose first.
    private func ranked(_ blocks: [BlockMask.Block], by score: [Double]) -> [BlockMask.Block] {
        blocks.indices.sorted { (score[$0], $0) < (score[$1], $1) }.map { blocks[$0] }
    }

    /// One dense pass over `sample` gathering the one-pass metrics; `reporting` shows it as the
    /// method's progress (EvoP runs it inside its own count).
    private func importance(on sample: TextSample, reporting: Bool = true) throws(EngineError) -> ImportanceProbe {
        let probe = ImportanceProbe(layers: evaluator.layers, width: evaluator.engine.config.embeddingLength, rows: sample.context)
        try evaluator.observe(sample, probe: probe) { i in
            if reporting { progress(Progress(done: i + 1, total: sample.chunks.count, status: "dense pass, chunk \(i + 1)")) }
        }
        return probe
    }

    /// Budgets from an order: the first k blocks, each scored on the calibration sample.
    func ordered(_ method: PruningMethod, order: [BlockMask.Block]) throws(EngineError) -> PruningProfile {
        var budgets: [([BlockMask.Block], Double)] = []
        for k in 1...order.count {
            let blocks = Array(order[..<k])
            budgets.append((blocks, try evaluator.loss(BlockMask(skipping: blocks), on: calibration)))
            progress(Progress(done: order.count + k, total: 2 * order.count, status: "scoring k = \(k)"))
            checkpoint()
        }
        return try profile(method, order: order, budgets: budgets)
    }

    // MARK: Angular distance

    /// For n layers, the window l…l+n−1 whose input and output are closest in angle. A budget
    /// of k blocks takes n = ⌈k/2⌉ layers; for odd k the window's first attention block is kept.
    func angular() throws(EngineError) -> PruningProfile {
        let probe = try importance(on: calibration)
        let layers = evaluator.layers
        var budgets: [([BlockMask.Block], Double)] = []
        for k in 1...2 * layers {
            let n = (k + 1) / 2
            let l = (0...(layers - n)).min { probe.angularDistance(from: $0, span: n) < probe.angularDistance(from: $1, span: n) }!
            var blocks = (l..<l + n).flatMap { [BlockMask.Block(.attention, $0), BlockMask.Block(.ffn, $0)] }
            if k % 2 == 1 { blocks.removeFirst() }
            budgets.append((blocks, try evaluator.loss(BlockMask(skipping: blocks), on: calibration)))
            progress(Progress(done: k, total: 2 * layers, status: "scoring k = \(k)"))
            checkpoint()
        }
        return try profile(.angular, order: nil, budgets: budgets)
    }

    // MARK: EvoP

    /// CCDS (cluster the calibration chunks, take the one nearest each centroid), then for
    /// each budget a (1+λ) search from the best of: the given seeds, the one-shot top-k on the
    /// selected chunks, and the Block-Influence top-k.
    func evolutionary() throws(EngineError) -> PruningProfile {
        let e = evolution
        let pooled = PooledStateProbe(width: evaluator.engine.config.embeddingLength)
        let blocks = evaluator.blocks
        let perBudget = blocks.count + e.generations * (e.offspring / min(e.selectedChunks, calibration.chunks.count) + e.survivors)
        let total = 2 * blocks.count + e.budgets.count * perBudget
        progress(Progress(done: 0, total: total, status: "CCDS: dense pass over \(calibration.chunks.count) chunks"))
        try evaluator.observe(calibration, probe: pooled)
        var rng = RandomSource(seed: e.seed)
        let picked = KMeans.representatives(of: pooled.pooled, clusters: min(e.selectedChunks, calibration.chunks.count), rng: &rng)
        let sample = calibration.selecting(picked)
        let screen = sample.selecting([0])
        progress(Progress(done: blocks.count, total: total, status: "single-block removals on chunks \(picked)"))
        var done = 2 * blocks.count
        let oneShot = ranked(blocks, by: try evaluator.candidateLosses(base: .none, candidates: blocks, on: sample))
        let influence = ranked(blocks, by: try importance(on: sample, reporting: false).blockInfluence)
        checkpoint()

        var budgets: [([BlockMask.Block], Double)] = []
        for k in e.budgets where k >= 1 && k <= blocks.count {
            var starts = e.seeds[k] ?? []
            starts.append(BlockMask(skipping: oneShot[..<k]))
            starts.append(BlockMask(skipping: influence[..<k]))
            var parent = starts[0], parentLoss = Double.infinity
            for s in starts where s.skipped.count == k {
                let l = try evaluator.loss(s, on: sample)
                if l < parentLoss { parent = s; parentLoss = l }
            }
            done += blocks.count
            for g in 0..<e.generations {
                var children: [BlockMask] = []
                for _ in 0..<e.offspring { children.append(Self.mutate(parent, blocks: blocks, rng: &rng)) }
                var screened: [(BlockMask, Double)] = []
                for c in children { screened.append((c, try evaluator.loss(c, on: screen))) }
                screened.sort { $0.1 < $1.1 }
                for (c, _) in screened.prefix(e.survivors) {
                    let l = try evaluator.loss(c, on: sample)
                    if l < parentLoss { parent = c; parentLoss = l }
                }
                done += e.offspring / sample.chunks.count + e.survivors
                progress(Progress(done: done, total: total, status: "k = \(k), generation \(g + 1)/\(e.generations), ppl \(Self.format(exp(parentLoss)))"))
                checkpoint()
            }
            budgets.append((parent.skipped.sorted(), parentLoss))
        }
        var info = calibrationInfo
        info.chunks = picked.map { calibrationInfo.chunks[$0] }
        return try profile(.evop, order: nil, budgets: budgets, sample: sample, info: info)
    }

    /// EvoPress's level-switch mutation: swap one to three removed blocks with kept ones, so the
    /// count stays k (one swap most often).
    static func mutate(_ mask: BlockMask, blocks: [BlockMask.Block], rng: inout RandomSource) -> BlockMask {
        var removed = mask.skipped.sorted(), kept = blocks.filter { !mask.skips($0) }
        let r = rng.nextUnit()
        let swaps = min(r < 0.6 ? 1 : r < 0.9 ? 2 : 3, removed.count, kept.count)
        for _ in 0..<swaps {
            let i = Int(rng.next() % UInt64(removed.count)), j = Int(rng.next() % UInt64(kept.count))
            swap(&removed[i], &kept[j])
        }
        return BlockMask(skipping: removed)
    }

    // MARK: Profile

    private func profile(_ method: PruningMethod, order: [BlockMask.Block]?, budgets: [([BlockMask.Block], Double)],
                         sample: TextSample? = nil, info: PruningProfile.Calibration? = nil) throws(EngineError) -> PruningProfile {
        let dense = try evaluator.loss(.none, on: sample ?? calibration)
        return PruningProfile(
            method: method, model: modelName, layers: evaluator.layers, calibration: info ?? calibrationInfo,
            densePerplexity: exp(dense), order: order?.map(\.description),
            budgets: budgets.map { blocks, loss in
                PruningProfile.Budget(removed: blocks.count, blocks: blocks.sorted().map(\.description), calibrationPerplexity: exp(loss),
                                      parameterBytes: blocks.reduce(0) { $0 + evaluator.parameterBytes($1) },
                                      kvBytesPerToken: blocks.reduce(0) { $0 + evaluator.kvBytesPerToken($1) })
            },
            seconds: 0, passes: 0)
    }

    static func format(_ v: Double) -> String { String(format: "%.3f", v) }
}

/// Lloyd's k-means with k-means++ seeding, over small sets of vectors (EvoP's CCDS).
enum KMeans {
    /// For each cluster, the index of the member nearest its centroid, in ascending order.
    static func representatives(of points: [[Float]], clusters k: Int, rng: inout RandomSource, iterations: Int = 100) -> [Int] {
        precondition(k >= 1 && k <= points.count)
        func d2(_ a: [Float], _ b: [Float]) -> Double { var s = 0.0; for i in a.indices { let t = Double(a[i] - b[i]); s += t * t }; return s }
        var centroids = [points[Int(rng.next() % UInt64(points.count))]]
        while centroids.count < k {
            let w = points.map { p in centroids.map { d2(p, $0) }.min()! }
            let total = w.reduce(0, +)
            var r = Double(rng.nextUnit()) * total, pick = points.count - 1
            for (i, x) in w.enumerated() { r -= x; if r <= 0 && x > 0 { pick = i; break } }
            centroids.append(points[pick])
        }
        var assignment = [Int](repeating: 0, count: points.count)
        for _ in 0..<iterations {
            let next = points.map { p in centroids.indices.min { d2(p, centroids[$0]) < d2(p, centroids[$1]) }! }
            let changed = next != assignment
            assignment = next
            for c in 0..<k {
                let members = points.indices.filter { assignment[$0] == c }
                guard !members.isEmpty else { continue }
                var mean = [Float](repeating: 0, count: points[0].count)
                for m in members { for i in mean.indices { mean[i] += points[m][i] } }
                centroids[c] = mean.map { $0 / Float(members.count) }
            }
            if !changed { break }
        }
        var picks: [Int] = []
        for c in 0..<k {
            let members = points.indices.filter { assignment[$0] == c }
            if let best = members.min(by: { d2(points[$0], centroids[c]) < d2(points[$1], centroids[c]) }) { picks.append(best) }
        }
        // An empty cluster leaves a gap: fill it with the point farthest from the picks so far.
        while picks.count < k {
            let rest = points.indices.filter { !picks.contains($0) }
            picks.append(rest.max { a, b in picks.map { d2(points[a], points[$0]) }.min()! < picks.map { d2(points[b], points[$0]) }.min()! }!)
        }
        return picks.sorted()
    }
}
