import ArgumentParser
import FlexEngine
import FlexFormat
import FlexSystem
import Foundation

/// `flexrun info [MODEL]`: what a model file is, without running it: architecture and shapes,
/// tensor types, tokenizer, chat template, and the memory it needs in full and at least.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a model: architecture, sizes, tensor types, tokenizer, chat template and the minimum --mem-limit.")

    @Argument(help: "GGUF model file (default: the SmolLM2 model in the local model cache).")
    var path: String?

    @Option(name: .long, parsing: .unconditional, help: "Context the memory lines assume (default: min(2048, the model's)).")
    var ctx: Int?

    func run() throws {
        let path = try modelPath(self.path)
        let file: GGUFFile
        do { file = try GGUFFile(path: path) } catch { throw CLIError("\(path): \(error)") }
        var options = EngineOptions(modelPath: path)
        options.contextLength = ctx
        options.followCgroupLimit = false
        options.threads = 1
        // A probe under an enormous cap: the plan's arithmetic without holding the weights twice.
        options.memoryLimit = 1 << 50
        let engine = try Engine(options: options)
        let c = engine.config
        var lines: [(String, String)] = []
        lines.append(("file", "\(path) (\(ByteSize.format(file.fileSize)))"))
        lines.append(("architecture", "\(c.architecture), \(c.layerCount) layers, width \(c.embeddingLength), \(c.headCount) heads "
                      + "(\(c.kvHeadCount) KV) of \(c.headDim), FFN \(c.feedForwardLength)"))
        lines.append(("context", "trained \(c.trainedContextLength) tokens; these lines assume \(engine.contextLength)"))
        let params = file.tensors.reduce(0) { $0 + $1.elementCount }
        lines.append(("parameters", String(format: "%.1f M", Double(params) / 1e6)))
        var byType: [String: (count: Int, bytes: Int)] = [:]
        for t in file.tensors {
            let key = "\(t.type)"
            byType[key, default: (0, 0)].count += 1
            byType[key, default: (0, 0)].bytes += t.byteCount
        }
        let types = byType.sorted { $0.value.bytes > $1.value.bytes }
            .map { "\($0.key) ×\($0.value.count) (\(ByteSize.format($0.value.bytes)))" }
        lines.append(("tensor types", types.joined(separator: ", ")))
        let tok = engine.tokenizer
        let model = file.string("tokenizer.ggml.model") ?? "?"
        let pre = file.string("tokenizer.ggml.pre").map { ", pre-tokenizer \($0)" } ?? ""
        let bos = tok.bosToken.map { "BOS \($0)" } ?? "no BOS"
        lines.append(("tokenizer", "\(model)\(pre), \(tok.vocabularySize) tokens, \(bos)\(tok.addsBOS ? " (added)" : ""), "
                      + "stops at \(engine.model.stopTokens.sorted().map(String.init).joined(separator: " "))"))
        let template = file.string("tokenizer.chat_template")
        let style: String
        switch engine.chatTemplate {
        case .chatML?: style = "ChatML (what --chat uses)"
        case .gemma?: style = "Gemma turns (what --chat uses)"
        case .jinja?: style = "Jinja, run by FlexRun's interpreter (what --chat uses)"
        case nil: style = "not one FlexRun understands (--chat refuses)"
        }
        let turnEnd = engine.chatTemplate?.assistantTerminator.map { ", turns end with \($0)" } ?? ""
        lines.append(("chat template", template == nil ? "none in the file" : "\(template!.utf8.count) bytes of Jinja; \(style)\(turnEnd)"))
        lines.append(("in memory", "\(ByteSize.format(engine.memory.total)) (\(engine.memory.breakdown))"))
        if let p = engine.plan {
            lines.append(("minimum cap", "\(ByteSize.format(MemoryPlan.minimumCap(p.inputs))) (--mem-limit; streams every weight it can)"))
        }
        let width = lines.map(\.0.count).max() ?? 0
        for (k, v) in lines { print(k.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + v) }
    }
}
