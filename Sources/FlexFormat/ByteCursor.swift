/// A bounds-checked little-endian reader over a byte buffer.
///
/// Every read checks the remaining length first with overflow-safe arithmetic, so a corrupt
/// length field becomes `GGUFError.truncated` naming the field, never an out-of-bounds read.
struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    var offset: Int = 0

    var remaining: Int { bytes.count - offset }

    mutating func require(_ n: Int, _ context: @autoclosure () -> String) throws(GGUFError) {
        guard n >= 0, n <= remaining else { throw .truncated(context: context(), offset: offset) }
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ context: @autoclosure () -> String) throws(GGUFError) -> T {
        try require(MemoryLayout<T>.size, context())
        let v = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    mutating func readFloat32(_ context: @autoclosure () -> String) throws(GGUFError) -> Float {
        Float(bitPattern: try read(UInt32.self, context()))
    }

    mutating func readFloat64(_ context: @autoclosure () -> String) throws(GGUFError) -> Double {
        Double(bitPattern: try read(UInt64.self, context()))
    }

    /// A GGUF string: u64 length then that many bytes of UTF-8 (invalid sequences become U+FFFD).
    mutating func readString(_ context: @autoclosure () -> String) throws(GGUFError) -> String {
        let start = offset
        let n = try read(UInt64.self, context())
        guard n <= UInt64(remaining) else { offset = start; throw .truncated(context: context(), offset: start) }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + Int(n)]), as: UTF8.self)
        offset += Int(n)
        return s
    }
}
