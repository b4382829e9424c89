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
            fd = open(path, O_RDONLY | O_CLOEXEC | cflex_o_direct())
            if fd >= 0 { isDirect = true } else if errno != EINVAL { throw SystemError.current("open", path: path) }
        }
        if fd < 0 { fd = try retryingEINTR("open", path: path) { open(path, O_RDONLY | O_CLOEXEC) } }
        var st = stat()
        guard fstat(fd, &st) == 0 else { let e = SystemError.current("fstat", path: path); close(fd); throw e }
        descriptor = fd
        self.path = path
        size = Int(st.st_size)
        self.isDirect = isDirect
    }

    /// Reads `count` bytes at `offset` into `buffer` (all aligned), retrying short reads and
    /// EINTR. Stops early only at end of file; returns the bytes read.
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) throws(SystemError) -> Int {
        var done = 0
        while done < count {
            let n = pread(descriptor, buffer + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError.current("pread", path: path)
            }
            if n == 0 { break }
            done += n
            // O_DIRECT short reads happen only at end of file; an unaligned remainder cannot continue.
            if isDirect && done % DirectFile.alignment != 0 { break }
        }
        return done
    }

    /// Drops this file's pages from the page cache (POSIX_FADV_DONTNEED), so bytes touched while
    /// parsing the header are not left charged to the caller's cgroup.
    public func dropCachedPages() { _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED) }

    deinit { close(descriptor) }
}
