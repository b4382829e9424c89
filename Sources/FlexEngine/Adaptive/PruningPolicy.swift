/// What a pruning policy decides from (RAP's state, DESIGN.md §3): the load and the budget.
public struct PruningState: Sendable, Equatable {
    /// Sequences held.
    public var batch: Int
    /// KV positions reserved per sequence.
    public var sequenceLength: Int
    /// The memory cap in force.
    public var cap: Int

    public init(batch: Int, sequenceLength: Int, cap: Int) {
        self.batch = batch
        self.sequenceLength = sequenceLength
        self.cap = cap
    }
}

/// Decides which blocks to skip for a state: the seam between the engine and RAP's policies
/// (greedy here; the trained agent and the oracle come with the controller). Pure: state in,
/// mask out, testable without a model.
public protocol PruningPolicy: Sendable {
    /// The mask to run with, or nil when no mask the policy can choose fits.
    func decide(_ state: PruningState, fits: (BlockMask) -> Bool) -> BlockMask?
}

/// Drops blocks in a profile's order (GSI's: least harm to calibration perplexity first) until
/// the plan fits; the dense model when it already does.
public struct GreedyPolicy: PruningPolicy {
    public let order: [BlockMask.Block]
    /// Blocks skipped whatever the state (the user's `--skip`).
    public let base: BlockMask

    public init(order: [BlockMask.Block], base: BlockMask = .none) {
        self.order = order
        self.base = base
    }

    public func decide(_ state: PruningState, fits: (BlockMask) -> Bool) -> BlockMask? {
        var mask = base
        if fits(mask) { return mask }
        for b in order where !mask.skips(b) {
            mask.skip(b)
            if fits(mask) { return mask }
        }
        return nil
    }
}

/// A decision the engine took: for `--stats` and the library's log.
public struct PruneDecision: Sendable, Equatable {
    public enum Reason: String, Sendable {
        case capBelowStreamingMinimum = "the cap is below the dense model's streaming minimum"
        case capBelowResidentFootprint = "the cap is below the dense model's resident footprint (--resident-only)"
        case capChanged = "the cap changed"
    }
    public let reason: Reason
    public let state: PruningState
    /// The blocks skipped beyond the user's own.
    public let skipped: BlockMask
    /// The smallest cap the dense model (with the user's skips) runs in, and the chosen mask's:
    /// streaming, or with everything resident under `--resident-only`.
    public let denseMinimum: Int
    public let minimum: Int
    /// Microseconds the policy took.
    public let decisionMicroseconds: Double
}

/// The bound the other policies are judged against (evaluation only): exhaustive over the masks
/// of a measured quality table, the one with the lowest calibration NLL among those that fit.
public struct OraclePolicy: PruningPolicy {
    public struct Candidate: Sendable, Equatable {
        public let mask: BlockMask
        public let nll: Double
        public init(mask: BlockMask, nll: Double) { self.mask = mask; self.nll = nll }
    }
    public let candidates: [Candidate]

    public init(candidates: [Candidate]) { self.candidates = candidates }

    /// Every mask of `table` (its dense entry included), added to `base`.
    public init(table: PruningProfile.QualityTable, base: BlockMask = .none) throws(BlockMask.ParseError) {
        var out: [Candidate] = []
        for e in [table.dense] + table.entries {
            var mask = base
            for text in e.blocks { for b in try BlockMask(parsing: text).skipped { mask.skip(b) } }
            out.append(Candidate(mask: mask, nll: e.nll))
        }
        candidates = out
    }

    public func decide(_ state: PruningState, fits: (BlockMask) -> Bool) -> BlockMask? {
        var best: Candidate?
        for c in candidates where fits(c.mask) && c.nll < (best?.nll ?? .infinity) { best = c }
        return best?.mask
    }
}
