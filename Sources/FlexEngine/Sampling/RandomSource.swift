/// xoshiro256** seeded through SplitMix64: small, fast, and identical on every platform, so a
/// seed reproduces a run anywhere (the sampler owns it, as in llama2.c).
public struct RandomSource: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    /// The generator's position in its stream, for a KV state file: restoring it continues the
    /// same random numbers in another process.
    public struct State: Sendable, Equatable {
        public let words: [UInt64]
        public init(words: [UInt64]) {
            precondition(words.count == 4)
            self.words = words
        }
    }

    public var state: State { State(words: [s.0, s.1, s.2, s.3]) }

    public init(state: State) { s = (state.words[0], state.words[1], state.words[2], state.words[3]) }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// Uniform in [0, 1) with 24 bits, enough for sampling from float probabilities.
    public mutating func nextUnit() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }
}
