import FlexKernels

/// The rows of one forward pass: each a token of some sequence at some position.
///
/// Continuous batching puts in one pass the next token of every decoding sequence and prompt
/// chunks of newly added ones, so the weights are read once for all of them. Rows
/// `0..<decodeRows` are decode rows (one token of a sequence that is generating) and take the
/// decode matmul path; the rest are prompt rows and take the prefill path. The path depends only
/// on the row's kind, never on the batch, so a sequence gets the same numbers alone or batched.
///
/// Allocated once per session for its largest pass and refilled each step: nothing allocates.
final class ForwardBatch {
    let capacity: Int
    private(set) var count = 0
    /// Rows before this index are decode rows.
    var decodeRows = 0
    /// Matmul path of every row when set (scoring text: by batch size, as before batching).
    var uniformPath: MatMul.Path? = nil
    /// Path of the head's rows: `.decode` when the logits are sampled (so a prompt's last row
    /// gets the same numbers as a generated one), `.bySize` when scoring text.
    var headPath: MatMul.Path = .decode
    let tokens: UnsafeMutablePointer<Int32>
    let positions: UnsafeMutablePointer<Int>
    /// Per row, the current layer's hole in its sequence (``PagedKVCache/hole(_:layer:)``), set
    /// by the transformer before the layer's KV writes and attention.
    let holes: UnsafeMutablePointer<Int>
    let slots: UnsafeMutablePointer<Int>
    /// Page table of each row's sequence, filled by the pass.
    let tables: UnsafeMutablePointer<UnsafePointer<Int32>?>
    /// Ring table of each row's sequence (sliding-window layers), filled by the pass.
    let ringTables: UnsafeMutablePointer<UnsafePointer<Int32>?>
    /// Rows whose logits are computed, in order: logits row i belongs to batch row `logitRows[i]`.
    let logitRows: UnsafeMutablePointer<Int>
    private(set) var logitCount = 0

    init(capacity: Int) {
        self.capacity = capacity
        tokens = .allocate(capacity: capacity)
        positions = .allocate(capacity: capacity)
        holes = .allocate(capacity: capacity)
        holes.initialize(repeating: 0, count: capacity)
        slots = .allocate(capacity: capacity)
        tables = .allocate(capacity: capacity)
        tables.initialize(repeating: nil, count: capacity)
        ringTables = .allocate(capacity: capacity)
        ringTables.initialize(repeating: nil, count: capacity)
        logitRows = .allocate(capacity: capacity)
    }

    deinit {
        tokens.deallocate(); positions.deallocate(); holes.deallocate(); slots.deallocate(); tables.deallocate(); ringTables.deallocate(); logitRows.deallocate()
    }

    func clear() {
        count = 0
        decodeRows = 0
        logitCount = 0
        uniformPath = nil
        headPath = .decode
    }

    var isFull: Bool { count == capacity }
    var free: Int { capacity - count }

    /// Appends a row; returns its index.
    @discardableResult
    func add(token: Int32, position: Int, slot: Int, logits: Bool) -> Int {
        precondition(count < capacity)
        tokens[count] = token
        positions[count] = position
        slots[count] = slot
        if logits { logitRows[logitCount] = count; logitCount += 1 }
        count += 1
        return count - 1
    }

    /// Which path a run of rows takes.
    func path(decode: Bool) -> MatMul.Path { uniformPath ?? (decode ? .decode : .prefill) }
}
