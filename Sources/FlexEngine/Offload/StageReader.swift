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
final class PreadReader: StageReader {
    let description: String
    private let jobs: SlotWorkQueue<ReadChunk>

    init(descriptor: Int32, buffer: UnsafeMutableRawPointer, slots: Int, chunksPerSlot: Int, reason: String, workers: Int = 2) {
        description = "pread (\(reason))"
        let fd = descriptor, base = UInt(bitPattern: buffer)
        jobs = SlotWorkQueue(slots: slots, jobsPerSlot: chunksPerSlot, threads: workers) {
            { c in
                let buffer = UnsafeMutableRawPointer(bitPattern: base)!
                let done: Int
                do throws(SystemError) { done = try preadFully(fd, into: buffer + c.bufferOffset, count: c.length, at: c.fileOffset, atLeast: c.needed) }
                catch { return error.description }
                return done < c.needed ? "short read: \(done) of \(c.needed) bytes (was the model file truncated?)" : nil
            }
        }
    }

    func start(_ chunks: [ReadChunk], shift: Int, slot: Int) throws(EngineError) {
        jobs.start(chunks.lazy.map { ReadChunk(fileOffset: $0.fileOffset, bufferOffset: $0.bufferOffset + shift, length: $0.length, needed: $0.needed) },
                   slot: slot)
    }

    func wait(slot: Int) throws(EngineError) { try jobs.wait(slot: slot) }

    func drain() { jobs.drain() }
}
