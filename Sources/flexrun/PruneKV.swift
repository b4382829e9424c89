import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

/// `flexrun prune kv-handoff`: token-aware KV pruning of a prefill → decode hand-off (PDTrim).
/// Ranks layers on calibration windows by what pruning each alone costs, then measures, on
/// held-out windows, the hand-off's bytes against the continuation's perplexity over a grid of
/// layer counts and kept first/last tokens (docs/PDTRIM.md).
struct PruneKV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv-handoff",
        abstract: "Token-aware KV pruning of a hand-off: bytes moved against continuation perplexity (PDTrim).",
        discussion: "Calibrates the layer order on --calib-tokens from the start of the text and reports on windows after them. See docs/PDTRIM.md.")

    @OptionGroup var model: ModelOptions

    @Argument(help: "Text file (devtext.txt).")
    var text: String

    @Option(name: .customLong("prompt-tokens"), help: "Prompt tokens per window (the hand-off's positions).")
    var promptTokens = 512

    @Option(name: .customLong("score-tokens"), help: "Continuation tokens scored per window.")
    var scoreTokens = 128

    @Option(name: .customLong("calib-tokens"), help: "Tokens from the start used to rank layers; reporting starts after them.")
    var calibTokens = 2048

    @Option(name: .long, help: "Held-out windows to report on.")
    var windows = 4

    @Option(name: .customLong("layer-counts"), help: "Pruned layer counts to report, comma-separated.")
    var layerCounts = "0,6,12,18,24,27,28,30"

    @Option(name: .customLong("keep"), help: "First,last token pairs to report, e.g. 4:32,4:64.")
    var keep = "4:32,4:64,4:128,16:64,16:128"

    @Option(name: .shortAndLong, help: "Write the results as JSON here.")
    var output: String?

    func run() throws {
        let counts = try layerCounts.split(separator: ",").map { s -> Int in
            guard let k = Int(s), k >= 0 else { throw CLIError("--layer-counts: '\(s)' is not a count") }
            return k
        }
        let pairs = try keep.split(separator: ",").map { s -> (Int, Int) in
            let p = s.split(separator: ":")
            guard p.count == 2, let f = Int(p[0]), let r = Int(p[1]), f >= 0, r >= 1 else { throw CLIError("--keep: '\(s)' is not FIRST:LAST") }
            return (f, r)
        }
        let window = promptTokens + scoreTokens
        var options = try model.engineOptions(context: model.ctx == nil ? (window + 64 + 63) / 64 * 64 : nil)
        options.maxSequences = 2
        let engine = try Engine(options: options)
        guard engine.contextLength > window else { throw CLIError("--ctx must exceed --prompt-tokens + --score-tokens (\(window))") }
        let all = engine.tokenizer.encode(try readText(text, what: "text file"), addSpecial: false, parseSpecial: false)
        let calibration = textWindows(engine, all, from: 0, count: max(0, calibTokens / window), prompt: promptTokens, score: scoreTokens)
        let heldOut = textWindows(engine, all, from: calibTokens, count: windows, prompt: promptTokens, score: scoreTokens)
        guard !calibration.isEmpty, heldOut.count == windows else {
            throw CLIError("the text has \(all.count) tokens: too few for \(windows) held-out windows of \(window) after \(calibTokens)")
        }
        let session = engine.session
        let layers = (0..<engine.config.layerCount).filter { l in engine.config.attentionWindows[l] == nil && !session.mask.skipsAttention(l) }
        var greedy = GenerateParameters(maxTokens: 1, sampling: .greedy)
        greedy.keepCache = true

        /// Runs a window's prompt once and scores its continuation for each pruning.
        func score(_ w: StageAwareSearch.Window, _ prunings: [KVPruning?]) throws -> [(nll: Double, rowBytes: Int)] {
            var it = try engine.generate(tokens: w.prompt, parameters: greedy)
            while it.next() != nil {}
            if let e = it.error { throw e }
            guard let id = it.sequence else { throw CLIError("the prompt did not run") }
            defer { session.release(id) }
            return try prunings.map { p in
                let state = try session.exportState(of: id, pruning: p)
                let nll = try session.scoreContinuation(of: state, tokens: w.continuation)
                return (nll.reduce(0, +) / Double(nll.count), state.rowBytes)
            }
        }

        // Calibration: each layer alone, pruned to the first 4 and last 32 tokens.
        let start = Platform.now()
        FileHandle.standardError.write(Data("flexrun: ranking \(layers.count) layers on \(calibration.count) calibration windows\n".utf8))
        var cost = [Double](repeating: 0, count: engine.config.layerCount)
        for w in calibration {
            let r = try score(w, [nil] + layers.map { KVPruning(layers: [$0], first: 4, last: 32) })
            for (i, l) in layers.enumerated() { cost[l] += (r[i + 1].nll - r[0].nll) / Double(calibration.count) }
        }
        let order = layers.sorted { cost[$0] < cost[$1] }
        FileHandle.standardError.write(Data("flexrun: layer order (cheapest first): \(order.map(String.init).joined(separator: ",")) in \(f(Platform.now() - start, 1)) s\n".utf8))

        // Held out: the frontier.
        var configs: [(k: Int, first: Int, last: Int)] = [(0, 0, 0)]
        for k in counts where k > 0 && k <= order.count { for (fi, la) in pairs { configs.append((k, fi, la)) } }
        var nll = [Double](repeating: 0, count: configs.count), bytes = [Int](repeating: 0, count: configs.count)
        for (i, w) in heldOut.enumerated() {
            FileHandle.standardError.write(Data("flexrun: held-out window \(i + 1)/\(heldOut.count)\n".utf8))
            let r = try score(w, configs.map { c in c.k == 0 ? nil : KVPruning(layers: Set(order.prefix(c.k)), first: c.first, last: c.last) })
            for j in configs.indices { nll[j] += r[j].nll / Double(heldOut.count); bytes[j] += r[j].rowBytes / heldOut.count }
        }
        let fullPPL = exp(nll[0]), fullBytes = Double(bytes[0])
        print("| pruned layers | first | last | hand-off bytes | fewer than full | continuation perplexity | vs full |")
        print("|---|---|---|---|---|---|---|")
        var rows: [[String: Any]] = []
        for (j, c) in configs.enumerated() {
            let ppl = exp(nll[j])
            let ratio = fullBytes / Double(max(1, bytes[j]))
            print("| \(c.k) | \(c.k == 0 ? "–" : "\(c.first)") | \(c.k == 0 ? "–" : "\(c.last)") | \(ByteSize.format(bytes[j])) | \(f(ratio))× | \(f(ppl, 3)) | "
                  + "\(c.k == 0 ? "–" : (ppl >= fullPPL ? "+" : "") + f(100 * (ppl / fullPPL - 1), 1) + " %") |")
            rows.append(["layers": c.k, "first": c.first, "last": c.last, "bytes": bytes[j], "ratio": ratio, "perplexity": ppl,
                         "relative": ppl / fullPPL - 1])
        }
        if let output {
            let object: [String: Any] = ["model": engine.options.modelPath, "prompt_tokens": promptTokens, "score_tokens": scoreTokens,
                                         "calibration_windows": calibration.count, "held_out_windows": heldOut.count,
                                         "held_out_first_token": calibTokens, "layer_order": order, "layer_cost": order.map { cost[$0] },
                                         "rows": rows]
            try writeJSON(object, to: output)
        }
    }
}
