import ArgumentParser
import FlexEngine

extension OptionField {
    /// The flag that sets this field, for library errors shown by the CLI (the throughput model
    /// has no flag: `flexrun calibrate` writes it and the CLI loads it).
    var flag: String {
        switch self {
        case .memoryLimit: "--mem-limit"
        case .contextLength: "--ctx"
        case .threads: "--threads"
        case .maxSequences: "--parallel"
        case .maxDraft: "--draft-max"
        case .prune: "--prune"
        case .pruneOrder: "--profile"
        case .prunePolicy: "--prune-policy"
        case .minTokensPerSecond: "--min-tps"
        case .throughput: "a throughput calibration"
        case .residentOnly: "--resident-only"
        case .skip: "--skip"
        case .chat: "--chat"
        }
    }
}

extension EngineError {
    /// The library's message in the CLI's words: option fields become flags.
    var cliMessage: String { message(naming: \.flag) }
}

/// The generation flags `generate` and `chat` share: the token limit and llama.cpp's sampler
/// settings, with its defaults.
struct SamplingOptions: ParsableArguments {
    @Option(name: [.customShort("n"), .customLong("max-tokens")], parsing: .unconditional,
            help: "Tokens to generate at most; -1: until end of generation or a full context.")
    var maxTokens = 256

    @Option(name: .customLong("temp"), parsing: .unconditional, help: "Temperature; 0 is greedy.")
    var temperature: Float = 0.8

    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Top-k; 0 disables.")
    var topK = 40

    @Option(name: .customLong("top-p"), parsing: .unconditional, help: "Top-p; 1 disables.")
    var topP: Float = 0.95

    @Option(name: .customLong("min-p"), parsing: .unconditional, help: "Min-p; 0 disables.")
    var minP: Float = 0.05

    @Option(name: .customLong("repeat-penalty"), parsing: .unconditional, help: "Repetition penalty; 1 disables.")
    var repeatPenalty: Float = 1.0

    @Option(name: .long, help: "Sampler seed (default: random, printed with --stats).")
    var seed: UInt64?

    func validate() throws {
        guard maxTokens >= -1 else { throw CLIError("-n must be 0 or more, or -1 for no limit") }
        guard temperature.isFinite, temperature >= 0, topK >= 0, (0...1).contains(topP), (0...1).contains(minP), repeatPenalty > 0 else {
            throw CLIError("sampling options out of range: --temp ≥ 0, --top-k ≥ 0, --top-p and --min-p in 0…1, --repeat-penalty > 0")
        }
    }

    /// The library's parameters for these flags (-1 tokens: no limit but the context).
    func parameters(seed: UInt64) -> GenerateParameters {
        var params = GenerateParameters(maxTokens: maxTokens < 0 ? Int.max : maxTokens)
        params.sampling = SamplingParameters(temperature: temperature, topK: topK, topP: topP, minP: minP,
                                             repetitionPenalty: repeatPenalty, seed: seed)
        return params
    }
}
