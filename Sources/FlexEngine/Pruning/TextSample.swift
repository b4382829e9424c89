/// Token chunks to score a block mask on: calibration for the searches, held-out text for eval.
///
/// Each chunk is one forward pass of `context` tokens from position 0. The next-token NLL is
/// scored at positions `scoreFrom` … context−2. With `scoreFrom = context/2` this is exactly
/// llama-perplexity's procedure (DESIGN.md §5), used for held-out numbers. Calibration scores
/// from an earlier position instead: the searches run thousands of passes, and scoring more
/// positions per pass buys a steadier signal for the same compute.
public struct TextSample: Sendable, Equatable {
    public let chunks: [[Int32]]
    public let context: Int
    public let scoreFrom: Int

    public init(chunks: [[Int32]], context: Int, scoreFrom: Int) {
        precondition(context >= 4 && scoreFrom >= 0 && scoreFrom <= context - 2)
        precondition(chunks.allSatisfy { $0.count == context })
        self.chunks = chunks
        self.context = context
        self.scoreFrom = scoreFrom
    }

    /// ⌊count / context⌋ consecutive chunks of `tokens[first ..< first + count]`; each chunk's
    /// first token becomes `bos` when the model adds one (llama-perplexity does the same).
    public init(tokens: [Int32], first: Int, count: Int, context: Int, scoreFrom: Int, bos: Int32?) {
        let end = min(tokens.count, first + count)
        var chunks: [[Int32]] = []
        var i = first
        while i + context <= end {
            var c = Array(tokens[i..<i + context])
            if let bos { c[0] = bos }
            chunks.append(c)
            i += context
        }
        self.init(chunks: chunks, context: context, scoreFrom: scoreFrom)
    }

    public var scoredPerChunk: Int { context - 1 - scoreFrom }
    public var scoredTokens: Int { chunks.count * scoredPerChunk }

    /// The sample restricted to some chunks (EvoP's calibration sampling picks them).
    public func selecting(_ indices: [Int]) -> TextSample {
        TextSample(chunks: indices.map { chunks[$0] }, context: context, scoreFrom: scoreFrom)
    }
}
