import Glibc

/// A file being written that appears under its name only when complete.
///
/// Bytes go to `PATH.partial-PID` next to the destination; ``commit()`` fsyncs and renames it
/// over `PATH`. If the owner is dropped without committing (an error, a thrown check), the
/// temporary file is removed, so a failed `flexrun pack` leaves nothing behind.
public struct OutputFile: ~Copyable {
    public let path: String
    public let temporaryPath: String
    private let descriptor: Int32
    public private(set) var offset = 0
    private var committed = false

    public init(path: String) throws(SystemError) {
        self.path = path
        temporaryPath = "\(path).partial-\(getpid())"
        let tmp = temporaryPath
        descriptor = try retryingEINTR("open", path: tmp) { open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
    }

    /// Appends `bytes`.
    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        var done = 0
        while done < bytes.count {
            let fd = descriptor
            let n = try retryingEINTR("write", path: temporaryPath) { Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done) }
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
        let fd = descriptor, tmp = temporaryPath
        var failure: SystemError?
        bytes.withUnsafeBytes { b in
            do throws(SystemError) { _ = try retryingEINTR("pwrite", path: tmp) { pwrite(fd, b.baseAddress, b.count, off_t(at)) } } catch { failure = error }
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
        _ = try retryingEINTR("fsync", path: tmp) { fsync(fd) }
        _ = try retryingEINTR("rename", path: dst) { rename(tmp, dst) }
        committed = true
    }

    deinit {
        close(descriptor)
        if !committed { unlink(temporaryPath) }
    }
}
