import Testing
import FlexEngine

/// The README's library example, kept compiling and running so the README stays true.
@Suite(.enabled(if: Fixtures.smolLM2Available)) struct LibraryExampleTests {
    @Test func readmeExampleRuns() async throws {
        var options = EngineOptions(modelPath: try Fixtures.requireSmolLM2())
        options.memoryLimit = 512 << 20
        let engine = try Engine(options: options)

        var params = GenerateParameters(maxTokens: 16, sampling: .greedy, chat: true)
        var text = ""
        var tokens = try engine.generate(prompt: "What is a GGUF file?", parameters: params)
        while let token = try tokens.nextToken() {
            text += token.text
        }
        #expect(!text.isEmpty)

        params.sampling = SamplingParameters(temperature: 0.7, seed: 1)
        var finished = false
        for try await event in engine.stream(prompt: "Tell me a story.", parameters: params) {
            switch event {
            case .token: break
            case .finished(let stats): finished = stats.generatedTokens > 0
            }
        }
        #expect(finished)
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
