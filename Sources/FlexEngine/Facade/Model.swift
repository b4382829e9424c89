import FlexFormat
import FlexSystem
import Synchronization

/// A model opened once: configuration, weights, tokenizer and chat template. Immutable and
/// shared: any number of ``Session``s run on one `Model` (llama.cpp's `llama_model`, where a
/// session is its `llama_context`).
///
/// Without a memory cap the weights run from the file's read-only mapping, and the Q4_1/Q8_0
/// matrices from x8 copies made here once (`InterleavedWeights`), which every in-memory session
/// shares. Under a cap each session's own streamer reads what it needs from disk.
///
/// Sendable without exception: every stored property is an immutable `let` of a Sendable type;
/// the x8 copies' reference, the one thing that changes, is reached only through a mutex.
public final class Model: Sendable {
    public let path: String
    public let config: ModelConfig
    /// The file's tokenizer, whichever family `tokenizer.ggml.model` names (``TokenizerModel``).
    public let tokenizer: any Tokenizer
    public let chatTemplate: ChatTemplate?
    /// Tokens that end a generation: the tokenizer's end-of-generation set (EOS, EOT, the usual
    /// chat terminators) and the token the chat template closes assistant turns with, when the
    /// vocabulary has it as one token (``ChatTemplate/assistantTerminator``).
    public let stopTokens: Set<Int32>
    /// XXH64 of the file's header (metadata and tensor table), seeded with its size: what a KV
    /// state file names its model by, so a state is never continued on another model.
    public let fingerprint: UInt64
    let weights: ModelWeights

    /// Where the dense model's weights sit in the file, as the planner and RAP's memory model see them.
    public func layout() throws(EngineError) -> ModelLayout { try weights.layout(skipping: .none) }
    /// Anonymous memory the open allocated (parsed metadata, tokenizer tables): part of every
    /// session's runtime share under a cap.
    public let parsedBytes: Int
    public let loadSeconds: Double
    private let interleaved: Mutex<InterleavedWeights?>

    /// Opens `path`. `streaming` says the weights will mostly be read with O_DIRECT (the mapping is
    /// then advised random and no x8 copies are made); `interleave` makes the x8 copies otherwise.
    public init(path: String, streaming: Bool = false, interleave: Bool = true) throws(EngineError) {
        let start = Platform.now()
        let anonymousBefore = Platform.anonymousResidentBytes()
        let file: GGUFFile
        let weights: ModelWeights
        do {
            file = try GGUFFile(path: path, randomAccess: streaming)
            weights = try ModelWeights(file: file)
        } catch {
            throw .model(path: path, error)
        }
        let tokenizer: any Tokenizer
        do { tokenizer = try TokenizerModel.tokenizer(for: file) } catch { throw .tokenizer(error) }
        guard tokenizer.vocabularySize <= weights.config.vocabularySize else {
            throw .model(path: path, .badKey("tokenizer.ggml.tokens", reason: "\(tokenizer.vocabularySize) tokens but the embedding has \(weights.config.vocabularySize) rows"))
        }
        // Measured before the x8 copies, which are weights, not runtime.
        if let before = anonymousBefore, let after = Platform.anonymousResidentBytes() { parsedBytes = max(0, after - before) }
        else { parsedBytes = MemoryEstimate.parsedAllowance }
        self.path = path
        self.weights = weights
        self.config = weights.config
        self.tokenizer = tokenizer
        // The EOS token's text, for templates that print `eos_token` (Zephyr closes user turns with it).
        let eosText = file.int("tokenizer.ggml.eos_token_id").flatMap { id -> String? in
            guard id >= 0, id < tokenizer.vocabularySize, let token = Int32(exactly: id) else { return nil }
            return String(decoding: tokenizer.pieceBytes(token), as: UTF8.self)
        } ?? ""
        let template = ChatTemplate(jinja: file.string("tokenizer.chat_template"), eosToken: eosText)
        self.chatTemplate = template
        var stops = tokenizer.endOfGenerationTokens
        if let end = template?.assistantTerminator {
            let ids = tokenizer.encode(end, addSpecial: false, parseSpecial: true)
            if ids.count == 1 { stops.insert(ids[0]) }
        }
        stopTokens = stops
        fingerprint = XXHash64.hash(file.headerBytes, seed: UInt64(file.fileSize))
        interleaved = Mutex(!streaming && interleave ? InterleavedWeights(weights) : nil)
        loadSeconds = Platform.now() - start
    }

    /// The tokenizer of the model at `path`, without reading its weights (`flexrun tokenize`):
    /// any file whose vocabulary FlexRun reads, whatever its architecture.
    public static func tokenizer(path: String) throws(EngineError) -> any Tokenizer {
        let file: GGUFFile
        do { file = try GGUFFile(path: path) } catch { throw .model(path: path, error) }
        do { return try TokenizerModel.tokenizer(for: file) } catch { throw .tokenizer(error) }
    }

    /// Tensor bytes as stored.
    public var weightBytes: Int { weights.file.tensors.reduce(0) { $0 + $1.byteCount } }

    /// The source an in-memory session reads: the x8 copies where there are any, else the mapping.
    func inMemorySource() -> any WeightSource {
        if let copies = interleaved.withLock({ $0 }) { return InMemoryWeights(copies) }
        return InMemoryWeights(weights)
    }

    /// Lets the x8 copies go (a session switched to streaming): their memory returns once the
    /// last session still reading them lets go too.
    func dropInterleaved() { interleaved.withLock { $0 = nil } }

    /// Bytes of the x8 copies the model still holds.
    public var interleavedBytes: Int { interleaved.withLock { $0?.byteCount ?? 0 } }

    /// Prompt text → ids, in the chat template when asked.
    public func promptTokens(_ prompt: String, parameters: GenerateParameters) throws(EngineError) -> [Int32] {
        var text = prompt
        if parameters.chat {
            guard let template = chatTemplate else { throw .noChatTemplate }
            text = template.render(user: prompt, system: parameters.system)
        }
        return tokenizer.encode(text)
    }
}
