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
    public let kvTokens: Int
    public let bufferBytes: Int
    public let runtimeBytes: Int
    public let ringSlots: Int

    public init(layout: ModelLayout, kvBytesPerTokenPerLayer: Int, kvTokens: Int, bufferBytes: Int, runtimeBytes: Int, ringSlots: Int = 2) {
        self.layout = layout
        self.kvBytesPerTokenPerLayer = kvBytesPerTokenPerLayer
        self.kvTokens = kvTokens
        self.bufferBytes = bufferBytes
        self.runtimeBytes = runtimeBytes
        self.ringSlots = ringSlots
    }

    public var layers: Int { layout.layers.count }

    /// KV bytes with the attention layers `mask` keeps.
    public func kvBytes(skipping mask: BlockMask) -> Int {
        (layers - mask.skippedAttentionLayers.filter { $0 < layers }.count) * kvTokens * kvBytesPerTokenPerLayer
    }

    /// The planner's inputs for `mask` under `cap`.
    public func inputs(skipping mask: BlockMask, cap: Int) -> MemoryPlan.Inputs {
        .init(layout: layout.skipping(mask), cap: cap, kvCacheBytes: kvBytes(skipping: mask), bufferBytes: bufferBytes,
              runtimeBytes: runtimeBytes, ringSlots: ringSlots)
    }

    /// The smallest cap at which the model runs with `mask` skipped, streaming what does not fit.
    public func streamingMinimum(skipping mask: BlockMask) -> Int {
        MemoryPlan.minimumCap(inputs(skipping: mask, cap: 0))
    }

    /// The footprint with every weight `mask` keeps resident and nothing streamed (RAP's setting).
    public func residentFootprint(skipping mask: BlockMask) -> Int {
        let i = inputs(skipping: mask, cap: 0)
        return i.fixedBytes + Builder.allResident(i.layout).residentBytes
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
