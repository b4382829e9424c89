import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

/// `flexrun prune`: which transformer blocks the model can lose, and at what cost.
struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Block pruning: rank blocks on calibration text, then measure held-out perplexity.",
        discussion: "See docs/PRUNING.md.",
        subcommands: [Analyze.self, Evaluate.self, Quality.self, TrainPolicy.self, Policies.self, PruneKV.self, PruneStages.self])
}

/// Token range options shared by analyze and eval: which part of the text is scored.
struct TextRange: ParsableArguments {
    @Option(name: .long, help: "First token of the text to use (after tokenizing the whole file).")
    var first: Int = 0

    @Option(name: .long, help: "Tokens to use from --first (default: the method's default, or the rest of the text).")
    var tokens: Int?

    func sample(_ engine: Engine, text: String, context: Int, scoreFrom: Int, defaultTokens: Int?) throws -> (TextSample, Int) {
        guard first >= 0 else { throw CLIError("--first must be 0 or more") }
        let (sample, total) = engine.textSample(text, first: first, count: tokens ?? defaultTokens, context: context, scoreFrom: scoreFrom)
        let count = tokens ?? defaultTokens ?? max(0, total - first)
        guard !sample.chunks.isEmpty else {
            throw CLIError("the text has \(total) tokens: tokens \(first)..<\(first + count) hold no whole \(context)-token chunk")
        }
        return (sample, count)
    }
}

/// Opens the model for scoring whole chunks in one pass (batch and logit rows = the chunk).
func pruningEngine(_ model: ModelOptions, context: Int) throws -> Engine {
    var options = try model.engineOptions(context: context)
    options.batchSize = context
    options.logitRows = context
    return try Engine(options: options)
}

/// Progress on stderr: "\r" updates with an ETA from the rate since the start of this run.
final class ProgressLine {
    let label: String
    let start = Platform.now()
    var firstDone: Int?
    var lastLength = 0
    init(label: String) { self.label = label }
    func update(done: Int, total: Int, status: String) {
        let now = Platform.now()
        if firstDone == nil { firstDone = done }
        var eta = ""
        let progressed = done - firstDone!
        if progressed > 0, total > done {
            let seconds = (now - start) / Double(progressed) * Double(total - done)
            eta = seconds >= 90 ? String(format: ", ETA %.0f min", seconds / 60) : String(format: ", ETA %.0f s", seconds)
        }
        let line = "flexrun: \(label) [\(min(done, total))/\(total)] \(status)\(eta)"
        let pad = String(repeating: " ", count: max(0, lastLength - line.count))
        lastLength = line.count
        FileHandle.standardError.write(Data("\r\(line)\(pad)".utf8))
    }
    func finish() { FileHandle.standardError.write(Data("\n".utf8)) }
}

extension Prune {
    struct Analyze: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rank the model's attention and FFN blocks on calibration text and write a pruning profile.",
            discussion: """
                Methods: gsi (greedy sequential importance), oneshot (single-removal perplexity), \
                bi (ShortGPT block influence), angular (layer-level angular distance), evop \
                (clustered calibration sampling + evolutionary search), pdtrim (stage-aware: a \
                decode mask and a gentler prefill mask per budget, scored on continuations after \
                a prompt; windows of --prompt-tokens + --score-tokens, the last --distill of them \
                the distillation set). An interrupted run resumes from OUTPUT.checkpoint when \
                rerun with the same settings (not pdtrim).
                """)

        @OptionGroup var model: ModelOptions
        @OptionGroup var range: TextRange

        @Option(name: .long, help: "gsi, oneshot, bi, angular, evop or pdtrim.")
        var method: String

        @Option(name: .long, help: "Calibration text file.")
        var calib: String

        @Option(name: .customLong("chunk"), help: "Tokens per calibration chunk (one forward pass).")
        var chunk: Int = 128

        @Option(name: .customLong("score-from"), help: "First scored position in each chunk (default: chunk/8).")
        var scoreFrom: Int?

        @Option(name: .long, help: "evop, pdtrim: budgets (blocks removed) to search, e.g. 6,12,18.")
        var budgets: String = "6,12,18"

        @Option(name: .long, help: "evop: calibration chunks CCDS selects from the pool.")
        var select: Int = 4

        @Option(name: .long, help: "evop: generations per budget.")
        var generations: Int = 30

        @Option(name: .long, help: "evop: offspring per generation.")
        var offspring: Int = 16

        @Option(name: .customLong("seed-profile"), help: "evop: a profile whose masks seed the search (e.g. GSI's).")
        var seedProfiles: [String] = []

        @Option(name: .customLong("prompt-tokens"), help: "pdtrim: prompt tokens per window.")
        var promptTokens = 256

        @Option(name: .customLong("score-tokens"), help: "pdtrim: continuation tokens scored per window.")
        var scoreTokens = 64

        @Option(name: .long, help: "pdtrim: windows (the last ones) held for the distillation set.")
        var distill = 2

        @Option(name: .customLong("prefill-share"), help: "pdtrim: prefill mask size as a share of the decode mask's.")
        var prefillShare = 1.0 / 3

        @Option(name: .shortAndLong, help: "Profile to write (JSON).")
        var output: String

        func run() throws {
            // SIGINT and SIGTERM remove a half-written profile or checkpoint save; the last
            // complete checkpoint stays, so the same command resumes.
            SignalCleanup.install()
            guard let method = PruningMethod(rawValue: method) else {
                throw CLIError("--method must be one of: \(PruningMethod.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard chunk >= 8, chunk <= 4096 else { throw CLIError("--chunk must be between 8 and 4096") }
            let scoreFrom = self.scoreFrom ?? chunk / 8
            guard scoreFrom >= 0, scoreFrom <= chunk - 2 else { throw CLIError("--score-from must be between 0 and chunk − 2") }
            let budgetList = try budgets.split(separator: ",").map {
                guard let k = Int($0), k >= 1 else { throw CLIError("--budgets: expected e.g. 6,12,18") }
                return k
            }
            if method == .pdtrim { return try stageAware(budgets: budgetList) }
            var evolution = PruningAnalysis.EvolutionSettings()
            if method == .evop {
                evolution.budgets = budgetList
                guard select >= 1, generations >= 0, offspring >= 1 else { throw CLIError("--select, --generations and --offspring must be positive") }
                evolution.selectedChunks = select
                evolution.generations = generations
                evolution.offspring = offspring
                for path in seedProfiles {
                    let p = try PruningProfile.read(path: path)
                    for k in evolution.budgets where p.budgets.contains(where: { $0.removed == k }) {
                        evolution.seeds[k, default: []].append(try p.mask(removing: k, path: path))
                    }
                }
            }
            let text = try readText(calib, what: "calibration text")
            try checkWritable(output)
            let engine = try pruningEngine(model, context: chunk)
            // EvoP's default range is its pool (CCDS picks `select` chunks of it); the others score
            // 512 tokens per mask, which keeps a full GSI ordering of SmolLM2 well inside 45 minutes.
            let (sample, count) = try range.sample(engine, text: text, context: chunk, scoreFrom: scoreFrom,
                                                   defaultTokens: method == .evop ? 16 * chunk : 4 * chunk)
            if method == .evop && sample.chunks.count < select {
                throw CLIError("evop selects \(select) chunks but the calibration range holds \(sample.chunks.count)")
            }
            let evaluator = try MaskEvaluator(engine: engine)
            let modelName = URL(fileURLWithPath: engine.options.modelPath).lastPathComponent
            let info = PruningProfile.Calibration(text: calib, firstToken: range.first, tokenCount: count, context: chunk,
                                                  scoreFrom: scoreFrom, chunks: Array(sample.chunks.indices))

            // Resume: the memo of scores is saved beside the output; rerunning with the same
            // settings replays it (no passes) and continues where the run stopped.
            let settings = [method.rawValue, modelName, String(engine.config.layerCount), sample.fingerprint,
                            method == .evop ? "\(evolution.budgets) \(select) \(generations) \(offspring) \(seedProfiles)" : ""].joined(separator: "|")
            let checkpointPath = output + ".checkpoint"
            if let saved = try? Checkpoint.read(checkpointPath) {
                guard saved.settings == settings else {
                    throw CLIError("\(checkpointPath) is from a run with other settings: rerun with those, or delete it")
                }
                evaluator.memo = saved.memo
                FileHandle.standardError.write(Data("flexrun: resuming from \(checkpointPath) (\(saved.memo.scores.count) scores)\n".utf8))
            }
            var analysis = PruningAnalysis(evaluator: evaluator, calibration: sample, calibrationInfo: info, modelName: modelName)
            analysis.evolution = evolution
            let line = ProgressLine(label: method.rawValue)
            analysis.progress = { p in line.update(done: p.done, total: p.total, status: p.status) }
            var lastSave = Platform.now()
            analysis.checkpoint = {
                guard Platform.now() - lastSave >= 5 else { return }
                try? Checkpoint(settings: settings, memo: evaluator.memo).write(checkpointPath)
                lastSave = Platform.now()
            }
            let profile = try analysis.run(method)
            line.finish()
            try profile.write(path: output)
            try? FileManager.default.removeItem(atPath: checkpointPath)
            print(String(format: "%@: %d budgets, dense calibration perplexity %.3f, %.1f s, %d forward passes → %@",
                         method.rawValue, profile.budgets.count, profile.densePerplexity, profile.seconds, profile.passes, output))
        }
    }

}

extension Prune.Analyze {
    /// `--method pdtrim`: ``StageAwareSearch`` over windows of the calibration range.
    func stageAware(budgets: [Int]) throws {
        guard promptTokens >= 1, scoreTokens >= 2 else { throw CLIError("--prompt-tokens must be 1 or more and --score-tokens 2 or more") }
        guard distill >= 1 else { throw CLIError("--distill must be 1 or more") }
        guard prefillShare >= 0, prefillShare < 1 else { throw CLIError("--prefill-share must be at least 0 and below 1") }
        guard range.first >= 0 else { throw CLIError("--first must be 0 or more") }
        let text = try readText(calib, what: "calibration text")
        try checkWritable(output)
        let window = promptTokens + scoreTokens
        let engine = try Engine(options: try model.engineOptions(context: model.ctx == nil ? (window + 64 + 63) / 64 * 64 : nil))
        let all = engine.tokenizer.encode(text, addSpecial: false, parseSpecial: false)
        let count = range.tokens ?? 2048
        let end = min(all.count, range.first + count)
        let windows = textWindows(engine, all, from: range.first, count: max(0, end - range.first) / window, prompt: promptTokens, score: scoreTokens)
        guard windows.count > distill else {
            throw CLIError("tokens \(range.first)..<\(end) of the text hold \(windows.count) windows of \(window): "
                           + "pdtrim needs more than --distill \(distill)")
        }
        let search = try StageAwareSearch(engine: engine, pruning: Array(windows.dropLast(distill)), distillation: Array(windows.suffix(distill)))
        search.settings.budgets = budgets
        search.settings.prefillShare = prefillShare
        let line = ProgressLine(label: "pdtrim")
        search.progress = { p in line.update(done: p.done, total: p.total, status: p.status) }
        let modelName = URL(fileURLWithPath: engine.options.modelPath).lastPathComponent
        let info = PruningProfile.Calibration(text: calib, firstToken: range.first, tokenCount: end - range.first, context: window,
                                              scoreFrom: promptTokens, chunks: Array(windows.indices))
        let profile = try search.run(modelName: modelName, calibration: info)
        line.finish()
        try profile.write(path: output)
        print(String(format: "pdtrim: %d budgets, dense continuation perplexity %.3f, %.1f s, %d prompts and %d continuations → %@",
                     profile.budgets.count, profile.densePerplexity, profile.seconds, search.prefills, search.scored, output))
    }
}

extension Prune {
    /// Saved scores of an interrupted analysis.
    struct Checkpoint: Codable {
        let settings: String
        let memo: MaskEvaluator.Memo
        static func read(_ path: String) throws -> Checkpoint {
            try JSONDecoder().decode(Checkpoint.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        }
        /// Through an ``OutputFile``, like the profile: an interrupted save leaves the previous checkpoint.
        func write(_ path: String) throws {
            var out = try OutputFile(path: path)
            try out.write(Array(try JSONEncoder().encode(self)))
            try out.commit()
        }
    }
}

/// Fails early, before hours of work, when the output's directory is not writable.
func checkWritable(_ path: String) throws {
    let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
    guard FileManager.default.isWritableFile(atPath: dir.isEmpty ? "." : dir) else {
        throw CLIError("cannot write \(path): directory \(dir) is not writable")
    }
}
