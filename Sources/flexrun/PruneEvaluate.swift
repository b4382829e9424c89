import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

extension Prune {
    /// Held-out perplexity of each profile's masks, as a table and a plot.
    struct Evaluate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "eval",
            abstract: "Held-out perplexity of pruning profiles at each budget (llama-perplexity procedure).")

        @OptionGroup var model: ModelOptions
        @OptionGroup var range: TextRange

        @Option(name: .long, help: "Held-out text file (use a part disjoint from the calibration tokens).")
        var text: String

        @Option(name: .customLong("chunk"), help: "Context per chunk; positions chunk/2 … chunk−2 are scored.")
        var chunk: Int = 256

        @Option(name: .long, help: "Budgets (blocks removed) to evaluate, e.g. 0,6,12,18 (default: 0 and every budget of the profiles, up to 24).")
        var budgets: String?

        @Flag(name: .long, help: "Also measure how often each mask's greedy choice is the dense model's (top 1 and top 4): the acceptance a self-draft with those blocks skipped would see (two more passes per mask).")
        var agreement = false

        @Option(name: .long, help: "Write the results as JSON.")
        var json: String?

        @Option(name: .long, help: "Write the table as Markdown.")
        var markdown: String?

        @Option(name: .long, help: "Write the plot (held-out perplexity against blocks removed) as SVG.")
        var svg: String?

        @Argument(help: "Profiles written by flexrun prune analyze.")
        var profiles: [String]

        struct Row: Codable {
            let method: String; let removed: Int; let blocks: [String]; let perplexity: Double; let calibrationPerplexity: Double?
            /// Bytes of the removed blocks' parameters as stored (what a plan need not hold).
            var parameterBytes: Int? = nil
            /// With --agreement: share of positions where the mask's largest logit is the dense
            /// model's, and where the dense choice is among the mask's four largest.
            var agreement: Double? = nil
            var agreementTop4: Double? = nil
        }
        struct Output: Codable {
            let model: String, text: String, firstToken: Int, tokens: Int, context: Int, chunks: Int
            let dense: Double
            let rows: [Row]
            let analysisSeconds: [String: Double]
        }

        func run() throws {
            guard !profiles.isEmpty else { throw CLIError("give at least one profile") }
            guard chunk >= 8, chunk <= 4096 else { throw CLIError("--chunk must be between 8 and 4096") }
            let loaded = try profiles.map { path in (path, try PruningProfile.read(path: path)) }
            var wanted: [Int]? = nil
            if let budgets {
                wanted = try budgets.split(separator: ",").map {
                    guard let k = Int($0), k >= 0 else { throw CLIError("--budgets: expected e.g. 0,6,12,18") }
                    return k
                }
            }
            for path in [json, markdown, svg].compactMap({ $0 }) { try checkWritable(path) }
            let body = try readText(text, what: "text file")
            let engine = try pruningEngine(model, context: chunk)
            for (path, p) in loaded where p.layers != engine.config.layerCount {
                throw CLIError("\(path) was made for a \(p.layers)-layer model; this one has \(engine.config.layerCount)")
            }
            let (sample, count) = try range.sample(engine, text: body, context: chunk, scoreFrom: chunk / 2, defaultTokens: nil)
            let evaluator = try MaskEvaluator(engine: engine)
            // Columns are named by method, or by file name where two profiles share a method.
            let methods = loaded.map(\.1.method)
            func label(_ path: String, _ p: PruningProfile) -> String {
                methods.filter { $0 == p.method }.count > 1 ? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent : p.method.rawValue
            }
            var jobs: [(String, Int, BlockMask, Double?)] = []
            for (path, p) in loaded {
                let ks = wanted ?? p.budgets.map(\.removed).filter { $0 <= 24 }
                for k in ks where k > 0 {
                    guard let b = p.budgets.first(where: { $0.removed == k }) else {
                        if wanted != nil && p.method != .evop { throw PruningProfile.ProfileError.noBudget(path, removed: k, available: p.budgets.map(\.removed)) }
                        continue
                    }
                    jobs.append((label(path, p), k, try p.mask(removing: k, path: path), b.calibrationPerplexity))
                }
            }
            let line = ProgressLine(label: "eval")
            line.update(done: 0, total: jobs.count + 1, status: "dense")
            let dense = exp(try evaluator.loss(.none, on: sample))
            var rows: [Row] = []
            for (i, job) in jobs.enumerated() {
                let ppl = exp(try evaluator.loss(job.2, on: sample))
                var row = Row(method: job.0, removed: job.1, blocks: job.2.skipped.sorted().map(\.description), perplexity: ppl, calibrationPerplexity: job.3)
                row.parameterBytes = job.2.skipped.reduce(0) { $0 + evaluator.parameterBytes($1) }
                if agreement {
                    let a = try evaluator.agreement(job.2, topK: 4, on: sample)
                    row.agreement = a.top1
                    row.agreementTop4 = a.topK
                }
                rows.append(row)
                line.update(done: i + 2, total: jobs.count + 1, status: String(format: "%@ k=%d: %.3f", job.0, job.1, ppl))
            }
            line.finish()
            let out = Output(model: URL(fileURLWithPath: engine.options.modelPath).lastPathComponent, text: text, firstToken: range.first,
                             tokens: count, context: chunk, chunks: sample.chunks.count, dense: dense, rows: rows,
                             analysisSeconds: Dictionary(loaded.map { (label($0.0, $0.1), $0.1.seconds) }, uniquingKeysWith: { a, _ in a }))
            let table = Self.markdownTable(out)
            print(table, terminator: "")
            if let markdown { try table.write(toFile: markdown, atomically: true, encoding: .utf8) }
            if let json {
                let e = JSONEncoder()
                e.outputFormatting = [.prettyPrinted, .sortedKeys]
                try e.encode(out).write(to: URL(fileURLWithPath: json), options: .atomic)
            }
            if let svg { try Self.plot(out).write(toFile: svg, atomically: true, encoding: .utf8) }
        }

        /// Rows: blocks removed; columns: methods (held-out perplexity, calibration in brackets).
        static func markdownTable(_ o: Output) -> String {
            let methods = orderedMethods(o.rows)
            let ks = Array(Set(o.rows.map(\.removed))).sorted()
            var s = "Held-out perplexity on tokens \(o.firstToken)..<\(o.firstToken + o.tokens) of `\(o.text)` "
                + "(\(o.chunks) chunks of \(o.context), llama-perplexity procedure); dense: \(String(format: "%.3f", o.dense)). "
                + "In brackets: calibration perplexity from the profile.\n\n"
            /// A grid of blocks removed by method: `cell` formats a row, "–" where there is none.
            func grid(_ cell: (Row) -> String?) -> String {
                var g = "| blocks removed | " + methods.joined(separator: " | ") + " |\n"
                g += "|---|" + methods.map { _ in "---|" }.joined() + "\n"
                for k in ks {
                    g += "| \(k) | " + methods.map { m in
                        o.rows.first(where: { $0.method == m && $0.removed == k }).flatMap(cell) ?? "–"
                    }.joined(separator: " | ") + " |\n"
                }
                return g
            }
            s += grid { r in String(format: "%.2f", r.perplexity) + (r.calibrationPerplexity.map { String(format: " (%.2f)", $0) } ?? "") }
            s += "| analysis time | " + methods.map { m in o.analysisSeconds[m].map { String(format: "%.0f s", $0) } ?? "–" }.joined(separator: " | ") + " |\n"
            if o.rows.contains(where: { $0.agreement != nil }) {
                s += "\nGreedy agreement with the dense model (its choice is the mask's largest logit / among its four largest), "
                    + "the acceptance a self-draft skipping those blocks would see; MiB removed in brackets.\n\n"
                s += grid { r in
                    guard let a = r.agreement, let a4 = r.agreementTop4 else { return nil }
                    return String(format: "%.0f %% / %.0f %%", 100 * a, 100 * a4) + (r.parameterBytes.map { String(format: " (%.1f)", Double($0) / 1048576) } ?? "")
                }
            }
            return s
        }

        static func orderedMethods(_ rows: [Row]) -> [String] {
            var seen: [String] = []
            for r in rows where !seen.contains(r.method) { seen.append(r.method) }
            return seen
        }

        /// A small self-contained SVG line chart, log-scale perplexity against blocks removed.
        static func plot(_ o: Output) -> String {
            let w = 720.0, h = 440.0, left = 70.0, right = 140.0, top = 30.0, bottom = 50.0
            let methods = orderedMethods(o.rows)
            let maxK = Double(max(1, o.rows.map(\.removed).max() ?? 1))
            let values = o.rows.map(\.perplexity) + [o.dense]
            let lo = log10(values.min()!), hi = log10(max(values.max()!, values.min()! * 1.5))
            func x(_ k: Double) -> Double { left + k / maxK * (w - left - right) }
            func y(_ p: Double) -> Double { top + (hi - log10(p)) / (hi - lo) * (h - top - bottom) }
            let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
            var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
            s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
            s += "<text x=\"\(w / 2)\" y=\"18\" text-anchor=\"middle\">\(o.model): held-out perplexity vs blocks removed</text>\n"
            s += "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - right)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
            s += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
            let step = maxK > 12 ? 3.0 : 1.0
            for k in stride(from: 0.0, through: maxK, by: step) {
                s += "<text x=\"\(x(k))\" y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(Int(k))</text>\n"
            }
            s += "<text x=\"\((left + w - right) / 2)\" y=\"\(h - 12)\" text-anchor=\"middle\">blocks removed</text>\n"
            var tick = pow(10, floor(lo))
            while tick <= pow(10, hi) * 1.0001 {
                for m in [1.0, 2.0, 5.0] where tick * m >= pow(10, lo) * 0.999 && tick * m <= pow(10, hi) * 1.001 {
                    let v = tick * m
                    s += "<line x1=\"\(left - 4)\" y1=\"\(y(v))\" x2=\"\(w - right)\" y2=\"\(y(v))\" stroke=\"#ddd\"/>\n"
                    s += "<text x=\"\(left - 8)\" y=\"\(y(v) + 4)\" text-anchor=\"end\">\(v >= 100 ? String(Int(v)) : String(format: "%g", v))</text>\n"
                }
                tick *= 10
            }
            s += "<text transform=\"translate(16,\((top + h - bottom) / 2)) rotate(-90)\" text-anchor=\"middle\">perplexity (log scale)</text>\n"
            for (i, m) in methods.enumerated() {
                let c = colors[i % colors.count]
                let pts = [(0.0, o.dense)] + o.rows.filter { $0.method == m }.sorted { $0.removed < $1.removed }.map { (Double($0.removed), $0.perplexity) }
                s += "<polyline fill=\"none\" stroke=\"\(c)\" stroke-width=\"2\" points=\"" + pts.map { "\(x($0.0)),\(y($0.1))" }.joined(separator: " ") + "\"/>\n"
                for p in pts { s += "<circle cx=\"\(x(p.0))\" cy=\"\(y(p.1))\" r=\"3\" fill=\"\(c)\"/>\n" }
                s += "<rect x=\"\(w - right + 15)\" y=\"\(top + 20 * Double(i))\" width=\"14\" height=\"3\" fill=\"\(c)\"/>\n"
                s += "<text x=\"\(w - right + 35)\" y=\"\(top + 20 * Double(i) + 5)\">\(m)</text>\n"
            }
            return s + "</svg>\n"
        }
    }
}
