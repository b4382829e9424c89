import FlexFormat
import FlexSystem

/// How the engine spends a memory cap: which matrix rows stay resident, which are streamed each
/// token and through how large a staging ring, and what the KV cache, buffers and runtime take.
///
/// A pure value: model geometry and budgets in, decision out; no I/O, testable without a model
/// (after mlx-swift-lm's `WiredSumPolicy`). It applies FlexInfer's two policies (DESIGN.md §3):
/// - *Balanced memory locking.* After the output head, the resident budget is split evenly over
///   the layers, so every layer streams the same number of bytes and the pipeline never starves
///   behind one fat layer.
/// - *Flexible tensor preservation.* Within a layer's share, the small attention matrices are kept
///   first (most saved read operations per byte), then prefixes of FFN matrices' rows; the rest of
///   each matrix is one contiguous suffix, read in one large request.
///
/// Every read is the 4 KiB-aligned superset of what is needed (O_DIRECT), and the plan counts
/// those aligned bytes, not the ideal ones, so its totals are what the process really holds.
public struct MemoryPlan: Sendable, Equatable {
    /// What the plan is made from.
    public struct Inputs: Sendable, Equatable {
        public var layout: ModelLayout
        /// Total bytes the engine may use.
        public var cap: Int
        public var kvCacheBytes: Int
        /// Activation buffers, logits, scratch.
        public var bufferBytes: Int
        /// Swift runtime, code, tokenizer tables, thread stacks (``MemoryEstimate/runtimeAllowance``).
        public var runtimeBytes: Int
        /// Staging slots: 2 lets layer i+1 load while layer i computes.
        public var ringSlots: Int = 2
        /// Which weights the budget keeps resident first when not everything fits.
        public var residency: Residency = .headFirst

        public init(layout: ModelLayout, cap: Int, kvCacheBytes: Int, bufferBytes: Int, runtimeBytes: Int, ringSlots: Int = 2,
                    residency: Residency = .headFirst) {
            self.layout = layout
            self.cap = cap
            self.kvCacheBytes = kvCacheBytes
            self.bufferBytes = bufferBytes
            self.runtimeBytes = runtimeBytes
            self.ringSlots = ringSlots
            self.residency = residency
        }

        /// Everything that does not depend on the resident/streamed split.
        public var fixedBytes: Int { kvCacheBytes + bufferBytes + runtimeBytes + layout.pinnedBytes + decodeScratchBytes }

        /// Working memory for compressed blocks: each decode worker's scratch for byte planes,
        /// and the load's staging (one 4 MiB chunk for zstd, which decodes straight into place;
        /// the whole payload for lz4). Counted for the largest block either could meet.
        public var decodeScratchBytes: Int {
            let streamable = layout.layers.flatMap(\.decoded)
            let all = streamable + layout.residentDecoded
            guard !all.isEmpty else { return 0 }
            let workers = min(2, layout.layers.map(\.decoded.count).max() ?? 0)
            let planes = streamable.map { BlockFile.planeScratchBytes($0.entry) }.max() ?? 0
            let load = all.map { b in
                (b.entry.codec == .zstd ? WeightStreamer.loadChunkBytes : Builder.span(b.payloadOffset, b.storedBytes))
                    + BlockFile.planeScratchBytes(b.entry)
            }.max()!
            return workers * planes + load
        }

        /// Compressed head or embedding blocks, resident whole whatever the cap.
        var forcedResidentBytes: Int { layout.residentDecoded.reduce(0) { $0 + Builder.roundUp($1.rawBytes) } }

        /// The smallest slot that can stream this model: the largest layer with nothing resident,
        /// or one head row (the head streams in chunks that fit a slot).
        var minimumSlotBytes: Int {
            let largest = layout.layers.map { layer in
                Builder.stage(.layer(0), layer.attention.map { ($0, 0, .attention) } + layer.ffn.map { ($0, 0, .ffn) },
                              decoding: layer.decoded).slotBytes
            }.max() ?? 0
            let headRow = layout.residentDecoded.isEmpty ? Builder.span(layout.head.fileOffset, layout.head.rowBytes) : 0
            return max(largest, headRow)
        }
    }

    /// A byte range of the file to read into a staging slot at `slotOffset` (all 4 KiB aligned).
    public struct Read: Sendable, Equatable {
        public let fileOffset: Int
        public let length: Int
        public let slotOffset: Int
        /// The block whose matrices the read serves (nil: the head). A pass that skips that block
        /// does not read it: reads never span two blocks, so a mask can drop them whole.
        public var block: BlockMask.Kind? = nil
    }

    /// The streamed rows `rows` of one matrix, found at `slotOffset` in its stage's slot.
    public struct Piece: Sendable, Equatable {
        public let tensor: String
        public let rows: Range<Int>
        public let slotOffset: Int
        public let bytes: Int
    }

    /// A compressed block streamed whole: `read` brings its payload into the slot (at
    /// `storedSlotOffset`), a decode worker checks and decodes it to `rawSlotOffset`, where the
    /// block's matrices are found.
    public struct Decode: Sendable, Equatable {
        public let block: DecodedBlock
        public let read: Read
        public let storedSlotOffset: Int
        public let rawSlotOffset: Int
    }

    /// What the forward pass streams at one point: one layer's tails, or a chunk of head rows.
    public struct Stage: Sendable, Equatable {
        public enum Kind: Sendable, Equatable, Hashable { case layer(Int), head(Range<Int>) }
        public let kind: Kind
        public let pieces: [Piece]
        public let reads: [Read]
        /// Compressed blocks read whole and decoded in the slot.
        public var decodes: [Decode] = []
        /// Aligned bytes read from disk for this stage (compressed payloads included).
        public var readBytes: Int { reads.reduce(0) { $0 + $1.length } + decodes.reduce(0) { $0 + $1.read.length } }
        /// The layer this stage serves (nil for head chunks).
        public var layer: Int? { if case .layer(let l) = kind { return l } else { return nil } }
        /// Bytes read for a pass that runs the blocks `running` names (``BlockSet``).
        func readBytes(running: Int) -> Int {
            reads.filter { BlockSet.includes(running, $0.block) }.reduce(0) { $0 + $1.length }
                + decodes.filter { BlockSet.includes(running, $0.block.kind) }.reduce(0) { $0 + $1.read.length }
        }
        /// Slot bytes the stage needs: its reads, the payloads, then the decoded blocks (4 KiB aligned).
        public var slotBytes: Int {
            Builder.roundUp(max(reads.map { $0.slotOffset + $0.length }.max() ?? 0,
                                decodes.map { $0.rawSlotOffset + $0.block.rawBytes }.max() ?? 0))
        }
    }

    /// A compressed block kept resident, decoded at load to `offset` in the resident buffer.
    public struct ResidentDecode: Sendable, Equatable {
        public let block: DecodedBlock
        public let offset: Int
    }

    /// The resident prefix of one matrix: rows `0..<rows`, at `offset` in the resident buffer
    /// (plus the file offset's distance from its 4 KiB boundary).
    public struct Resident: Sendable, Equatable {
        public let rows: Int
        public let offset: Int
        public let read: Read?
    }

    public let inputs: Inputs
    /// Resident prefix of every matrix, by tensor name (rows 0 means fully streamed).
    public let resident: [String: Resident]
    /// Compressed blocks decoded into the resident buffer at load.
    public let residentDecodes: [ResidentDecode]
    /// Bytes of the resident buffer (aligned spans of every resident prefix).
    public let residentBytes: Int
    /// Streamed stages in forward order; empty when everything is resident.
    public let stages: [Stage]
    /// Bytes of one staging slot (0 when nothing streams).
    public let slotBytes: Int
    public var ringSlots: Int { stages.isEmpty ? 0 : inputs.ringSlots }
    public var ringBytes: Int { ringSlots * slotBytes }

    /// Weight bytes the forward pass needs from disk per token (exact rows).
    public var streamedBytesPerToken: Int { stages.reduce(0) { $0 + $1.pieces.reduce(0) { $0 + $1.bytes } } }
    /// Bytes actually read per token (aligned supersets).
    public var readBytesPerToken: Int { stages.reduce(0) { $0 + $1.readBytes } }
    /// Bytes read by a pass that skips `mask`'s blocks: the streamer never reads a skipped block.
    public func readBytesPerPass(skipping mask: BlockMask) -> Int {
        stages.reduce(0) { $0 + $1.readBytes(running: BlockSet.running(mask, layer: $1.layer)) }
    }
    public var isFullyResident: Bool { stages.isEmpty }

    /// Everything that does not depend on the resident/streamed split.
    public var fixedBytes: Int { inputs.fixedBytes }
    /// The engine's whole planned footprint; never above the cap.
    public var totalBytes: Int { fixedBytes + residentBytes + ringBytes }

    /// The smallest cap at which this model streams at all with these KV, buffer and runtime
    /// budgets: nothing resident, a ring for the largest layer.
    /// When keeping everything resident takes less (a small model whose compressed blocks would
    /// stream through slots holding both their stored and decoded bytes), that is the minimum.
    public static func minimumCap(_ inputs: Inputs) -> Int {
        min(inputs.fixedBytes + Builder.allResident(inputs.layout).residentBytes,
            inputs.fixedBytes + inputs.forcedResidentBytes + inputs.ringSlots * inputs.minimumSlotBytes)
    }

    public enum PlanError: Error, Equatable, Sendable {
        /// The cap cannot hold KV, buffers, runtime and a minimal ring.
        case capTooSmall(minimum: Int)
    }

    /// Plans `inputs`. Throws with the minimum workable cap when even streaming cannot fit.
    public init(_ inputs: Inputs) throws(PlanError) {
        precondition(inputs.ringSlots >= 1)
        self.inputs = inputs
        let layout = inputs.layout
        let available = inputs.cap - inputs.fixedBytes

        // Everything fits: all resident, no ring.
        let all = Builder.allResident(layout)
        if all.residentBytes <= available {
            (resident, residentDecodes, residentBytes, stages, slotBytes) = (all.resident, all.decodes, all.residentBytes, [], 0)
            return
        }

        // Fixed point: the ring depends on what streams, which depends on the budget left after
        // the ring. Starting from the largest ring, each round can only shrink it, so every
        // round's plan fits and the last one is the best.
        var slot = inputs.minimumSlotBytes
        guard available >= inputs.forcedResidentBytes + inputs.ringSlots * slot else {
            throw .capTooSmall(minimum: MemoryPlan.minimumCap(inputs))
        }
        var best = Builder.assign(layout, budget: available - inputs.ringSlots * slot, slotLimit: slot, residency: inputs.residency)
        for _ in 0..<16 {
            let used = best.maxStageBytes
            if used >= slot { break }
            slot = used
            let next = Builder.assign(layout, budget: available - inputs.ringSlots * slot, slotLimit: slot, residency: inputs.residency)
            if next.maxStageBytes > slot { break }
            best = next
        }
        resident = best.resident
        residentDecodes = best.decodes
        residentBytes = best.residentBytes
        stages = best.stages
        slotBytes = best.maxStageBytes
    }

    /// Plans for a cap, or reports the minimum cap as an ``EngineError``.
    static func make(_ inputs: Inputs) throws(EngineError) -> MemoryPlan {
        do { return try MemoryPlan(inputs) } catch {
            guard case .capTooSmall(let minimum) = error else { fatalError() }
            // Weights here: compressed head/embedding blocks, which are resident whatever the cap.
            throw .memoryLimitTooSmall(limit: inputs.cap, minimum: minimum, fixed: MemoryEstimate(
                weights: inputs.forcedResidentBytes, kvCache: inputs.kvCacheBytes, buffers: inputs.bufferBytes + inputs.layout.pinnedBytes,
                runtime: inputs.runtimeBytes))
        }
    }
}

/// Which of a layer's two blocks a pass runs, as bits: what per-block reads are filtered by, in
/// the streamer, the plan's per-mask byte counts and the memory model's slot table.
enum BlockSet {
    static let attention = 1, ffn = 2, all = 3

    /// The blocks of `layer` that `mask` runs (everything for a head chunk, `layer` nil).
    static func running(_ mask: BlockMask, layer: Int?) -> Int {
        guard let l = layer else { return all }
        return (mask.skipsAttention(l) ? 0 : attention) | (mask.skipsFFN(l) ? 0 : ffn)
    }

    static func of(attention a: Bool, ffn f: Bool) -> Int { (a ? attention : 0) | (f ? ffn : 0) }

    /// Whether `set` needs a read of `block` (nil: the head, always).
    static func includes(_ set: Int, _ block: BlockMask.Kind?) -> Bool {
        guard let block else { return true }
        return set & (block == .attention ? attention : ffn) != 0
    }
}

/// The arithmetic behind ``MemoryPlan``, kept apart so the plan's fields stay declarative.
enum Builder {
    static let align = DirectFile.alignment

    /// Bytes of the aligned superset of [offset, offset + length).
    static func span(_ offset: Int, _ length: Int) -> Int {
        length == 0 ? 0 : roundUp(offset + length) - roundDown(offset)
    }
    static func roundDown(_ v: Int) -> Int { v / align * align }
    static func roundUp(_ v: Int) -> Int { (v + align - 1) / align * align }

    /// Most prefix rows of `t` whose aligned span fits in `budget`.
    static func rowsFitting(_ t: TensorExtent, budget: Int) -> Int {
        guard budget >= align else { return 0 }
        let end = roundDown(t.fileOffset) + roundDown(budget)
        return max(0, min(t.rows, (end - t.fileOffset) / t.rowBytes))
    }

    /// A stage streaming rows `from..<t.rows` of each listed matrix, with overlapping aligned
    /// reads merged so no byte is read twice, and the compressed blocks `decoding` read whole
    /// after them and decoded behind them in the slot.
    /// Each tail is tagged with its block; spans merge only within one block (a 4 KiB page two
    /// blocks share is read by each), so a pass that skips a block can leave its reads out.
    static func stage(_ kind: MemoryPlan.Stage.Kind, _ tails: [(TensorExtent, Int, BlockMask.Kind?)], decoding: [DecodedBlock] = []) -> MemoryPlan.Stage {
        var spans: [(start: Int, end: Int, block: BlockMask.Kind?)] = []
        for (t, from, block) in tails.sorted(by: { ($0.2?.rawValue ?? "", $0.0.fileOffset) < ($1.2?.rawValue ?? "", $1.0.fileOffset) })
            where from < t.rows {
            let a = t.fileOffset + from * t.rowBytes, b = t.fileOffset + t.bytes
            let s = roundDown(a), e = roundUp(b)
            if let last = spans.last, last.block == block, s <= last.end { spans[spans.count - 1].end = max(last.end, e) }
            else { spans.append((s, e, block)) }
        }
        var reads: [MemoryPlan.Read] = []
        var at = 0
        for sp in spans {
            reads.append(.init(fileOffset: sp.start, length: sp.end - sp.start, slotOffset: at, block: sp.block))
            at += sp.end - sp.start
        }
        var pieces: [MemoryPlan.Piece] = []
        for (t, from, block) in tails where from < t.rows {
            let a = t.fileOffset + from * t.rowBytes
            let r = reads.last { $0.block == block && $0.fileOffset <= a }!
            pieces.append(.init(tensor: t.name, rows: from..<t.rows, slotOffset: r.slotOffset + (a - r.fileOffset),
                                bytes: (t.rows - from) * t.rowBytes))
        }
        var payloads: [MemoryPlan.Read] = []
        for b in decoding {
            let length = span(b.payloadOffset, b.storedBytes)
            payloads.append(.init(fileOffset: roundDown(b.payloadOffset), length: length, slotOffset: at, block: b.kind))
            at += length
        }
        var decodes: [MemoryPlan.Decode] = []
        for (i, b) in decoding.enumerated() {
            let r = payloads[i]
            decodes.append(.init(block: b, read: r, storedSlotOffset: r.slotOffset + (b.payloadOffset - r.fileOffset), rawSlotOffset: at))
            for m in b.members {
                pieces.append(.init(tensor: m.tensor.name, rows: 0..<m.tensor.rows, slotOffset: at + m.rawOffset, bytes: m.tensor.bytes))
            }
            at += roundUp(b.rawBytes)
        }
        var s = MemoryPlan.Stage(kind: kind, pieces: pieces, reads: reads)
        s.decodes = decodes
        return s
    }

    /// Every matrix resident (the embedding too: its rows are then looked up in memory).
    static func allResident(_ layout: ModelLayout) -> Assignment {
        var all = assign(layout, budget: 1 << 56, slotLimit: 0)
        if let e = layout.embedding, all.resident[e.name] == nil { all.keep(e, rows: e.rows) }
        return all
    }

    struct Assignment {
        var resident: [String: MemoryPlan.Resident] = [:]
        var decodes: [MemoryPlan.ResidentDecode] = []
        var residentBytes = 0
        var stages: [MemoryPlan.Stage] = []
        var maxStageBytes: Int { stages.map(\.slotBytes).max() ?? 0 }

        /// Keeps a compressed block resident whole, decoded at load.
        mutating func keep(_ b: DecodedBlock) {
            decodes.append(.init(block: b, offset: residentBytes))
            for m in b.members { resident[m.tensor.name] = .init(rows: m.tensor.rows, offset: residentBytes + m.rawOffset, read: nil) }
            residentBytes += roundUp(b.rawBytes)
        }

        mutating func keep(_ t: TensorExtent, rows: Int) {
            let bytes = span(t.fileOffset, rows * t.rowBytes)
            let read = rows == 0 ? nil : MemoryPlan.Read(fileOffset: roundDown(t.fileOffset), length: bytes, slotOffset: residentBytes)
            resident[t.name] = .init(rows: rows, offset: residentBytes, read: read)
            residentBytes += bytes
        }
    }

    /// Spends `budget` bytes: the head first (read in full every token, and it also serves the
    /// token-embedding lookup when tied), then an equal share per layer, attention matrices
    /// smallest first, then FFN row prefixes; or, `.layersFirst`, the layers' stored matrices
    /// first and the head with what they leave. Streamed head rows are cut into slot-sized chunks.
    static func assign(_ layout: ModelLayout, budget: Int, slotLimit: Int, residency: Residency = .headFirst) -> Assignment {
        var a = Assignment()
        var left = max(0, budget)
        for b in layout.residentDecoded {
            a.keep(b)
            left -= roundUp(b.rawBytes)
        }
        let head = layout.head
        let headDecoded = layout.residentDecoded.contains { $0.members.contains { $0.tensor.name == head.name } }
        let headBudget: Int
        switch residency {
        case .headFirst: headBudget = left
        case .layersFirst: headBudget = max(0, left - layout.layers.reduce(0) { sum, l in l.tensors.reduce(sum) { $0 + span($1.fileOffset, $1.bytes) } })
        }
        let headRows = headDecoded ? head.rows : rowsFitting(head, budget: headBudget)
        if !headDecoded {
            a.keep(head, rows: headRows)
            left -= span(head.fileOffset, headRows * head.rowBytes)
        }

        // Stored matrices first: per budget byte, a resident row saves a byte of reading, a
        // resident compressed block only 1/ratio of one. Each layer gets an equal share.
        let share = layout.layers.isEmpty ? 0 : left / layout.layers.count
        var tails: [[(TensorExtent, Int, BlockMask.Kind?)]] = []
        var spare = left - share * layout.layers.count
        for layer in layout.layers {
            var mine = share
            var t: [(TensorExtent, Int, BlockMask.Kind?)] = []
            let order = layer.attention.sorted { $0.bytes < $1.bytes }.map { ($0, BlockMask.Kind.attention) } + layer.ffn.map { ($0, .ffn) }
            for (m, block) in order {
                let rows = rowsFitting(m, budget: mine)
                a.keep(m, rows: rows)
                mine -= span(m.fileOffset, rows * m.rowBytes)
                t.append((m, rows, block))
            }
            tails.append(t)
            spare += mine
        }
        // Compressed blocks are all or nothing: what the shares left over keeps whole blocks
        // resident, smallest first (attention before FFN), in layer order.
        var streamed = layout.layers.map { _ in [DecodedBlock]() }
        let blocks = layout.layers.enumerated().flatMap { l, layer in layer.decoded.map { (l, $0) } }
        for (l, b) in blocks.sorted(by: { ($0.1.rawBytes, $0.0) < ($1.1.rawBytes, $1.0) }) {
            if roundUp(b.rawBytes) <= spare {
                a.keep(b)
                spare -= roundUp(b.rawBytes)
            } else {
                streamed[l].append(b)
            }
        }
        for l in layout.layers.indices {
            let s = stage(.layer(l), tails[l], decoding: streamed[l].sorted { $0.payloadOffset < $1.payloadOffset })
            if !s.reads.isEmpty || !s.decodes.isEmpty { a.stages.append(s) }
        }

        if headRows < head.rows {
            // Rows per chunk such that the chunk's aligned span fits the slot.
            let perChunk = max(1, (max(slotLimit, 2 * align) - 2 * align) / head.rowBytes)
            var r = headRows
            while r < head.rows {
                let end = min(head.rows, r + perChunk)
                let t = TensorExtent(name: head.name, fileOffset: head.fileOffset, rows: end, rowBytes: head.rowBytes)
                a.stages.append(stage(.head(r..<end), [(t, r, nil)]))
                r = end
            }
        }
        return a
    }
}

/// Which weights a memory plan keeps resident first when the cap cannot hold them all. Every
/// weight byte not resident is read once per token either way, so the bytes read are the same;
/// what differs is where the reads fall in the pass (the head at its end, layers spread through
/// it) and how fast the kernels that meet them run. docs/GEMMA.md has the measurement behind the
/// default.
public enum Residency: String, Sendable, Equatable, CaseIterable {
    /// The output head (and the embedding it serves when tied) first, then an equal share per layer.
    case headFirst = "head-first"
    /// The layers' matrices first, the head with what is left.
    case layersFirst = "layers-first"
}
