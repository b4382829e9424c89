import ArgumentParser
import FlexEngine

/// `flexrun tokenize`: the ids a model's tokenizer gives a text, printed as llama.cpp's
/// `llama-tokenize --ids` prints them, so the two can be compared directly.
struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the token ids of a text as one JSON array (special tokens parsed, BOS as the model adds it).")

    @Option(name: .long, help: "GGUF model whose tokenizer to use (default: the SmolLM2 model in the local model cache).")
    var model: String?

    @Argument(help: "Text file to tokenize, or - for stdin.")
    var file: String

    func run() throws {
        let path = try modelPath(model)
        let text = try readText(file, what: "text file")
        // Only the vocabulary is read: any architecture's file can be tokenized.
        let tokenizer = try Model.tokenizer(path: path)
        let ids = tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        try writeStandardOutput("[" + ids.map(String.init).joined(separator: ", ") + "]\n")
    }
}
