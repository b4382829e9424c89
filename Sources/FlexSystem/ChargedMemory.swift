/// The memory a cap is held to, printed by `--stats` beside peak RSS.
///
/// Peak RSS (VmHWM) counts every resident page the process maps, shared library code included.
/// A memory cgroup does not charge those to a process whose code pages were already in the page
/// cache (they are charged once, to whoever read them first), and the engine's plan allows for
/// code separately, so at `--mem-limit 100M` a peak RSS of 108 MiB sat beside a cgroup peak of
/// 87 MiB: within the cap, but it read like a breach. This reports what the cap governs.
public struct ChargedMemory: Sendable, Equatable {
    public enum Source: Sendable, Equatable {
        /// The cgroup's own high-water mark (`file`), the counter the kernel holds to its limit.
        /// Used when the group is this process alone, or has a limit (then it is what governs,
        /// whoever else is in it).
        case cgroupPeak(file: String, processes: Int, limit: Int?)
        /// No memory cgroup of its own: anonymous memory plus the model file's resident pages,
        /// at the end of the run (what a fresh cgroup would be charged for; no peak is kept).
        case process(anonymous: Int, modelFilePages: Int)
    }

    public let bytes: Int
    public let source: Source

    /// Chooses the counter (pure: the readings in, the choice out).
    public static func choose(cgroupPeak: (bytes: Int, file: String)?, processes: Int?, limit: Int?,
                              anonymous: Int?, modelFilePages: Int?) -> ChargedMemory? {
        if let peak = cgroupPeak, let processes, processes == 1 || limit != nil {
            return ChargedMemory(bytes: peak.bytes, source: .cgroupPeak(file: peak.file, processes: processes, limit: limit))
        }
        guard let anonymous else { return nil }
        let file = modelFilePages ?? 0
        return ChargedMemory(bytes: anonymous + file, source: .process(anonymous: anonymous, modelFilePages: file))
    }

    /// Reads the process's cgroup and /proc now; `modelPath` is the model file it maps.
    public static func measure(modelPath: String?) -> ChargedMemory? {
        let group = CgroupMemory.current()
        let anonymous = Platform.anonymousResidentBytes().map { $0 + (Platform.shmemResidentBytes() ?? 0) }
        return choose(cgroupPeak: group?.peak, processes: group?.processCount, limit: group?.cap, anonymous: anonymous,
                      modelFilePages: modelPath.flatMap(Platform.residentFileBytes(mappedFrom:)))
    }

    /// The phrase `--stats` prints after peak RSS.
    public var summary: String {
        switch source {
        case .cgroupPeak(let file, let processes, let limit):
            let of = limit.map { " of its \(ByteSize.format($0)) limit" } ?? ""
            let who = processes == 1 ? "this process alone" : "\(processes) processes"
            return "cgroup peak \(ByteSize.format(bytes))\(of) (\(file), \(who); RSS also counts shared code pages)"
        case .process(let anonymous, let file):
            return "charged \(ByteSize.format(bytes)) at the end (\(ByteSize.format(anonymous)) anonymous + \(ByteSize.format(file)) of the "
                + "model file; no memory cgroup of its own to read a peak from; RSS also counts shared code pages)"
        }
    }
}
