import Foundation

/// The correctness bounds of DESIGN.md §5, computed the same way for every model.
struct LogitComparison {
    var meanKL: Double
    var maxKL: Double
    var maxTopDelta: Double
    var worstPosition: Int

    /// Compares engine logits (raw, any scale) with reference log-probs, row by row.
    /// KL(reference ‖ engine) per position; |Δ log-prob| on the reference's top-20 tokens.
    static func compare(reference: [Float], engineLogits: [[Float]], vocab: Int) -> LogitComparison {
        var sumKL = 0.0, maxKL = 0.0, maxDelta = 0.0, worst = 0
        for (t, logits) in engineLogits.enumerated() {
            let ref = reference[(t * vocab)..<((t + 1) * vocab)].map(Double.init)
            let eng = logSoftmax(logits.map(Double.init))
            var kl = 0.0
            for i in 0..<vocab {
                let p = exp(ref[ref.startIndex + i])
                if p > 0 { kl += p * (ref[ref.startIndex + i] - eng[i]) }
            }
            sumKL += kl
            if kl > maxKL { maxKL = kl; worst = t }
            let top = (0..<vocab).sorted { ref[ref.startIndex + $0] > ref[ref.startIndex + $1] }.prefix(20)
            for i in top { maxDelta = max(maxDelta, abs(ref[ref.startIndex + i] - eng[i])) }
        }
        return LogitComparison(meanKL: sumKL / Double(engineLogits.count), maxKL: maxKL, maxTopDelta: maxDelta, worstPosition: worst)
    }

    static func logSoftmax(_ x: [Double]) -> [Double] {
        let m = x.max()!
        let lse = log(x.reduce(0) { $0 + exp($1 - m) }) + m
        return x.map { $0 - lse }
    }

    /// DESIGN.md §5: mean KL ≤ 0.01, every position ≤ 0.02, top-20 |Δ| ≤ 0.32.
    var withinBounds: Bool { meanKL <= 0.01 && maxKL <= 0.02 && maxTopDelta <= 0.32 }
}
