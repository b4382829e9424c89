import FlexSystem

/// Whether and how a session drafts tokens to verify several per pass (speculative decoding).
///
/// A pass over streamed weights costs their read whatever it computes, so verifying k drafted
/// tokens in it costs little more than one; in memory a pass costs its compute, and drafts pay
/// only when most are accepted. Verification keeps the output exact: greedy ids are those
/// without speculation, and sampled tokens follow the same distribution.
public enum SpeculationMode: String, Sendable, CaseIterable {
    /// No drafts (the default: a sampled run then repeats exactly for a seed).
    case off
    /// Prompt lookup, with the draft length chosen from the measured acceptance and pass cost;
    /// zero (off) where drafts do not pay.
    case auto
    /// Prompt lookup at the full draft length whenever a match exists (for measuring).
    case lookup
}

/// Chooses each pass's draft length from what the session has measured: how often a drafted
/// token is accepted, what a pass costs with one row, and what each extra row adds.
///
/// With acceptance rate α per drafted token, k drafts yield (1 − α^(k+1)) / (1 − α) tokens on
/// average for a pass costing t₁ + k·Δ. The length maximising tokens per second wins, and zero
/// wins when no draft beats a plain pass (1 / t₁), so `auto` turns itself off in memory when
/// acceptance is low and drafts freely when a pass is bound by the disk. Matches of different
/// ``PromptLookup/Kind``s are accepted at very different rates (95 % to 4 %), so each kind has
/// its own α, starting from what the calibration split measured: under a cap even short
/// matches pay, in memory usually only agreed and long ones, and split ones almost never.
/// Every `probeEvery`
/// matches of a kind that drew no draft, one short draft is tried, so the estimates follow a
/// changing cap and text.
struct DraftLengthController: Sendable {
    let mode: SpeculationMode
    let maxDraft: Int
    /// Exponential averages: pass seconds with no drafts, seconds per drafted row, and the
    /// acceptance of each kind of match (indexed by its raw value).
    private(set) var passSeconds: Double? = nil
    private(set) var rowSeconds: Double? = nil
    private(set) var acceptance = [0.74, 0.31, 0.20, 0.09]
    private var plainPasses = [0, 0, 0, 0]
    static let probeEvery = 32
    static let weight = 0.2

    init(mode: SpeculationMode, maxDraft: Int) {
        self.mode = mode
        self.maxDraft = maxDraft
    }

    /// Drafted tokens to use in the next pass from a match of the given kind (the drafter may
    /// have found fewer).
    mutating func length(_ kind: PromptLookup.Kind = .long) -> Int {
        switch mode {
        case .off: return 0
        case .lookup: return maxDraft
        case .auto:
            guard let t1 = passSeconds, let dt = rowSeconds else {
                // Measure a plain pass first, then what a drafted row adds.
                return passSeconds == nil ? 0 : maxDraft
            }
            let kind = kind.rawValue
            let a = min(acceptance[kind], 0.999)
            var best = 0, bestRate = 1 / t1
            var expected = 1.0, power = 1.0
            for k in 1...max(1, maxDraft) {
                power *= a
                expected += power
                let rate = expected / (t1 + Double(k) * max(dt, 0))
                if rate > bestRate * 1.02 { best = k; bestRate = rate }
            }
            if best == 0 {
                plainPasses[kind] += 1
                if plainPasses[kind] >= Self.probeEvery { plainPasses[kind] = 0; return 1 }
            }
            return best
        }
    }

    /// Records a decode pass of one sequence: its duration, drafted rows (from which kind of
    /// match) and accepted drafts.
    ///
    /// A pass slowed by something else (a page fault under a tight cgroup, another process on
    /// the core) says nothing about what a row costs, yet one such plain pass used to raise the
    /// pass estimate enough that the next drafted passes measured rows as free: at a 100 % cap
    /// `auto` then drafted like `lookup` and ran at 0.86× plain. So a sample counts for at most
    /// twice the current estimate (a real change, the disk slowing down, still gets through in a
    /// few passes), and a row never costs less than nothing.
    mutating func record(seconds: Double, drafted: Int, accepted: Int, kind: PromptLookup.Kind = .long) {
        let w = Self.weight
        if drafted == 0 {
            passSeconds = passSeconds.map { $0 + w * (min(seconds, 2 * $0) - $0) } ?? seconds
            return
        }
        if let t1 = passSeconds {
            let expected = t1 + Double(drafted) * (rowSeconds ?? t1)
            let perRow = max(0, (min(seconds, 2 * expected) - t1) / Double(drafted))
            rowSeconds = rowSeconds.map { $0 + w * (perRow - $0) } ?? perRow
        }
        // Acceptance per drafted token, counting a rejection as the end of the chain (the
        // geometric model above): `accepted` successes and at most one failure.
        let trials = Double(accepted + (accepted < drafted ? 1 : 0))
        let k = kind.rawValue
        if trials > 0 { acceptance[k] += w * (Double(accepted) / trials - acceptance[k]) }
    }
}
