import FlexFormat

/// A 2-D weight matrix stored in a ggml format: `rows` rows of `cols` elements each.
///
/// A non-owning view: the bytes belong to whoever loaded the model (the mapped GGUF, or the
/// offload runtime's resident set and staging ring), which keeps them alive while any
/// `QuantMatrix` is in use.
///
/// Rows may live in two places. Under a memory cap the runtime keeps a prefix of a tensor's
/// rows resident and streams the rest into a staging slot ("flexible tensor preservation"), so
/// rows `0..<splitRow` start at `data` and rows `splitRow..<rows` start at `tail`. A contiguous
/// matrix is the special case `splitRow == rows`. Kernels address rows only through ``row(_:)``.
///
/// The first ``interleavedRows`` rows (a multiple of 8, within the rows at `data`) may be stored
/// in the x8 layout of `cflex_kernels.h`: each group of 8 rows keeps its bytes but rearranged so
/// the kernels compute 8 rows at once (``Interleave``). The kernels give bit-identical results for
/// both layouts, so only speed tells them apart.
public struct QuantMatrix: @unchecked Sendable {
    // @unchecked Sendable: a read-only view of immutable weight bytes; the owner outlives all users.
    public let type: GGMLType
    public let data: UnsafeRawPointer
    public let rows: Int
    public let cols: Int
    public let rowBytes: Int
    /// First row stored at `tail` rather than after the rows at `data`.
    public let splitRow: Int
    public let tail: UnsafeRawPointer
    /// Rows `0..<interleavedRows` are x8 groups (see ``Interleave``); the rest are row-major.
    public let interleavedRows: Int

    /// A contiguous matrix: every row at `data`.
    public init(type: GGMLType, data: UnsafeRawPointer, rows: Int, cols: Int) {
        precondition(cols % type.blockElements == 0, "row length \(cols) is not whole \(type) blocks")
        self.init(type: type, head: data, splitRow: rows, tail: data + rows * type.rowBytes(elements: cols)!, rows: rows, cols: cols)
    }

    /// A matrix whose rows `0..<splitRow` are at `head` and rows `splitRow..<rows` at `tail`.
    /// `interleavedRows` of the rows at `head` must already be in the x8 layout.
    public init(type: GGMLType, head: UnsafeRawPointer, splitRow: Int, tail: UnsafeRawPointer, rows: Int, cols: Int,
                interleavedRows: Int = 0) {
        precondition(cols % type.blockElements == 0, "row length \(cols) is not whole \(type) blocks")
        precondition(splitRow >= 0 && splitRow <= rows)
        precondition(interleavedRows == 0 || (Interleave.supports(type) && interleavedRows % 8 == 0 && interleavedRows <= splitRow))
        self.interleavedRows = interleavedRows
        self.type = type
        self.data = head
        self.rows = rows
        self.cols = cols
        self.rowBytes = type.rowBytes(elements: cols)!
        self.splitRow = splitRow
        self.tail = tail
    }

    public var byteCount: Int { rows * rowBytes }

    /// Start of row-major row `r` (`r >= interleavedRows`), or of the x8 group that begins at `r`
    /// (`r % 8 == 0`): a group takes the bytes of its 8 rows. One predictable compare per row.
    @inline(__always)
    public func row(_ r: Int) -> UnsafeRawPointer {
        r < splitRow ? data + r * rowBytes : tail + (r - splitRow) * rowBytes
    }

    /// The same matrix with its first `rows` rows declared x8 groups (the caller rearranged them).
    public func interleaved(rows n: Int) -> QuantMatrix {
        QuantMatrix(type: type, head: data, splitRow: splitRow, tail: tail, rows: rows, cols: cols, interleavedRows: n)
    }

    /// Dequantizes row `r` into `dst` (at least `cols` floats) with the fast path, from either layout.
    @inline(__always)
    public func dequantizeRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        if r < interleavedRows {
            FastDequantize.interleavedRow(type, group: data + (r & ~7) * rowBytes, lane: r & 7, dst, count: cols)
        } else {
            FastDequantize.row(type, row(r), dst, count: cols)
        }
    }
}
