import Foundation

/// What a pruning policy decides from (RAP's state, DESIGN.md §3, plus FlexRun's streaming and
/// throughput dimensions): the load, the budget, the dense model's need and the mask in force.
public struct PruningState: Sendable, Equatable {
    /// Sequences held.
    public var batch: Int
    /// KV positions planned per sequence.
    public var sequenceLength: Int
    /// The memory cap in force.
    public var cap: Int
    /// What the dense model (with the skips that cannot be undone) needs under the mode: its
    /// streaming minimum, or its resident footprint under `--resident-only`.
    public var denseNeed: Int
    /// The dense model's weight bytes and its KV bytes at this load (RAP's parameter/KV ratio).
    public var weightBytes: Int
    public var kvBytes: Int
    /// Nothing streams: kept weights and KV must fit.
    public var residentOnly: Bool
    /// The throughput target (`--prune auto --min-tps`) and the dense model's predicted rate at
    /// this load and cap; nil without a target or a throughput model.
    public var minTokensPerSecond: Double?
    public var denseTokensPerSecond: Double?
    /// The mask in force (switching costs a replan).
    public var current: BlockMask

    public init(batch: Int, sequenceLength: Int, cap: Int, denseNeed: Int = 0, weightBytes: Int = 0, kvBytes: Int = 0,
                residentOnly: Bool = false, minTokensPerSecond: Double? = nil, denseTokensPerSecond: Double? = nil,
                current: BlockMask = .none) {
        self.batch = batch
        self.sequenceLength = sequenceLength
        self.cap = cap
        self.denseNeed = denseNeed
        self.weightBytes = weightBytes
        self.kvBytes = kvBytes
        self.residentOnly = residentOnly
        self.minTokensPerSecond = minTokensPerSecond
        self.denseTokensPerSecond = denseTokensPerSecond
        self.current = current
    }
}

/// Decides which blocks to skip for a state: the seam between the engine and RAP's policies
/// (greedy, the trained agent, the oracle). Pure: state in, mask out, testable without a model.
///
/// `base` holds the blocks skipped whatever the policy says (the user's `--skip`, attention a
/// live sequence already lost); the answer contains it. `fits` says whether a mask is admissible
/// (its memory need is within the cap and, with a target, its predicted rate meets it): the
/// memory model's guard, so no policy can break the cap.
public protocol PruningPolicy: Sendable {
    /// The mask to run with, or nil when no mask the policy can choose is admissible.
    func decide(_ state: PruningState, base: BlockMask, fits: (BlockMask) -> Bool) -> BlockMask?
    /// A short name for logs (`greedy`, `rl`, `oracle`).
    var name: String { get }
}

/// Drops blocks in a profile's order (GSI's: least harm to calibration perplexity first) until
/// the mask fits; the base alone when it already does.
public struct GreedyPolicy: PruningPolicy {
    public let order: [BlockMask.Block]
    public var name: String { "greedy" }

    public init(order: [BlockMask.Block]) { self.order = order }

    public func decide(_ state: PruningState, base: BlockMask, fits: (BlockMask) -> Bool) -> BlockMask? {
        var mask = base
        if fits(mask) { return mask }
        for b in order where !mask.skips(b) {
            mask.skip(b)
            if fits(mask) { return mask }
        }
        return nil
    }
}

/// The masks a controller chooses among (its action space) with their measured calibration
/// quality: the dense model, and every mask of a profile's quality table (the first k attention
/// blocks, the first k FFN blocks, and the profile's budgets, all in GSI order).
public struct PruningCandidates: Sendable, Equatable {
    public struct Candidate: Sendable, Equatable {
        public let mask: BlockMask
        /// Calibration NLL and top-1 next-token accuracy.
        public let nll: Double
        public let top1: Double
        public init(mask: BlockMask, nll: Double, top1: Double) { self.mask = mask; self.nll = nll; self.top1 = top1 }
    }
    /// The dense model first.
    public let all: [Candidate]

    public init(_ all: [Candidate]) {
        precondition(!all.isEmpty)
        self.all = all
    }

    public init(table: PruningProfile.QualityTable) throws(BlockMask.ParseError) {
        var out: [Candidate] = []
        for e in [table.dense] + table.entries {
            out.append(Candidate(mask: try BlockMask(parsingBlocks: e.blocks), nll: e.nll, top1: e.top1))
        }
        self.init(out)
    }

    public var count: Int { all.count }

    /// Quality in (0, 1]: the dense model's perplexity over the mask's, exp(NLL₀ − NLL), smooth
    /// where top-1 on a few thousand tokens is noisy; what the agent is rewarded with.
    public func quality(_ i: Int) -> Double { min(1, exp(all[0].nll - all[i].nll)) }

    /// Index of the candidate skipping exactly `mask`'s blocks, if one does.
    public func index(of mask: BlockMask) -> Int? { all.firstIndex { $0.mask == mask } }
}

/// The bound the other policies are judged against (evaluation only): exhaustive over the
/// candidates, the admissible one with the lowest calibration NLL.
public struct OraclePolicy: PruningPolicy {
    public let candidates: PruningCandidates
    public var name: String { "oracle" }

    public init(candidates: PruningCandidates) { self.candidates = candidates }

    public func decide(_ state: PruningState, base: BlockMask, fits: (BlockMask) -> Bool) -> BlockMask? {
        var best: BlockMask?, bestNLL = Double.infinity
        for c in candidates.all where c.nll < bestNLL {
            let mask = base.union(c.mask)
            if fits(mask) { best = mask; bestNLL = c.nll }
        }
        return best
    }
}

/// A decision the controller took: for `--stats`, `flexrun plan` and the library's log.
public struct PruneDecision: Sendable, Equatable {
    public enum Reason: String, Sendable {
        case capBelowStreamingMinimum = "the cap is below the dense model's streaming minimum"
        case capBelowResidentFootprint = "the cap is below the dense model's resident footprint (`residentOnly`)"
        case capChanged = "the cap changed"
        case kvGrowth = "the KV cache grew"
        case sequencesChanged = "sequences joined or left"
        case throughputTarget = "the throughput target"
    }
    public let reason: Reason
    public let policy: String
    public let state: PruningState
    /// The blocks skipped beyond the user's own.
    public let skipped: BlockMask
    /// The smallest cap the dense model (with the user's skips) runs in, and the chosen mask's:
    /// streaming, or with everything resident under `--resident-only`.
    public let denseMinimum: Int
    public let minimum: Int
    /// The chosen mask's predicted decode rate (nil without a throughput model).
    public let predictedTokensPerSecond: Double?
    /// Attention layers whose KV pages were handed back.
    public let releasedLayers: [Int]
    /// Microseconds the policy took.
    public let decisionMicroseconds: Double
    /// Seconds since the session opened.
    public let at: Double
    /// Measured after the decision: the process's resident bytes, and the decode rate until the
    /// next decision (filled in by the session).
    public var measuredResidentBytes: Int?
    public var measuredTokensPerSecond: Double?
}
