import ArgumentParser
import Dispatch
import FlexEngine
import FlexSystem
import Foundation
import Synchronization

/// `flexrun chat`: a conversation in the terminal, one line a turn. The KV cache is kept between
/// turns (``Conversation``), so a turn prefills only its own tokens; `--stats` says how many.
struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with the model in the terminal: one line a turn, /reset forgets, /exit (or Ctrl-D) quits.",
        discussion: "The model's own chat template renders the conversation; earlier turns stay in the KV cache. "
            + "Ctrl-C stops a reply; at the prompt it quits. When the context fills, the oldest turns are dropped, with a note.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptions

    @Option(name: .long, help: "System message (default: the template's own).")
    var system: String?

    @Flag(name: .long, help: "After each reply, print its prompt tokens (run and taken from the cache) and tok/s to stderr.")
    var stats = false

    func run() throws {
        try sampling.validate()
        let engine = try Engine(options: model.engineOptions(context: nil))
        let seed = sampling.seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        var params = sampling.parameters(seed: seed)
        let replying = Atomic<Bool>(false)
        let cancel = Mutex<CancellationToken?>(nil)
        // Ctrl-C ends the reply in progress; at the prompt, the program.
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler {
            if replying.load(ordering: .acquiring), let token = cancel.withLock({ $0 }) { token.cancel() } else {
                FileHandle.standardError.write(Data("\n".utf8))
                Foundation.exit(130)
            }
        }
        source.resume()
        defer { source.cancel() }
        guard engine.chatTemplate != nil else {
            throw CLIError("this model has no chat template FlexRun understands (ChatML, Gemma, or Jinja within its interpreter's subset); "
                           + "flexrun chat needs one: use flexrun -p TEXT for plain completion")
        }
        let conversation = try Conversation(engine: engine, system: system, parameters: params)
        let interactive = isatty(STDIN_FILENO) == 1
        if interactive {
            FileHandle.standardError.write(Data("flexrun: chatting with \(URL(fileURLWithPath: engine.options.modelPath).lastPathComponent); /reset forgets, /exit quits\n".utf8))
        }
        while true {
            if interactive { try writeStandardOutput("> ") }
            guard let line = readLine(strippingNewline: true) else { break }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            if input == "/exit" || input == "/quit" { break }
            if input == "/reset" {
                conversation.reset()
                FileHandle.standardError.write(Data("flexrun: conversation reset\n".utf8))
                continue
            }
            let token = CancellationToken()
            params.cancellation = token
            conversation.parameters = params
            cancel.withLock { $0 = token }
            var turn = try conversation.send(input)
            if turn.droppedTurns > 0 {
                FileHandle.standardError.write(Data("flexrun: the context is full: dropped the oldest \(turn.droppedTurns) turn\(turn.droppedTurns == 1 ? "" : "s") and rebuilt the cache\n".utf8))
            }
            replying.store(true, ordering: .releasing)
            while let t = turn.tokens.next() { try writeStandardOutput(t.text) }
            replying.store(false, ordering: .releasing)
            try writeStandardOutput(turn.tokens.flushText() + "\n")
            if let error = turn.tokens.error { throw error }
            let s = turn.tokens.stats
            conversation.finish(turn)
            if stats {
                FileHandle.standardError.write(Data(("flexrun: turn: prompt \(s.promptTokens) tokens run, \(s.reusedPromptTokens) from the cache, "
                    + "in \(f(s.promptSeconds, 3)) s; reply \(s.generatedTokens) tokens at \(f(s.decodeTokensPerSecond, 1)) tok/s; "
                    + "stop: \(s.stopReason.rawValue)\n").utf8))
            }
        }
    }
}
