import Glibc
import Synchronization

/// An owned anonymous mapping, page aligned, optionally locked in RAM, unmapped in `deinit`.
///
/// Holds the offload runtime's resident weights and its staging ring. Page alignment is what
/// O_DIRECT and io_uring registered buffers require; a fresh anonymous mapping costs nothing
/// until written, so the memory tally grows exactly as reads land. Unmapping also unlocks.
public struct PinnedBuffer: ~Copyable {
    public let base: UnsafeMutableRawPointer
    public let count: Int
    /// Bytes locked with mlock (0 when not asked, refused, or empty).
    public let lockedBytes: Int

    public static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Maps `count` bytes (rounded up to whole pages). With `lock`, asks `locker` to pin them; a
    /// refusal is reported by ``lockedBytes`` being 0, never thrown: the engine runs unlocked.
    public init(count: Int, lock locker: MemoryLocker? = nil) throws(SystemError) {
        let size = max(PinnedBuffer.pageSize, (count + PinnedBuffer.pageSize - 1) / PinnedBuffer.pageSize * PinnedBuffer.pageSize)
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            throw SystemError.current("mmap")
        }
        base = p
        self.count = size
        lockedBytes = locker?.lock(p, size) == true ? size : 0
    }

    deinit { munmap(base, count) }

    /// Hands `count` bytes from `offset` back to the system (both page-aligned): they read as
    /// zeros and are backed anew when next written. Locked bytes are unlocked first, since the
    /// kernel keeps locked pages whatever it is told.
    public func discard(offset: Int, count: Int) {
        precondition(offset % PinnedBuffer.pageSize == 0 && offset + count <= self.count)
        guard count > 0 else { return }
        if lockedBytes > 0 { _ = munlock(base + offset, count) }
        _ = madvise(base + offset, count, MADV_DONTNEED)
    }
}

/// mlock with llama.cpp's latch: the first refusal (EPERM without CAP_IPC_LOCK, ENOMEM over
/// RLIMIT_MEMLOCK) is remembered and reported once, and later buffers are not even tried.
///
/// Sendable without exception: a re-plan on the generating thread may latch the refusal while
/// another thread reads it, so the latch is a mutex.
public final class MemoryLocker: Sendable {
    /// The call that pins memory; tests substitute a refusing one to exercise the fallback.
    public typealias LockFunction = @Sendable (UnsafeRawPointer, Int) -> Int32
    private let function: LockFunction
    private let latched = Mutex<SystemError?>(nil)
    /// The first refusal, nil while every lock succeeded (or none was tried).
    public var refusal: SystemError? { latched.withLock { $0 } }

    public init(function: @escaping LockFunction = { p, n in
        do throws(SystemError) { _ = try retryingEINTR("mlock") { mlock(p, n) }; return 0 } catch { return error.code }
    }) {
        self.function = function
    }

    /// A locker whose every call fails with `code`, as an unprivileged process would see.
    public static func refusing(_ code: Int32) -> MemoryLocker { MemoryLocker { _, _ in code } }

    /// Pins `count` bytes at `p`. Returns false (and latches the error) on refusal.
    /// Two threads locking at once may both try before either latches; the first refusal wins.
    public func lock(_ p: UnsafeRawPointer, _ count: Int) -> Bool {
        if refusal != nil { return false }
        let code = function(p, count)
        if code == 0 { return true }
        latched.withLock { if $0 == nil { $0 = SystemError(code: code, call: "mlock") } }
        return false
    }
}
