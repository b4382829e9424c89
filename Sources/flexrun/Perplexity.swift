import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Perplexity of a text file, with llama-perplexity's procedure (comparable numbers).")

    @OptionGroup var model: ModelOptions

    @Argument(help: "Text file to score, or - for stdin.")
    var file: String

    func run() throws {
        let text = try readText(file, what: "text file")
        let n = model.ctx ?? 512
        guard n >= 4 else { throw CLIError("--ctx must be at least 4") }
        let engine = try Engine(options: model.engineOptions(context: n))
        let start = Platform.now()
        let result = try engine.perplexity(of: text, context: n) { done, total, ppl in
            let elapsed = Platform.now() - start
            let eta = elapsed / Double(done) * Double(total - done)
            FileHandle.standardError.write(Data(String(format: "\rflexrun: [%d/%d] perplexity %.4f, ETA %.0f s ", done, total, ppl, eta).utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        print(String(format: "perplexity: %.4f ± %.4f (ctx %d, %d chunks, %d tokens scored, %.1f s, %.1f tok/s)",
                     result.perplexity, result.standardError, n, result.chunks, result.scoredTokens, result.seconds, result.tokensPerSecond))
    }
}
