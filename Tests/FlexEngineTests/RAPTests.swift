import Foundation
import Testing
@testable import FlexEngine
import FlexSystem

/// RAP's agent and its pieces without a model: the KV cache handing a layer back, the network's
/// gradients, reproducible training, the shipped policy against greedy and the oracle.
@Suite struct RAPTests {
    /// Dropping a layer's attention gives its pages back: its rows read zero afterwards (the
    /// kernel backs them anew), while the other layers keep every value.
    @Test func releasingALayerZeroesItAndKeepsTheOthers() throws {
        var cache = try PagedKVCache(layers: 3, kvDim: 8, floor: .none, sequences: 2, capacity: 512, pageTokens: 16, pages: 64)
        guard let s = cache.open() else { Issue.record("no slot"); return }
        _ = try cache.append(s, count: 300)
        for l in 0..<3 {
            for p in 0..<300 {
                let r = cache.rows(s, layer: l, position: p)
                for i in 0..<8 { r.key[i] = Float16(Float(l * 1000 + p) + 0.5); r.value[i] = Float16(Float(-l)) }
            }
        }
        cache.release(layer: 1)
        for p in stride(from: 0, to: 300, by: 7) {
            #expect(cache.rows(s, layer: 1, position: p).key[3] == 0 && cache.rows(s, layer: 1, position: p).value[0] == 0)
            #expect(cache.rows(s, layer: 0, position: p).key[3] == Float16(Float(p) + 0.5))
            #expect(cache.rows(s, layer: 2, position: p).key[5] == Float16(Float(2000 + p) + 0.5))
            #expect(cache.rows(s, layer: 2, position: p).value[7] == -2)
        }
        // Layer spans start on system pages, so a release never touches a neighbour.
        #expect(cache.layerStride * 2 % PinnedBuffer.pageSize == 0)
    }

    /// Backpropagation agrees with finite differences on every layer. Adam's first step moves
    /// each parameter by −lr·sign(∂L/∂w), so the step's direction is the gradient's sign.
    @Test func gradientsMatchFiniteDifferences() {
        let net = QNetwork(widths: [4, 6, 5, 3], seed: 7)
        let x: [Float] = [0.3, -0.7, 1.1, 0.2], action = 1, target: Float = 0.25
        func loss(_ n: QNetwork) -> Double { let e = Double(n(x)[action] - target); return e * e }
        var trainer = QNetworkTrainer(network: net, learningRate: 1e-4)
        let before = loss(net)
        trainer.step(inputs: [x], actions: [action], targets: [target])
        #expect(loss(trainer.network) < before)
        for (l, i) in [(0, 3), (1, 7), (2, 4), (2, 10)] {
            var plus = net, minus = net
            let h: Float = 1e-3
            plus.weights[l][i] += h
            minus.weights[l][i] -= h
            let g = (loss(plus) - loss(minus)) / (2 * Double(h))
            let moved = Double(trainer.network.weights[l][i] - net.weights[l][i])
            if abs(g) > 1e-4 { #expect((g > 0) == (moved < 0), "layer \(l) weight \(i): g \(g), moved \(moved)") }
        }
    }

    /// Training fits a simple function of the input: Q for action 0 is 2·x₀, action 1 is −x₁.
    @Test func trainingFitsATarget() {
        var trainer = QNetworkTrainer(network: QNetwork(widths: [2, 16, 16, 2], seed: 3), learningRate: 3e-3)
        var rng = RandomSource(seed: 5)
        for _ in 0..<3000 {
            var xs: [[Float]] = [], acts: [Int] = [], ys: [Float] = []
            for _ in 0..<16 {
                let x = [rng.nextUnit() * 2 - 1, rng.nextUnit() * 2 - 1], a = Int(rng.next() % 2)
                xs.append(x); acts.append(a); ys.append(a == 0 ? 2 * x[0] : -x[1])
            }
            trainer.step(inputs: xs, actions: acts, targets: ys)
        }
        let q = trainer.network([0.5, 0.4])
        #expect(abs(q[0] - 1.0) < 0.1 && abs(q[1] + 0.4) < 0.1)
    }

    /// A made-up model: 30 layers from the planner tests, candidates whose quality falls with
    /// every block (attention cheaper than FFN), greedy's order interleaved.
    static func simulator(settings: PolicySimulator.Settings = .init()) -> PolicySimulator {
        let layout = MemoryPlanTests.layout()
        var all = [PruningCandidates.Candidate(mask: .none, nll: 3.0, top1: 0.35)]
        let attn = (0..<30).map { BlockMask.Block(.attention, $0) }, ffn = (0..<30).map { BlockMask.Block(.ffn, $0) }
        for k in 1...30 { all.append(.init(mask: BlockMask(skipping: attn.prefix(k)), nll: 3.0 + 0.02 * Double(k * k) / 4, top1: 0)) }
        for k in 1...30 { all.append(.init(mask: BlockMask(skipping: ffn.prefix(k)), nll: 3.0 + 0.2 * Double(k), top1: 0)) }
        let order = zip(attn, ffn).flatMap { [$0, $1] }
        for k in 1...40 { all.append(.init(mask: BlockMask(skipping: order.prefix(k)), nll: 3.0 + 0.15 * Double(k), top1: 0)) }
        let memories = (1...8).map { b in
            MemoryModel(layout: layout, kvBytesPerTokenPerLayer: 768, kvTokens: 0, bufferBytes: (2 + b) << 20, runtimeBytes: 20 << 20)
        }
        return PolicySimulator(candidates: PruningCandidates(all), order: order, memories: memories, settings: settings)
    }

    /// The same seed trains the same network, bit for bit; another seed another.
    @Test func trainingIsReproducible() {
        var st = PolicySimulator.Settings()
        st.updates = 300
        let a = Self.simulator(settings: st).train(), b = Self.simulator(settings: st).train()
        #expect(a == b)
        st.seed = 15
        #expect(Self.simulator(settings: st).train() != a)
    }

    /// The agent never breaks the cap (the guard), and on the made-up model, trained briefly,
    /// its mean quality over the grid is at least greedy's and within 2 % of the oracle's.
    @Test func agentBeatsGreedyAndNearsTheOracle() {
        var st = PolicySimulator.Settings()
        st.updates = 4000
        let sim = Self.simulator(settings: st)
        let rl = RLPolicy(candidates: sim.candidates, network: sim.train(), layers: 30)
        #expect(rl.network.parameterCount > 10_000)
        for s in sim.evaluationGrid {
            let sit = sim.situation(s)
            if let m = sim.choose(rl, in: sit).mask { #expect(sit.need(m) <= sit.state.cap) }
        }
        let e = sim.evaluate(rl)
        #expect(e.points > 40)
        #expect(e.rl >= e.greedy - 1e-9, "rl \(e.rl) greedy \(e.greedy)")
        #expect(e.rl >= 0.98 * e.oracle, "rl \(e.rl) greedy \(e.greedy) oracle \(e.oracle)")
        #expect(e.oracle >= e.greedy)
    }

    /// The policy file round-trips and refuses another model's.
    @Test func policyFileRoundTrips() throws {
        var st = PolicySimulator.Settings()
        st.updates = 10
        let sim = Self.simulator(settings: st)
        let rl = RLPolicy(candidates: sim.candidates, network: sim.train(), layers: 30)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("rap-policy-\(getpid()).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try RLPolicy.write(.init(model: "made-up", layers: 30, profile: "none", training: st, evaluation: nil, candidates: sim.candidates,
                                 network: rl.network), path: path)
        let back = try RLPolicy.read(path: path, layers: 30)
        #expect(back.network == rl.network && back.candidates == rl.candidates)
        #expect(throws: RLPolicy.FileError.self) { _ = try RLPolicy.read(path: path, layers: 24) }
        #expect(try RLPolicy.read(path: path, layers: nil).layers == 30)
        #expect(throws: RLPolicy.FileError.self) { _ = try RLPolicy.read(path: "/nonexistent/policy.json", layers: 30) }
    }
}
