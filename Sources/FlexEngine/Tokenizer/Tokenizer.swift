import FlexFormat

/// Text ↔ token ids: the seam between the engine and a vocabulary's algorithm. ``BPETokenizer``
/// (GGUF `gpt2`) and ``SentencePieceTokenizer`` (GGUF `llama`) sit behind it; ``TokenizerModel``
/// picks one from the file.
public protocol Tokenizer: Sendable {
    var vocabularySize: Int { get }
    var bosToken: Int32? { get }
    /// Tokens that end generation (EOS, EOT, `<|im_end|>`, …).
    var endOfGenerationTokens: Set<Int32> { get }
    /// Whether the model expects BOS at the start of a sequence (`tokenizer.ggml.add_bos_token`).
    var addsBOS: Bool { get }
    /// Encodes text. With `addSpecial`, BOS is prepended when the model asks for it; with
    /// `parseSpecial`, control-token text such as `<|im_start|>` becomes that token
    /// (user-defined tokens are matched either way, as in llama.cpp).
    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32]
    /// The bytes a token stands for (control tokens render as their text), without copying.
    func pieceBytes(_ token: Int32) -> ArraySlice<UInt8>
    /// Looks up a token by its exact vocabulary text.
    func tokenID(_ text: String) -> Int32?
    /// Decodes ids to text (invalid UTF-8 becomes U+FFFD).
    func decode(_ tokens: [Int32]) -> String
}

extension Tokenizer {
    public func encode(_ text: String) -> [Int32] { encode(text, addSpecial: true, parseSpecial: true) }

    /// The pieces' bytes in order.
    public func decode(_ tokens: [Int32]) -> String {
        var bytes: [UInt8] = []
        for t in tokens { bytes.append(contentsOf: pieceBytes(t)) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Errors loading a tokenizer from GGUF metadata.
public enum TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    case unsupportedModel(String)
    case unsupportedPreTokenizer(String)
    case missing(String)

    public var description: String {
        switch self {
        case .unsupportedModel(let m):
            return "tokenizer model '\(m)' is not supported (FlexRun reads "
                + TokenizerModel.allCases.map(\.summary).joined(separator: " and ") + ")"
        case .unsupportedPreTokenizer(let p): return "pre-tokenizer '\(p)' is not supported (supported: smollm, gpt2, llama3/llama-bpe, qwen2)"
        case .missing(let k): return "tokenizer metadata '\(k)' is missing or malformed"
        }
    }
}

/// How a GGUF vocabulary marks tokens (`tokenizer.ggml.token_type`, llama.cpp's `llama_token_type`).
public enum TokenKind: Int64, Sendable {
    case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

/// The tokenizer families FlexRun reads, by their `tokenizer.ggml.model` name: the one place
/// that maps a file to a ``Tokenizer`` (llama.cpp's switch in `llama_vocab::impl::load`).
public enum TokenizerModel: String, CaseIterable, Sendable {
    /// Byte-level BPE with merges and a pre-tokenizer (SmolLM2, Llama 3, Qwen2).
    case gpt2
    /// SentencePiece BPE with scores and byte fallback (Gemma, Llama 2).
    case llama

    /// What the model is, for messages.
    public var summary: String {
        switch self {
        case .gpt2: return "'gpt2' byte-level BPE"
        case .llama: return "'llama' SentencePiece"
        }
    }

    /// The tokenizer the file's `tokenizer.ggml.model` names.
    public static func tokenizer(for gguf: GGUFFile) throws(TokenizerError) -> any Tokenizer {
        let name = gguf.string("tokenizer.ggml.model") ?? "(none)"
        guard let model = TokenizerModel(rawValue: name) else { throw .unsupportedModel(name) }
        switch model {
        case .gpt2: return try BPETokenizer(gguf: gguf)
        case .llama: return try SentencePieceTokenizer(gguf: gguf)
        }
    }
}
