/// RAP's memory model (DESIGN.md §3) on this engine's planner: for a keep-mask and a KV load,
/// what the engine needs, keeping every kept weight resident (RAP's own setting) or streaming
/// what does not fit (FlexRun's dimension).
///
/// A pure value: the dense model's layout and the budgets that do not depend on the mask in; a
/// byte count per mask out, with no I/O, so the pruning policies can be tried and tested without
/// a model. Dropping an attention block drops its weights and its KV pages; dropping an FFN block
/// its weights only, which is why attention goes first when the KV cache dominates.
public struct MemoryModel: Sendable, Equatable {
    /// The dense model's layout (no block skipped).
    public let layout: ModelLayout
    /// Bytes of one KV position in one attention layer (f16 keys and values).
    public let kvBytesPerTokenPerLayer: Int
    /// KV positions the session reserves per kept attention layer (its pool: pages × 16).
    public private(set) var kvTokens: Int
    public let bufferBytes: Int
    public let runtimeBytes: Int
    public let ringSlots: Int
    public let residency: Residency
    /// Per layer, the KV positions a sliding-window layer's ring holds over all slots, whatever
    /// the load (nil: the layer holds ``kvTokens``). Empty: no windowed layers.
    public let windowedTokens: [Int?]
    /// Per-block byte counts, so a mask's minimum is O(layers) arithmetic with no allocation
    /// (a policy tries many masks per decision); nil when the layout has compressed blocks,
    /// whose scratch and all-or-nothing residency only the planner itself accounts.
    private let table: Table?

    struct Table: Sendable, Equatable {
        /// Aligned resident bytes of the head (and a separate embedding), of each layer's
        /// attention and FFN matrices.
        var headResident = 0
        var attentionResident: [Int] = [], ffnResident: [Int] = []
        /// Each layer's streaming slot with nothing resident, by which blocks run (``BlockSet``).
        var slot: [[Int]] = []
        var headRowSlot = 0
    }

    public init(layout: ModelLayout, kvBytesPerTokenPerLayer: Int, kvTokens: Int, bufferBytes: Int, runtimeBytes: Int, ringSlots: Int = 2,
                windowedTokens: [Int?] = [], residency: Residency = .headFirst) {
        self.residency = residency
        self.layout = layout
        self.windowedTokens = windowedTokens
        self.kvBytesPerTokenPerLayer = kvBytesPerTokenPerLayer
        self.kvTokens = kvTokens
        self.bufferBytes = bufferBytes
        self.runtimeBytes = runtimeBytes
        self.ringSlots = ringSlots
        table = MemoryModel.table(layout)
    }

    private static func table(_ layout: ModelLayout) -> Table? {
        guard layout.residentDecoded.isEmpty, layout.layers.allSatisfy({ $0.decoded.isEmpty }) else { return nil }
        var t = Table()
        func resident(_ ms: [TensorExtent]) -> Int { ms.reduce(0) { $0 + Builder.span($1.fileOffset, $1.bytes) } }
        t.headResident = resident([layout.head] + (layout.embedding.map { [$0] } ?? []))
        for layer in layout.layers {
            t.attentionResident.append(resident(layer.attention))
            t.ffnResident.append(resident(layer.ffn))
            t.slot.append((0..<4).map { v in
                let tails = (BlockSet.includes(v, .attention) ? layer.attention.map { ($0, 0, BlockMask.Kind?.some(.attention)) } : [])
                    + (BlockSet.includes(v, .ffn) ? layer.ffn.map { ($0, 0, BlockMask.Kind?.some(.ffn)) } : [])
                return Builder.stage(.layer(0), tails).slotBytes
            })
        }
        t.headRowSlot = Builder.span(layout.head.fileOffset, layout.head.rowBytes)
        return t
    }

    public var layers: Int { layout.layers.count }

    /// KV bytes with the attention layers `mask` keeps.
    public func kvBytes(skipping mask: BlockMask) -> Int {
        var tokens = 0
        for l in 0..<layers where !mask.skipsAttention(l) {
            tokens += (l < windowedTokens.count ? windowedTokens[l] : nil) ?? kvTokens
        }
        return tokens * kvBytesPerTokenPerLayer
    }

    /// The planner's inputs for `mask` under `cap`.
    public func inputs(skipping mask: BlockMask, cap: Int) -> MemoryPlan.Inputs {
        .init(layout: layout.skipping(mask), cap: cap, kvCacheBytes: kvBytes(skipping: mask), bufferBytes: bufferBytes,
              runtimeBytes: runtimeBytes, ringSlots: ringSlots, residency: residency)
    }

    /// The smallest cap at which the model runs with `mask` skipped, streaming what does not fit:
    /// `MemoryPlan.minimumCap` of ``inputs(skipping:cap:)``, to the byte (tested).
    public func streamingMinimum(skipping mask: BlockMask) -> Int {
        guard let t = table else { return MemoryPlan.minimumCap(inputs(skipping: mask, cap: 0)) }
        var slot = t.headRowSlot
        for l in 0..<t.slot.count { slot = max(slot, t.slot[l][BlockSet.running(mask, layer: l)]) }
        let fixed = fixedBytes(mask)
        return min(fixed + resident(t, mask), fixed + ringSlots * slot)
    }

    /// The footprint with every weight `mask` keeps resident and nothing streamed (RAP's setting).
    public func residentFootprint(skipping mask: BlockMask) -> Int {
        guard let t = table else {
            let i = inputs(skipping: mask, cap: 0)
            return i.fixedBytes + Builder.allResident(i.layout).residentBytes
        }
        return fixedBytes(mask) + resident(t, mask)
    }

    /// What `mask` needs to run: every kept weight resident (`residentOnly`, RAP's setting) or
    /// the streaming minimum. The pruning controller and its simulator judge masks by this.
    public func need(skipping mask: BlockMask, residentOnly: Bool) -> Int {
        residentOnly ? residentFootprint(skipping: mask) : streamingMinimum(skipping: mask)
    }

    /// Bytes of the weights `mask` keeps (head and embedding included), as held resident.
    public func weightBytes(skipping mask: BlockMask) -> Int {
        guard let t = table else { return Builder.allResident(layout.skipping(mask)).residentBytes }
        return resident(t, mask)
    }

    /// The same model with `tokens` KV positions per kept attention layer.
    public func with(kvTokens tokens: Int) -> MemoryModel {
        var m = self
        m.kvTokens = tokens
        return m
    }

    /// KV, buffers, runtime and pinned vectors: what does not depend on residency.
    private func fixedBytes(_ mask: BlockMask) -> Int { kvBytes(skipping: mask) + bufferBytes + runtimeBytes + layout.pinnedBytes }

    private func resident(_ t: Table, _ mask: BlockMask) -> Int {
        var sum = t.headResident
        for l in 0..<t.attentionResident.count {
            if !mask.skipsAttention(l) { sum += t.attentionResident[l] }
            if !mask.skipsFFN(l) { sum += t.ffnResident[l] }
        }
        return sum
    }
}

extension ModelLayout {
    /// The layout without the blocks `mask` skips: their matrices are never read, resident or streamed.
    public func skipping(_ mask: BlockMask) -> ModelLayout {
        var out = self
        for l in out.layers.indices {
            if mask.skipsAttention(l) {
                out.layers[l].attention = []
                out.layers[l].decoded.removeAll { $0.kind == .attention }
            }
            if mask.skipsFFN(l) {
                out.layers[l].ffn = []
                out.layers[l].decoded.removeAll { $0.kind == .ffn }
            }
        }
        return out
    }
}
