import FlexEngine
import FlexSystem
import Foundation

/// `count` windows of `prompt` tokens and the `score` tokens after them, back to back from token
/// `start` of `tokens` (fewer when the text ends first): what `prune kv-handoff`, `prune stages`
/// and `prune analyze --method pdtrim` score. A model that adds BOS gets it in place of each
/// prompt's first token, as a prompt of its own would start.
func textWindows(_ engine: Engine, _ tokens: [Int32], from start: Int, count: Int, prompt: Int, score: Int) -> [StageAwareSearch.Window] {
    (0..<count).compactMap { i in
        let at = start + i * (prompt + score)
        guard at >= 0, at + prompt + score <= tokens.count else { return nil }
        var p = Array(tokens[at..<at + prompt])
        if engine.tokenizer.addsBOS, let bos = engine.tokenizer.bosToken { p[0] = bos }
        return StageAwareSearch.Window(prompt: p, continuation: Array(tokens[at + prompt..<at + prompt + score]))
    }
}

/// A study's results as pretty JSON, written atomically (a temporary file renamed).
func writeJSON(_ object: [String: Any], to path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    do {
        var out = try OutputFile(path: path)
        try out.write(Array(data))
        try out.commit()
    } catch { throw CLIError("cannot write \(error)") }
}
