import Glibc
import CFlexShims

/// Facts about the running system that the engine reports or plans with.
public enum Platform {
    /// Number of online CPUs: the default thread count.
    public static var onlineCPUs: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Major page faults of this process so far: pages it had to wait for the disk to bring back
    /// (code, or file data it maps). Under a memory cgroup a count rising while decoding means
    /// the cap left too little room for the code the process runs, and it is rereading it.
    public static func majorFaults() -> Int {
        var u = rusage()
        return getrusage(RUSAGE_SELF.rawValue, &u) == 0 ? Int(u.ru_majflt) : 0
    }

    /// Peak resident set size of this process (VmHWM), in bytes, or nil where /proc is missing.
    public static func peakResidentBytes() -> Int? { procStatusKiB("VmHWM:").map { $0 * 1024 } }

    /// Anonymous resident memory (RssAnon): heap, stacks, buffers; not code or file pages.
    public static func anonymousResidentBytes() -> Int? { procStatusKiB("RssAnon:").map { $0 * 1024 } }

    /// Resident shared memory (RssShmem): shared anonymous mappings, charged like anonymous memory.
    public static func shmemResidentBytes() -> Int? { procStatusKiB("RssShmem:").map { $0 * 1024 } }

    /// Resident pages of every mapping of the file at `path` (summed `Rss:` of its entries in
    /// /proc/self/smaps), in bytes; nil where smaps cannot be read. A model run from its mapping
    /// holds its weights here, not in anonymous memory.
    public static func residentFileBytes(mappedFrom path: String) -> Int? {
        guard let f = try? FileHandle(readingFrom: "/proc/self/smaps"), let bytes = try? f.readAll() else { return nil }
        var target = path
        if let resolved = realpath(path, nil) {
            target = String(cString: resolved)
            free(resolved)
        }
        var total = 0, inside = false
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            // A mapping's header starts with its address range ("7f12…-7f34… r--s …  /path"); its
            // fields ("Rss:    1234 kB") follow.
            let head = line.prefix { $0 != " " }
            if head.contains("-") && head.allSatisfy({ $0.isHexDigit || $0 == "-" }) {
                inside = line.hasSuffix(" " + target)
            } else if inside && line.hasPrefix("Rss:") {
                total += (Int(line.dropFirst(4).filter { $0.isNumber }) ?? 0) * 1024
            }
        }
        return total
    }

    /// Current resident set size (VmRSS), in bytes.
    public static func residentBytes() -> Int? { procStatusKiB("VmRSS:").map { $0 * 1024 } }

    private static func procStatusKiB(_ key: String) -> Int? {
        guard let f = try? FileHandle(readingFrom: "/proc/self/status"), let bytes = try? f.readAll() else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix(key) {
            let digits = line.dropFirst(key.count).filter { $0.isNumber }
            return Int(digits)
        }
        return nil
    }

    /// Versions of the linked C libraries, proving at run time that they are the system's.
    public static var libraryVersions: String {
        var major: Int32 = 0, minor: Int32 = 0
        _ = cflex_uring_version(&major, &minor)
        func dotted(_ v: Int) -> String { "\(v / 10000).\(v / 100 % 100).\(v % 100)" }
        return "liburing \(major).\(minor), zstd \(dotted(Int(cflex_zstd_version()))), lz4 \(dotted(Int(cflex_lz4_version())))"
    }

    /// Whether this kernel lets the process create an io_uring (ENOSYS/EPERM otherwise).
    public static var ioUringAvailable: Bool { cflex_uring_probe() == 0 }

    /// Why this kernel refuses io_uring (`io_uring_setup`'s error: ENOSYS, EPERM under seccomp or
    /// `kernel.io_uring_disabled`), or nil when it accepts it.
    public static var ioUringRefusal: String? {
        let rc = cflex_uring_probe()
        return rc == 0 ? nil : "io_uring_setup: \(String(cString: strerror(-rc)))"
    }

    /// Monotonic clock in seconds, for stats.
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}
