import FlexFormat

/// A 2-D weight matrix stored in a ggml format: `rows` rows of `cols` elements each.
///
/// A non-owning view: the bytes belong to whoever loaded the model (the mapped GGUF today,
/// a streamed block tomorrow), which keeps them alive while any `QuantMatrix` is in use.
public struct QuantMatrix: @unchecked Sendable {
    // @unchecked Sendable: a read-only view of immutable weight bytes; the owner outlives all users.
    public let type: GGMLType
    public let data: UnsafeRawPointer
    public let rows: Int
    public let cols: Int
    public let rowBytes: Int

    public init(type: GGMLType, data: UnsafeRawPointer, rows: Int, cols: Int) {
        precondition(cols % type.blockElements == 0, "row length \(cols) is not whole \(type) blocks")
        self.type = type
        self.data = data
        self.rows = rows
        self.cols = cols
        self.rowBytes = type.rowBytes(elements: cols)!
    }

    public var byteCount: Int { rows * rowBytes }

    /// Dequantizes row `r` into `dst` (at least `cols` floats) with the fast path.
    @inline(__always)
    public func dequantizeRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        FastDequantize.row(type, data + r * rowBytes, dst, count: cols)
    }
}
