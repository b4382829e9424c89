import CFlexShims
import Glibc

/// A file opened for unbuffered reads (O_DIRECT) when the filesystem allows it.
///
/// Streamed weights must not go through the page cache: under a cgroup limit the cache is
/// charged to the reader and evicted LRU-first, which is exactly how llama.cpp's mmap mode
/// thrashes (DESIGN.md §4). Filesystems without O_DIRECT (ramfs, tmpfs before Linux 6.6, some
/// FUSE and network filesystems) fall back to buffered reads, reported by ``isDirect``; reads
/// stay page aligned either way.
public struct DirectFile: ~Copyable {
    public let descriptor: Int32
    public let path: String
    public let size: Int
    public let isDirect: Bool
    /// Offset, length and buffer alignment O_DIRECT needs here (the logical block size is at
    /// most a page on every Linux block device we target).
    public static let alignment = 4096

    public init(path: String, direct: Bool = true) throws(SystemError) {
        var fd: Int32 = -1
        var isDirect = false
        if direct {
            // EINVAL: the filesystem refuses O_DIRECT; fall back to buffered reads below.
            do throws(SystemError) {
                fd = try retryingEINTR("open", path: path) { open(path, O_RDONLY | O_CLOEXEC | cflex_o_direct()) }
                isDirect = true
            } catch where error.code == EINVAL {}
        }
        if fd < 0 { fd = try retryingEINTR("open", path: path) { open(path, O_RDONLY | O_CLOEXEC) } }
        var st = stat()
        do throws(SystemError) { _ = try retryingEINTR("fstat", path: path) { fstat(fd, &st) } } catch { close(fd); throw error }
        descriptor = fd
        self.path = path
        size = Int(st.st_size)
        self.isDirect = isDirect
    }

    /// Reads `count` bytes at `offset` into `buffer` (all aligned), retrying short reads and
    /// EINTR. Stops early only at end of file; returns the bytes read.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) throws(SystemError) -> Int {
        // O_DIRECT short reads happen only at end of file; an unaligned remainder cannot continue.
        try preadFully(descriptor, into: buffer, count: count, at: offset, direct: isDirect, path: path)
    }

    /// Drops this file's pages from the page cache (POSIX_FADV_DONTNEED), so bytes touched while
    /// parsing the header are not left charged to the caller's cgroup.
    public func dropCachedPages() { _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED) }

    /// close is not retried: Linux releases the descriptor even when it reports EINTR.
    deinit { close(descriptor) }
}
