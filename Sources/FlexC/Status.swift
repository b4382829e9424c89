import CFlexRun
import FlexEngine
import FlexFormat

/// A refusal on its way out through the C ABI: the status the call returns and the line
/// `flexrun_last_error()` gives the calling thread.
struct CFailure: Error {
    let status: flexrun_status
    let message: String

    init(_ status: flexrun_status, _ message: String) {
        self.status = status
        self.message = message
    }

    /// The C status of each engine refusal: the caller branches on the code, the message says
    /// which file, option or limit.
    init(_ error: EngineError) {
        // A system error already names its file: say the path once.
        if case .model(let path, .io(let e)) = error, e.path == path { message = e.description } else { message = error.message(naming: \.cField) }
        switch error {
        case .model(_, .io): status = FLEXRUN_ERR_IO
        case .model, .tokenizer: status = FLEXRUN_ERR_MODEL
        case .memoryLimitTooSmall: status = FLEXRUN_ERR_MEMORY_LIMIT
        case .weightRead: status = FLEXRUN_ERR_WEIGHT_READ
        case .invalidOption, .textTooShort, .state: status = FLEXRUN_ERR_INVALID_ARGUMENT
        case .emptyPrompt, .promptTooLong, .invalidToken, .noChatTemplate, .template: status = FLEXRUN_ERR_PROMPT
        }
    }

    static func null(_ argument: String) -> CFailure { CFailure(FLEXRUN_ERR_INVALID_ARGUMENT, "\(argument) is NULL") }
    static func invalid(_ message: String) -> CFailure { CFailure(FLEXRUN_ERR_INVALID_ARGUMENT, message) }

    /// Records the message for `flexrun_last_error()` and gives the status to return.
    func report() -> Int32 {
        message.withCString { cflexrun_set_last_error($0, message.utf8.count) }
        return status.rawValue
    }
}

/// Runs an export's body and turns a refusal into its status; FLEXRUN_OK otherwise. Every
/// fallible export goes through here, so no Swift error crosses into C.
func guarded(_ body: () throws(CFailure) -> Void) -> Int32 {
    do {
        try body()
        return FLEXRUN_OK.rawValue
    } catch {
        return error.report()
    }
}

extension OptionField {
    /// The params field a C caller sets, for library errors seen through the ABI; options the
    /// ABI does not expose keep the Swift name.
    var cField: String {
        switch self {
        case .memoryLimit: "memory_limit"
        case .contextLength: "n_ctx"
        case .threads: "n_threads"
        case .maxSequences: "n_seq_max"
        case .chat: "chat"
        case .maxDraft, .prune, .pruneOrder, .prunePolicy, .minTokensPerSecond, .throughput, .residentOnly, .skip: description
        }
    }
}

/// `try engine(...)`: an engine call whose typed error becomes a ``CFailure``.
func engine<T>(_ body: () throws(EngineError) -> T) throws(CFailure) -> T {
    do { return try body() } catch { throw CFailure(error) }
}

/// A NUL-terminated C string argument as Swift text; NULL and invalid UTF-8 are refused.
func string(_ pointer: UnsafePointer<CChar>?, _ argument: String) throws(CFailure) -> String {
    guard let pointer else { throw .null(argument) }
    guard let s = String(validatingCString: pointer) else { throw .invalid("\(argument) is not valid UTF-8") }
    return s
}
