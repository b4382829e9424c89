import FlexKernels
import FlexSystem
import Glibc

/// Scores block masks on a ``TextSample``: the one expensive operation of every pruning method.
///
/// It drives the engine's transformer directly, one chunk per forward pass with logits only for
/// the scored rows, so a pass costs about what prefill of the chunk costs. Two shortcuts make
/// the greedy searches affordable (GSI needs ~1,800 scores for SmolLM2's 60 blocks):
/// - ``candidateLosses(base:candidates:on:)`` runs the base mask once per chunk, keeping the
///   residual at every block input, then scores "base plus block b" by resuming at b. Attention
///   of a layer reads only its own KV cache, written in the same pass, so the resumed pass is the
///   full pass minus the blocks before b: bit-identical (a test holds it), half the work on average.
/// - Scores are memoised by mask (``Memo``) and the memo can be saved, so an interrupted search
///   replays from it instantly and continues.
public final class MaskEvaluator {
    let engine: Engine
    let transformer: Transformer
    public let layers: Int
    public private(set) var passes = 0
    /// Scores already computed: sample fingerprint + mask → mean NLL.
    public var memo = Memo()
    /// The reference's greedy choices per sample and mask, kept across ``agreement(_:reference:topK:on:)`` calls.
    private var referenceChoices: [String: [Int]] = [:]

    /// The engine must run in memory (no limit), skip nothing, and hold a whole chunk with its
    /// scored logits in one pass (`batchSize` and `logitRows` ≥ the sample's context).
    public init(engine: Engine) throws(EngineError) {
        guard engine.memoryLimit == nil else { throw .invalidOption("pruning analysis runs the model in memory: drop \(OptionField.memoryLimit)") }
        guard engine.options.skip.skipped.isEmpty, engine.options.prefillSkip == nil else {
            throw .invalidOption("pruning analysis starts from the dense model: drop \(OptionField.skip)")
        }
        self.engine = engine
        engine.lock.withLock { g in g += 1 }   // the evaluator takes the session's transformer
        transformer = try engine.session.scoringTransformer()
        layers = engine.config.layerCount
    }

    public var blocks: [BlockMask.Block] { BlockMask.Block.all(layers: layers) }

    /// Bytes of a block's parameters as stored, what skipping it frees.
    public func parameterBytes(_ block: BlockMask.Block) -> Int { engine.parameterBytes(block) }

    /// KV cache bytes per token a skipped attention block frees (f16 keys and values).
    public func kvBytesPerToken(_ block: BlockMask.Block) -> Int { engine.kvBytesPerToken(block) }

    private func check(_ sample: TextSample) throws(EngineError) {
        guard sample.context <= transformer.maxBatch, sample.context <= transformer.contextLength,
              sample.scoredPerChunk <= transformer.maxLogitRows else {
            throw .invalidOption("the engine must hold a \(sample.context)-token chunk in one pass")
        }
        guard !sample.chunks.isEmpty else { throw .textTooShort(tokens: 0, needed: sample.context) }
    }

    /// Mean next-token NLL of `sample` with `mask` skipped; exp of it is the perplexity.
    public func loss(_ mask: BlockMask, on sample: TextSample) throws(EngineError) -> Double {
        if let v = memo[sample, mask] { return v }
        try check(sample)
        var total = 0.0
        for chunk in sample.chunks {
            total += try pass(chunk, sample: sample, mask: mask, resumeAt: 0, probe: nil)
        }
        let v = total / Double(sample.scoredTokens)
        memo[sample, mask] = v
        return v
    }

    /// Mean NLL and top-1 next-token accuracy (the share of scored positions whose largest logit
    /// is the next token) of `sample` with `mask` skipped: the quality table's two measures.
    /// Not memoised (the memo holds NLL only).
    public func quality(_ mask: BlockMask, on sample: TextSample) throws(EngineError) -> (nll: Double, top1: Double) {
        try check(sample)
        var nll = 0.0
        var hits = 0
        for chunk in sample.chunks {
            nll += try pass(chunk, sample: sample, mask: mask, resumeAt: 0, probe: nil) { logits, target in
                var best = 0
                for i in 1..<logits.count where logits[i] > logits[best] { best = i }
                if best == target { hits += 1 }
            }
        }
        return (nll / Double(sample.scoredTokens), Double(hits) / Double(sample.scoredTokens))
    }

    /// How often `mask`'s greedy choice is the reference's (by default the dense model's), each
    /// position given the true text before it: the acceptance rate a self-draft with `mask`
    /// skipped would see when verified by the reference, greedy. Also the share of positions
    /// where the reference's choice is among `mask`'s `topK` largest logits (what a token tree
    /// of that width over the draft's candidates would catch).
    public func agreement(_ mask: BlockMask, reference: BlockMask = .none, topK: Int = 4,
                          on sample: TextSample) throws(EngineError) -> (top1: Double, topK: Double) {
        let key = Memo.key(sample, reference)
        let wanted: [Int]
        if let known = referenceChoices[key] { wanted = known } else {
            wanted = try greedyChoices(reference, on: sample)
            referenceChoices[key] = wanted
        }
        var n = 0, hits = 0, near = 0
        for chunk in sample.chunks {
            _ = try pass(chunk, sample: sample, mask: mask, resumeAt: 0, probe: nil) { logits, _ in
                let target = logits[wanted[n]]
                var above = 0
                for v in logits where v > target { above += 1; if above >= topK { break } }
                if above == 0 { hits += 1 }
                if above < topK { near += 1 }
                n += 1
            }
        }
        return (Double(hits) / Double(max(1, n)), Double(near) / Double(max(1, n)))
    }

    /// The largest logit's token at every scored position of `sample`, chunk after chunk, with
    /// `mask` skipped: what greedy decoding would choose there after the true text.
    func greedyChoices(_ mask: BlockMask, on sample: TextSample) throws(EngineError) -> [Int] {
        try check(sample)
        var choices: [Int] = []
        choices.reserveCapacity(sample.scoredTokens)
        for chunk in sample.chunks {
            _ = try pass(chunk, sample: sample, mask: mask, resumeAt: 0, probe: nil) { logits, _ in
                var best = 0
                for i in 1..<logits.count where logits[i] > logits[best] { best = i }
                choices.append(best)
            }
        }
        return choices
    }

    /// Mean NLL of `base` plus each candidate block, in `candidates` order (see the type's note).
    public func candidateLosses(base: BlockMask, candidates: [BlockMask.Block], on sample: TextSample) throws(EngineError) -> [Double] {
        let todo = candidates.filter { memo[sample, base.skipping($0)] == nil }
        if !todo.isEmpty {
            try check(sample)
            let snapshot = ResidualSnapshot(blocks: 2 * layers, rows: sample.context, width: engine.config.embeddingLength)
            var totals = [Double](repeating: 0, count: todo.count)
            for chunk in sample.chunks {
                snapshot.recording = true
                _ = try pass(chunk, sample: sample, mask: base, resumeAt: 0, probe: snapshot)
                snapshot.recording = false
                for (i, b) in todo.enumerated() {
                    totals[i] += try pass(chunk, sample: sample, mask: base.skipping(b), resumeAt: b.index, probe: snapshot)
                }
            }
            for (i, b) in todo.enumerated() { memo[sample, base.skipping(b)] = totals[i] / Double(sample.scoredTokens) }
        }
        return candidates.map { memo[sample, base.skipping($0)]! }
    }

    /// One chunk through the model; returns the summed NLL of its scored positions.
    private func pass(_ chunk: [Int32], sample: TextSample, mask: BlockMask, resumeAt: Int,
                      probe: (any ResidualProbe)?, row: (UnsafeBufferPointer<Float>, Int) -> Void = { _, _ in }) throws(EngineError) -> Double {
        let tf = transformer
        let rows = sample.scoreFrom..<(sample.context - 1)
        tf.reset()
        try chunk.withUnsafeBufferPointer { p throws(EngineError) in
            try tf.forward(p, logitRows: rows, mask: mask, resumeAt: resumeAt, probe: probe)
        }
        passes += 1
        var sum = 0.0
        for (r, p) in rows.enumerated() {
            sum += Engine.negativeLogLikelihood(tf.logits(row: r), vocab: tf.vocabularySize, target: Int(chunk[p + 1]))
            row(tf.logits(row: r), Int(chunk[p + 1]))
        }
        return sum
    }

    /// One dense pass per chunk with `probe` watching (the one-shot importance metrics, pooling).
    func observe(_ sample: TextSample, probe: some ResidualProbe, eachChunk: (Int) -> Void = { _ in }) throws(EngineError) {
        try check(sample)
        for (i, chunk) in sample.chunks.enumerated() {
            _ = try pass(chunk, sample: sample, mask: .none, resumeAt: 0, probe: probe)
            eachChunk(i)
        }
    }

    /// Memoised scores, keyed by the sample's fingerprint and the mask's canonical text, and
    /// saved with the search's checkpoint so a resumed search repeats no pass.
    public struct Memo: Sendable, Codable, Equatable {
        public var scores: [String: Double] = [:]
        public init() {}
        static func key(_ sample: TextSample, _ mask: BlockMask) -> String { "\(sample.fingerprint)|\(mask)" }
        public subscript(sample: TextSample, mask: BlockMask) -> Double? {
            get { scores[Self.key(sample, mask)] }
            set { scores[Self.key(sample, mask)] = newValue }
        }
    }
}

extension Engine {
    /// Bytes of a block's parameters as stored, what skipping it frees.
    func parameterBytes(_ block: BlockMask.Block) -> Int {
        let lw = weights.layers[block.layer]
        return block.kind == .attention ? lw.attentionBytes : lw.ffnBytes
    }

    /// KV cache bytes per token a skipped attention block frees (f16 keys and values).
    func kvBytesPerToken(_ block: BlockMask.Block) -> Int {
        block.kind == .attention ? PagedKVCache.bytesPerToken(keptLayers: 1, kvDim: config.kvDim) : 0
    }
}

extension TextSample {
    /// FNV-1a over the shape and the tokens: equal samples, equal keys, across runs.
    public var fingerprint: String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: Int) { h ^= UInt64(bitPattern: Int64(v)); h &*= 0x100_0000_01b3 }
        mix(context); mix(scoreFrom); mix(chunks.count)
        for c in chunks { for t in c { mix(Int(t)) } }
        return String(h, radix: 16)
    }
}

/// Keeps the residual at every block input during a recorded pass, and restores it to resume.
final class ResidualSnapshot: ResidualProbe {
    let storage: AlignedBuffer<Float>
    let rows: Int, width: Int
    var recording = true

    init(blocks: Int, rows: Int, width: Int) {
        storage = AlignedBuffer(count: blocks * rows * width)
        self.rows = rows
        self.width = width
    }

    func before(block: Int, x: UnsafePointer<Float>, rows n: Int) {
        guard recording else { return }
        (storage.pointer + block * rows * width).update(from: x, count: n * width)
    }

    func restore(block: Int, into x: UnsafeMutablePointer<Float>, rows n: Int) {
        x.update(from: storage.pointer + block * rows * width, count: n * width)
    }
}
