import Foundation

/// The time half of RAP's memory model: predicted seconds per decode step for a keep-mask at
/// batch B, `max(compute of the kept blocks, streamed bytes / disk bandwidth)` (the streamer
/// overlaps reading the next layer with computing this one).
///
/// Its numbers are measured on this machine by `flexrun calibrate` (in memory, at batch 1 and 8,
/// dense and with every attention or every FFN block skipped, at a short and a long context, and
/// streaming everything) and cached per model file; see ``Calibration``.
public struct ThroughputModel: Codable, Sendable, Equatable {
    /// Seconds per step at batch 1 and at batch 8 (linear between and beyond): one layer's
    /// attention block at no context, one layer's FFN block, and the rest (embedding, head,
    /// sampling).
    public var attentionSeconds: [Double]
    public var ffnSeconds: [Double]
    public var baseSeconds: [Double]
    /// Seconds per cached position per sequence per kept attention layer (reading keys/values).
    public var positionSeconds: Double
    /// Bytes per second the streamer reads at (measured streaming everything).
    public var diskBytesPerSecond: Double

    public init(attentionSeconds: [Double], ffnSeconds: [Double], baseSeconds: [Double], positionSeconds: Double, diskBytesPerSecond: Double) {
        self.attentionSeconds = attentionSeconds
        self.ffnSeconds = ffnSeconds
        self.baseSeconds = baseSeconds
        self.positionSeconds = positionSeconds
        self.diskBytesPerSecond = diskBytesPerSecond
    }

    static func at(_ pair: [Double], batch: Int) -> Double { max(0, pair[0] + (pair[1] - pair[0]) * Double(batch - 1) / 7) }

    /// Compute seconds of one step: `batch` sequences, each with `positions` cached positions.
    public func computeSeconds(skipping mask: BlockMask, layers: Int, batch: Int, positions: Int) -> Double {
        let attention = layers - mask.skippedAttentionLayers.filter { $0 < layers }.count
        let ffn = layers - mask.skipped.filter { $0.kind == .ffn && $0.layer < layers }.count
        return ThroughputModel.at(baseSeconds, batch: batch) + Double(attention) * ThroughputModel.at(attentionSeconds, batch: batch)
            + Double(ffn) * ThroughputModel.at(ffnSeconds, batch: batch)
            + Double(attention * batch * positions) * positionSeconds
    }

    /// Tokens per second over all sequences.
    public func tokensPerSecond(skipping mask: BlockMask, layers: Int, batch: Int, positions: Int, streamedBytes: Int) -> Double {
        let seconds = max(computeSeconds(skipping: mask, layers: layers, batch: batch, positions: positions),
                          Double(streamedBytes) / max(1, diskBytesPerSecond))
        return Double(batch) / max(1e-9, seconds)
    }
}

/// A ``ThroughputModel`` measured for one model file on one machine, cached under
/// `~/.cache/flexrun/calibration/` (keyed by the file's name, size and the CPU), so
/// `--prune auto` needs no measuring at open. The disk is measured again by each calibration;
/// it varies over a session, so calibrate again when it matters.
public struct Calibration: Codable, Sendable, Equatable {
    public static let currentVersion = 1
    public var version = Calibration.currentVersion
    public var model: String
    public var modelBytes: Int
    public var cpu: String
    public var threads: Int
    public var measuredAt: String
    public var throughput: ThroughputModel

    public init(model: String, modelBytes: Int, cpu: String, threads: Int, measuredAt: String, throughput: ThroughputModel) {
        self.model = model; self.modelBytes = modelBytes; self.cpu = cpu; self.threads = threads
        self.measuredAt = measuredAt; self.throughput = throughput
    }

    /// Where the calibration of `modelPath` is cached.
    public static func path(modelPath: String, threads: Int) -> String {
        let name = URL(fileURLWithPath: modelPath).lastPathComponent
        let size = (try? FileManager.default.attributesOfItem(atPath: modelPath)[.size] as? Int) ?? 0
        let cache = ProcessInfo.processInfo.environment["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")
        return "\(cache)/flexrun/calibration/\(name)-\(size)-t\(threads).json"
    }

    /// The cached calibration for `modelPath`, or nil.
    public static func load(modelPath: String, threads: Int) -> Calibration? {
        guard let data = FileManager.default.contents(atPath: path(modelPath: modelPath, threads: threads)),
              let c = try? JSONDecoder().decode(Calibration.self, from: data), c.version == currentVersion else { return nil }
        return c
    }

    public func save(modelPath: String) throws {
        let p = Calibration.path(modelPath: modelPath, threads: threads)
        try FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: p), options: .atomic)
    }
}
