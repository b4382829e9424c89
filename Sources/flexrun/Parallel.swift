import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

/// `flexrun --parallel N PROMPTS`: every prompt of the file generated in one session, N
/// sequences batched per forward pass (the rest join as sequences end). One JSON line per
/// sequence on stdout as it ends; with --stats, aggregate and per-sequence rates on stderr.
extension Generate {
    /// One prompt per non-empty line, or JSONL lines `{"prompt": "..."}` (a line starting with `{`).
    func parsePrompts(_ text: String) throws -> [String] {
        let promptFile = promptFile ?? "-p"
        var prompts: [String] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.drop { $0 == " " || $0 == "\t" || $0 == "\r" }
            guard !trimmed.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) else { continue }
            if trimmed.hasPrefix("{") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any],
                      let prompt = object["prompt"] as? String else {
                    throw CLIError("\(promptFile): line \(n + 1) is not a JSON object with a \"prompt\" string")
                }
                guard !prompt.isEmpty else { throw CLIError("\(promptFile): line \(n + 1): the prompt is empty") }
                prompts.append(prompt)
            } else {
                prompts.append(String(line))
            }
        }
        guard !prompts.isEmpty else { throw CLIError("\(promptFile) holds no prompt (one per line, or JSONL {\"prompt\": ...})") }
        return prompts
    }

    func runParallel(prompts: [String], sequences: Int) throws {
        var options = try model.engineOptions(context: jobContext(longestPromptBytes: prompts.map(\.utf8.count).max() ?? 0))
        options.maxSequences = min(sequences, prompts.count)
        let engine = try Engine(options: options)
        let seed = sampling.seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        let cancel = CancellationToken()
        let params = parameters(seed: seed, cancel: cancel)
        installSignals(engine: engine, cancel: cancel)
        warnIfUnlocked(engine)

        var texts = Array(repeating: "", count: prompts.count)
        var ids = Array(repeating: [Int32](), count: prompts.count)
        var results = Array(repeating: GenerationStats?.none, count: prompts.count)
        let start = Platform.now()
        var firstToken: Double?
        var it = try engine.generate(prompts: prompts, parameters: params)
        // With --stats, a long batch shows its progress every few seconds and each controller
        // decision as it is made (a cap step or KV growth is visible while it happens).
        var progress = LiveProgress(total: prompts.count * (maxTokens < 0 ? engine.contextLength : maxTokens), start: start)
        var generated = 0, longest = 0
        while let event = it.next() {
            if stats { progress.report(engine.session, longest: longest, generated: generated) }
            switch event {
            case .token(let i, let t):
                texts[i] += t.text
                ids[i].append(t.id)
                generated += 1
                longest = max(longest, ids[i].count)
                if firstToken == nil { firstToken = Platform.now() }
            case .finished(let i, let s, let rest):
                texts[i] += rest
                results[i] = s
                try writeStandardOutput(jsonLine(index: i, text: texts[i], ids: ids[i], stats: s) + "\n")
            }
        }
        let wall = Platform.now() - start
        if let error = it.error { throw error }
        if stats { printParallelStats(results.compactMap { $0 }, engine: engine, seed: seed, wall: wall, firstToken: firstToken.map { $0 - start }) }
        if results.contains(where: { $0?.stopReason == .cancelled }) { throw Generate.cancelledExitCode }
    }

    /// One result as a JSON object on one line. Written by hand, not with Foundation's
    /// JSONSerialization: under a tight cap every MiB of code pages counts, and serialization
    /// pulled in enough of Foundation to make a 100 % cap thrash (76 against 280 tok/s, one sweep).
    func jsonLine(index: Int, text: String, ids: [Int32], stats s: GenerationStats) -> String {
        var out = "{\"id\":\(index),\"text\":\(jsonString(text)),\"tokens\":\(s.generatedTokens),\"prompt_tokens\":\(s.promptTokens)"
        out += ",\"stop\":\(jsonString(s.stopReason.rawValue)),\"decode_tok_s\":\((s.decodeTokensPerSecond * 100).rounded() / 100)"
        if printIDs { out += ",\"ids\":[" + ids.map(String.init).joined(separator: ",") + "]" }
        return out + "}"
    }

    func printParallelStats(_ all: [GenerationStats], engine: Engine, seed: UInt64, wall: Double, firstToken: Double?) {
        var lines: [String] = []
        let s = engine.session
        lines.append("model: \(engine.config.architecture), \(engine.config.layerCount) layers, context \(engine.contextLength) per sequence, "
                     + "\(s.maxSequences) sequences batched, threads \(engine.options.threads), seed \(seed)")
        lines.append("memory: " + memorySummary(engine))
        let generated = all.reduce(0) { $0 + $1.generatedTokens }
        let promptTokens = all.reduce(0) { $0 + $1.promptTokens }
        let decodeWall = max(1e-9, wall - (firstToken ?? 0))
        lines.append("sequences: \(all.count), \(promptTokens) prompt tokens, \(generated) tokens generated in \(f(wall, 3)) s")
        lines.append("aggregate: \(f(Double(max(0, generated - all.count)) / decodeWall, 1)) tok/s decoding (after the first token, at "
                     + "\(f(firstToken ?? 0, 3)) s), \(f(Double(generated + promptTokens) / wall, 1)) tok/s prompt and generated together")
        let rates = all.map(\.decodeTokensPerSecond).sorted()
        if !rates.isEmpty {
            lines.append("per sequence: decode tok/s min \(f(rates.first!, 1)), median \(f(rates[rates.count / 2], 1)), max \(f(rates.last!, 1))")
        }
        lines += sessionLines(s)
        lines.append("peak RSS: \(Platform.peakResidentBytes().map(ByteSize.format) ?? "unknown")\(chargedSuffix(engine))")
        let read = s.streamCounters.bytesRead
        if read > 0 { lines.append("disk: \(ByteSize.format(read)) read, prefetch stalls \(f(s.streamCounters.stallSeconds, 3)) s") }
        var reasons: [String: Int] = [:]
        for r in all { reasons[r.stopReason.rawValue, default: 0] += 1 }
        lines.append("stop: " + reasons.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", "))
        FileHandle.standardError.write(Data(lines.map { "flexrun: " + $0 }.joined(separator: "\n").appending("\n").utf8))
    }
}

/// `text` as a JSON string literal (RFC 8259: quote, backslash and control characters escaped).
func jsonString(_ text: String) -> String {
    var out = "\""
    for u in text.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20:
            let hex = String(u.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// `--parallel --stats`'s live lines on stderr: each new pruning decision at once (the summary at
/// the end repeats them with what was measured after them), and every 5 s the tokens generated,
/// the longest sequence's length and the rate since the last line.
struct LiveProgress {
    let total: Int
    var lastAt: Double
    var lastGenerated = 0
    var decisionsShown = 0

    init(total: Int, start: Double) { self.total = total; lastAt = start }

    mutating func report(_ session: Session, longest: Int, generated: Int) {
        let decisions = session.pruneDecisions
        if decisions.count > decisionsShown {
            let new = decisions[decisionsShown...].map { "flexrun: " + pruneLine($0) + "\n" }.joined()
            FileHandle.standardError.write(Data(new.utf8))
            decisionsShown = decisions.count
        }
        let now = Platform.now()
        guard now - lastAt >= 5 else { return }
        let rate = Double(generated - lastGenerated) / (now - lastAt)
        FileHandle.standardError.write(Data(("flexrun: progress: \(generated)/\(total) tokens, longest sequence \(longest) generated, "
                                             + "\(f(rate, 1)) tok/s\n").utf8))
        lastAt = now
        lastGenerated = generated
    }
}
