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
        for token in try engine.generate(prompt: "What is a GGUF file?", parameters: params) {
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
}
