import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

/// `flexrun prune stages`: profiles' masks as a disaggregated run uses them — the prompt with
/// the budget's prefill mask, the continuation with its decode mask — scored on held-out windows,
/// with the decode rate of each decode mask beside (docs/PDTRIM.md, "Stage-aware against uniform").
struct PruneStages: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stages",
        abstract: "Continuation perplexity of profiles' prefill and decode masks on held-out windows, and decode tok/s.",
        discussion: """
            A profile without prefill masks (gsi, evop, …) runs its mask for both stages; a pdtrim \
            profile runs each budget's own prefill mask. Windows of --prompt-tokens + --score-tokens \
            from --first (keep it past the calibration range). See docs/PDTRIM.md.
            """)

    @OptionGroup var model: ModelOptions

    @Option(name: .long, help: "Text file (devtext.txt).")
    var text: String

    @Argument(help: "Pruning profiles.")
    var profile: [String] = []

    @Option(name: .long, help: "Budgets (blocks removed by decode), comma-separated.")
    var budgets = "6,12,18"

    @Option(name: .long, help: "First token of the held-out windows.")
    var first = 2048

    @Option(name: .customLong("prompt-tokens"), help: "Prompt tokens per window.")
    var promptTokens = 512

    @Option(name: .customLong("score-tokens"), help: "Continuation tokens scored per window.")
    var scoreTokens = 128

    @Option(name: .long, help: "Held-out windows.")
    var windows = 4

    @Option(name: .customLong("decode-tokens"), help: "Greedy tokens generated to time each decode mask (0: no timing).")
    var decodeTokens = 64

    @Option(name: .shortAndLong, help: "Write the results as JSON here.")
    var output: String?

    func run() throws {
        guard !profile.isEmpty else { throw CLIError("give at least one profile") }
        let ks = try budgets.split(separator: ",").map { s -> Int in
            guard let k = Int(s), k >= 0 else { throw CLIError("--budgets: '\(s)' is not a count") }
            return k
        }
        guard promptTokens >= 1, scoreTokens >= 2, windows >= 1, first >= 0, decodeTokens >= 0 else {
            throw CLIError("--prompt-tokens, --windows and --decode-tokens must be positive, --score-tokens 2 or more, --first 0 or more")
        }
        let profiles = try profile.map { ($0, try PruningProfile.read(path: $0)) }
        for (path, p) in profiles { for k in ks { _ = try p.mask(removing: k, path: path) } }
        if let output { try checkWritable(output) }
        let window = promptTokens + scoreTokens
        let engine = try Engine(options: try model.engineOptions(context: model.ctx == nil ? (window + 64 + 63) / 64 * 64 : nil))
        guard engine.contextLength > window + 1 else { throw CLIError("--ctx must exceed --prompt-tokens + --score-tokens + 1 (\(window + 1))") }
        let all = engine.tokenizer.encode(try readText(text, what: "text file"), addSpecial: false, parseSpecial: false)
        let held = textWindows(engine, all, from: first, count: windows, prompt: promptTokens, score: scoreTokens)
        guard held.count == windows else {
            throw CLIError("the text has \(all.count) tokens: too few for \(windows) windows of \(window) from \(first)")
        }
        let session = engine.session

        /// Mean continuation NLL over the windows, and the decode rate, for one pair of masks.
        func measure(prefill: BlockMask, decode: BlockMask) throws -> (nll: Double, tps: Double?) {
            let nll = try engine.continuationLoss(held, states: engine.prefillStates(held, prefill: prefill), decode: decode)
            var tps: Double?
            if decodeTokens > 0 {
                try session.setMask(decode, prefill: prefill)
                var p = GenerateParameters(maxTokens: decodeTokens, sampling: .greedy)
                p.stopAtEndOfGeneration = false
                var it = try engine.generate(tokens: held[0].prompt, parameters: p)
                while it.next() != nil {}
                if let e = it.error { throw e }
                tps = it.stats.decodeTokensPerSecond
            }
            return (nll, tps)
        }

        let dense = try measure(prefill: .none, decode: .none)
        FileHandle.standardError.write(Data("flexrun: dense continuation perplexity \(f(exp(dense.nll), 3))\n".utf8))
        print("| profile | decode blocks removed | prefill blocks removed | continuation perplexity | vs dense | decode tok/s |")
        print("|---|---|---|---|---|---|")
        func tps(_ v: Double?) -> String { v.map { f($0, 1) } ?? "–" }
        print("| dense | 0 | 0 | \(f(exp(dense.nll), 3)) | – | \(tps(dense.tps)) |")
        var rows: [[String: Any]] = []
        for k in ks {
            for (path, p) in profiles {
                let decode = try p.mask(removing: k, path: path), prefill = try p.prefillMask(removing: k, path: path)
                let r = try measure(prefill: prefill, decode: decode)
                let ppl = exp(r.nll)
                let name = "\(URL(fileURLWithPath: path).lastPathComponent) (\(p.method.rawValue))"
                print("| \(name) | \(k) | \(prefill.skipped.count) | \(f(ppl, 3)) | +\(f(100 * (ppl / exp(dense.nll) - 1), 1)) % | \(tps(r.tps)) |")
                var row: [String: Any] = ["profile": path, "method": p.method.rawValue, "removed": k, "decode": "\(decode)",
                                          "prefill": prefill.skipped.isEmpty ? "" : "\(prefill)", "perplexity": ppl]
                if let t = r.tps { row["decode_tokens_per_second"] = t }
                rows.append(row)
            }
        }
        try session.setMask(.none, prefill: .none)
        if let output {
            var object: [String: Any] = ["model": engine.options.modelPath, "prompt_tokens": promptTokens, "score_tokens": scoreTokens,
                                         "first_token": first, "windows": windows, "dense_perplexity": exp(dense.nll), "rows": rows]
            if let t = dense.tps { object["dense_decode_tokens_per_second"] = t }
            try writeJSON(object, to: output)
        }
    }
}
