import FlexFormat
import Glibc
import FlexKernels
import FlexSystem

/// How the streamer reaches the disk. `.auto` tries io_uring and falls back to pread.
public enum ReadBackend: String, Sendable, CaseIterable { case auto, uring, pread }

/// Running totals of the offload runtime, read by the stats before and after a generation.
public struct StreamCounters: Sendable, Equatable {
    /// Weight bytes read from disk since open (resident load excluded).
    public var bytesRead = 0
    /// Time the forward pass spent blocked on reads that had not landed yet.
    public var stallSeconds = 0.0
}

/// Owns a model's weights under a ``MemoryPlan``: the resident set, loaded once and locked, and
/// the staging ring through which every other weight byte is streamed, one stage ahead of the
/// forward pass ("asynchronous prefetching", FlexInfer).
///
/// Stages run in a fixed cycle (layers, then head chunks, then the next token's layers), so the
/// streamer always knows what comes next: after stage *s* is released, stage *s + slots* is read
/// into the freed slot while the forward pass computes *s + 1*. Only the forward thread calls in.
final class WeightStreamer: WeightSource {
    let plan: MemoryPlan
    private let file: DirectFile
    private let residentBuffer: PinnedBuffer
    private let ringBuffer: PinnedBuffer
    private let rowBuffer: PinnedBuffer
    private let reader: (any StageReader)?
    /// Workers that read and decode compressed blocks (nil when no stage has any).
    private let decoders: DecodeWorkers?
    /// Chunks of every stage, slot-relative to slot 0 (offset by the slot's base at issue), by
    /// variant: which of the layer's blocks a pass runs (``BlockSet``).
    private let chunks: [[[ReadChunk]]]
    /// Compressed blocks of every stage, by variant.
    private let decodes: [[[MemoryPlan.Decode]]]
    /// Bytes each stage reads, by variant.
    private let variantBytes: [[Int]]
    /// Variant each slot's reads were issued with.
    private var issuedVariant: [Int]
    /// Blocks the passes from now on skip: stages are issued without their reads.
    private var scheduled = BlockMask.none
    private let slotStride: Int
    /// Stage index of each layer (nil when the layer streams nothing).
    private let stageOfLayer: [Int?]
    /// Head chunk stages: row range and stage index.
    let headChunks: [(rows: Range<Int>, stage: Int)]
    private let templates: [LayerTemplate]
    /// Resident rows of the head (and, tied, of the token embedding).
    let head: QuantMatrix
    private let embedding: QuantMatrix?
    private let embeddingExtent: TensorExtent?
    private let headExtent: TensorExtent
    private var issued = 0, released = 0
    private var failure: EngineError?
    private(set) var counters = StreamCounters()
    let lockedBytes: Int
    let lockRefusal: SystemError?
    let readerDescription: String
    let loadSeconds: Double
    /// Whether the model file is read with O_DIRECT (``DirectFile/isDirect``).
    var directIO: Bool { file.isDirect }

    /// Opens `path` for direct reads, loads the resident set and primes the ring.
    /// `interleave` rearranges the resident rows of Q4_1/Q8_0 matrices into x8 groups in place
    /// (``Interleave``): the kernels are faster on them and give the same results.
    /// `fault` puts a ``FaultInjectingReader`` in front of the reader (tests).
    init(plan: MemoryPlan, weights: ModelWeights, backend: ReadBackend, locker: MemoryLocker?, interleave: Bool = true,
         fault: ReadFault? = nil) throws(EngineError) {
        let start = Platform.now()
        self.plan = plan
        let path = weights.file.path
        do {
            file = try DirectFile(path: path)
            residentBuffer = try PinnedBuffer(count: plan.residentBytes, lock: locker)
            ringBuffer = try PinnedBuffer(count: max(1, plan.ringBytes), lock: plan.ringBytes > 0 ? locker : nil)
            rowBuffer = try PinnedBuffer(count: 3 * DirectFile.alignment + weights.tokenEmbedding.rowBytes)
        } catch {
            throw .weightRead(error.description)
        }
        // A re-plan opens the file again: one truncated since the model was opened would read
        // as zeros past its new end (every read is clipped to the file's size) and give garbage.
        guard file.size >= weights.file.diskSize else {
            throw .weightRead("short read: \(path) is \(file.size) bytes but was \(weights.file.diskSize) when the model was opened (was the model file truncated?)")
        }
        lockedBytes = residentBuffer.lockedBytes + ringBuffer.lockedBytes
        lockRefusal = locker?.refusal

        // The resident set: one aligned read per matrix prefix, straight into its place.
        let base = residentBuffer.base
        for (name, r) in plan.resident {
            guard let read = r.read else { continue }
            let got: Int
            do { got = try file.read(into: base + read.slotOffset, count: read.length, at: read.fileOffset) } catch {
                throw .weightRead(error.description)
            }
            guard got >= min(read.length, file.size - read.fileOffset) else {
                throw .weightRead("\(path): short read of \(name) (was the file truncated?)")
            }
        }
        // Compressed blocks kept resident: read, checked and decoded into place, once. zstd
        // blocks are read in 4 MiB chunks and decoded as they arrive, so a compressed embedding
        // never needs a staging copy of itself (the plan reserves one chunk).
        if !plan.residentDecodes.isEmpty {
            try Self.loadDecoded(plan.residentDecodes, file: file, into: base)
        }
        weights.file.releaseMappedPages()
        file.dropCachedPages()

        // Views: resident prefix pointers now, slot tails filled in per acquire. The plan names
        // tensors; the mapping's views are found by their start in the file.
        func place(_ m: QuantMatrix) -> (pointer: UnsafeMutableRawPointer, rows: Int, name: String) {
            let name = weights.file.tensorName(at: m.data) ?? ""
            let off = weights.file.fileOffset(of: m.data) ?? 0   // on disk: the plan's layout checked it
            guard let r = plan.resident[name] else { return (base, 0, name) }
            return (base + r.offset + (off - Builder.roundDown(off)), r.rows, name)
        }
        // Resident rows of Q4_1/Q8_0 matrices become x8 groups, once, in place.
        var interleavedRows: [String: Int] = [:]
        if interleave {
            let all = [weights.output] + (weights.tiedOutput ? [] : [weights.tokenEmbedding]) + weights.layers.flatMap(\.matrices)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(1, all.map { Interleave.scratchBytes($0.type, cols: $0.cols) }.max() ?? 0),
                                                           alignment: 64)
            defer { scratch.deallocate() }
            for m in all {
                let p = place(m), n = Interleave.rows(m.type, p.rows)
                guard n > 0, interleavedRows[p.name] == nil else { continue }
                Interleave.inPlace(m.type, p.pointer, rows: n, cols: m.cols, scratch: scratch)
                interleavedRows[p.name] = n
            }
        }
        func resident(_ m: QuantMatrix) -> (pointer: UnsafeRawPointer, rows: Int, name: String, interleaved: Int) {
            let p = place(m)
            return (UnsafeRawPointer(p.pointer), p.rows, p.name, interleavedRows[p.name] ?? 0)
        }
        var stageOfLayer = [Int?](repeating: nil, count: weights.config.layerCount)
        var headChunks: [(Range<Int>, Int)] = []
        for (i, s) in plan.stages.enumerated() {
            switch s.kind {
            case .layer(let l): stageOfLayer[l] = i
            case .head(let rows): headChunks.append((rows, i))
            }
        }
        self.stageOfLayer = stageOfLayer
        self.headChunks = headChunks.map { (rows: $0.0, stage: $0.1) }
        templates = weights.layers.enumerated().map { l, lw in
            let pieces = stageOfLayer[l].map { plan.stages[$0].pieces } ?? []
            return LayerTemplate(weights: lw, resident: resident,
                                 slotOffsets: Dictionary(uniqueKeysWithValues: pieces.map { ($0.tensor, $0.slotOffset) }))
        }
        let h = resident(weights.output)
        head = QuantMatrix(type: weights.output.type, data: h.pointer, rows: h.rows, cols: weights.output.cols).interleaved(rows: h.interleaved)
        headExtent = TensorExtent(name: "", fileOffset: weights.file.fileOffset(of: weights.output.data) ?? 0, rows: weights.output.rows,
                                  rowBytes: weights.output.rowBytes)
        if weights.tiedOutput {
            embedding = nil
            embeddingExtent = nil
        } else {
            let e = resident(weights.tokenEmbedding)
            embedding = QuantMatrix(type: weights.tokenEmbedding.type, data: e.pointer, rows: e.rows, cols: weights.tokenEmbedding.cols)
                .interleaved(rows: e.interleaved)
            embeddingExtent = TensorExtent(name: "", fileOffset: weights.file.fileOffset(of: weights.tokenEmbedding.data) ?? 0,
                                           rows: weights.tokenEmbedding.rows, rowBytes: weights.tokenEmbedding.rowBytes)
        }

        // The ring: slots of the plan's size, each stage's reads cut into 256 KiB chunks (enough
        // requests in flight to reach the disk's bandwidth, few enough to submit cheaply).
        slotStride = plan.slotBytes
        let fileSize = file.size
        chunks = plan.stages.map { s in
            (0..<4).map { v in
                s.reads.filter { BlockSet.includes(v, $0.block) }.flatMap { ReadChunk.split($0, fileSize: fileSize, maxChunk: WeightStreamer.chunkBytes) }
            }
        }
        decodes = plan.stages.map { s in (0..<4).map { v in s.decodes.filter { BlockSet.includes(v, $0.block.kind) } } }
        variantBytes = plan.stages.map { s in (0..<4).map { s.readBytes(running: $0) } }
        issuedVariant = Array(repeating: BlockSet.all, count: max(1, plan.ringSlots))
        let perSlot = max(1, chunks.map { $0[BlockSet.all].count }.max() ?? 1)
        let slots = max(1, plan.ringSlots)
        var reason = "asked for"
        var chosen: (any StageReader)?
        if backend != .pread, !plan.stages.isEmpty {
            do {
                chosen = try URingReader(file: file, buffer: ringBuffer.base, length: ringBuffer.count, slots: slots, chunksPerSlot: perSlot)
            } catch {
                if backend == .uring { throw .weightRead("io_uring refused: \(error)") }
                reason = "io_uring refused: \(String(cString: strerror(error.code)))"
            }
        }
        if chosen == nil && !plan.stages.isEmpty {
            chosen = PreadReader(descriptor: file.descriptor, buffer: ringBuffer.base, slots: slots, chunksPerSlot: perSlot, reason: reason)
        }
        if let r = chosen, let fault { reader = FaultInjectingReader(r, fault: fault, path: path) } else { reader = chosen }
        let perStage = plan.stages.map(\.decodes.count).max() ?? 0
        if perStage > 0 {
            let planes = plan.stages.flatMap(\.decodes).map { BlockFile.planeScratchBytes($0.block.entry) }.max() ?? 0
            decoders = DecodeWorkers(descriptor: file.descriptor, path: path, fileSize: fileSize, slots: slots, jobsPerSlot: perStage,
                                     scratchBytes: planes, threads: min(2, perStage))
        } else {
            decoders = nil
        }
        readerDescription = (chosen?.description ?? "none (fully resident)")
            + (decoders.map { ", compressed blocks decoded on \($0.threadCount) worker\($0.threadCount == 1 ? "" : "s")" } ?? "")
        loadSeconds = Platform.now() - start
        if !plan.stages.isEmpty { try issueAhead() }
    }

    deinit {
        reader?.drain()
        decoders?.drain()
    }

    /// Chunk of the load's streaming decode (and what the plan reserves for it).
    static let loadChunkBytes = 4 << 20

    private static func loadDecoded(_ blocks: [MemoryPlan.ResidentDecode], file: borrowing DirectFile,
                                    into base: UnsafeMutableRawPointer) throws(EngineError) {
        let path = file.path
        let whole = blocks.filter { $0.block.entry.codec != .zstd }.map { Builder.span($0.block.payloadOffset, $0.block.storedBytes) }.max() ?? 0
        let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: max(whole, loadChunkBytes), alignment: DirectFile.alignment)
        let planes = blocks.map { BlockFile.planeScratchBytes($0.block.entry) }.max() ?? 0
        let scratch = planes > 0 ? UnsafeMutableRawBufferPointer.allocate(byteCount: planes, alignment: 64) : nil
        defer { staging.deallocate(); scratch?.deallocate() }
        let coder = BlockCoder()
        for r in blocks {
            let e = r.block.entry, start = Builder.roundDown(e.payloadOffset), end = e.payloadOffset + e.storedSize
            let raw = UnsafeMutableRawBufferPointer(start: base + r.offset, count: e.rawSize)
            var failure: SystemError?
            var hash = XXHash64.Stream()
            var at = start, got = 0
            /// The next piece of the payload: an aligned O_DIRECT read, trimmed to the payload.
            func next(_ into: UnsafeMutableRawBufferPointer) -> (offset: Int, count: Int) {
                guard at < end, failure == nil else { return (0, 0) }
                let want = min(into.count, Builder.roundUp(end) - at)
                let n: Int
                do { n = try file.read(into: into.baseAddress!, count: want, at: at) } catch { failure = error; return (0, 0) }
                let lo = max(at, e.payloadOffset) - at, hi = min(at + n, end) - at
                at += n
                guard n > 0, hi > lo else { return (0, 0) }
                got += hi - lo
                hash.update(UnsafeRawBufferPointer(rebasing: into[lo..<hi]))
                return (lo, hi - lo)
            }
            var ok: Bool
            if e.codec == .zstd {
                ok = coder.decompressZstdStream(into: raw, chunk: staging) { chunk in
                    let (lo, n) = next(chunk)
                    // The decoder reads from the chunk's start: move the payload's bytes there.
                    if lo > 0 && n > 0 { chunk.baseAddress!.copyMemory(from: chunk.baseAddress! + lo, byteCount: n) }
                    return n
                }
                // A decode that stopped early still hashes the rest, so damage is reported as such.
                while next(staging).count > 0 {}
            } else {
                var filled = 0
                while true {
                    let (lo, n) = next(UnsafeMutableRawBufferPointer(rebasing: staging[filled...]))
                    guard n > 0 else { break }
                    if lo > 0 { (staging.baseAddress! + filled).copyMemory(from: staging.baseAddress! + filled + lo, byteCount: n) }
                    filled += n
                }
                ok = failure == nil && filled == e.storedSize
                    && coder.decompress(UnsafeRawBufferPointer(rebasing: staging[0..<e.storedSize]), codec: e.codec, into: raw)
            }
            if let failure { throw .weightRead(failure.description) }
            guard got == e.storedSize else {
                throw .weightRead(BlockFileError.truncated(path, what: "block \(e.name)", needed: end, size: e.payloadOffset + got).description)
            }
            guard hash.digest() == e.checksum else {
                throw .weightRead(BlockFileError.checksum(path, block: e.name, offset: e.payloadOffset).description)
            }
            guard ok, BlockFile.joinPlanes(e, raw, scratch: scratch) else {
                throw .weightRead(BlockFileError.decode(path, block: e.name, codec: e.codec.description).description)
            }
        }
    }

    /// Largest single read. Smaller requests put more of a stage in flight at once, which is what
    /// the disk needs to reach its bandwidth (see docs/BENCHMARKS.md for the sweep that chose it).
    static let chunkBytes: Int = {
        if let s = getenv("FLEXRUN_CHUNK_KIB"), let v = Int(String(cString: s)), v >= 4 { return v << 10 }
        return 256 << 10
    }()

    var streams: Bool { !plan.stages.isEmpty }

    func schedule(_ mask: BlockMask) { scheduled = mask }

    /// Starts `stage`'s reads of variant `v` into `slot`.
    private func issue(_ stage: Int, variant v: Int, slot: Int) throws(EngineError) {
        try reader!.start(chunks[stage][v], shift: slot * slotStride, slot: slot)
        decoders?.start(decodes[stage][v], base: ringBuffer.base + slot * slotStride, slot: slot)
        counters.bytesRead += variantBytes[stage][v]
    }

    /// Reads stages until `slots` are in flight or ready beyond the last released one, each
    /// without the blocks the scheduled mask skips.
    private func issueAhead() throws(EngineError) {
        let n = plan.stages.count, k = plan.ringSlots
        while issued < released + k {
            let stage = issued % n, slot = issued % k
            let v = BlockSet.running(scheduled, layer: plan.stages[stage].layer)
            try issue(stage, variant: v, slot: slot)
            issuedVariant[slot] = v
            issued += 1
        }
    }

    /// Waits for `stage` (which must be the next in the cycle) and returns its slot's base. When
    /// the slot was issued before the pass's mask was known and lacks blocks the pass runs
    /// (`needs`), their reads are made now, into the same slot.
    private func acquire(_ stage: Int, needs: Int = BlockSet.all) throws(EngineError) -> UnsafeRawPointer {
        if let failure { throw failure }
        precondition(released % plan.stages.count == stage, "stages must be visited in order")
        let slot = released % plan.ringSlots
        let t0 = Platform.now()
        do {
            try reader!.wait(slot: slot)
            try decoders?.wait(slot: slot)
            let missing = needs & ~issuedVariant[slot]
            if missing != 0 {
                try issue(stage, variant: missing, slot: slot)
                issuedVariant[slot] |= missing
                try reader!.wait(slot: slot)
                try decoders?.wait(slot: slot)
            }
        } catch { failure = error; throw error }
        counters.stallSeconds += Platform.now() - t0
        return UnsafeRawPointer(ringBuffer.base + slot * slotStride)
    }

    /// Frees the oldest slot and starts the read that reuses it.
    private func release() throws(EngineError) {
        released += 1
        do { try issueAhead() } catch { failure = error; throw error }
    }

    /// Layer `l`'s weights, once the streamed rows of the blocks the pass runs have landed (a
    /// skipped block's streamed rows are not read: its views must not be used). Call
    /// ``finishLayer(_:)`` after use.
    func layer(_ l: Int, attention: Bool, ffn: Bool) throws(EngineError) -> LayerWeights {
        guard let s = stageOfLayer[l] else { return templates[l].weights(slot: nil) }
        return templates[l].weights(slot: try acquire(s, needs: BlockSet.of(attention: attention, ffn: ffn)))
    }

    func finishLayer(_ l: Int) throws(EngineError) {
        if stageOfLayer[l] != nil { try release() }
    }

    var residentHead: QuantMatrix { head }
    var headChunkCount: Int { headChunks.count }

    /// Streamed head rows of chunk `i` as a matrix (rows `headChunks[i].rows` of the head).
    func headChunk(_ i: Int) throws(EngineError) -> (rows: Range<Int>, matrix: QuantMatrix) {
        let c = headChunks[i]
        let base = try acquire(c.stage)
        let piece = plan.stages[c.stage].pieces[0]
        return (c.rows, QuantMatrix(type: head.type, data: base + piece.slotOffset, rows: c.rows.count, cols: head.cols))
    }



    func finishHeadChunk() throws(EngineError) { try release() }

    /// Dequantizes the embedding row of `token`: from the resident rows when there, else read
    /// from disk (one aligned read, a few KiB; counted in ``counters``).
    func embeddingRow(_ token: Int, into dst: UnsafeMutablePointer<Float>) throws(EngineError) {
        let m = embedding ?? head
        if token < m.rows { m.dequantizeRow(token, into: dst); return }
        let e = embeddingExtent ?? headExtent
        let at = e.fileOffset + token * e.rowBytes
        let start = Builder.roundDown(at), length = Builder.roundUp(at + e.rowBytes) - start
        do throws(SystemError) {
            let got = try file.read(into: rowBuffer.base, count: length, at: start)
            guard got >= at + e.rowBytes - start else { throw SystemError(code: EIO, call: "pread", path: file.path) }
        } catch {
            throw .weightRead(error.description)
        }
        counters.bytesRead += length
        FastDequantize.row(m.type, UnsafeRawPointer(rowBuffer.base + (at - start)), dst, count: m.cols)
    }
}

/// One layer's matrices as resident prefix + slot offset of the streamed tail, so a layer's
/// ``LayerWeights`` is rebuilt per acquire without lookups or allocation.
struct LayerTemplate {
    struct Matrix {
        let type: GGMLType, rows: Int, cols: Int
        let head: UnsafeRawPointer, splitRow: Int
        let tailOffset: Int?   // nil: fully resident (or skipped)
        let interleavedRows: Int

        func view(_ slot: UnsafeRawPointer?) -> QuantMatrix {
            if let tailOffset, let slot {
                return QuantMatrix(type: type, head: head, splitRow: splitRow, tail: slot + tailOffset, rows: rows, cols: cols,
                                   interleavedRows: interleavedRows)
            }
            return QuantMatrix(type: type, head: head, splitRow: rows, tail: head + rows * type.rowBytes(elements: cols)!, rows: rows,
                               cols: cols, interleavedRows: interleavedRows)
        }
    }
    let base: LayerWeights
    /// In the order of `LayerWeights.matrices`.
    let matrices: [Matrix]

    init(weights lw: LayerWeights, resident: (QuantMatrix) -> (pointer: UnsafeRawPointer, rows: Int, name: String, interleaved: Int),
         slotOffsets: [String: Int]) {
        func matrix(_ m: QuantMatrix) -> Matrix {
            let r = resident(m)
            return Matrix(type: m.type, rows: m.rows, cols: m.cols, head: r.pointer, splitRow: r.rows, tailOffset: slotOffsets[r.name],
                          interleavedRows: r.interleaved)
        }
        base = lw
        matrices = lw.matrices.map(matrix)
    }

    func weights(slot: UnsafeRawPointer?) -> LayerWeights {
        base.replacingMatrices { i, _ in matrices[i].view(slot) }
    }
}
