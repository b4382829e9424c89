/// How the next token is chosen. Defaults are llama.cpp's (`common_params_sampling`), so a
/// user switching engines gets the same behaviour for the same flags.
public struct SamplingParameters: Sendable, Equatable {
    /// ≤ 0 means greedy (argmax), and the other stages are skipped.
    public var temperature: Float = 0.8
    /// Keep the k most likely tokens; 0 disables.
    public var topK: Int = 40
    /// Keep the smallest set whose probability reaches p; 1 disables.
    public var topP: Float = 0.95
    /// Drop tokens less likely than minP × the most likely one; 0 disables.
    public var minP: Float = 0.05
    /// Divide positive (multiply negative) logits of recently seen tokens; 1 disables.
    public var repetitionPenalty: Float = 1.0
    /// How many recent tokens the repetition penalty looks at.
    public var repetitionWindow: Int = 64
    /// Seed of the sampler's RNG: the same seed, prompt and parameters give the same text.
    public var seed: UInt64 = 0

    public init(temperature: Float = 0.8, topK: Int = 40, topP: Float = 0.95, minP: Float = 0.05,
                repetitionPenalty: Float = 1.0, repetitionWindow: Int = 64, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.repetitionWindow = repetitionWindow
        self.seed = seed
    }

    public static let greedy = SamplingParameters(temperature: 0)
}
