import CFlexShims
import Glibc

/// An io_uring for reads of one file into one registered buffer, closed in `deinit`.
///
/// The weight streamer's disk queue: O_DIRECT reads land straight in the staging ring, many at
/// once (the disk reaches its bandwidth only at queue depth 8–16), with one system call per batch.
/// Registering the buffer and the file once spares the kernel a page walk and an fd lookup per read.
public struct ReadRing: ~Copyable {
    private let queue: OpaquePointer
    public let entries: Int

    /// Fails with ENOSYS on kernels without io_uring and EPERM where seccomp or
    /// `kernel.io_uring_disabled` refuses it; callers fall back to ``DirectFile/read(into:count:at:)``.
    public init(entries: Int, file: borrowing DirectFile, buffer: UnsafeMutableRawPointer, length: Int) throws(SystemError) {
        var q: OpaquePointer?
        let rc = cflex_read_queue_open(&q, UInt32(entries), file.descriptor, buffer, length)
        guard rc == 0, let q else { throw SystemError(code: -rc, call: "io_uring_setup", path: file.path) }
        queue = q
        self.entries = entries
    }

    /// Queues a read of `length` bytes at `fileOffset` into the buffer at `bufferOffset`.
    /// Returns false when the submission queue is full: call ``submit()`` and push again.
    public func push(fileOffset: Int, bufferOffset: Int, length: Int, tag: UInt64) -> Bool {
        cflex_read_queue_push(queue, UInt64(fileOffset), bufferOffset, UInt32(length), tag) == 0
    }

    /// Hands every queued read to the kernel.
    public func submit() throws(SystemError) {
        let queue = queue
        _ = try retryingEINTR(negatedErrno: "io_uring_enter") { cflex_read_queue_submit(queue) }
    }

    /// Blocks until one read completes: its tag and its result (bytes, or a negated errno).
    public func waitCompletion() throws(SystemError) -> (tag: UInt64, result: Int32) {
        var tag: UInt64 = 0
        var result: Int32 = 0
        let queue = queue
        _ = try retryingEINTR(negatedErrno: "io_uring_wait_cqe") { cflex_read_queue_wait(queue, &tag, &result) }
        return (tag, result)
    }

    deinit { cflex_read_queue_close(queue) }
}
