import FlexSystem
import Foundation

/// PDTrim's stage-aware block removal (DESIGN.md §3, docs/PDTRIM.md): per budget, a decode
/// mask and a gentler prefill mask, chosen on the loss of a continuation decoded after a prompt.
///
/// The uniform methods score a mask on whole chunks, as if one mask ran both stages. Here the
/// prompt's KV comes from the prefill mask and only the continuation runs the decode mask, as in
/// a disaggregated run, so a block the decode can lose is judged by what losing it costs the
/// tokens decoded after a full-quality prompt.
/// - **Decode mask**, by iterative removal: each step tries every remaining block on the
///   *pruning* windows and takes, of the `shortlist` best there, the one best on the disjoint
///   *distillation* windows (which also stops a step from overfitting a few prompts). The prompts
///   are prefilled once per prefill mask and kept as states; a candidate only scores
///   continuations on them (``Session/scoreContinuation(of:tokens:decodeMask:)``).
/// - **Prefill mask** of budget k: ⌊k·`prefillShare`⌋ blocks, grown the same way inside the
///   decode mask, since decode reads the keys the prompt's attention wrote (a prefill may skip
///   only what its decode skips). Each candidate re-runs the prompts.
public final class StageAwareSearch {
    /// A prompt and the tokens that follow it in the text.
    public struct Window: Sendable {
        public var prompt: [Int32]
        public var continuation: [Int32]
        public init(prompt: [Int32], continuation: [Int32]) { self.prompt = prompt; self.continuation = continuation }
    }

    public struct Settings: Sendable {
        public var budgets = [6, 12, 18]
        /// The prefill mask's size as a share of the decode mask's ("pruned gently").
        public var prefillShare = 1.0 / 3
        /// Candidates of a step that go on to the distillation windows.
        public var shortlist = 3
        public init() {}
    }

    public let engine: Engine
    public let pruning: [Window]
    public let distillation: [Window]
    public var settings = Settings()
    public var progress: (PruningAnalysis.Progress) -> Void = { _ in }
    /// Continuations scored and prompts run so far.
    public private(set) var scored = 0
    public private(set) var prefills = 0

    /// The engine must run in memory and skip nothing of its own (the masks are the search's);
    /// its context must hold a window and one more position.
    public init(engine: Engine, pruning: [Window], distillation: [Window]) throws(EngineError) {
        guard engine.memoryLimit == nil else { throw .invalidOption("pruning analysis runs the model in memory: drop \(OptionField.memoryLimit)") }
        guard engine.options.skip.skipped.isEmpty, engine.options.prefillSkip == nil else {
            throw .invalidOption("pruning analysis starts from the dense model: drop \(OptionField.skip)")
        }
        guard !pruning.isEmpty, !distillation.isEmpty else { throw .textTooShort(tokens: 0, needed: 1) }
        for w in pruning + distillation {
            guard !w.prompt.isEmpty, w.continuation.count >= 2 else { throw .invalidOption("a window needs a prompt and at least 2 continuation tokens") }
            guard w.prompt.count + w.continuation.count + 1 < engine.contextLength else {
                throw .invalidOption("\(OptionField.contextLength) must exceed a window's \(w.prompt.count + w.continuation.count) tokens")
            }
        }
        self.engine = engine
        self.pruning = pruning
        self.distillation = distillation
    }

    /// Every window's prompt run with `prefill`, counted.
    func states(prefill: BlockMask, _ windows: [Window]) throws(EngineError) -> [KVState] {
        prefills += windows.count
        return try engine.prefillStates(windows, prefill: prefill)
    }

    /// Mean NLL of the windows' continuations after `states`, decoded with `decode`, counted.
    func loss(decode: BlockMask, states: [KVState], _ windows: [Window]) throws(EngineError) -> Double {
        scored += windows.count
        return try engine.continuationLoss(windows, states: states, decode: decode)
    }

    /// Mean continuation NLL over both window sets with the prompts run with `prefill` and the
    /// continuations with `decode` (the profile's calibration figure).
    public func loss(prefill: BlockMask, decode: BlockMask) throws(EngineError) -> Double {
        let windows = pruning + distillation
        return try loss(decode: decode, states: states(prefill: prefill, windows), windows)
    }

    /// Of `candidates` (scored by `score` on the pruning windows), the one best on the
    /// distillation windows among the `shortlist` best on the pruning ones.
    private func pick(_ candidates: [BlockMask.Block], pruningLoss: [Double],
                      distillationLoss: (BlockMask.Block) throws(EngineError) -> Double) throws(EngineError) -> (BlockMask.Block, Double) {
        let short = candidates.indices.sorted { (pruningLoss[$0], $0) < (pruningLoss[$1], $1) }.prefix(max(1, settings.shortlist))
        var best: (BlockMask.Block, Double)?
        for i in short {
            let l = try distillationLoss(candidates[i])
            if best == nil || l < best!.1 { best = (candidates[i], l) }
        }
        return best!
    }

    /// The decode removal order up to the largest budget, then each budget's prefill mask.
    public func run(modelName: String, calibration: PruningProfile.Calibration) throws(EngineError) -> PruningProfile {
        let start = Platform.now()
        let blocks = BlockMask.Block.all(layers: engine.config.layerCount)
        let budgets = settings.budgets.filter { $0 >= 1 && $0 <= blocks.count }.sorted()
        guard let deepest = budgets.last else { throw .invalidOption("no budget between 1 and \(blocks.count)") }
        let prefillSizes = budgets.map { Int(Double($0) * settings.prefillShare) }
        let decodeWork = (0..<deepest).reduce(0) { $0 + blocks.count - $1 }
        let prefillWork = zip(budgets, prefillSizes).reduce(0) { total, b in total + (0..<b.1).reduce(0) { $0 + b.0 - $1 } }
        let total = decodeWork + prefillWork
        var done = 0

        // Decode: prompts run dense, once.
        let densePruning = try states(prefill: .none, pruning), denseDistillation = try states(prefill: .none, distillation)
        var decode = BlockMask.none, order: [BlockMask.Block] = []
        for step in 0..<deepest {
            let candidates = blocks.filter { !decode.skips($0) }
            var l: [Double] = []
            for c in candidates { l.append(try loss(decode: decode.skipping(c), states: densePruning, pruning)) }
            let base = decode
            let (b, dl) = try pick(candidates, pruningLoss: l) { c throws(EngineError) in
                try loss(decode: base.skipping(c), states: denseDistillation, distillation)
            }
            decode.skip(b)
            order.append(b)
            done += candidates.count
            progress(.init(done: done, total: total, status: "decode step \(step + 1)/\(deepest): removed \(b), distillation ppl \(PruningAnalysis.format(exp(dl)))"))
        }

        // Prefill: inside each budget's decode mask.
        var out: [PruningProfile.Budget] = []
        for (k, size) in zip(budgets, prefillSizes) {
            let decodeK = BlockMask(skipping: order[..<k])
            var prefill = BlockMask.none
            for step in 0..<size {
                let candidates = decodeK.skipped.sorted().filter { !prefill.skips($0) }
                var l: [Double] = []
                for c in candidates {
                    let s = try states(prefill: prefill.skipping(c), pruning)
                    l.append(try loss(decode: decodeK, states: s, pruning))
                }
                let base = prefill
                let (b, dl) = try pick(candidates, pruningLoss: l) { c throws(EngineError) in
                    try loss(decode: decodeK, states: states(prefill: base.skipping(c), distillation), distillation)
                }
                prefill.skip(b)
                done += candidates.count
                progress(.init(done: done, total: total, status: "k = \(k), prefill step \(step + 1)/\(size): removed \(b), distillation ppl \(PruningAnalysis.format(exp(dl)))"))
            }
            let calibrationLoss = try loss(prefill: prefill, decode: decodeK)
            out.append(PruningProfile.Budget(
                removed: k, blocks: decodeK.skipped.sorted().map(\.description), calibrationPerplexity: exp(calibrationLoss),
                parameterBytes: decodeK.skipped.reduce(0) { $0 + engine.parameterBytes($1) },
                kvBytesPerToken: decodeK.skipped.reduce(0) { $0 + engine.kvBytesPerToken($1) },
                prefillBlocks: prefill.skipped.sorted().map(\.description)))
        }
        // The dense figure on the states the decode search already holds.
        let dense = try loss(decode: .none, states: densePruning + denseDistillation, pruning + distillation)
        try engine.session.setMask(.none, prefill: .none)
        return PruningProfile(method: .pdtrim, model: modelName, layers: engine.config.layerCount, calibration: calibration,
                              densePerplexity: exp(dense), order: order.map(\.description), budgets: out,
                              seconds: Platform.now() - start, passes: scored + prefills)
    }
}

extension Engine {
    /// Every window's prompt run with `prefill` (the session's masks become `prefill` for both
    /// stages): a state each, its first token greedy.
    public func prefillStates(_ windows: [StageAwareSearch.Window], prefill: BlockMask) throws(EngineError) -> [KVState] {
        try session.setMask(prefill, prefill: prefill)
        var p = GenerateParameters(maxTokens: 1, sampling: .greedy)
        p.stopAtEndOfGeneration = false   // a window whose next token is the end still continues
        var out: [KVState] = []
        for w in windows { out.append(try prefillState(tokens: w.prompt, parameters: p)) }
        return out
    }

    /// Mean NLL of the windows' continuations after their `states`, decoded with `decode`: the
    /// continuation perplexity of a disaggregated run is exp of it.
    public func continuationLoss(_ windows: [StageAwareSearch.Window], states: [KVState], decode: BlockMask) throws(EngineError) -> Double {
        var total = 0.0, count = 0
        for (s, w) in zip(states, windows) {
            let nll = try session.scoreContinuation(of: s, tokens: w.continuation, decodeMask: decode)
            total += nll.reduce(0, +)
            count += nll.count
        }
        return total / Double(max(1, count))
    }
}
