import Foundation

/// Where RAP's agent is trained and judged offline: the memory model (what a mask needs for a
/// batch, a sequence length and a mode) and the measured calibration quality of every candidate.
/// No model runs; an episode is a scripted load (sequences growing, the cap and the batch
/// changing now and then), seeded, so training is reproducible bit for bit.
///
/// The agent chooses among the candidates that fit the cap (invalid-action masking, as the
/// runtime guard does); the cap penalty is what it gets when none fits.
///
/// The reward of choosing candidate `a` (``Settings``; docs/RAP.md writes it down):
/// - quality(a) = exp(NLL₀ − NLL_a), the dense perplexity over the mask's (calibration split);
/// - minus `capPenalty` when its need passes the cap (it would not run);
/// - minus `targetPenalty` × the relative shortfall when a target is set and its relative speed
///   (a proxy: bytes of kept weights plus the KV its attention reads per step) misses it;
/// - minus `switchPenalty` when it differs from the mask in force (a replan).
public struct PolicySimulator: Sendable {
    public struct Settings: Codable, Sendable, Equatable {
        public var seed: UInt64 = 14
        /// Gradient steps, minibatch and replay sizes.
        public var updates = 12_000
        public var minibatch = 32
        public var replay = 20_000
        public var hidden = 80
        public var learningRate: Float = 1e-3
        /// Discount: a decision's consequence is mostly immediate; switching ties steps together.
        /// Higher values bootstrap more noise into the ranking of close masks (0.5 lost 3–5 %
        /// mean quality on the tests' made-up model).
        public var gamma: Float = 0.1
        public var episodeLength = 8
        /// Exploration falls linearly from 1 to this over the first 60% of updates.
        public var epsilonEnd: Float = 0.05
        /// Target network copied every this many updates.
        public var targetSync = 250
        public var capPenalty = 1.0
        public var targetPenalty = 0.5
        public var switchPenalty = 0.02
        public init() {}
    }

    /// Mean calibration quality over ``evaluationGrid`` of each policy, and decision times.
    public struct Evaluation: Codable, Sendable, Equatable {
        public var points: Int
        public var rl: Double
        public var greedy: Double
        public var oracle: Double
        public var rlMedianMicroseconds: Double
        public var greedyMedianMicroseconds: Double
    }

    /// A load to decide for.
    public struct Scenario: Sendable, Equatable {
        public var batch: Int
        public var sequenceLength: Int
        /// The cap as a fraction of the dense footprint (everything resident) at this load.
        public var capFraction: Double
        public var residentOnly: Bool
        /// Relative speed over the dense model's to reach; nil for none.
        public var targetRatio: Double?
        public init(batch: Int, sequenceLength: Int, capFraction: Double, residentOnly: Bool, targetRatio: Double? = nil) {
            self.batch = batch; self.sequenceLength = sequenceLength; self.capFraction = capFraction
            self.residentOnly = residentOnly; self.targetRatio = targetRatio
        }
    }

    public let candidates: PruningCandidates
    public let order: [BlockMask.Block]
    /// The memory model at batch b is `memories[b - 1]` (buffers grow with the batch).
    let memories: [MemoryModel]
    public let settings: Settings

    /// - Parameters:
    ///   - candidates: the blocks a policy may skip and their measured costs.
    ///   - order: the order blocks are dropped in (a pruning profile's).
    ///   - memories: for each batch 1…n, the model's memory model (its KV positions are replaced).
    ///   - settings: the training and reward settings (seed, steps, the reward's weights).
    public init(candidates: PruningCandidates, order: [BlockMask.Block], memories: [MemoryModel], settings: Settings = Settings()) {
        precondition(!memories.isEmpty)
        self.candidates = candidates
        self.order = order
        self.memories = memories
        self.settings = settings
    }

    public var maxBatch: Int { memories.count }
    public var layers: Int { memories[0].layers }

    /// The memory model, state and admissibility test of a scenario with `current` in force.
    public struct Situation {
        public let memory: MemoryModel
        public let state: PruningState
        public let scenario: Scenario
        public func need(_ m: BlockMask) -> Int { memory.need(skipping: m, residentOnly: scenario.residentOnly) }
        /// Relative speed over the dense model (the proxy in the reward).
        public func speed(_ m: BlockMask) -> Double {
            let perLayerKV = Double(memory.kvBytesPerTokenPerLayer) * Double(scenario.batch * scenario.sequenceLength)
            func cost(_ m: BlockMask) -> Double {
                Double(memory.weightBytes(skipping: m)) + perLayerKV * Double(memory.layers - m.skippedAttentionLayers.count)
            }
            return cost(.none) / cost(m)
        }
        public func fitsCap(_ m: BlockMask) -> Bool { need(m) <= state.cap }
        public func meetsTarget(_ m: BlockMask) -> Bool { scenario.targetRatio.map { speed(m) >= $0 } ?? true }
        public func admissible(_ m: BlockMask) -> Bool { fitsCap(m) && meetsTarget(m) }
    }

    public func situation(_ s: Scenario, current: BlockMask = .none) -> Situation {
        let memory = memories[min(memories.count, max(1, s.batch)) - 1].with(kvTokens: s.batch * s.sequenceLength)
        let footprint = memory.residentFootprint(skipping: .none)
        let denseNeed = memory.need(skipping: .none, residentOnly: s.residentOnly)
        let state = PruningState(batch: s.batch, sequenceLength: s.sequenceLength, cap: Int(Double(footprint) * s.capFraction),
                                 denseNeed: denseNeed, weightBytes: memory.weightBytes(skipping: .none),
                                 kvBytes: memory.kvBytes(skipping: .none), residentOnly: s.residentOnly,
                                 minTokensPerSecond: s.targetRatio, denseTokensPerSecond: s.targetRatio.map { _ in 1 }, current: current)
        return Situation(memory: memory, state: state, scenario: s)
    }

    /// The reward of candidate `a` in `sit` (see the type's documentation).
    public func reward(_ a: Int, in sit: Situation) -> Double {
        let mask = candidates.all[a].mask
        if !sit.fitsCap(mask) { return -settings.capPenalty }
        var r = candidates.quality(a)
        if let target = sit.scenario.targetRatio {
            let speed = sit.speed(mask)
            if speed < target { r -= settings.targetPenalty * min(1, (target - speed) / target) }
        }
        if mask != sit.state.current { r -= settings.switchPenalty }
        return r
    }

    // MARK: - Training

    /// Trains the agent (DQN with a replay buffer and a target network, ε-greedy exploration,
    /// the next state's maximum over its admissible candidates). `progress` is called now and
    /// then with (updates done, recent mean loss).
    public func train(progress: (Int, Float) -> Void = { _, _ in }) -> QNetwork {
        let st = settings
        var rng = RandomSource(seed: st.seed)
        let n = candidates.count
        var initial = QNetwork(widths: [RLPolicy.featureCount, st.hidden, st.hidden, n], seed: st.seed &+ 1)
        initial.zeroOutput()
        var trainer = QNetworkTrainer(network: initial, learningRate: st.learningRate)
        var target = trainer.network
        struct Transition { var x: [Float]; var a: Int; var r: Float; var next: [Float]; var admissible: [Bool] }
        let prior = (0..<n).map { Float(candidates.quality($0)) }
        func qValues(_ net: QNetwork, _ x: [Float]) -> [Float] { zip(net(x), prior).map { $0 + $1 } }
        var replay: [Transition] = []
        replay.reserveCapacity(st.replay)
        var cursor = 0
        var updates = 0, lossSum: Float = 0, lossCount = 0
        func unit() -> Double { Double(rng.nextUnit()) }
        func scenario() -> Scenario {
            let batch = 1 + Int(unit() * Double(maxBatch))
            return Scenario(batch: min(maxBatch, batch), sequenceLength: 64 + Int(unit() * 1984), capFraction: 0.3 + unit() * 0.8,
                            residentOnly: unit() < 0.5, targetRatio: unit() < 0.35 ? 1 + unit() * 1.2 : nil)
        }
        while updates < st.updates {
            var s = scenario()
            var current = 0
            for _ in 0..<st.episodeLength {
                let sit = situation(s, current: candidates.all[current].mask)
                let x = RLPolicy.features(sit.state, currentQuality: candidates.quality(current))
                let epsilon = max(st.epsilonEnd, 1 - Float(updates) / Float(max(1, st.updates)) / 0.6)
                // Invalid-action masking: the agent explores among the masks that fit the cap (as
                // the runtime guard lets it choose); any mask when none does.
                let fitting = (0..<n).filter { sit.fitsCap(candidates.all[$0].mask) }
                let a: Int
                if rng.nextUnit() < epsilon {
                    a = fitting.isEmpty ? Int(rng.next() % UInt64(n)) : fitting[Int(rng.next() % UInt64(fitting.count))]
                } else {
                    a = greedyAction(qValues(trainer.network, x), sit: sit) ?? Int(rng.next() % UInt64(n))
                }
                let r = Float(reward(a, in: sit))
                // The load moves on: sequences grow; the cap, the batch or the target change now and then.
                var next = s
                next.sequenceLength = min(2048, s.sequenceLength + Int(unit() * 384))
                if unit() < 0.25 { next.capFraction = 0.3 + unit() * 0.8 }
                if unit() < 0.15 { next.batch = 1 + Int(unit() * Double(maxBatch - 1) + 0.5) }
                if unit() < 0.1 { next.targetRatio = unit() < 0.5 ? nil : 1 + unit() * 1.2 }
                let nextSit = situation(next, current: candidates.all[a].mask)
                let nx = RLPolicy.features(nextSit.state, currentQuality: candidates.quality(a))
                let t = Transition(x: x, a: a, r: r, next: nx, admissible: candidates.all.map { nextSit.fitsCap($0.mask) })
                if replay.count < st.replay { replay.append(t) } else { replay[cursor] = t; cursor = (cursor + 1) % st.replay }
                s = next
                current = a
                guard replay.count >= 4 * st.minibatch else { continue }
                var xs: [[Float]] = [], acts: [Int] = [], ys: [Float] = []
                for _ in 0..<st.minibatch {
                    let tr = replay[Int(rng.next() % UInt64(replay.count))]
                    let q = qValues(target, tr.next)
                    var best: Float = -.infinity
                    for i in 0..<n where tr.admissible[i] { best = max(best, q[i]) }
                    if best == -.infinity { best = 0 }
                    // The network learns Q minus the candidate's quality (``RLPolicy``).
                    xs.append(tr.x); acts.append(tr.a); ys.append(tr.r + st.gamma * best - prior[tr.a])
                }
                lossSum += trainer.step(inputs: xs, actions: acts, targets: ys)
                lossCount += 1
                updates += 1
                if updates % st.targetSync == 0 { target = trainer.network }
                if updates % 500 == 0 { progress(updates, lossSum / Float(max(1, lossCount))); lossSum = 0; lossCount = 0 }
                if updates >= st.updates { break }
            }
        }
        return trainer.network
    }

    /// The admissible candidate with the highest Q-value (falling back to those that fit the cap
    /// when none meets the target), as the runtime guard picks.
    func greedyAction(_ q: [Float], sit: Situation) -> Int? {
        var best: Int?, fallback: Int?
        for i in q.indices {
            let m = candidates.all[i].mask
            guard sit.fitsCap(m) else { continue }
            if fallback.map({ q[i] > q[$0] }) ?? true { fallback = i }
            if sit.meetsTarget(m), best.map({ q[i] > q[$0] }) ?? true { best = i }
        }
        return best ?? fallback
    }

    // MARK: - Evaluation

    /// The evaluation grid of the issue: budgets 100% … 40% of the dense footprint, batch 1, 4,
    /// 8 × sequence length 512, 2048, streaming and resident-only, no target.
    public var evaluationGrid: [Scenario] {
        var out: [Scenario] = []
        for resident in [true, false] {
            for b in [1, 4, 8] where b <= maxBatch {
                for len in [512, 2048] {
                    for pct in stride(from: 100, through: 40, by: -10) {
                        out.append(Scenario(batch: b, sequenceLength: len, capFraction: Double(pct) / 100, residentOnly: resident))
                    }
                }
            }
        }
        return out
    }

    /// What a policy chose in a situation: the candidate's index (nil when none fits) and time.
    public func choose(_ policy: some PruningPolicy, in sit: Situation) -> (index: Int?, mask: BlockMask?, microseconds: Double) {
        let t0 = Date()
        let mask = policy.decide(sit.state, base: .none) { sit.admissible($0) }
        let us = Date().timeIntervalSince(t0) * 1e6
        return (mask.flatMap { candidates.index(of: $0) }, mask, us)
    }

    /// Mean calibration quality of the agent, greedy and the oracle over the grid points where
    /// the oracle finds a mask (a policy finding none there scores 0).
    public func evaluate(_ rl: RLPolicy) -> Evaluation {
        let greedy = GreedyPolicy(order: order), oracle = OraclePolicy(candidates: candidates)
        var sums = [0.0, 0.0, 0.0], points = 0
        var rlTimes: [Double] = [], greedyTimes: [Double] = []
        for s in evaluationGrid {
            let sit = situation(s)
            guard let o = choose(oracle, in: sit).index else { continue }
            points += 1
            sums[2] += candidates.quality(o)
            let r = choose(rl, in: sit)
            rlTimes.append(r.microseconds)
            sums[0] += r.index.map(candidates.quality) ?? 0
            let g = choose(greedy, in: sit)
            greedyTimes.append(g.microseconds)
            sums[1] += g.mask.map { m in candidates.index(of: m).map(candidates.quality) ?? quality(of: m) } ?? 0
        }
        func median(_ v: [Double]) -> Double { v.isEmpty ? 0 : v.sorted()[v.count / 2] }
        let p = Double(max(1, points))
        return Evaluation(points: points, rl: sums[0] / p, greedy: sums[1] / p, oracle: sums[2] / p,
                          rlMedianMicroseconds: median(rlTimes), greedyMedianMicroseconds: median(greedyTimes))
    }

    /// Quality of a mask that is not a candidate (greedy past the table): the closest candidate
    /// skipping at least its blocks, a lower bound; 0 when none does.
    func quality(of m: BlockMask) -> Double {
        var best = 0.0
        for (i, c) in candidates.all.enumerated() where c.mask.skipped.isSuperset(of: m.skipped) { best = max(best, candidates.quality(i)) }
        return best
    }
}
