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

    /// Where a draft of at most `limit` tokens lies in the history: the tokens `start ..< start
    /// + length` followed an earlier occurrence of the history's last n tokens, so they are
    /// proposed to follow now. `count` tokens are read through `token(i)`. The longest n-gram
    /// wins, and among its matches the latest (recent text predicts best); `n` is its length (a
    /// one-token match predicts far worse than a longer one). Nil when none matches.
    func find(count: Int, limit: Int, token: (Int) -> Int32) -> (start: Int, length: Int, n: Int)? {
        guard limit > 0 else { return nil }
        var n = min(maxNGram, count - 1)
        while n >= minNGram {
            // The n-gram is history[count-n ..< count]; a match ends at e (exclusive) < count.
            var e = count - 1
            while e >= n {
                var same = true
                for j in 1...n where token(e - j) != token(count - j) { same = false; break }
                if same { return (e, min(limit, count - e), n) }
                e -= 1
            }
            n -= 1
        }
        return nil
    }
}
