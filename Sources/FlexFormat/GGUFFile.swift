import FlexSystem

/// One tensor's description from the GGUF header, already validated against the file.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    /// ggml order: `shape[0]` is the innermost (contiguous) dimension, i.e. the row length.
    public let shape: [Int]
    public let type: GGMLType
    /// Offset of the data from the start of the GGUF image (not of the data section): the file
    /// itself for a GGUF, the rebuilt image for a block file (``GGUFFile/fileOffset(of:)`` finds
    /// where the bytes lie on disk).
    public let fileOffset: Int
    public let byteCount: Int

    public var elementCount: Int { shape.reduce(1, *) }
    /// Row length (innermost dimension) and number of rows (product of the others).
    public var rowLength: Int { shape[0] }
    public var rowCount: Int { shape.dropFirst().reduce(1, *) }
}

/// A parsed GGUF file (versions 2 and 3), mapped read-only.
///
/// Port of the checks in ggml's `gguf_init_from_file`: every count, length, dimension and
/// offset is validated against the file size before use, with overflow-safe arithmetic, and
/// errors name the field or tensor. Tensor data stays in the mapping; ``tensorBytes(_:)`` lends
/// views that live as long as this object.
public final class GGUFFile: @unchecked Sendable {
    // @unchecked Sendable: every stored property is immutable after init, and the mapping is PROT_READ.
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Where each key/value pair lies in the header (key, type and value): what ``GGUFWriter``
    /// drops when it sets a key anew.
    public let metadataRanges: [String: Range<Int>]
    public let tensors: [TensorInfo]
    public let tensorIndex: [String: Int]
    public let alignment: Int
    /// Where the metadata key/value pairs end and the tensor infos begin.
    public let tensorInfoOffset: Int
    public let dataOffset: Int
    public let fileSize: Int
    /// The size of the file on disk when it was opened: the GGUF's, or the block file's (whose
    /// ``fileSize`` is that of the GGUF image it rebuilds).
    public var diskSize: Int { storedBytes?.count ?? fileSize }
    /// Whether the tensors come from a packed block file, not a GGUF mapping.
    public let isPacked: Bool
    /// The GGUF bytes: the file's mapping, or for a block file the rebuilt image.
    private let mapping: MappedRegion
    /// A block file's own mapping, where the tensors of raw blocks are found in place, and its bytes.
    private let storedMapping: MappedRegion?
    private let storedBytes: UnsafeRawBufferPointer?
    /// Image offset → offset in `storedMapping`, for tensors found in place.
    private let stored: [Int: Int]
    /// A block file's blocks that are decoded (compressed, or in byte planes), in file order.
    /// Opened with `randomAccess` (a capped run), their large tensors are not in memory: the
    /// offload runtime reads and decodes these blocks itself.
    public private(set) var decodedBlocks: [BlockFile.Entry] = []

    /// Upper bound on tensor dimensions: ggml's GGML_MAX_DIMS.
    static let maxDims = 4

    /// `randomAccess` turns off readahead on the mapping before anything is parsed: under a memory
    /// cap the weights are read with O_DIRECT, and readahead around each norm vector would pull
    /// tens of MiB of weights into the page cache (and the process's RSS) during open.
    ///
    /// A FlexRun block file (`flexrun pack`) is accepted too: its blocks are checked and
    /// decompressed into an in-memory image of the original GGUF, so everything above this type
    /// sees the same tensors, bit for bit (``isPacked`` tells them apart).
    public convenience init(path: String, randomAccess: Bool = false) throws(GGUFError) {
        let file: FileHandle
        do { file = try FileHandle(readingFrom: path) } catch { throw .io(error) }
        if BlockFile.hasMagic(file) {
            let image: BlockFile.Image
            let fileMapping: MappedRegion
            do { image = try BlockFile.image(file, matricesInMemory: !randomAccess) } catch { throw .blockFile(error) }
            do { fileMapping = try MappedRegion(mapping: file) } catch { throw .io(error) }
            if randomAccess {
                fileMapping.adviseRandom()
                file.dropCachedPages()
            }
            let stored = image.stored, decoded = image.decoded
            try self.init(path: path, region: image.region, packed: true, storedMapping: fileMapping, stored: stored)
            decodedBlocks = decoded
            return
        }
        let region: MappedRegion
        do { region = try MappedRegion(mapping: file) } catch { throw .io(error) }
        if randomAccess {
            region.adviseRandom()
            // MADV_RANDOM stops readahead but not fault-around: with the file hot in the page cache
            // (just downloaded or checksummed), each fault maps up to 16 cached pages, and opening
            // SmolLM2 mapped ~66 MiB of weights the cap never budgeted (peak RSS 154 MiB at
            // --mem-limit 100M, against 108 MiB with a cold cache). Under a cap every weight is read
            // with O_DIRECT, so the cached copy is of no use to us.
            file.dropCachedPages()
        }
        try self.init(path: path, region: region)
    }

    /// Parses a GGUF image already in memory (``GGUFWriter`` builds them); `path` names where
    /// it came from.
    public convenience init(path: String, image: consuming MappedRegion) throws(GGUFError) {
        try self.init(path: path, region: image)
    }

    init(path: String, region: consuming MappedRegion, packed: Bool = false,
         storedMapping: consuming MappedRegion? = nil, stored: [Int: Int] = [:]) throws(GGUFError) {
        self.isPacked = packed
        self.storedBytes = storedMapping?.bytes
        self.storedMapping = storedMapping
        self.stored = stored
        let h = try GGUFFile.parseHeader(region.bytes)
        self.path = path
        self.version = h.version
        self.metadata = h.metadata
        self.metadataRanges = h.metadataRanges
        self.tensors = h.tensors
        self.tensorIndex = h.tensorIndex
        self.alignment = h.alignment
        self.tensorInfoOffset = h.tensorInfoOffset
        self.dataOffset = h.dataOffset
        self.fileSize = region.count
        self.mapping = region
    }

    /// What the header, metadata and tensor infos of a GGUF image say, every field checked
    /// against the image's length.
    public struct Header: Sendable {
        public let version: UInt32
        public let metadata: [String: GGUFValue]
        public let metadataRanges: [String: Range<Int>]
        public let tensors: [TensorInfo]
        public let tensorIndex: [String: Int]
        public let alignment: Int
        public let tensorInfoOffset: Int
        public let dataOffset: Int
    }

    /// Parses a GGUF image from a byte buffer, without a file or a mapping: the loader's whole
    /// parse (the fuzz target `gguf` calls it on arbitrary bytes; it must throw, never trap).
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer) throws(GGUFError) -> Header {
        var c = ByteCursor(bytes: bytes)
        let magic = try c.read(UInt32.self, "magic")
        guard magic == 0x4655_4747 else { throw .badMagic(found: magic) }
        let version = try c.read(UInt32.self, "version")
        guard version == 2 || version == 3 else { throw .unsupportedVersion(version) }
        let tensorCount = try c.read(UInt64.self, "tensor count")
        let kvCount = try c.read(UInt64.self, "metadata count")
        // Each KV needs at least 8 (key length) + 4 (type) + 1 bytes, each tensor info 8 + 4 + 8 + 4 + 8.
        // A count that could not fit even in a much larger file is corruption; a plausible count
        // in a short file is reported as truncation by the parse below, naming the field.
        let plausible: UInt64 = 1 << 24
        guard kvCount <= plausible || kvCount <= UInt64(c.remaining / 13) else {
            throw .malformed(context: "metadata count", offset: 16, reason: "\(kvCount) entries cannot fit in the file")
        }
        guard tensorCount <= plausible || tensorCount <= UInt64(c.remaining / 32) else {
            throw .malformed(context: "tensor count", offset: 8, reason: "\(tensorCount) tensors cannot fit in the file")
        }

        var metadata: [String: GGUFValue] = [:], metadataRanges: [String: Range<Int>] = [:]
        for i in 0..<Int(kvCount) {
            let keyOffset = c.offset
            let key = try c.readString("metadata key #\(i)")
            let typeId = try c.read(UInt32.self, "type of '\(key)'")
            let value = try GGUFFile.readValue(&c, type: typeId, key: key, depth: 0)
            if metadata[key] != nil {
                throw .malformed(context: "metadata key '\(key)'", offset: keyOffset, reason: "duplicate key")
            }
            metadata[key] = value
            metadataRanges[key] = keyOffset..<c.offset
        }

        let tensorInfoOffset = c.offset
        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard let v = a.asInt, v > 0, v & (v - 1) == 0, v <= 1 << 20 else {
                throw .badKey("general.alignment", reason: "must be a power of two")
            }
            alignment = v
        }

        struct RawInfo { let name: String; let shape: [Int]; let type: GGMLType; let offset: Int; let bytes: Int }
        var raw: [RawInfo] = []
        // Never trust the count for an allocation: at most what the bytes left could hold.
        raw.reserveCapacity(min(Int(tensorCount), c.remaining / 32))
        var index: [String: Int] = [:]
        for i in 0..<Int(tensorCount) {
            let infoOffset = c.offset
            let name = try c.readString("name of tensor #\(i)")
            let nDims = try c.read(UInt32.self, "dimension count of '\(name)'")
            guard nDims >= 1, nDims <= UInt32(GGUFFile.maxDims) else {
                throw .badTensorShape(name: name, reason: "\(nDims) dimensions (1 to \(GGUFFile.maxDims) allowed)")
            }
            var shape: [Int] = []
            var elements = 1
            for d in 0..<Int(nDims) {
                let n = try c.read(UInt64.self, "dimension \(d) of '\(name)'")
                guard n >= 1, n <= UInt64(Int32.max) else {
                    throw .badTensorShape(name: name, reason: "dimension \(d) is \(n)")
                }
                let (p, o) = elements.multipliedReportingOverflow(by: Int(n))
                guard !o, p <= Int(Int32.max) * 64 else {
                    throw .badTensorShape(name: name, reason: "absurd element count (dimensions overflow)")
                }
                elements = p
                shape.append(Int(n))
            }
            let typeId = try c.read(UInt32.self, "type of '\(name)'")
            guard let type = GGMLType(rawValue: typeId) else {
                throw .unsupportedTensorType(name: name, type: GGMLType.name(ofUnsupported: typeId))
            }
            guard let rowBytes = type.rowBytes(elements: shape[0]) else {
                throw .badTensorShape(name: name, reason: "row length \(shape[0]) is not a multiple of \(type)'s block of \(type.blockElements)")
            }
            let (bytes, o2) = rowBytes.multipliedReportingOverflow(by: elements / shape[0])
            guard !o2 else { throw .badTensorShape(name: name, reason: "byte size overflows") }
            let offset = try c.read(UInt64.self, "offset of '\(name)'")
            guard offset <= UInt64(Int.max / 2), Int(offset) % alignment == 0 else {
                throw .malformed(context: "tensor '\(name)'", offset: infoOffset, reason: "data offset \(offset) is not aligned to \(alignment)")
            }
            guard index[name] == nil else {
                throw .malformed(context: "tensor '\(name)'", offset: infoOffset, reason: "duplicate tensor name")
            }
            index[name] = raw.count
            raw.append(RawInfo(name: name, shape: shape, type: type, offset: Int(offset), bytes: bytes))
        }

        let dataOffset = (c.offset + alignment - 1) / alignment * alignment
        let fileSize = bytes.count
        let available = max(0, fileSize - dataOffset)
        var infos: [TensorInfo] = []
        infos.reserveCapacity(raw.count)
        for r in raw {
            let (end, o) = r.offset.addingReportingOverflow(r.bytes)
            guard !o, end <= available else {
                throw .tensorOutOfBounds(name: r.name, offset: r.offset, bytes: r.bytes, available: available)
            }
            infos.append(TensorInfo(name: r.name, shape: r.shape, type: r.type, fileOffset: dataOffset + r.offset, byteCount: r.bytes))
        }

        return Header(version: version, metadata: metadata, metadataRanges: metadataRanges, tensors: infos, tensorIndex: index,
                      alignment: alignment, tensorInfoOffset: tensorInfoOffset, dataOffset: dataOffset)
    }

    private static func readValue(_ c: inout ByteCursor, type: UInt32, key: String, depth: Int) throws(GGUFError) -> GGUFValue {
        // Built only when an error is thrown: this runs once per element of 49k-entry arrays.
        func ctx() -> String { "value of '\(key)'" }
        switch type {
        case 0: return .unsigned(UInt64(try c.read(UInt8.self, ctx())))
        case 1: return .signed(Int64(try c.read(Int8.self, ctx())))
        case 2: return .unsigned(UInt64(try c.read(UInt16.self, ctx())))
        case 3: return .signed(Int64(try c.read(Int16.self, ctx())))
        case 4: return .unsigned(UInt64(try c.read(UInt32.self, ctx())))
        case 5: return .signed(Int64(try c.read(Int32.self, ctx())))
        case 6: return .float(Double(try c.readFloat32(ctx())))
        case 7:
            let b = try c.read(UInt8.self, ctx())
            guard b <= 1 else { throw .malformed(context: ctx(), offset: c.offset - 1, reason: "bool is \(b)") }
            return .bool(b == 1)
        case 8: return .string(try c.readString(ctx()))
        case 9: return .array(try readArray(&c, key: key, depth: depth))
        case 10: return .unsigned(try c.read(UInt64.self, ctx()))
        case 11: return .signed(try c.read(Int64.self, ctx()))
        case 12: return .float(try c.readFloat64(ctx()))
        default: throw .malformed(context: ctx(), offset: c.offset - 4, reason: "unknown value type \(type)")
        }
    }

    private static func readArray(_ c: inout ByteCursor, key: String, depth: Int) throws(GGUFError) -> GGUFArray {
        let start = c.offset
        let elemType = try c.read(UInt32.self, "array type of '\(key)'")
        let count64 = try c.read(UInt64.self, "array length of '\(key)'")
        let minSize: Int
        switch elemType {
        case 0, 1, 7: minSize = 1
        case 2, 3: minSize = 2
        case 4, 5, 6: minSize = 4
        case 8, 10, 11, 12: minSize = 8
        case 9: minSize = 12
        default: throw .malformed(context: "array '\(key)'", offset: start, reason: "unknown element type \(elemType)")
        }
        guard count64 <= UInt64(c.remaining / minSize) else { throw .truncated(context: "array '\(key)' of \(count64) elements", offset: start) }
        let count = Int(count64)
        switch elemType {
        case 8:
            var a: [String] = []
            a.reserveCapacity(count)
            for i in 0..<count { a.append(try c.readString("element \(i) of '\(key)'")) }
            return .strings(a)
        case 6, 12:
            var a: [Double] = []
            a.reserveCapacity(count)
            for _ in 0..<count {
                guard case .float(let v) = try readValue(&c, type: elemType, key: key, depth: depth) else { continue }
                a.append(v)
            }
            return .floats(a)
        case 7:
            var a: [Bool] = []
            a.reserveCapacity(count)
            for _ in 0..<count { if case .bool(let b) = try readValue(&c, type: 7, key: key, depth: depth) { a.append(b) } }
            return .bools(a)
        case 9:
            guard depth < 2 else { throw .malformed(context: "array '\(key)'", offset: start, reason: "arrays nested too deeply") }
            var a: [GGUFArray] = []
            for _ in 0..<count { a.append(try readArray(&c, key: key, depth: depth + 1)) }
            return .arrays(a)
        default:
            var a: [Int64] = []
            a.reserveCapacity(count)
            for _ in 0..<count {
                switch try readValue(&c, type: elemType, key: key, depth: depth) {
                case .unsigned(let v): a.append(Int64(bitPattern: v))
                case .signed(let v): a.append(v)
                default: break
                }
            }
            return .integers(a)
        }
    }

    // MARK: - Access

    public func tensor(named name: String) -> TensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// Offset in the file at ``path`` of a tensor view's start, which is where the offload runtime
    /// reads it from; nil for bytes that exist only in memory (a block file's compressed blocks,
    /// decoded at open).
    public func fileOffset(of pointer: UnsafeRawPointer) -> Int? {
        if let storedBytes {
            let o = pointer - storedBytes.baseAddress!
            return o >= 0 && o < storedBytes.count ? o : nil
        }
        let o = pointer - mapping.base
        precondition(o >= 0 && o <= fileSize, "pointer outside the mapping of \(path)")
        return o
    }

    /// Name of the tensor whose data starts at `pointer`, if any.
    public func tensorName(at pointer: UnsafeRawPointer) -> String? {
        tensors.first { tensorBytes($0).baseAddress == pointer }?.name
    }

    /// The decoded block holding the tensor whose data starts at `pointer`, and where that tensor
    /// starts in the block's decoded bytes.
    public func decodedBlock(of pointer: UnsafeRawPointer) -> (block: BlockFile.Entry, rawOffset: Int)? {
        guard !decodedBlocks.isEmpty else { return nil }
        let o = pointer - mapping.base
        for e in decodedBlocks {
            var at = 0
            for t in e.tensors {
                if t.imageOffset == o { return (e, at) }
                at += t.byteCount
            }
        }
        return nil
    }

    /// Names of the tensors whose bytes exist only in memory (see ``fileOffset(of:)``).
    public var tensorsOnlyInMemory: [String] {
        storedBytes == nil ? [] : tensors.filter { stored[$0.fileOffset] == nil }.map(\.name)
    }

    /// Advises the kernel that the mapping will not be read sequentially (no readahead), and drops
    /// the pages already touched. Under a memory cap the offload runtime reads weights itself, so
    /// the mapping is only a header parser's view and must not fill the page cache.
    public func releaseMappedPages() {
        mapping.dropPages()
        storedMapping?.dropPages()
    }

    /// Drops the mapped pages of one tensor view (after the caller copied it); bytes that live
    /// only in memory are left alone.
    public func releaseMappedPages(of bytes: UnsafeRawBufferPointer) {
        guard let start = bytes.baseAddress else { return }
        mapping.dropPages(from: start, length: bytes.count)
        storedMapping?.dropPages(from: start, length: bytes.count)
    }

    /// A view of a tensor's bytes, valid for the lifetime of this `GGUFFile`.
    /// The bytes before the tensor data: header, metadata and tensor infos (the block file keeps
    /// them verbatim).
    public var headerBytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: mapping.bytes[0..<dataOffset]) }

    /// The whole GGUF as parsed: the file, or an image built in memory (``GGUFWriter``), which
    /// `flexrun pack --gguf` writes out as it is.
    public var imageBytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: mapping.bytes[0..<fileSize]) }

    public func tensorBytes(_ info: TensorInfo) -> UnsafeRawBufferPointer {
        if let storedBytes, let at = stored[info.fileOffset] {
            return UnsafeRawBufferPointer(rebasing: storedBytes[at..<at + info.byteCount])
        }
        return UnsafeRawBufferPointer(rebasing: mapping.bytes[info.fileOffset..<info.fileOffset + info.byteCount])
    }

    public func int(_ key: String) -> Int? { metadata[key]?.asInt }
    public func double(_ key: String) -> Double? { metadata[key]?.asDouble }
    public func string(_ key: String) -> String? { metadata[key]?.asString }
    public func bool(_ key: String) -> Bool? { metadata[key]?.asBool }

    public func requireInt(_ key: String) throws(GGUFError) -> Int {
        guard let v = metadata[key] else { throw .missingKey(key) }
        guard let i = v.asInt, i >= 0 else { throw .badKey(key, reason: "expected a non-negative integer") }
        return i
    }

    public func stringArray(_ key: String) -> [String]? {
        if case .array(.strings(let a))? = metadata[key] { return a }
        return nil
    }

    public func intArray(_ key: String) -> [Int64]? {
        if case .array(.integers(let a))? = metadata[key] { return a }
        return nil
    }

    public func boolArray(_ key: String) -> [Bool]? {
        if case .array(.bools(let a))? = metadata[key] { return a }
        return nil
    }

    public func floatArray(_ key: String) -> [Double]? {
        if case .array(.floats(let a))? = metadata[key] { return a }
        return nil
    }
}
