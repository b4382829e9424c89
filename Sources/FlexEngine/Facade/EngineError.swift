import FlexFormat
import FlexSystem

/// Everything the library can refuse, each rendering as one actionable line.
public enum EngineError: Error, CustomStringConvertible, Sendable {
    case model(path: String, GGUFError)
    case tokenizer(TokenizerError)
    /// Even streaming every weight cannot fit: `minimum` is the smallest workable cap, and
    /// `fixed` what it is made of besides the staging ring.
    case memoryLimitTooSmall(limit: Int, minimum: Int, fixed: MemoryEstimate)
    /// Streamed weights could not be read (a failing disk, a file truncated after open).
    case weightRead(String)
    case invalidOption(String)
    case emptyPrompt
    case promptTooLong(tokens: Int, context: Int)
    case invalidToken(Int32)
    case noChatTemplate
    /// The chat template refused the conversation or uses a construct the interpreter lacks.
    case template(String)
    /// A KV state file that cannot be read, or belongs to another model, mask or context.
    case state(String)
    case textTooShort(tokens: Int, needed: Int)

    public var description: String {
        switch self {
        case .model(let path, let e): return "\(path): \(e)"
        case .tokenizer(let e): return e.description
        case .memoryLimitTooSmall(let limit, let minimum, let fixed):
            let (l, m) = ByteSize.format(limit: limit, below: minimum)
            return "memory limit \(l) is too small: streaming this model needs at least \(m) "
                + "(\(fixed.breakdown) + staging ring \(ByteSize.format(minimum - fixed.total))); "
                + "raise \(OptionField.memoryLimit) to at least \(m) or lower \(OptionField.contextLength)"
        case .weightRead(let m): return "cannot read model weights: \(m)"
        case .invalidOption(let m): return m
        case .emptyPrompt: return "the prompt is empty"
        case .promptTooLong(let n, let ctx): return "the prompt is \(n) tokens but the context holds \(ctx); raise \(OptionField.contextLength) or shorten the prompt"
        case .invalidToken(let t): return "token id \(t) is outside the vocabulary"
        case .noChatTemplate: return "this model has no chat template FlexRun understands (ChatML, Gemma, or Jinja within its interpreter's subset); run without \(OptionField.chat)"
        case .template(let m): return "chat template: \(m)"
        case .state(let m): return "KV state: \(m)"
        case .textTooShort(let n, let needed): return "the text is \(n) tokens; perplexity at this context needs at least \(needed)"
        }
    }
}
