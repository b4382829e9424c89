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
///
/// The storage is layer-major: each layer's keys (and values) for every page are one span,
/// aligned to the system page, so a layer whose attention the pruning controller drops gives
/// its memory back at once (``release(layer:)``) while the other layers keep theirs.
///
/// A layer with a sliding window (``ModelConfig/attentionWindows``) keeps only a ring of its
/// window: its rows live in ring pages, a second small pool, and a sequence holds at most
/// ⌈W / pageTokens⌉ + 1 of them whatever its length, position t in ring page (t / pageTokens)
/// mod that count. All windowed layers share the ring table, sized for the largest window.
public struct PagedKVCache: ~Copyable {
    /// A sequence's handle in the cache.
    public typealias Slot = Int

    /// Positions per page unless a caller says otherwise (vLLM's default too).
    public static let defaultPageTokens = 16
    public let pageTokens: Int
    public let pageCapacity: Int
    public let kvDim: Int
    /// Slot of each layer in a page (a ring page for windowed layers), nil for layers whose
    /// attention never runs.
    public let slotOfLayer: [Int?]
    /// Each layer's window (nil: every position).
    public let windowOfLayer: [Int?]
    /// Ring pages per sequence (0 when no layer is windowed).
    public let ringLength: Int
    /// Positions one sequence may hold (the session's context length).
    public let sequenceCapacity: Int
    /// f16 elements from one page to the next within a full layer's span (keys or values), and
    /// from one layer's span to the next (rounded up to the system page, for ``release(layer:)``).
    let pageStride: Int
    let layerStride: Int
    let ringPageStride: Int
    private let storage: PinnedBuffer
    private let keys: UnsafeMutablePointer<Float16>
    private let values: UnsafeMutablePointer<Float16>
    private let ringStorage: PinnedBuffer
    private let ringKeys: UnsafeMutablePointer<Float16>
    private let ringValues: UnsafeMutablePointer<Float16>
    private var ringFree: [Int32]
    private var ringTables: [UnsafeMutablePointer<Int32>]
    private var ringCounts: [Int]

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
    /// Per slot and layer, positions a token-aware pruned hand-off left out of that layer (0:
    /// none). Such a layer kept positions 0..<F and n−R..<n of the state; its rows from n−R on are
    /// stored `hole` positions lower, in pages the layer no longer needs for the hole, and its
    /// attention reads the shifted range. K rows carry their rope positions, so scores are those
    /// of the true positions.
    private var holes: [[Int]]

    /// - Parameters:
    ///   - layers: the model's layers.
    ///   - kvDim: floats of one position's keys (and of its values) per layer.
    ///   - floor: blocks never run (no pages for their attention).
    ///   - sequences: slots, the most sequences held at once.
    ///   - capacity: positions one sequence may hold.
    ///   - pageTokens: positions per page.
    ///   - pages: pages in the pool; nil gives every slot room for `capacity` positions.
    ///   - windows: per layer, its sliding window (nil or absent: every position).
    public init(layers: Int, kvDim: Int, floor: BlockMask, sequences: Int, capacity: Int, pageTokens: Int = PagedKVCache.defaultPageTokens,
                pages: Int? = nil, windows: [Int?] = []) throws(EngineError) {
        precondition(sequences >= 1 && capacity >= 1 && pageTokens >= 1)
        let geometry = Geometry(layers: layers, floor: floor, windows: windows, capacity: capacity, pageTokens: pageTokens)
        let perSequence = (capacity + pageTokens - 1) / pageTokens
        let pageCount = max(1, pages ?? sequences * perSequence)
        self.pageTokens = pageTokens
        self.pageCapacity = pageCount
        self.kvDim = kvDim
        self.slotOfLayer = geometry.slots
        self.windowOfLayer = geometry.windows
        self.ringLength = geometry.ringLength
        self.sequenceCapacity = capacity
        pageStride = pageTokens * kvDim
        fullLayers = geometry.fullLayers
        let elementsPerSystemPage = PinnedBuffer.pageSize / MemoryLayout<Float16>.stride
        layerStride = (pageCount * pageStride + elementsPerSystemPage - 1) / elementsPerSystemPage * elementsPerSystemPage
        ringPageStride = max(1, geometry.ringLayers) * pageTokens * kvDim
        let half = max(1, geometry.fullLayers) * layerStride * MemoryLayout<Float16>.stride
        let ringPages = sequences * geometry.ringLength
        let ringHalf = ringPages * ringPageStride * MemoryLayout<Float16>.stride
        let main: PinnedBuffer, ring: PinnedBuffer
        do { main = try PinnedBuffer(count: max(1, 2 * half)) } catch { throw .invalidOption("cannot reserve the KV cache: \(error)") }
        do { ring = try PinnedBuffer(count: max(1, 2 * ringHalf)) } catch { throw .invalidOption("cannot reserve the KV cache: \(error)") }
        storage = main
        ringStorage = ring
        keys = storage.base.bindMemory(to: Float16.self, capacity: half / MemoryLayout<Float16>.stride)
        values = (storage.base + half).bindMemory(to: Float16.self, capacity: half / MemoryLayout<Float16>.stride)
        ringKeys = ringStorage.base.bindMemory(to: Float16.self, capacity: max(1, ringPages * ringPageStride))
        ringValues = (ringStorage.base + ringHalf).bindMemory(to: Float16.self, capacity: max(1, ringPages * ringPageStride))
        ringFree = (0..<Int32(ringPages)).reversed()
        ringTables = (0..<sequences).map { _ in
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: max(1, geometry.ringLength))
            p.initialize(repeating: 0, count: max(1, geometry.ringLength))
            return p
        }
        ringCounts = Array(repeating: 0, count: sequences)
        free = (0..<Int32(pageCount)).reversed()
        tables = (0..<sequences).map { _ in
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: perSequence)
            p.initialize(repeating: 0, count: perSequence)
            return p
        }
        pageCounts = Array(repeating: 0, count: sequences)
        lengths = Array(repeating: 0, count: sequences)
        live = Array(repeating: false, count: sequences)
        holes = Array(repeating: Array(repeating: 0, count: layers), count: sequences)
        freeSlots = (0..<sequences).reversed()
    }

    deinit {
        for t in tables { t.deallocate() }
        for t in ringTables { t.deallocate() }
    }

    /// Which layers hold every position (in pages) and which a ring of their window.
    struct Geometry {
        var slots: [Int?] = [], windows: [Int?] = []
        var fullLayers = 0, ringLayers = 0, ringLength = 0

        init(layers: Int, floor: BlockMask, windows: [Int?], capacity: Int, pageTokens: Int) {
            var widest = 0
            for l in 0..<layers {
                // A window as long as the context is no window.
                let w = l < windows.count ? windows[l].flatMap { $0 < capacity ? max(1, $0) : nil } : nil
                self.windows.append(w)
                if floor.skipsAttention(l) { slots.append(nil) }
                else if let w { slots.append(ringLayers); ringLayers += 1; widest = max(widest, w) }
                else { slots.append(fullLayers); fullLayers += 1 }
            }
            ringLength = ringLayers > 0 ? (widest + pageTokens - 1) / pageTokens + 1 : 0
        }
    }

    /// Bytes of one page: keys and values of `pageTokens` positions in every kept full layer.
    public var pageBytes: Int { 2 * max(1, fullLayers) * pageStride * MemoryLayout<Float16>.stride }
    /// Layers holding every position in pages.
    public let fullLayers: Int
    /// Bytes of all ring pages (windowed layers), which sequences take as they grow.
    public var ringBytes: Int { ringTables.count * ringLength * 2 * ringPageStride * MemoryLayout<Float16>.stride }
    /// Bytes the pool may grow to (what a memory plan must hold back).
    public var capacityBytes: Int { pageCapacity * pageBytes + ringBytes }
    public var pagesInUse: Int { pageCapacity - free.count }
    public var ringPagesInUse: Int { ringTables.count * ringLength - ringFree.count }
    public var bytesInUse: Int { pagesInUse * pageBytes + ringPagesInUse * 2 * ringPageStride * MemoryLayout<Float16>.stride }
    public var peakBytes: Int { peakPages * pageBytes }
    public var slotCount: Int { tables.count }
    public var freeSlotCount: Int { freeSlots.count }

    /// Bytes a pool of `pages` pages takes, for planning before one exists.
    public static func bytes(keptLayers: Int, kvDim: Int, pages: Int, pageTokens: Int = PagedKVCache.defaultPageTokens) -> Int {
        2 * max(1, keptLayers) * pageTokens * kvDim * MemoryLayout<Float16>.stride * pages
    }

    /// Bytes the cache ``init(layers:kvDim:floor:sequences:capacity:pageTokens:pages:windows:)``
    /// would reserve, for planning before one exists.
    public static func capacityBytes(layers: Int, kvDim: Int, floor: BlockMask, windows: [Int?], sequences: Int, capacity: Int,
                                     pages: Int, pageTokens: Int = PagedKVCache.defaultPageTokens) -> Int {
        let g = Geometry(layers: layers, floor: floor, windows: windows, capacity: capacity, pageTokens: pageTokens)
        return bytes(keptLayers: g.fullLayers, kvDim: kvDim, pages: pages, pageTokens: pageTokens)
            + (g.ringLayers > 0 ? bytes(keptLayers: g.ringLayers, kvDim: kvDim, pages: sequences * g.ringLength, pageTokens: pageTokens) : 0)
    }

    /// Per layer, the positions a windowed layer's ring holds over `slots` slots (nil: a layer
    /// holding every position): what a memory model counts for it whatever the load.
    public static func windowedTokens(layers: Int, windows: [Int?], capacity: Int, slots: Int,
                                      pageTokens: Int = PagedKVCache.defaultPageTokens) -> [Int?] {
        let g = Geometry(layers: layers, floor: .none, windows: windows, capacity: capacity, pageTokens: pageTokens)
        return g.windows.map { $0 == nil ? nil : slots * g.ringLength * pageTokens }
    }

    /// Bytes one position takes in `keptLayers` layers (keys and values, f16).
    public static func bytesPerToken(keptLayers: Int, kvDim: Int) -> Int { 2 * keptLayers * kvDim * MemoryLayout<Float16>.stride }

    /// Pages `sequences` sequences of `capacity` positions need at most.
    public static func pages(sequences: Int, capacity: Int, pageTokens: Int = PagedKVCache.defaultPageTokens) -> Int {
        sequences * ((capacity + pageTokens - 1) / pageTokens)
    }

    /// A new, empty sequence; nil when every slot is taken.
    public mutating func open() -> Slot? {
        guard let s = freeSlots.popLast() else { return nil }
        live[s] = true
        lengths[s] = 0
        for l in holes[s].indices { holes[s][l] = 0 }
        return s
    }

    /// Positions `layer` of `s` left out (token-aware pruning; see `holes`).
    @inline(__always)
    public func hole(_ s: Slot, layer: Int) -> Int { holes[s][layer] }

    /// Marks `layer` of `s` as keeping its positions from `length` on `hole` positions lower.
    public mutating func setHole(_ s: Slot, layer: Int, _ hole: Int) {
        precondition(live[s] && hole >= 0 && windowOfLayer[layer] == nil)
        holes[s][layer] = hole
    }

    /// Whether some layer of `s` has a hole (its cache cannot be kept for a later turn).
    public func hasHoles(_ s: Slot) -> Bool { holes[s].contains { $0 > 0 } }

    /// Ends a sequence: its pages go back to the pool at once.
    public mutating func close(_ s: Slot) {
        precondition(live[s])
        truncate(s, to: 0)
        while ringCounts[s] > 0 {
            ringCounts[s] -= 1
            ringFree.append(ringTables[s][ringCounts[s]])
        }
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
        // Ring pages are taken on the first lap only (the pool holds a full ring per slot).
        while ringCounts[s] < min(ringLength, need) {
            ringTables[s][ringCounts[s]] = ringFree.removeLast()
            ringCounts[s] += 1
        }
        lengths[s] = end
        peakPages = max(peakPages, pagesInUse)
        return start
    }

    /// Cuts `s` back to its first `length` positions; pages past them return to the pool
    /// (kept when `keepPages`, so rewriting the same positions lands in the same pages).
    /// With windowed layers a cut may go back at most ``ringSlack`` positions, unless it goes to 0
    /// (the ring already holds newer positions where older ones of the window were).
    public mutating func truncate(_ s: Slot, to length: Int, keepPages: Bool = false) {
        precondition(live[s] && length >= 0 && length <= lengths[s])
        precondition(ringLength == 0 || length == 0 || lengths[s] - length <= ringSlack,
                     "a windowed layer's ring cannot go back \(lengths[s] - length) positions")
        lengths[s] = length
        guard !keepPages else { return }
        let need = (length + pageTokens - 1) / pageTokens
        while pageCounts[s] > need {
            pageCounts[s] -= 1
            free.append(tables[s][pageCounts[s]])
        }
    }

    /// How far back a truncation may go with windowed layers: the ring's positions beyond the
    /// largest window (at least one page).
    public var ringSlack: Int {
        ringLength * pageTokens - (windowOfLayer.compactMap { $0 }.max() ?? 0)
    }

    /// Most rows of one sequence a pass may hold: with windowed layers ringSlack + 1, since
    /// positions a ring length apart share a ring row and a later row of the pass would
    /// overwrite (racing, on another thread) a key an earlier row still reads. Prompt chunks
    /// and a pending token with its drafts both stay within it (which also keeps cutting
    /// rejected drafts within the slack).
    public var rowsPerPass: Int { ringLength > 0 ? ringSlack + 1 : Int.max }

    /// K and V rows of `position` of `s` in `layer` (kvDim halves each).
    @inline(__always)
    func rows(_ s: Slot, layer: Int, position: Int) -> (key: UnsafeMutablePointer<Float16>, value: UnsafeMutablePointer<Float16>) {
        if windowOfLayer[layer] != nil {
            let page = Int(ringTables[s][(position / pageTokens) % ringLength])
            let at = page * ringPageStride + (slotOfLayer[layer]! * pageTokens + position % pageTokens) * kvDim
            return (ringKeys + at, ringValues + at)
        }
        let page = Int(tables[s][position / pageTokens])
        let at = slotOfLayer[layer]! * layerStride + page * pageStride + (position % pageTokens) * kvDim
        return (keys + at, values + at)
    }

    /// The ring table of `s` (windowed layers).
    @inline(__always)
    func ringTable(_ s: Slot) -> UnsafePointer<Int32> { UnsafePointer(ringTables[s]) }

    /// The page table of `s`, shared by every layer.
    @inline(__always)
    func table(_ s: Slot) -> UnsafePointer<Int32> { UnsafePointer(tables[s]) }

    /// What attention needs to read `layer`: page 0's first row of this layer, the stride between
    /// pages, the window (nil: every position) and the ring length (0: no ring, pages in order).
    @inline(__always)
    func layerView(layer: Int) -> (keys: UnsafeMutablePointer<Float16>, values: UnsafeMutablePointer<Float16>, pageStride: Int,
                                   window: Int?, ring: Int) {
        if let w = windowOfLayer[layer] {
            let at = slotOfLayer[layer]! * pageTokens * kvDim
            return (ringKeys + at, ringValues + at, ringPageStride, w, ringLength)
        }
        let at = slotOfLayer[layer]! * layerStride
        return (keys + at, values + at, pageStride, nil, 0)
    }

    /// Gives `layer`'s keys and values back to the system: the pruning controller dropped its
    /// attention, so no live sequence reads them again. The span stays mapped; a later sequence
    /// that runs the layer again has its pages backed anew as it writes them. Windowed layers
    /// (a small ring shared with the others) keep theirs.
    public func release(layer: Int) {
        guard let slot = slotOfLayer[layer], windowOfLayer[layer] == nil else { return }
        let bytes = layerStride * MemoryLayout<Float16>.stride
        storage.discard(offset: slot * bytes, count: bytes)
        storage.discard(offset: storage.count / 2 + slot * bytes, count: bytes)
    }
}

/// The KV cache cannot take more positions: the sequence reached the context length, or the
/// pool ran out of pages (more sequences than it was sized for are long).
public struct KVCacheFull: Error, Sendable {
    public enum Reason: Sendable, Equatable { case sequence, pool }
    public let reason: Reason
}
