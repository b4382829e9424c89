import Foundation

/// RAP's agent (DESIGN.md §3): a DQN that maps the state (batch, sequence length, cap against
/// the dense need, the parameter/KV ratio, the throughput target, the mask in force) to a
/// Q-value per candidate mask, trained offline by `flexrun prune train-policy` on
/// ``PolicySimulator``. It decides by taking the admissible candidate with the highest Q-value:
/// the memory model's guard (`fits`) means no decision can break the cap, whatever the network
/// learned.
///
/// Q(s, a) = quality(a) + network(s)ₐ: the measured quality is the reward's immediate part and
/// does not depend on the state, so the network learns only the correction (residual
/// Q-learning). A plain DQN that must also learn the quality of 121 masks from rewards ranked
/// close masks by noise: on the made-up model of the tests it reached 0.651 mean quality
/// against the oracle's 0.696 (12,000 updates), where the residual form is within 2 %.
public struct RLPolicy: PruningPolicy {
    public let candidates: PruningCandidates
    public let network: QNetwork
    /// Layers of the model it was trained for.
    public let layers: Int
    public var name: String { "rl" }

    /// Inputs of the network (``features(_:currentQuality:)``).
    public static let featureCount = 8

    public init(candidates: PruningCandidates, network: QNetwork, layers: Int) {
        precondition(network.inputs == RLPolicy.featureCount && network.outputs == candidates.count)
        self.candidates = candidates
        self.network = network
        self.layers = layers
    }

    /// The state as the network sees it, every input of order 1:
    /// cap / dense need, log₂ batch / 3, sequence length / 2048, KV / (KV + weights),
    /// resident-only, target rate / dense rate (halved), whether there is a target, and the
    /// quality of the mask in force.
    public static func features(_ s: PruningState, currentQuality: Double) -> [Float] {
        let need = Double(max(1, s.denseNeed))
        let ratio: Double = {
            guard let target = s.minTokensPerSecond, let dense = s.denseTokensPerSecond, dense > 0 else { return 0 }
            return min(4, target / dense) / 2
        }()
        return [Float(min(2, Double(s.cap) / need)),
                Float(log2(Double(max(1, s.batch))) / 3),
                Float(min(4, Double(s.sequenceLength) / 2048)),
                Float(Double(s.kvBytes) / Double(max(1, s.kvBytes + s.weightBytes))),
                s.residentOnly ? 1 : 0,
                Float(ratio),
                s.minTokensPerSecond == nil ? 0 : 1,
                Float(currentQuality)]
    }

    /// Q(s, ·): the measured quality of each candidate (the reward's immediate, state-free part)
    /// plus the network's correction for the state (penalties, switching, what follows).
    public func qValues(_ x: [Float]) -> [Float] {
        var q = network(x)
        for i in q.indices { q[i] += Float(candidates.quality(i)) }
        return q
    }

    /// Quality of the candidate `mask` is (the dense model when it is none of them is… unknown: 0).
    func currentQuality(_ mask: BlockMask, base: BlockMask) -> Double {
        if mask == base { return 1 }
        return candidates.index(of: BlockMask(skipping: mask.skipped.subtracting(base.skipped))).map(candidates.quality) ?? 0
    }

    public func decide(_ state: PruningState, base: BlockMask, fits: (BlockMask) -> Bool) -> BlockMask? {
        let q = qValues(RLPolicy.features(state, currentQuality: currentQuality(state.current, base: base)))
        let order = q.indices.sorted { q[$0] > q[$1] }
        for a in order {
            let mask = base.union(candidates.all[a].mask)
            if fits(mask) { return mask }
        }
        return nil
    }

    // MARK: - The shipped file

    /// What `flexrun prune train-policy` writes and `--prune-policy rl` reads: the candidates (by
    /// their blocks, with their calibration quality), the network, and how it was trained, so a
    /// file says what it is and can be reproduced.
    public struct File: Codable, Sendable {
        public static let format = "flexrun-rap-policy"
        public static let currentVersion = 1
        public var format = File.format
        public var version = File.currentVersion
        public var model: String
        public var layers: Int
        public var profile: String
        public var training: PolicySimulator.Settings
        /// Mean calibration quality over the evaluation grid: the agent, greedy and the oracle.
        public var evaluation: PolicySimulator.Evaluation?
        public var candidates: [[String]]
        public var nll: [Double]
        public var top1: [Double]
        public var network: QNetwork

        public init(model: String, layers: Int, profile: String, training: PolicySimulator.Settings,
                    evaluation: PolicySimulator.Evaluation?, candidates: PruningCandidates, network: QNetwork) {
            self.model = model
            self.layers = layers
            self.profile = profile
            self.training = training
            self.evaluation = evaluation
            self.candidates = candidates.all.map { $0.mask.skipped.sorted().map(\.description) }
            nll = candidates.all.map(\.nll)
            top1 = candidates.all.map(\.top1)
            self.network = network
        }
    }

    public enum FileError: Error, CustomStringConvertible, Sendable {
        case unreadable(String, reason: String)
        case mismatch(String, reason: String)

        public var description: String {
            switch self {
            case let .unreadable(path, reason): "RAP policy \(path) is not readable: \(reason)"
            case let .mismatch(path, reason): "RAP policy \(path) does not fit this model: \(reason)"
            }
        }
    }

    /// Reads a policy written by `flexrun prune train-policy`, for a `layers`-layer model when
    /// given (a session checks its own).
    public static func read(path: String, layers: Int?) throws(FileError) -> RLPolicy {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch { throw .unreadable(path, reason: "\(error)") }
        return try decode(data, path: path, layers: layers)
    }

    /// A policy from its JSON bytes; `path` names them in errors (the fuzz target `policy`).
    public static func decode(_ data: Data, path: String, layers: Int?) throws(FileError) -> RLPolicy {
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch { throw .unreadable(path, reason: "\(error)") }
        guard file.format == File.format, file.version == File.currentVersion else {
            throw .unreadable(path, reason: "format \(file.format) version \(file.version); this flexrun reads \(File.format) version \(File.currentVersion)")
        }
        if let layers, file.layers != layers { throw .mismatch(path, reason: "it was trained for \(file.layers) layers; this model has \(layers)") }
        if let problem = file.network.shapeError { throw .unreadable(path, reason: "its network's shapes disagree: \(problem)") }
        guard file.candidates.count == file.nll.count, file.nll.count == file.top1.count, !file.candidates.isEmpty,
              file.network.inputs == featureCount, file.network.outputs == file.candidates.count
        else { throw .unreadable(path, reason: "its network and candidates do not agree") }
        var all: [PruningCandidates.Candidate] = []
        for (i, blocks) in file.candidates.enumerated() {
            guard let mask = try? BlockMask(parsingBlocks: blocks) else { throw .unreadable(path, reason: "bad blocks \(blocks)") }
            if let x = mask.skipped.first(where: { $0.layer >= file.layers }) {
                throw .unreadable(path, reason: "block \(x) is past its \(file.layers) layers")
            }
            all.append(.init(mask: mask, nll: file.nll[i], top1: file.top1[i]))
        }
        return RLPolicy(candidates: PruningCandidates(all), network: file.network, layers: file.layers)
    }

    /// Writes `file` as pretty JSON, atomically.
    public static func write(_ file: File, path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try encoder.encode(file).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
