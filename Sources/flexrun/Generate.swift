import ArgumentParser
import Dispatch
import FlexEngine
import FlexSystem
import Foundation

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate text from a prompt file (the default command).")

    @OptionGroup var model: ModelOptions

    @Option(name: [.customShort("n"), .customLong("max-tokens")], help: "Tokens to generate at most.")
    var maxTokens = 256

    @Option(name: .customLong("temp"), help: "Temperature; 0 is greedy.")
    var temperature: Float = 0.8

    @Option(name: .customLong("top-k"), help: "Top-k; 0 disables.")
    var topK = 40

    @Option(name: .customLong("top-p"), help: "Top-p; 1 disables.")
    var topP: Float = 0.95

    @Option(name: .customLong("min-p"), help: "Min-p; 0 disables.")
    var minP: Float = 0.05

    @Option(name: .customLong("repeat-penalty"), help: "Repetition penalty; 1 disables.")
    var repeatPenalty: Float = 1.0

    @Option(name: .long, help: "Sampler seed (default: random, printed with --stats).")
    var seed: UInt64?

    @Flag(name: .long, help: "Wrap the prompt in the model's chat template (ChatML).")
    var chat = false

    @Option(name: .long, help: "System message for --chat (default: the template's own).")
    var system: String?

    @Flag(name: .long, help: "Print load time, prompt and decode tok/s, peak memory and more to stderr.")
    var stats = false

    @Argument(help: "Prompt file, or - for stdin.")
    var promptFile: String

    func validate() throws {
        guard maxTokens >= 0 else { throw CLIError("-n must be 0 or more") }
        guard temperature.isFinite, topK >= 0, (0...1).contains(topP), (0...1).contains(minP), repeatPenalty > 0 else {
            throw CLIError("sampling options out of range: --temp ≥ 0, --top-k ≥ 0, --top-p and --min-p in 0…1, --repeat-penalty > 0")
        }
    }

    func run() throws {
        try validate()
        let prompt = try readText(promptFile, what: "prompt file")
        guard !prompt.isEmpty else { throw CLIError("the prompt is empty") }
        let engine = try Engine(options: model.engineOptions())

        var params = GenerateParameters(maxTokens: maxTokens, chat: chat)
        let seed = self.seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        params.sampling = SamplingParameters(temperature: temperature, topK: topK, topP: topP, minP: minP,
                                             repetitionPenalty: repeatPenalty, seed: seed)
        params.system = system
        let cancel = CancellationToken()
        params.cancellation = cancel

        // Ctrl-C stops generation at the next token, and stats are still printed.
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { cancel.cancel() }
        source.resume()

        var it = try engine.generate(prompt: prompt, parameters: params)
        while let token = it.next() {
            if !token.text.isEmpty { writeStandardOutput(token.text) }
        }
        writeStandardOutput(it.flushText() + "\n")
        if stats { printStats(it.stats, engine: engine, seed: seed) }
        if it.stats.stopReason == .cancelled { throw ExitCode(130) }
    }

    func printStats(_ s: GenerationStats, engine: Engine, seed: UInt64) {
        func f(_ v: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", v) }
        let m = engine.memory
        var lines: [String] = []
        lines.append("model: \(engine.config.architecture), \(engine.config.layerCount) layers, context \(engine.contextLength), threads \(engine.options.threads), seed \(seed)")
        lines.append("memory: \(ByteSize.format(m.total)) planned (\(m.breakdown))" + (engine.options.memoryLimit.map { ", limit \(ByteSize.format($0))" } ?? ""))
        lines.append("load: \(f(s.loadSeconds)) s")
        lines.append("prompt: \(s.promptTokens) tokens in \(f(s.promptSeconds, 3)) s (\(f(s.promptTokensPerSecond, 1)) tok/s)")
        lines.append("decode: \(s.generatedTokens) tokens in \(f(s.decodeSeconds, 3)) s (\(f(s.decodeTokensPerSecond, 1)) tok/s)")
        lines.append("peak RSS: \(s.peakResidentBytes.map(ByteSize.format) ?? "unknown"), disk read: \(ByteSize.format(s.bytesReadFromDisk)), blocks skipped: \(s.blocksSkipped)")
        lines.append("stop: \(s.stopReason.rawValue)")
        FileHandle.standardError.write(Data(lines.map { "flexrun: " + $0 }.joined(separator: "\n").appending("\n").utf8))
    }
}
