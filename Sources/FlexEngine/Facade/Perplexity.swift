import FlexSystem
import Glibc

/// Perplexity as llama.cpp's `llama-perplexity` computes it, so the numbers compare
/// (DESIGN.md §5): tokenize the whole text once (BOS only if the model adds it), cut it into
/// ⌊N / n_ctx⌋ non-overlapping chunks, make each chunk's first token BOS when BOS is added,
/// score the next-token NLL of positions n_ctx/2 … n_ctx−2, and report exp(mean NLL).
public struct PerplexityResult: Sendable {
    public let perplexity: Double
    /// llama.cpp's uncertainty: ppl · sqrt(var(NLL) / (count − 1)).
    public let standardError: Double
    public let chunks: Int
    public let scoredTokens: Int
    public let seconds: Double
    public var tokensPerSecond: Double { seconds > 0 ? Double(chunks * contextLength) / seconds : 0 }
    public let contextLength: Int
}

extension Engine {
    /// Scores `text` at context `n` (at most the engine's context length). `progress` is called
    /// after each chunk with (chunks done, chunks total, perplexity so far).
    public func perplexity(of text: String, context n: Int,
                           progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws(EngineError) -> PerplexityResult {
        guard n >= 4, n <= contextLength else {
            throw .invalidOption("perplexity context must be between 4 and the engine context (\(contextLength))")
        }
        let first = n / 2
        let (sample, total) = textSample(text, context: n, scoreFrom: first)
        let chunks = sample.chunks.count
        guard chunks >= 1 else { throw .textTooShort(tokens: total, needed: n) }
        lock.withLock { g in g += 1 }   // invalidates any running iterator: we take the transformer
        let tf = try session.scoringTransformer()
        defer { tf.releaseScoring() }
        let vocab = config.vocabularySize
        let start = Platform.now()
        var nll = 0.0, nll2 = 0.0, count = 0
        for (c, chunk) in sample.chunks.enumerated() {
            tf.reset()
            var i = 0
            while i < n {
                // Rows whose position p satisfies first ≤ p ≤ n−2 are scored; a pass returns at most
                // maxLogitRows of them, so the scored half runs in batches of that size.
                var b = min(tf.maxBatch, n - i)
                if i + b > first { b = max(first - i, min(b, tf.maxLogitRows)) }
                if b == 0 { b = min(tf.maxLogitRows, n - i) }
                let lo = max(first, i), hi = min(n - 1, i + b)
                let rows = lo < hi ? (lo - i)..<(hi - i) : 0..<0
                try applyPendingPlan()
                try chunk[i..<i + b].withUnsafeBufferPointer { p throws(EngineError) in try tf.forward(p, logitRows: rows) }
                for (r, p) in zip(0..., lo..<max(lo, hi)) {
                    let logits = tf.logits(row: r)
                    let target = Int(chunk[p + 1])
                    let v = Self.negativeLogLikelihood(logits, vocab: vocab, target: target)
                    nll += v; nll2 += v * v; count += 1
                }
                i += b
            }
            progress(c + 1, chunks, exp(nll / Double(count)))
        }
        let mean = nll / Double(count)
        let ppl = exp(mean)
        let variance = max(0, nll2 / Double(count) - mean * mean)
        let se = count > 1 ? ppl * (variance / Double(count - 1)).squareRoot() : 0
        return PerplexityResult(perplexity: ppl, standardError: se, chunks: chunks, scoredTokens: count,
                                seconds: Platform.now() - start, contextLength: n)
    }

    /// `text` tokenized once as llama-perplexity does (BOS only if the model adds one), then
    /// tokens `first ..< first + count` (to the end when `count` is nil) cut into chunks of
    /// `context`, each starting with BOS when the model adds it. Also returns the token count of
    /// the whole text, for messages.
    public func textSample(_ text: String, first: Int = 0, count: Int? = nil, context: Int, scoreFrom: Int) -> (TextSample, tokens: Int) {
        let tokens = tokenizer.encode(text, addSpecial: true, parseSpecial: false)
        let bos = tokenizer.addsBOS ? tokenizer.bosToken : nil
        let sample = TextSample(tokens: tokens, first: first, count: count ?? max(0, tokens.count - first), context: context,
                                scoreFrom: scoreFrom, bos: bos)
        return (sample, tokens.count)
    }

    /// −log softmax(logits)[target], in double for a stable sum over thousands of tokens.
    static func negativeLogLikelihood(_ logits: UnsafeBufferPointer<Float>, vocab: Int, target: Int) -> Double {
        var m = -Float.infinity
        for i in 0..<vocab { m = Swift.max(m, logits[i]) }
        var s = 0.0
        for i in 0..<vocab { s += Double(expf(logits[i] - m)) }
        return log(s) + Double(m) - Double(logits[target])
    }
}
