import Glibc

/// The sampler chain: penalties → top-k → top-p → min-p → temperature → pick
/// (the order of llama.cpp's default chain).
///
/// Each stage narrows a candidate list kept in preallocated storage, so sampling a token does
/// not allocate. Greedy decoding short-circuits to argmax.
public struct Sampler {
    public let parameters: SamplingParameters
    private var rng: RandomSource
    private var ids: [Int32] = []
    private var values: [Float] = []
    private var probs: [Float] = []
    private var recent: [Int32] = []

    public init(_ parameters: SamplingParameters, vocabularySize: Int) {
        self.parameters = parameters
        rng = RandomSource(seed: parameters.seed)
        ids.reserveCapacity(vocabularySize)
        values.reserveCapacity(vocabularySize)
        probs.reserveCapacity(vocabularySize)
    }

    /// The random stream's position (a KV state carries it to another process).
    public var randomState: RandomSource.State {
        get { rng.state }
        set { rng = RandomSource(state: newValue) }
    }

    /// Records a token (prompt or generated) for the repetition penalty window.
    public mutating func accept(_ token: Int32) {
        guard parameters.repetitionPenalty != 1, parameters.repetitionWindow > 0 else { return }
        recent.append(token)
        if recent.count > parameters.repetitionWindow { recent.removeFirst(recent.count - parameters.repetitionWindow) }
    }

    /// Picks the next token from raw logits (which are modified in place by the penalty).
    public mutating func sample(_ logits: UnsafeMutableBufferPointer<Float>) -> Int32 {
        if let greedy = candidates(logits) { return greedy }
        return pick(rng.nextUnit())
    }

    /// Speculative sampling of a drafted token: returns `draft` with probability p(draft) under
    /// this chain's distribution, and otherwise a token drawn from p with the draft removed and
    /// renormalised. For a draft that costs nothing to propose (prompt lookup: the draft's own
    /// distribution puts all its mass on `draft`) the returned token is distributed exactly as
    /// ``sample(_:)``'s: p(d) + 0 for d, and (1 − p(d)) · p(x) / (1 − p(d)) for every other x.
    /// Greedy returns the argmax, as ``sample(_:)`` does; the draft is accepted when equal.
    public mutating func verify(_ logits: UnsafeMutableBufferPointer<Float>, draft: Int32) -> Int32 {
        if let greedy = candidates(logits) { return greedy }
        guard let at = ids.firstIndex(of: draft) else { return pick(rng.nextUnit()) }
        let pd = probs[at]
        if rng.nextUnit() < pd { return draft }
        let rest = 1 - pd
        guard rest > 0 else { return draft }
        let r = rng.nextUnit() * rest
        var cum: Float = 0, last = at
        for i in 0..<probs.count where i != at {
            cum += probs[i]
            last = i
            if r < cum { return ids[i] }
        }
        return ids[last]
    }

    /// Applies the chain up to the pick: the argmax when greedy, else nil with `ids`/`probs`
    /// holding the candidates and their final probabilities.
    private mutating func candidates(_ logits: UnsafeMutableBufferPointer<Float>) -> Int32? {
        let p = parameters
        if p.repetitionPenalty != 1 {
            for (i, t) in recent.enumerated() where !recent[..<i].contains(t) {
                let l = logits[Int(t)]
                logits[Int(t)] = l > 0 ? l / p.repetitionPenalty : l * p.repetitionPenalty
            }
        }
        if p.temperature <= 0 { return Self.argmax(logits) }

        // top-k (a partial selection: sort only what survives)
        ids.removeAll(keepingCapacity: true)
        values.removeAll(keepingCapacity: true)
        let k = p.topK > 0 ? min(p.topK, logits.count) : logits.count
        if k < logits.count {
            selectTop(k, logits)
        } else {
            for i in 0..<logits.count { ids.append(Int32(i)); values.append(logits[i]) }
            sortDescending()
        }
        // softmax over the candidates (at temperature 1, as llama.cpp's top-p/min-p see them)
        softmax(temperature: 1)
        // top-p
        if p.topP < 1 {
            var cum: Float = 0
            var keep = probs.count
            for i in 0..<probs.count {
                cum += probs[i]
                if cum >= p.topP { keep = i + 1; break }
            }
            truncate(keep)
        }
        // min-p
        if p.minP > 0, let top = probs.first {
            var keep = probs.count
            for i in 1..<probs.count where probs[i] < p.minP * top { keep = i; break }
            truncate(keep)
        }
        // temperature
        softmax(temperature: p.temperature)
        return nil
    }

    /// The candidate whose cumulative probability first exceeds `r` (uniform in [0, 1)).
    private func pick(_ r: Float) -> Int32 {
        var cum: Float = 0
        for i in 0..<probs.count {
            cum += probs[i]
            if r < cum { return ids[i] }
        }
        return ids[probs.count - 1]
    }

    public static func argmax(_ x: UnsafeBufferPointer<Float>) -> Int32 {
        var best = 0
        for i in 1..<x.count where x[i] > x[best] { best = i }
        return Int32(best)
    }

    static func argmax(_ x: UnsafeMutableBufferPointer<Float>) -> Int32 { argmax(UnsafeBufferPointer(x)) }

    private mutating func truncate(_ n: Int) {
        if n < ids.count {
            ids.removeLast(ids.count - n)
            values.removeLast(values.count - n)
            probs.removeLast(probs.count - n)
        }
    }

    /// Keeps the k largest logits, sorted descending (a bounded insertion list: k is small).
    private mutating func selectTop(_ k: Int, _ logits: UnsafeMutableBufferPointer<Float>) {
        for i in 0..<logits.count {
            let v = logits[i]
            if ids.count == k && v <= values[k - 1] { continue }
            var j = ids.count == k ? k - 1 : ids.count
            if ids.count < k { ids.append(0); values.append(0) }
            while j > 0 && values[j - 1] < v {
                values[j] = values[j - 1]; ids[j] = ids[j - 1]; j -= 1
            }
            values[j] = v; ids[j] = Int32(i)
        }
    }

    private mutating func sortDescending() {
        let order = values.indices.sorted { values[$0] > values[$1] }
        ids = order.map { ids[$0] }
        values = order.map { values[$0] }
    }

    /// `probs` = softmax(values / t), in the preallocated buffer (values are sorted descending).
    private mutating func softmax(temperature t: Float) {
        probs.removeAll(keepingCapacity: true)
        guard let m = values.first else { return }
        var s: Float = 0
        for v in values { let e = expf((v - m) / t); probs.append(e); s += e }
        for i in probs.indices { probs[i] /= s }
    }
}
