import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

extension Prune {
    /// The quality table of a profile: what a pruning controller chooses from (issue 14's RAP).
    struct Quality: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "quality",
            abstract: "Measure calibration NLL and top-1 accuracy of the masks a controller can choose, and store them in the profile.",
            discussion: "Masks: the first k attention blocks of the profile's order (k = 1…), the first k FFN blocks, and every budget "
                + "of the profile. Measured on calibration tokens (default devtext tokens 0–2047), never the held-out split.")

        @OptionGroup var model: ModelOptions
        @OptionGroup var range: TextRange

        @Option(name: .long, help: "Calibration text (default: the profile's).")
        var calib: String?

        @Option(name: .customLong("chunk"), help: "Context per chunk; positions from chunk/8 on are scored.")
        var chunk: Int = 128

        @Option(name: [.customShort("o"), .long], help: "Where to write the profile with its table (default: in place).")
        var output: String?

        @Option(name: .customLong("mask"), parsing: .singleValue,
                help: "Measure only this mask (e.g. attn:3,ffn:17; repeatable) and print a JSON line per mask, dense first; the profile is not written.")
        var masks: [String] = []

        @Argument(help: "A profile written by flexrun prune analyze.")
        var profile: String

        func run() throws {
            guard chunk >= 8, chunk <= 4096 else { throw CLIError("--chunk must be between 8 and 4096") }
            var p = try PruningProfile.read(path: profile)
            let out = output ?? profile
            if masks.isEmpty { try checkWritable(out) }
            let body = try readText(calib ?? p.calibration.text, what: "calibration text")
            let engine = try pruningEngine(model, context: chunk)
            guard p.layers == engine.config.layerCount else {
                throw CLIError("\(profile) was made for a \(p.layers)-layer model; this one has \(engine.config.layerCount)")
            }
            let scoreFrom = max(1, chunk / 8)
            let (sample, count) = try range.sample(engine, text: body, context: chunk, scoreFrom: scoreFrom, defaultTokens: 2048)
            let evaluator = try MaskEvaluator(engine: engine)
            let order = try p.removalOrder(path: profile)
            // Given masks (a run's decisions, a study's static mask) are scored alone, with the
            // same sample and procedure as the table, so their numbers compare with its entries.
            let given = try masks.map { text -> BlockMask in
                let mask: BlockMask
                do { mask = try BlockMask(parsing: text) } catch { throw CLIError("--mask: \(error)") }
                if let b = mask.skipped.first(where: { $0.layer >= p.layers }) { throw CLIError("--mask \(text): \(b) is past the model's \(p.layers) layers") }
                return mask
            }
            var jobs: [(family: String, count: Int, mask: BlockMask)] = given.map { ("given", $0.skipped.count, $0) }
            if given.isEmpty {
                for kind in [BlockMask.Kind.attention, .ffn] {
                    let blocks = order.filter { $0.kind == kind }
                    for k in 1...max(1, blocks.count) where k <= blocks.count {
                        jobs.append((kind == .attention ? "attention" : "ffn", k, BlockMask(skipping: blocks.prefix(k))))
                    }
                }
                for b in p.budgets.sorted(by: { $0.removed < $1.removed }) where b.removed > 0 {
                    jobs.append(("budget", b.removed, try p.mask(removing: b.removed, path: profile)))
                }
            }
            let line = ProgressLine(label: "quality")
            line.update(done: 0, total: jobs.count + 1, status: "dense")
            func entry(_ family: String, _ k: Int, _ mask: BlockMask) throws -> PruningProfile.QualityTable.Entry {
                let q = try evaluator.quality(mask, on: sample)
                return .init(family: family, count: k, blocks: mask.skipped.sorted().map(\.description), nll: q.nll, top1: q.top1)
            }
            let dense = try entry("dense", 0, .none)
            var entries: [PruningProfile.QualityTable.Entry] = []
            for (i, job) in jobs.enumerated() {
                let e = try entry(job.family, job.count, job.mask)
                entries.append(e)
                line.update(done: i + 2, total: jobs.count + 1,
                            status: String(format: "%@ %d: NLL %.3f, top-1 %.1f%%", job.family, job.count, e.nll, 100 * e.top1))
            }
            line.finish()
            if !given.isEmpty {
                for e in [dense] + entries {
                    print("{\"blocks\":\"\(e.blocks.joined(separator: ","))\",\"nll\":\(e.nll),\"top1\":\(e.top1),\"first\":\(range.first),\"tokens\":\(count)}")
                }
                return
            }
            p.quality = .init(firstToken: range.first, tokenCount: count, context: chunk, dense: dense, entries: entries)
            try p.write(path: out)
            print(String(format: "quality: %d masks on tokens %d..<%d (%d chunks of %d); dense NLL %.3f, top-1 %.1f%%; written to %@",
                         entries.count, range.first, range.first + count, sample.chunks.count, chunk, dense.nll, 100 * dense.top1, out))
        }
    }
}
