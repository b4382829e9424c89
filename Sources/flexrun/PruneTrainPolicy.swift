import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

extension Prune {
    /// `flexrun prune train-policy`: trains RAP's agent offline on the simulator.
    struct TrainPolicy: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train-policy",
            abstract: "Train RAP's agent (a small DQN) on the memory model and the profile's quality table.",
            discussion: "Seeded and reproducible; no model runs. Needs a profile with a quality table (flexrun prune quality). "
                + "See docs/RAP.md for the state, actions and reward.")

        @OptionGroup var model: ModelOptions

        @Option(name: .long, help: "Gradient steps.")
        var updates = PolicySimulator.Settings().updates

        @Option(name: .long, help: "Seed for initialisation, exploration and scenarios.")
        var seed = PolicySimulator.Settings().seed

        @Option(name: [.customShort("o"), .long], help: "Where to write the policy (default: rap-policy.json beside the profile).")
        var output: String?

        @Argument(help: "A profile with a quality table.")
        var profile: String

        func run() throws {
            guard (1...1_000_000).contains(updates) else { throw CLIError("--updates must be between 1 and 1000000") }
            let out = output ?? ((profile as NSString).deletingLastPathComponent + "/rap-policy.json")
            try checkWritable(out)
            var settings = PolicySimulator.Settings()
            settings.updates = updates
            settings.seed = seed
            let (sim, modelName) = try simulator(model, profile: profile, settings: settings)
            let line = ProgressLine(label: "train-policy")
            let net = sim.train { done, loss in line.update(done: done, total: updates, status: String(format: "loss %.4f", loss)) }
            line.finish()
            let rl = RLPolicy(candidates: sim.candidates, network: net, layers: sim.layers)
            let e = sim.evaluate(rl)
            try RLPolicy.write(.init(model: modelName, layers: sim.layers, profile: (profile as NSString).lastPathComponent, training: settings,
                                     evaluation: e, candidates: sim.candidates, network: net), path: out)
            print(String(format: "train-policy: %d parameters, %d actions; on %d grid points mean calibration quality rl %.4f, "
                         + "greedy %.4f, oracle %.4f; median decision rl %.1f µs, greedy %.1f µs; written to %@",
                         net.parameterCount, sim.candidates.count, e.points, e.rl, e.greedy, e.oracle, e.rlMedianMicroseconds,
                         e.greedyMedianMicroseconds, out))
        }
    }

    /// `flexrun prune policies`: what each policy chooses over the evaluation grid.
    struct Policies: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "policies",
            abstract: "Show each policy's choice over the evaluation grid (budgets 100–40 %, batch 1/4/8 × 512/2048 tokens).",
            discussion: "Quality is the profile's calibration table; with --held-out, a profile copy whose table was measured on "
                + "held-out tokens (flexrun prune quality --first 2048 -o …) reports held-out NLL and top-1 for the chosen masks.")

        @OptionGroup var model: ModelOptions

        @Option(name: .customLong("held-out"), help: "A profile whose quality table was measured on held-out tokens.")
        var heldOut: String?

        @Flag(name: .long, help: "One JSON object per grid point and policy.")
        var json = false

        @Argument(help: "A profile with a quality table (and rap-policy.json beside it, or --rl-policy).")
        var profile: String

        func run() throws {
            let (sim, _) = try simulator(model, profile: profile, settings: .init())
            let file = model.rlPolicy ?? ((profile as NSString).deletingLastPathComponent + "/rap-policy.json")
            let rl: RLPolicy
            do { rl = try RLPolicy.read(path: file, layers: sim.layers) } catch { throw CLIError(error.description) }
            var held: [BlockMask: (nll: Double, top1: Double)] = [:]
            if let heldOut {
                guard let t = try PruningProfile.read(path: heldOut).quality else { throw CLIError("\(heldOut) has no quality table") }
                for c in try PruningCandidates(table: t).all { held[c.mask] = (c.nll, c.top1) }
            }
            let policies: [any PruningPolicy] = [GreedyPolicy(order: sim.order), rl, OraclePolicy(candidates: sim.candidates)]
            var sums: [String: (q: Double, top1: Double, n: Int)] = [:]
            for s in sim.evaluationGrid {
                let sit = sim.situation(s)
                for p in policies {
                    let c = sim.choose(p, in: sit)
                    let q = c.index.map(sim.candidates.quality) ?? 0
                    let h = c.mask.flatMap { held[$0] }
                    var acc = sums[p.name] ?? (0, 0, 0)
                    acc.q += q; acc.top1 += h?.top1 ?? 0; acc.n += 1
                    sums[p.name] = acc
                    if json {
                        var fields = ["\"policy\":\"\(p.name)\"", "\"batch\":\(s.batch)", "\"sequence\":\(s.sequenceLength)",
                                      "\"budget\":\(f(s.capFraction))", "\"residentOnly\":\(s.residentOnly)", "\"cap\":\(sit.state.cap)",
                                      "\"quality\":\(q)", "\"microseconds\":\(f(c.microseconds, 1))"]
                        if let m = c.mask {
                            fields.append("\"mask\":\"\(m)\"")
                            fields.append("\"blocks\":\(m.skipped.count)")
                            fields.append("\"need\":\(sit.need(m))")
                        }
                        if let h { fields.append("\"heldOutNLL\":\(h.nll)"); fields.append("\"heldOutTop1\":\(h.top1)") }
                        print("{" + fields.joined(separator: ",") + "}")
                    }
                }
            }
            guard !json else { return }
            for p in policies {
                let s = sums[p.name]!
                print("\(p.name): mean calibration quality \(f(s.q / Double(s.n), 4))"
                      + (held.isEmpty ? "" : ", mean held-out top-1 \(f(100 * s.top1 / Double(s.n), 1)) %") + " over \(s.n) grid points")
            }
        }
    }
}

/// The simulator for `profile`'s quality table on the model: memory models for batch 1…8 at
/// the buffers and runtime share a session of that batch reserves.
func simulator(_ model: ModelOptions, profile path: String, settings: PolicySimulator.Settings) throws -> (PolicySimulator, String) {
    let profile = try PruningProfile.read(path: path)
    guard let table = profile.quality else { throw CLIError("\(path) has no quality table; run flexrun prune quality \(path) first") }
    let candidates: PruningCandidates
    do { candidates = try PruningCandidates(table: table) } catch { throw CLIError("\(path): \(error)") }
    var options = try model.denseInMemoryOptions()
    options.contextLength = 2048
    options.logitRows = 1
    let m = try Model(path: options.modelPath, streaming: true)
    guard profile.layers == m.config.layerCount else {
        throw CLIError("\(path) was made for a \(profile.layers)-layer model; this one has \(m.config.layerCount)")
    }
    let layout = try m.layout()
    var memories: [MemoryModel] = []
    for b in 1...8 {
        var o = options
        o.maxSequences = b
        let session = try Session(model: m, options: o)
        memories.append(MemoryModel(layout: layout, kvBytesPerTokenPerLayer: PagedKVCache.bytesPerToken(keptLayers: 1, kvDim: m.config.kvDim),
                                    kvTokens: 0, bufferBytes: session.memory.buffers, runtimeBytes: session.memory.runtime,
                                    ringSlots: options.ringSlots))
    }
    let sim = PolicySimulator(candidates: candidates, order: try profile.removalOrder(path: path), memories: memories, settings: settings)
    return (sim, (options.modelPath as NSString).lastPathComponent)
}

extension ModelOptions {
    /// The options for measuring the dense model itself: in memory, no cap (not even the
    /// cgroup's), no pruning and no skips, whatever else the command line said.
    func denseInMemoryOptions() throws -> EngineOptions {
        var options = try engineOptions()
        options.memoryLimit = nil
        options.followCgroupLimit = false
        options.prune = .off
        options.skip = .none
        options.prefillSkip = nil
        return options
    }
}
