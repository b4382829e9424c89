import FlexSystem

/// Keys and values of every attended position, allocated once for the whole context.
///
/// Stored as f16, as llama.cpp does by default: it halves the cache (SmolLM2: 23 KiB instead
/// of 46 KiB per token), which matters most under a memory cap, and the fp64 reference bounds
/// hold with it. Layers whose attention block is skipped get no slot at all.
public struct KVCache: ~Copyable {
    public let capacity: Int
    public let kvDim: Int
    /// Slot of each layer in the buffers, nil for layers whose attention is skipped.
    public let slotOfLayer: [Int?]
    private let keys: AlignedBuffer<Float16>
    private let values: AlignedBuffer<Float16>

    public init(layers: Int, capacity: Int, kvDim: Int, mask: BlockMask) {
        var slots: [Int?] = []
        var n = 0
        for l in 0..<layers {
            if mask.skipsAttention(l) { slots.append(nil) } else { slots.append(n); n += 1 }
        }
        self.capacity = capacity
        self.kvDim = kvDim
        self.slotOfLayer = slots
        keys = AlignedBuffer(count: n * capacity * kvDim)
        values = AlignedBuffer(count: n * capacity * kvDim)
    }

    public static func bytes(layers: Int, capacity: Int, kvDim: Int) -> Int { 2 * layers * capacity * kvDim * 2 }

    public var byteCount: Int { keys.byteCount + values.byteCount }

    /// Start of the K row for `position` in `layer` (kvDim halves).
    @inline(__always)
    public func key(layer: Int, position: Int) -> UnsafeMutablePointer<Float16> {
        keys.pointer + (slotOfLayer[layer]! * capacity + position) * kvDim
    }

    @inline(__always)
    public func value(layer: Int, position: Int) -> UnsafeMutablePointer<Float16> {
        values.pointer + (slotOfLayer[layer]! * capacity + position) * kvDim
    }
}
