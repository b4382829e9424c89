import FlexSystem

/// Builds a GGUF (version 3) in memory from another's metadata and a new set of tensors: how
/// `flexrun pack --requant` changes tensor types while keeping the tokenizer, chat template and
/// every other key byte for byte.
public enum GGUFWriter {
    /// A tensor of the new file: its bytes are written by the caller into the slice it is lent.
    public struct Tensor: Sendable {
        public var name: String
        public var shape: [Int]
        public var type: GGMLType
        public init(name: String, shape: [Int], type: GGMLType) {
            self.name = name
            self.shape = shape
            self.type = type
        }
        var byteCount: Int { type.rowBytes(elements: shape[0])! * shape.dropFirst().reduce(1, *) }
    }

    /// A GGUF with `source`'s metadata and `tensors`, whose data `fill(i, bytes)` writes (called
    /// once per tensor, in order). The key/value section is copied verbatim, so the alignment key,
    /// if any, carries over; each key of `settingUInt32` is written anew as a uint32 after the
    /// others (as llama.cpp's quantizer sets `general.file_type`), replacing any value it had.
    public static func build(metadataOf source: GGUFFile, settingUInt32: KeyValuePairs<String, UInt32> = [:], tensors: [Tensor],
                             fill: (Int, UnsafeMutableRawBufferPointer) throws -> Void) throws -> GGUFFile {
        var head: [UInt8] = []
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { head.append(contentsOf: $0) } }
        let replaced = settingUInt32.compactMap { source.metadataRanges[$0.key] }.sorted { $0.lowerBound < $1.lowerBound }
        le(UInt32(0x4655_4747)); le(UInt32(3)); le(UInt64(tensors.count))
        le(UInt64(source.metadata.count - replaced.count + settingUInt32.count))
        var copied = 24
        for r in replaced {
            head.append(contentsOf: source.headerBytes[copied..<r.lowerBound])
            copied = r.upperBound
        }
        head.append(contentsOf: source.headerBytes[copied..<source.tensorInfoOffset])
        for (key, value) in settingUInt32 {
            le(UInt64(key.utf8.count)); head.append(contentsOf: Array(key.utf8)); le(UInt32(4)); le(value)
        }
        let align = source.alignment
        var offsets: [Int] = [], at = 0
        for t in tensors {
            precondition(t.type.rowBytes(elements: t.shape[0]) != nil, "\(t.name): rows are not whole \(t.type) blocks")
            le(UInt64(t.name.utf8.count)); head.append(contentsOf: Array(t.name.utf8))
            le(UInt32(t.shape.count)); for d in t.shape { le(UInt64(d)) }
            le(t.type.rawValue); le(UInt64(at))
            offsets.append(at)
            at = (at + t.byteCount + align - 1) / align * align
        }
        let dataOffset = (head.count + align - 1) / align * align
        let region = try MappedRegion(anonymous: dataOffset + at)
        let bytes = region.mutableBytes
        head.withUnsafeBytes { bytes.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: head.count) }
        for (i, t) in tensors.enumerated() {
            let start = dataOffset + offsets[i]
            try fill(i, UnsafeMutableRawBufferPointer(rebasing: bytes[start..<start + t.byteCount]))
        }
        region.seal()
        return try GGUFFile(path: source.path, image: region)
    }
}
