import Glibc

/// Owns one open file descriptor and closes it exactly once.
///
/// `~Copyable` so the descriptor cannot be closed twice or used after close: the type system
/// enforces what a C caller has to remember.
public struct FileHandle: ~Copyable {
    public let descriptor: Int32
    public let path: String

    /// Opens `path` read-only. Directories are refused here, so callers get "is a directory"
    /// rather than a confusing read error later.
    public init(readingFrom path: String) throws(SystemError) {
        let fd = try retryingEINTR("open", path: path) { open(path, O_RDONLY | O_CLOEXEC) }
        var st = stat()
        if (try? retryingEINTR("fstat", path: path) { fstat(fd, &st) }) != nil, (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw SystemError(code: EISDIR, call: "open", path: path)
        }
        self.descriptor = fd
        self.path = path
    }

    /// Size of the file in bytes, from fstat.
    public func size() throws(SystemError) -> Int {
        var st = stat()
        _ = try retryingEINTR("fstat", path: path) { fstat(descriptor, &st) }
        return Int(st.st_size)
    }

    /// Reads exactly `count` bytes at `offset` (pread, EINTR retried, short reads continued);
    /// returns fewer only at the end of the file.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) throws(SystemError) -> Int {
        try preadFully(descriptor, into: buffer, count: count, at: offset, path: path)
    }

    /// Drops the file's clean pages from the page cache (POSIX_FADV_DONTNEED); advisory.
    public func dropCachedPages() { _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED) }

    /// Drops the page cache of `count` bytes at `offset` (clean pages only; advisory).
    public func dropCachedPages(offset: Int, count: Int) { _ = posix_fadvise(descriptor, off_t(offset), off_t(count), POSIX_FADV_DONTNEED) }

    /// Reads the whole file (for small inputs such as prompts).
    public func readAll() throws(SystemError) -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let fd = descriptor
            // Typed throws do not pass through withUnsafeMutableBytes: carry the result out.
            let n = chunk.withUnsafeMutableBytes { buf in
                Result { () throws(SystemError) in try retryingEINTR("read", path: path) { Glibc.read(fd, buf.baseAddress, buf.count) } }
            }
            let count = try n.get()
            if count == 0 { break }
            result.append(contentsOf: chunk[0..<count])
        }
        return result
    }

    /// close is not retried: Linux releases the descriptor even when it reports EINTR.
    deinit { close(descriptor) }
}
