import Glibc

/// A read-only shared mapping of a whole file, unmapped in `deinit`.
///
/// The in-memory engine maps the GGUF so weights are paged in once and shared with the page
/// cache; views into it are lent out as `UnsafeRawBufferPointer` only for the owner's lifetime.
public struct MappedRegion: ~Copyable {
    public let base: UnsafeRawPointer
    public let count: Int
    /// Anonymous memory holds the only copy of its bytes: dropping its pages would lose them.
    private let anonymous: Bool
    /// Bytes at the start of an anonymous region that are a private mapping of a file
    /// (``mapFile(_:offset:pages:)``): those pages can be dropped and read again.
    private var filePrefix = 0

    /// Maps `file` in full. An empty file maps to a dangling zero-length region (mmap refuses length 0).
    public init(mapping file: borrowing FileHandle) throws(SystemError) {
        let size = try file.size()
        if size == 0 {
            self.base = UnsafeRawPointer(bitPattern: 0x1000)!
            self.count = 0
            self.anonymous = false
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, file.descriptor, 0), p != MAP_FAILED else {
            throw SystemError.current("mmap", path: file.path)
        }
        self.base = UnsafeRawPointer(p)
        self.count = size
        self.anonymous = false
    }

    /// `count` zeroed bytes of anonymous memory, to be filled through ``mutableBytes`` and then
    /// ``seal()``ed read-only: a model image rebuilt in memory (a packed block file) then looks
    /// like a mapped file to readers.
    public init(anonymous count: Int) throws(SystemError) {
        guard count > 0, let p = mmap(nil, count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            throw SystemError.current("mmap")
        }
        self.base = UnsafeRawPointer(p)
        self.count = count
        self.anonymous = true
    }

    /// Writable view of an anonymous region before ``seal()``.
    public var mutableBytes: UnsafeMutableRawBufferPointer {
        precondition(anonymous, "file mappings are read-only")
        return UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(mutating: base), count: count)
    }

    /// Replaces the first `pages` × page size bytes of an anonymous region with a private mapping
    /// of `file` from `offset` (page-aligned): bytes that are already in a file need not be
    /// copied into anonymous memory, where they would stay for the region's lifetime. The pages
    /// stay writable until ``seal()`` (a write copies that page).
    public mutating func mapFile(_ file: borrowing FileHandle, offset: Int, pages: Int) throws(SystemError) {
        let length = pages * Int(getpagesize())
        precondition(anonymous && length <= count && offset % Int(getpagesize()) == 0)
        guard length > 0 else { return }
        guard let p = mmap(UnsafeMutableRawPointer(mutating: base), length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED,
                           file.descriptor, off_t(offset)), p != MAP_FAILED else {
            throw SystemError.current("mmap", path: file.path)
        }
        filePrefix = length
    }

    /// Makes the region read-only, as a file mapping is.
    public func seal() { _ = mprotect(UnsafeMutableRawPointer(mutating: base), count, PROT_READ) }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// Asks for no readahead on faults (MADV_RANDOM): only the pages actually touched are read.
    public func adviseRandom() {
        guard count > 0, !anonymous else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base), count, MADV_RANDOM)
    }

    /// Drops the pages of this mapping from the process (MADV_DONTNEED) and asks for no readahead
    /// on later faults (MADV_RANDOM). The file's bytes stay readable; they are paged in again on use.
    public func dropPages() {
        if anonymous {
            // Only the file-backed prefix: untouched by writes, its pages come back from the file.
            if filePrefix > 0 { _ = madvise(UnsafeMutableRawPointer(mutating: base), filePrefix, MADV_DONTNEED) }
            return
        }
        guard count > 0 else { return }
        let p = UnsafeMutableRawPointer(mutating: base)
        _ = madvise(p, count, MADV_RANDOM)
        _ = madvise(p, count, MADV_DONTNEED)
    }

    /// Drops the whole pages of `start..<start + length` that lie in this mapping's file-backed
    /// part, as ``dropPages()`` does for all of them: for a caller that copied those bytes and
    /// will not read them here again.
    public func dropPages(from start: UnsafeRawPointer, length: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let fileBacked = anonymous ? filePrefix : count
        let lo = max(start - base, 0), hi = min(start + length - base, fileBacked)
        let first = (lo + page - 1) / page * page, end = hi / page * page
        guard end > first else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + first), end - first, MADV_DONTNEED)
    }

    deinit {
        if count > 0 { munmap(UnsafeMutableRawPointer(mutating: base), count) }
    }
}
