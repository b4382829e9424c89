/// Prompt lookup: draft tokens that cost no weights. If the last few tokens of a sequence
/// occurred earlier in its prompt or output, the tokens that followed them then are proposed as
/// what follows now (llama.cpp's `lookup`, "prompt lookup decoding"). It pays where text repeats
/// its context: summaries and quotes of a given passage, lists, code, structured output.
///
/// The search runs on the sequence's own tokens each step; at 2,048 positions and n-grams of at
/// most four tokens that is a few microseconds, far below a pass, and it allocates nothing.
struct PromptLookup: Sendable {
    /// Longest and shortest n-gram matched: a longer match is tried first (a better predictor).
    let maxNGram: Int
    let minNGram: Int

    init(maxNGram: Int = 4, minNGram: Int = 1) {
        precondition(minNGram >= 1 && maxNGram >= minNGram)
        self.maxNGram = maxNGram
        self.minNGram = minNGram
    }

    /// What a match says about how likely its draft is to be accepted. On SmolLM2 reading
    /// devtext tokens 0–2047 (the calibration split), the dense model's greedy choice was the
    /// drafted token after 74 % of `agreed` matches, 31 % of `long`, 20 % of `short` and 9 % of
    /// `split` ones; on the benchmark prompts' outputs 95, 73, 25 and 4 % (docs/BENCHMARKS.md).
    /// An n-gram that was followed by different tokens before marks text that moves on
    /// (counting, prose) rather than text that repeats. Each kind gets its own measured
    /// acceptance in ``DraftLengthController``, starting from the calibration split's.
    enum Kind: Int, Sendable, CaseIterable {
        /// Two or more earlier occurrences, all followed by the same token.
        case agreed
        /// One earlier occurrence of an n-gram of two or more tokens.
        case long
        /// One earlier occurrence of a single token.
        case short
        /// Earlier occurrences followed by different tokens (the latest is drafted).
        case split
    }

    /// Most earlier occurrences compared to classify a match: enough to see a disagreement,
    /// and it bounds the search on long repetitive histories.
    static let comparedMatches = 8

    /// Where a draft of at most `limit` tokens lies in the history: the tokens `start ..< start
    /// + length` followed an earlier occurrence of the history's last n tokens, so they are
    /// proposed to follow now. `count` tokens are read through `token(i)`. The longest n-gram
    /// wins, and among its matches the latest (recent text predicts best); `n` is its length and
    /// `kind` what the other occurrences of that n-gram say. Nil when none matches.
    func find(count: Int, limit: Int, token: (Int) -> Int32) -> (start: Int, length: Int, n: Int, kind: Kind)? {
        guard limit > 0 else { return nil }
        var n = min(maxNGram, count - 1)
        while n >= minNGram {
            // The n-gram is history[count-n ..< count]; a match ends at e (exclusive) < count.
            var e = count - 1
            var latest = -1, matches = 0, split = false
            while e >= n && matches < Self.comparedMatches {
                var same = true
                for j in 1...n where token(e - j) != token(count - j) { same = false; break }
                if same {
                    if latest < 0 { latest = e } else if token(e) != token(latest) { split = true }
                    matches += 1
                }
                e -= 1
            }
            if latest >= 0 {
                let kind: Kind = split ? .split : matches > 1 ? .agreed : n >= 2 ? .long : .short
                return (latest, min(limit, count - latest), n, kind)
            }
            n -= 1
        }
        return nil
    }
}
