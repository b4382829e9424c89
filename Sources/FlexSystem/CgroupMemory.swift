import Glibc

/// The memory controller of the cgroup this process runs in, v1 or v2.
///
/// The engine takes its default cap from here, because a process inside a limited cgroup that
/// plans for more memory than the limit gets OOM-killed, not told. The sweep tool creates child
/// groups next to it. Paths are resolved through `/proc/self/cgroup` and `/proc/self/mounts`, so
/// both the host view and a container's namespaced view (where the group is the mount root) work.
public struct CgroupMemory: Sendable, Equatable {
    public enum Version: String, Sendable { case v1, v2 }

    public let version: Version
    /// Directory of this process's memory cgroup.
    public let directory: String

    /// This process's memory cgroup, or nil when no memory controller is mounted.
    public static func current() -> CgroupMemory? {
        guard let cgroups = readSmallFile("/proc/self/cgroup"), let mounts = readSmallFile("/proc/self/mounts") else { return nil }
        var v1Path: String?, v2Path: String?
        for line in cgroups.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            if parts[0] == "0" && parts[1].isEmpty { v2Path = String(parts[2]) }
            if parts[1].split(separator: ",").contains("memory") { v1Path = String(parts[2]) }
        }
        var v1Mount: String?, v2Mount: String?
        for line in mounts.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 4 else { continue }
            if f[2] == "cgroup", f[3].split(separator: ",").contains("memory") { v1Mount = String(f[1]) }
            if f[2] == "cgroup2" { v2Mount = String(f[1]) }
        }
        if let mount = v1Mount, let path = v1Path {
            return CgroupMemory(version: .v1, directory: resolve(mount: mount, path: path, probe: "memory.limit_in_bytes"))
        }
        if let mount = v2Mount, let path = v2Path {
            let dir = resolve(mount: mount, path: path, probe: "memory.max")
            // A v2 hierarchy without the memory controller enabled has no memory.max here.
            if access(dir + "/memory.max", F_OK) == 0 || path == "/" { return CgroupMemory(version: .v2, directory: dir) }
        }
        return nil
    }

    /// The group's own directory, or the mount root when the path is not visible (cgroup namespace).
    private static func resolve(mount: String, path: String, probe: String) -> String {
        let full = path == "/" ? mount : mount + path
        return access(full + "/" + probe, F_OK) == 0 ? full : mount
    }

    /// The limit in bytes, or nil when unlimited ("max", or v1's huge sentinel) or unreadable.
    public var limit: Int? {
        let file = version == .v1 ? "memory.limit_in_bytes" : "memory.max"
        guard let text = CgroupMemory.readSmallFile(directory + "/" + file) else { return nil }
        return CgroupMemory.parseLimit(text)
    }

    /// The soft limit: v2's `memory.high` (the kernel throttles above it), v1's
    /// `memory.soft_limit_in_bytes`; nil when unlimited or unreadable.
    ///
    /// An orchestrator shrinking a running engine cannot lower the hard limit first: the engine's
    /// memory is anonymous and locked, so the kernel would OOM-kill it (v2) or refuse the write
    /// (v1). It lowers the soft limit, signals, waits for the engine to shrink, then lowers the
    /// hard limit. So the engine follows the lower of the two.
    public var softLimit: Int? {
        let file = version == .v1 ? "memory.soft_limit_in_bytes" : "memory.high"
        guard let text = CgroupMemory.readSmallFile(directory + "/" + file) else { return nil }
        return CgroupMemory.parseLimit(text)
    }

    /// The cap the engine follows: the lower of the hard and the soft limit (see `softLimit`).
    public var cap: Int? {
        switch (limit, softLimit) {
        case let (h?, s?): return min(h, s)
        case let (h, s): return h ?? s
        }
    }

    /// The group's high-water mark of charged memory (v2 `memory.peak`, Linux 5.19 and later;
    /// v1 `memory.max_usage_in_bytes`), and the file it came from; nil where unreadable (the v2
    /// root group has none).
    public var peak: (bytes: Int, file: String)? {
        let file = version == .v1 ? "memory.max_usage_in_bytes" : "memory.peak"
        guard let text = CgroupMemory.readSmallFile(directory + "/" + file), let v = Int(text.trimmingWhitespace) else { return nil }
        return (v, file)
    }

    /// How many processes the group holds (`cgroup.procs`); nil where unreadable.
    public var processCount: Int? {
        CgroupMemory.readSmallFile(directory + "/cgroup.procs").map { $0.split(separator: "\n").count }
    }

    /// Parses a limit file's content: digits, or "max"; 2^62 and above count as unlimited.
    public static func parseLimit(_ text: String) -> Int? {
        let t = text.trimmingWhitespace
        guard t != "max", let v = Int(t), v > 0, v < 1 << 62 else { return nil }
        return v
    }

    static func readSmallFile(_ path: String) -> String? {
        guard let f = try? FileHandle(readingFrom: path), let bytes = try? f.readAll() else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
