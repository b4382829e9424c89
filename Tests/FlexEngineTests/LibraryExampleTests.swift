import Testing
import FlexEngine

/// The README's library example, kept compiling and running so the README stays true.
@Suite(.enabled(if: Fixtures.smolLM2Available)) struct LibraryExampleTests {
    /// The README's example as written (64 MiB cap, ctx 512, 64 tokens), its output printed;
    /// only the model path differs. It used to run at 512 MiB here while the README said 64 MiB,
    /// where the default context could not fit and the example died.
    @Test func readmeExampleRuns() async throws {
        var options = EngineOptions(modelPath: try Fixtures.requireSmolLM2())
        options.memoryLimit = 64 << 20
        options.contextLength = 512
        let engine = try Engine(options: options)
        #expect(engine.plan.map { !$0.isFullyResident } == true, "at 64 MiB the weights stream")

        var params = GenerateParameters(maxTokens: 64, sampling: .greedy, chat: true)
        var text = ""
        var tokens = try engine.generate(prompt: "What is a GGUF file?", parameters: params)
        while let token = try tokens.nextToken() {
            print(token.text, terminator: "")
            text += token.text
        }
        print()
        #expect(!text.isEmpty && tokens.error == nil)

        params.sampling = SamplingParameters(temperature: 0.7, seed: 1)
        var finished: GenerationStats?
        var story = ""
        for try await event in engine.stream(prompt: "Tell me a story.", parameters: params) {
            switch event {
            case .token(_, let text): print(text, terminator: ""); story += text
            case .finished(let stats): print("\n\(stats.decodeTokensPerSecond) tok/s"); finished = stats
            }
        }
        #expect(!story.isEmpty)
        #expect(finished.map { $0.generatedTokens > 0 && $0.decodeTokensPerSecond > 0 } == true)
    }

    /// The README's sessions example: one model, a session of 4 sequences, stepped by hand.
    @Test func readmeSessionExampleRuns() throws {
        let model = try Model(path: try Fixtures.requireSmolLM2())
        var options = EngineOptions(modelPath: model.path)
        options.maxSequences = 4
        options.contextLength = 512
        let session = try Session(model: model, options: options)
        var texts: [SequenceID: String] = [:]
        for prompt in ["The capital of France is", "def fibonacci(n):"] {
            texts[try session.add(prompt: prompt, parameters: GenerateParameters(maxTokens: 32, sampling: .greedy))] = ""
        }
        var ended = 0
        while try session.step({ event in
            switch event {
            case .token(let id, let token): texts[id]! += token.text
            case .finished: ended += 1
            }
        }) {}
        #expect(ended == 2 && texts.values.allSatisfy { !$0.isEmpty })
        #expect(session.kvCache.pagesInUse == 0)
    }
}
