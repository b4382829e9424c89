import FlexFormat
import FlexSystem
import Foundation

/// Reads and decodes a stage's compressed blocks on worker threads, beside the forward pass.
///
/// A compressed block can only be used whole and decoded, and the io_uring reader's completions
/// are reaped by the forward thread, so decoding behind it would put the decode on the critical
/// path. Instead each worker takes a whole block: pread of its payload straight into the slot,
/// XXH64 check (a bit flipped on the card since open is caught here, naming the block), decode
/// into the slot with the worker's own zstd/lz4 context (reused for every block it decodes). The
/// forward thread only waits, in `acquire`, if a block is not ready yet.
final class DecodeWorkers: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is guarded by `mutex`.
    private struct Job { let decode: MemoryPlan.Decode; let base: UnsafeMutableRawPointer; let slot: Int }
    private let fd: Int32
    private let path: String
    private let fileSize: Int
    private let scratchBytes: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [Job] = []
    private var head = 0
    private var pending: [Int]
    private var failure: String?
    private var stopping = false
    private let finished = DispatchGroup()
    let threadCount: Int

    /// `scratchBytes`: the largest decoded block whose tensors are in byte planes (0 if none).
    init(descriptor: Int32, path: String, fileSize: Int, slots: Int, jobsPerSlot: Int, scratchBytes: Int, threads: Int) {
        fd = descriptor
        self.path = path
        self.fileSize = fileSize
        self.scratchBytes = scratchBytes
        threadCount = threads
        pending = [Int](repeating: 0, count: slots)
        queue.reserveCapacity(slots * jobsPerSlot + 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
        for _ in 0..<threads {
            finished.enter()
            let t = Thread { [self] in work(); finished.leave() }
            t.stackSize = 1 << 18
            t.start()
        }
    }

    private func work() {
        let coder = BlockCoder()
        let scratch = scratchBytes > 0 ? UnsafeMutableRawBufferPointer.allocate(byteCount: scratchBytes, alignment: 64) : nil
        defer { scratch?.deallocate() }
        pthread_mutex_lock(mutex)
        while true {
            while head == queue.count && !stopping { pthread_cond_wait(cond, mutex) }
            if head == queue.count && stopping { break }
            let job = queue[head]
            head += 1
            if head == queue.count { queue.removeAll(keepingCapacity: true); head = 0 }
            pthread_mutex_unlock(mutex)
            let error = run(job, coder: coder, scratch: scratch)
            pthread_mutex_lock(mutex)
            if let error { failure = failure ?? error }
            pending[job.slot] -= 1
            pthread_cond_broadcast(cond)
        }
        pthread_mutex_unlock(mutex)
    }

    /// One block: read, check, decode. Returns an error line, or nil.
    private func run(_ job: Job, coder: BlockCoder, scratch: UnsafeMutableRawBufferPointer?) -> String? {
        let d = job.decode, e = d.block.entry
        let needed = max(0, min(d.read.length, fileSize - d.read.fileOffset))
        var done = 0
        while done < needed {
            let n = pread(fd, job.base + d.read.slotOffset + done, d.read.length - done, off_t(d.read.fileOffset + done))
            if n < 0 { if errno == EINTR { continue }; return SystemError(code: errno, call: "pread", path: path).description }
            if n == 0 { break }
            done += n
        }
        guard d.storedSlotOffset - d.read.slotOffset + e.storedSize <= done else {
            return BlockFileError.truncated(path, what: "block \(e.name)", needed: e.payloadOffset + e.storedSize, size: d.read.fileOffset + done).description
        }
        let payload = UnsafeRawBufferPointer(start: job.base + d.storedSlotOffset, count: e.storedSize)
        guard XXHash64.hash(payload) == e.checksum else {
            return BlockFileError.checksum(path, block: e.name, offset: e.payloadOffset).description
        }
        let raw = UnsafeMutableRawBufferPointer(start: job.base + d.rawSlotOffset, count: e.rawSize)
        guard BlockFile.decode(e, payload: payload, coder: coder, into: raw, scratch: scratch) else {
            return BlockFileError.decode(path, block: e.name, codec: e.codec.description).description
        }
        return nil
    }

    /// Queues `decodes` for the slot whose base is `base`.
    func start(_ decodes: [MemoryPlan.Decode], base: UnsafeMutableRawPointer, slot: Int) {
        guard !decodes.isEmpty else { return }
        pthread_mutex_lock(mutex)
        for d in decodes { queue.append(Job(decode: d, base: base, slot: slot)) }
        pending[slot] += decodes.count
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

    /// Blocks until every block of `slot` is decoded.
    func wait(slot: Int) throws(EngineError) {
        pthread_mutex_lock(mutex)
        while pending[slot] > 0 { pthread_cond_wait(cond, mutex) }
        let f = failure
        pthread_mutex_unlock(mutex)
        if let f { throw .weightRead(f) }
    }

    func drain() {
        pthread_mutex_lock(mutex)
        while pending.contains(where: { $0 > 0 }) { pthread_cond_wait(cond, mutex) }
        stopping = true
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
        finished.wait()
    }

    deinit {
        drain()
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }
}
