import FlexFormat
import FlexSystem

/// Everything the library can refuse, each rendering as one actionable line.
public enum EngineError: Error, CustomStringConvertible, Sendable {
    case model(path: String, GGUFError)
    case tokenizer(TokenizerError)
    case memoryLimitTooSmall(limit: Int, estimate: MemoryEstimate)
    case invalidOption(String)
    case emptyPrompt
    case promptTooLong(tokens: Int, context: Int)
    case invalidToken(Int32)
    case noChatTemplate
    case textTooShort(tokens: Int, needed: Int)

    public var description: String {
        switch self {
        case .model(let path, let e): return "\(path): \(e)"
        case .tokenizer(let e): return e.description
        case .memoryLimitTooSmall(let limit, let est):
            return "memory limit \(ByteSize.format(limit)) is too small: this model needs at least \(ByteSize.format(est.total)) "
                + "(\(est.breakdown)); raise --mem-limit to at least \(ByteSize.format(est.total)) or lower --ctx "
                + "(streaming weights under a smaller cap is not implemented yet)"
        case .invalidOption(let m): return m
        case .emptyPrompt: return "the prompt is empty"
        case .promptTooLong(let n, let ctx): return "the prompt is \(n) tokens but the context holds \(ctx); raise --ctx or shorten the prompt"
        case .invalidToken(let t): return "token id \(t) is outside the vocabulary"
        case .noChatTemplate: return "this model has no chat template FlexRun understands (ChatML); run without --chat"
        case .textTooShort(let n, let needed): return "the text is \(n) tokens; perplexity at this context needs at least \(needed)"
        }
    }
}
