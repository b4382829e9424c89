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
