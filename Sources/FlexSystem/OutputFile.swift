import CFlexShims
import Glibc

/// A file being written that appears under its name only when complete.
///
/// Errors name the destination, not the temporary file: that is the path the user gave.
///
/// Bytes go to `PATH.partial-PID` next to the destination; ``commit()`` fsyncs and renames it
/// over `PATH`. If the owner is dropped without committing (an error, a thrown check), the
/// temporary file is removed, so a failed `flexrun pack` leaves nothing behind. SIGINT and
/// SIGTERM remove it too, where the executable installed ``SignalCleanup``. Only SIGKILL (or a
/// crash) can leave one, and the next writer of the same path removes it (``removeStalePartials(of:)``).
public struct OutputFile: ~Copyable {
    public let path: String
    public let temporaryPath: String
    private let descriptor: Int32
    public private(set) var offset = 0
    private var committed = false
    /// This file's slot in ``SignalCleanup``'s table (nil when the table was full).
    private let cleanupSlot: Int32?

    public init(path: String) throws(SystemError) {
        self.path = path
        temporaryPath = "\(path).partial-\(getpid())"
        let tmp = temporaryPath
        OutputFile.removeStalePartials(of: path)
        // Registered before the file exists, so no signal can fall between creating and registering it.
        let slot = SignalCleanup.register(tmp)
        do {
            descriptor = try retryingEINTR("open", path: path) { open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        } catch {
            SignalCleanup.unregister(slot)
            throw error
        }
        cleanupSlot = slot
    }

    /// Removes `PATH.partial-PID` files next to `path` whose process is gone (a writer killed by
    /// SIGKILL, or a crash), and returns their paths. Files of live processes (another writer of
    /// the same output, right now) are left alone.
    @discardableResult
    public static func removeStalePartials(of path: String) -> [String] {
        let slash = path.lastIndex(of: "/")
        let parent = slash.map { String(path[...$0]) } ?? ""   // with its trailing "/"
        let prefix = (slash.map { String(path[path.index(after: $0)...]) } ?? path) + ".partial-"
        guard !prefix.hasPrefix(".partial-"), let dir = opendir(parent.isEmpty ? "." : parent) else { return [] }
        defer { closedir(dir) }
        var removed: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasPrefix(prefix), let pid = pid_t(name.dropFirst(prefix.count)), pid > 0, pid != getpid() else { continue }
            // kill(pid, 0) probes without signalling: ESRCH means no such process.
            do throws(SystemError) { _ = try retryingEINTR("kill") { kill(pid, 0) }; continue } catch where error.code == ESRCH {} catch { continue }
            if (try? retryingEINTR("unlink", path: parent + name) { unlink(parent + name) }) != nil { removed.append(parent + name) }
        }
        return removed
    }

    /// Appends `bytes`.
    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        var done = 0
        while done < bytes.count {
            let fd = descriptor
            let n = try retryingEINTR("write", path: path) { Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done) }
            done += n
        }
        offset += bytes.count
    }

    /// Appends `bytes`.
    public mutating func write(_ bytes: [UInt8]) throws(SystemError) {
        var failure: SystemError?
        bytes.withUnsafeBytes { b in
            do throws(SystemError) { try write(b) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Overwrites bytes already written at `at` (a header filled in last).
    public func overwrite(_ bytes: [UInt8], at: Int) throws(SystemError) {
        let fd = descriptor, dst = path
        var failure: SystemError?
        bytes.withUnsafeBytes { b in
            do throws(SystemError) { _ = try retryingEINTR("pwrite", path: dst) { pwrite(fd, b.baseAddress, b.count, off_t(at)) } } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Appends zeros up to the next multiple of `alignment`.
    public mutating func pad(to alignment: Int) throws(SystemError) {
        let n = (alignment - offset % alignment) % alignment
        guard n > 0 else { return }
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 1)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        try write(UnsafeRawBufferPointer(zeros))
    }

    /// Makes the file durable and gives it its name.
    public consuming func commit() throws(SystemError) {
        let fd = descriptor, tmp = temporaryPath, dst = path
        _ = try retryingEINTR("fsync", path: dst) { fsync(fd) }
        _ = try retryingEINTR("rename", path: dst) { rename(tmp, dst) }
        committed = true
    }

    deinit {
        close(descriptor)
        if !committed { unlink(temporaryPath) }
        SignalCleanup.unregister(cleanupSlot)
    }
}
