import FlexSystem

/// Keys and values of every sequence a session runs, in pages of ``pageTokens`` positions taken
/// from one pool (after vLLM's paged attention and mlx-swift-lm's `KVCache` seam).
///
/// Why pages: a cache reserved for the whole context of every sequence costs, for 8 SmolLM2
/// sequences of 2,048 tokens, 368 MiB before the first token. With pages, memory in use follows
/// the tokens actually held, an ended sequence hands its pages back at once, and a sequence can
/// be cut back (`truncate(to:)`, for rejected draft tokens) without copying.
///
/// A page holds, for each layer that may run attention, `pageTokens` rows of f16 keys and as many
/// of values: f16 as llama.cpp's default, which halves the cache and keeps the logit bounds.
/// Layers whose attention never runs (skipped by the session's floor mask) get no room at all.
/// The storage is one anonymous mapping of the pool's capacity: the kernel backs a page with
/// memory only when it is first written, so resident memory follows the pages ever used.
public struct PagedKVCache: ~Copyable {
    /// A sequence's handle in the cache.
    public typealias Slot = Int

    public let pageTokens: Int
    public let pageCapacity: Int
    public let kvDim: Int
    /// Slot of each layer in a page, nil for layers whose attention never runs.
    public let slotOfLayer: [Int?]
    /// Positions one sequence may hold (the session's context length).
    public let sequenceCapacity: Int
    /// f16 elements from one page to the next, for one of keys or values.
    let pageStride: Int
    private let storage: PinnedBuffer
    private let keys: UnsafeMutablePointer<Float16>
    private let values: UnsafeMutablePointer<Float16>

    /// Free pages, the most recently freed last (reused first, so memory already backed is reused).
    private var free: [Int32]
    /// Page table and length of each slot; `tables[s]` has room for a whole sequence, so appends
    /// never allocate.
    private var tables: [UnsafeMutablePointer<Int32>]
    private var pageCounts: [Int]
    private var lengths: [Int]
    private var live: [Bool]
    private var freeSlots: [Int]
    /// Most pages held at once since open.
    public private(set) var peakPages = 0

    /// - Parameters:
    ///   - sequences: slots, the most sequences held at once.
    ///   - capacity: positions one sequence may hold.
    ///   - pages: pages in the pool; nil gives every slot room for `capacity` positions.
    public init(layers: Int, kvDim: Int, floor: BlockMask, sequences: Int, capacity: Int, pageTokens: Int = 16,
                pages: Int? = nil) throws(EngineError) {
        precondition(sequences >= 1 && capacity >= 1 && pageTokens >= 1)
        var slots: [Int?] = []
        var kept = 0
        for l in 0..<layers {
            if floor.skipsAttention(l) { slots.append(nil) } else { slots.append(kept); kept += 1 }
        }
        let perSequence = (capacity + pageTokens - 1) / pageTokens
        let pageCount = max(1, pages ?? sequences * perSequence)
        self.pageTokens = pageTokens
        self.pageCapacity = pageCount
        self.kvDim = kvDim
        self.slotOfLayer = slots
        self.sequenceCapacity = capacity
        pageStride = max(1, kept) * pageTokens * kvDim
        let half = pageCount * pageStride * MemoryLayout<Float16>.stride
        do { storage = try PinnedBuffer(count: max(1, 2 * half)) } catch { throw .invalidOption("cannot reserve the KV cache: \(error)") }
        keys = storage.base.bindMemory(to: Float16.self, capacity: pageCount * pageStride)
        values = (storage.base + half).bindMemory(to: Float16.self, capacity: pageCount * pageStride)
        free = (0..<Int32(pageCount)).reversed()
        tables = (0..<sequences).map { _ in
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: perSequence)
            p.initialize(repeating: 0, count: perSequence)
            return p
        }
        pageCounts = Array(repeating: 0, count: sequences)
        lengths = Array(repeating: 0, count: sequences)
        live = Array(repeating: false, count: sequences)
        freeSlots = (0..<sequences).reversed()
    }

    deinit { for t in tables { t.deallocate() } }

    /// Bytes of one page: keys and values of `pageTokens` positions in every kept layer.
    public var pageBytes: Int { 2 * pageStride * MemoryLayout<Float16>.stride }
    /// Bytes the pool may grow to (what a memory plan must hold back).
    public var capacityBytes: Int { pageCapacity * pageBytes }
    public var pagesInUse: Int { pageCapacity - free.count }
    public var bytesInUse: Int { pagesInUse * pageBytes }
    public var peakBytes: Int { peakPages * pageBytes }
    public var slotCount: Int { tables.count }
    public var freeSlotCount: Int { freeSlots.count }

    /// Bytes a pool of `pages` pages takes, for planning before one exists.
    public static func bytes(keptLayers: Int, kvDim: Int, pages: Int, pageTokens: Int = 16) -> Int {
        2 * max(1, keptLayers) * pageTokens * kvDim * MemoryLayout<Float16>.stride * pages
    }

    /// Bytes one position takes in `keptLayers` layers (keys and values, f16).
    public static func bytesPerToken(keptLayers: Int, kvDim: Int) -> Int { 2 * keptLayers * kvDim * MemoryLayout<Float16>.stride }

    /// Pages `sequences` sequences of `capacity` positions need at most.
    public static func pages(sequences: Int, capacity: Int, pageTokens: Int = 16) -> Int {
        sequences * ((capacity + pageTokens - 1) / pageTokens)
    }

    /// A new, empty sequence; nil when every slot is taken.
    public mutating func open() -> Slot? {
        guard let s = freeSlots.popLast() else { return nil }
        live[s] = true
        lengths[s] = 0
        return s
    }

    /// Ends a sequence: its pages go back to the pool at once.
    public mutating func close(_ s: Slot) {
        precondition(live[s])
        truncate(s, to: 0)
        live[s] = false
        freeSlots.append(s)
    }

    /// Positions held by `s`.
    public func length(_ s: Slot) -> Int { lengths[s] }

    /// Makes room for `count` more positions of `s` (pages taken from the pool as needed) and
    /// returns the first of them. Throws when the sequence is at its capacity or the pool is empty;
    /// nothing changes then.
    public mutating func append(_ s: Slot, count: Int) throws(KVCacheFull) -> Int {
        precondition(live[s])
        let start = lengths[s], end = start + count
        guard end <= sequenceCapacity else { throw KVCacheFull(reason: .sequence) }
        let need = (end + pageTokens - 1) / pageTokens
        guard need - pageCounts[s] <= free.count else { throw KVCacheFull(reason: .pool) }
        while pageCounts[s] < need {
            tables[s][pageCounts[s]] = free.removeLast()
            pageCounts[s] += 1
        }
        lengths[s] = end
        peakPages = max(peakPages, pagesInUse)
        return start
    }

    /// Cuts `s` back to its first `length` positions; pages past them return to the pool
    /// (kept when `keepPages`, so rewriting the same positions lands in the same pages).
    public mutating func truncate(_ s: Slot, to length: Int, keepPages: Bool = false) {
        precondition(live[s] && length >= 0 && length <= lengths[s])
        lengths[s] = length
        guard !keepPages else { return }
        let need = (length + pageTokens - 1) / pageTokens
        while pageCounts[s] > need {
            pageCounts[s] -= 1
            free.append(tables[s][pageCounts[s]])
        }
    }

    /// K and V rows of `position` of `s` in `layer` (kvDim halves each).
    @inline(__always)
    func rows(_ s: Slot, layer: Int, position: Int) -> (key: UnsafeMutablePointer<Float16>, value: UnsafeMutablePointer<Float16>) {
        let page = Int(tables[s][position / pageTokens])
        let at = page * pageStride + (slotOfLayer[layer]! * pageTokens + position % pageTokens) * kvDim
        return (keys + at, values + at)
    }

    /// The page table of `s`, shared by every layer.
    @inline(__always)
    func table(_ s: Slot) -> UnsafePointer<Int32> { UnsafePointer(tables[s]) }

    /// What attention needs to read `layer` of `s`: page 0's first row of this layer, the page table.
    @inline(__always)
    func layerView(_ s: Slot, layer: Int) -> (keys: UnsafeMutablePointer<Float16>, values: UnsafeMutablePointer<Float16>,
                                               pages: UnsafePointer<Int32>) {
        let at = slotOfLayer[layer]! * pageTokens * kvDim
        return (keys + at, values + at, UnsafePointer(tables[s]))
    }
}

/// The KV cache cannot take more positions: the sequence reached the context length, or the
/// pool ran out of pages (more sequences than it was sized for are long).
public struct KVCacheFull: Error, Sendable {
    public enum Reason: Sendable, Equatable { case sequence, pool }
    public let reason: Reason
}
