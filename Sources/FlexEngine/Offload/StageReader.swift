import FlexSystem
import Foundation

/// One disk read into the staging ring: aligned offset and length, and how many of those bytes
/// must arrive (less only for a read that runs past the end of the file).
struct ReadChunk: Sendable {
    let fileOffset: Int
    let bufferOffset: Int
    let length: Int
    let needed: Int

    /// Splits `read` into chunks of at most `maxChunk` bytes, at offsets relative to the start of
    /// a slot (the reader adds the slot's base when it issues them).
    static func split(_ read: MemoryPlan.Read, fileSize: Int, maxChunk: Int) -> [ReadChunk] {
        var out: [ReadChunk] = []
        var done = 0
        while done < read.length {
            let n = min(maxChunk, read.length - done)
            let off = read.fileOffset + done
            out.append(ReadChunk(fileOffset: off, bufferOffset: read.slotOffset + done, length: n,
                                 needed: max(0, min(n, fileSize - off))))
            done += n
        }
        return out
    }
}

/// The seam between the weight streamer and the kernel: start a slot's reads, wait for them.
///
/// Two implementations: io_uring (the fast path) and a pread thread pair for kernels or sandboxes
/// that refuse io_uring. Both are driven by the one thread that runs the forward pass.
protocol StageReader: AnyObject {
    /// "io_uring" or "pread (reason)", for stats.
    var description: String { get }
    /// Queues `chunks` (buffer offsets shifted by `shift`, the slot's base) for `slot` and hands
    /// them to the disk. Takes the stage's stored chunk list as is, so issuing allocates nothing.
    func start(_ chunks: [ReadChunk], shift: Int, slot: Int) throws(EngineError)
    /// Blocks until every read of `slot` has landed.
    func wait(slot: Int) throws(EngineError)
    /// Waits for every outstanding read, so buffers can be released.
    func drain()
}

/// Reads through an io_uring: one submission per stage, completions reaped by the forward thread.
final class URingReader: StageReader {
    private let ring: ReadRing
    private var pending: [Int]
    let description = "io_uring"

    init(file: borrowing DirectFile, buffer: UnsafeMutableRawPointer, length: Int, slots: Int, chunksPerSlot: Int) throws(SystemError) {
        var entries = 16
        while entries < min(4096, slots * chunksPerSlot) { entries *= 2 }
        ring = try ReadRing(entries: entries, file: file, buffer: buffer, length: length)
        pending = [Int](repeating: 0, count: slots)
    }

    func start(_ chunks: [ReadChunk], shift: Int, slot: Int) throws(EngineError) {
        do {
            for c in chunks {
                // The tag carries the slot and the bytes that must arrive, so a completion needs no lookup.
                let tag = UInt64(slot) << 32 | UInt64(c.needed)
                while !ring.push(fileOffset: c.fileOffset, bufferOffset: c.bufferOffset + shift, length: c.length, tag: tag) {
                    try ring.submit()
                }
                pending[slot] += 1
            }
            try ring.submit()
        } catch {
            throw .weightRead(error.description)
        }
    }

    func wait(slot: Int) throws(EngineError) {
        while pending[slot] > 0 {
            let done: (tag: UInt64, result: Int32)
            do { done = try ring.waitCompletion() } catch { throw .weightRead(error.description) }
            let s = Int(done.tag >> 32), needed = Int(done.tag & 0xffff_ffff)
            pending[s] -= 1
            if done.result < 0 { throw .weightRead(SystemError(code: -done.result, call: "io_uring read").description) }
            if Int(done.result) < needed { throw .weightRead("short read: \(done.result) of \(needed) bytes (was the model file truncated?)") }
        }
    }

    func drain() {
        for s in pending.indices { try? wait(slot: s) }
    }
}

/// Reads with pread on two worker threads: the fallback when io_uring is unavailable. Two
/// threads give queue depth 2, which is what this path can offer without io_uring.
final class PreadReader: StageReader, @unchecked Sendable {
    // @unchecked Sendable: every mutable field is guarded by `mutex`.
    let description: String
    private let fd: Int32
    private let buffer: UnsafeMutableRawPointer
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [(ReadChunk, Int)] = []
    private var head = 0
    private var pending: [Int]
    private var failure: String?
    private var stopping = false
    private var threads: [Thread] = []
    private let finished = DispatchGroup()

    init(descriptor: Int32, buffer: UnsafeMutableRawPointer, slots: Int, chunksPerSlot: Int, reason: String, workers: Int = 2) {
        fd = descriptor
        self.buffer = buffer
        description = "pread (\(reason))"
        pending = [Int](repeating: 0, count: slots)
        queue.reserveCapacity(slots * chunksPerSlot + 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
        for _ in 0..<workers {
            finished.enter()
            let t = Thread { [self] in work(); finished.leave() }
            t.stackSize = 1 << 18
            threads.append(t)
            t.start()
        }
    }

    private func work() {
        pthread_mutex_lock(mutex)
        while true {
            while head == queue.count && !stopping { pthread_cond_wait(cond, mutex) }
            if head == queue.count && stopping { break }
            let (c, slot) = queue[head]
            head += 1
            if head == queue.count { queue.removeAll(keepingCapacity: true); head = 0 }
            pthread_mutex_unlock(mutex)
            var done = 0, error: Int32 = 0
            while done < c.needed {
                let n = pread(fd, buffer + c.bufferOffset + done, c.length - done, off_t(c.fileOffset + done))
                if n < 0 { if errno == EINTR { continue }; error = errno; break }
                if n == 0 { break }
                done += n
            }
            pthread_mutex_lock(mutex)
            if error != 0 { failure = failure ?? SystemError(code: error, call: "pread").description }
            else if done < c.needed { failure = failure ?? "short read: \(done) of \(c.needed) bytes (was the model file truncated?)" }
            pending[slot] -= 1
            pthread_cond_broadcast(cond)
        }
        pthread_mutex_unlock(mutex)
    }

    func start(_ chunks: [ReadChunk], shift: Int, slot: Int) throws(EngineError) {
        pthread_mutex_lock(mutex)
        for c in chunks {
            queue.append((ReadChunk(fileOffset: c.fileOffset, bufferOffset: c.bufferOffset + shift, length: c.length, needed: c.needed), slot))
        }
        pending[slot] += chunks.count
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }

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
