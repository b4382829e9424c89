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
final class DecodeWorkers {
    private struct Job: @unchecked Sendable {
        // @unchecked: `base` is a ring slot the forward thread hands over until it waits for it.
        let decode: MemoryPlan.Decode
        let base: UnsafeMutableRawPointer
    }
    private let jobs: SlotWorkQueue<Job>
    let threadCount: Int

    /// `scratchBytes`: the largest tensor in byte planes among the blocks (0 if none).
    init(descriptor: Int32, path: String, fileSize: Int, slots: Int, jobsPerSlot: Int, scratchBytes: Int, threads: Int) {
        threadCount = threads
        jobs = SlotWorkQueue(slots: slots, jobsPerSlot: jobsPerSlot, threads: threads) {
            // One context and one scratch per thread, reused for every block it decodes (freed
            // with the runner when the thread ends).
            let worker = Worker(fd: descriptor, path: path, fileSize: fileSize, scratchBytes: scratchBytes)
            return { worker.run($0) }
        }
    }

    /// One thread's state.
    private final class Worker {
        let fd: Int32, path: String, fileSize: Int
        let coder = BlockCoder()
        let scratch: UnsafeMutableRawBufferPointer?

        init(fd: Int32, path: String, fileSize: Int, scratchBytes: Int) {
            self.fd = fd
            self.path = path
            self.fileSize = fileSize
            scratch = scratchBytes > 0 ? .allocate(byteCount: scratchBytes, alignment: 64) : nil
        }
        deinit { scratch?.deallocate() }

        /// One block: read, check, decode. Returns an error line, or nil.
        func run(_ job: Job) -> String? {
            let d = job.decode, e = d.block.entry
            let needed = max(0, min(d.read.length, fileSize - d.read.fileOffset))
            let done: Int
            do throws(SystemError) { done = try preadFully(fd, into: job.base + d.read.slotOffset, count: d.read.length, at: d.read.fileOffset, atLeast: needed, path: path) }
            catch { return error.description }
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
    }

    /// Queues `decodes` for the slot whose base is `base`.
    func start(_ decodes: [MemoryPlan.Decode], base: UnsafeMutableRawPointer, slot: Int) {
        guard !decodes.isEmpty else { return }
        jobs.start(decodes.lazy.map { Job(decode: $0, base: base) }, slot: slot)
    }

    /// Blocks until every block of `slot` is decoded.
    func wait(slot: Int) throws(EngineError) { try jobs.wait(slot: slot) }

    func drain() { jobs.drain() }
}
