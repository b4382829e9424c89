import Glibc
import FlexSystem

/// FlexRun's packed model file (docs/FORMAT.md, byte-exact): a GGUF's metadata verbatim, then
/// its tensors grouped into prunable blocks (one per attention or FFN block of a layer, plus the
/// embedding, the head and the rest), each 4 KiB aligned, compressed only where that pays, and
/// guarded by an xxHash64 checksum.
public enum BlockFile {
    public static let magic: [UInt8] = Array("FLEXRUN\0".utf8)
    public static let majorVersion: UInt16 = 1
    public static let minorVersion: UInt16 = 0
    public static let alignment = 4096
    /// Bytes of the fixed header; the first payload starts at the next alignment boundary.
    public static let headerSize = 128

    public enum Kind: UInt8, Sendable {
        case attention = 0, ffn = 1, embedding = 2, head = 3, other = 4

        /// `attn:3`, `ffn:17`, `embed`, `head` or `other`, as errors and reports name blocks.
        public func blockName(layer: Int) -> String {
            switch self {
            case .attention: "attn:\(layer)"
            case .ffn: "ffn:\(layer)"
            case .embedding: "embed"
            case .head: "head"
            case .other: "other"
            }
        }
    }

    /// One tensor inside a block: where it sits in the GGUF image, and whether it was split
    /// into byte planes (plane width, 0 for none).
    public struct Tensor: Sendable, Equatable {
        public var name: String
        public var imageOffset: Int
        public var byteCount: Int
        public var planeWidth: Int
    }

    /// The codec decision for a block and the measurements behind it.
    public struct Decision: Sendable, Equatable {
        /// The best candidate tried (codec + planes), even when it was not kept.
        public var candidate: BlockCodec
        public var candidateLevel: Int
        public var candidateSize: Int
        public var candidateDecodeSeconds: Double
    }

    public struct Entry: Sendable, Equatable {
        public var kind: Kind
        public var layer: Int
        public var codec: BlockCodec
        public var level: Int
        public var payloadOffset: Int
        public var storedSize: Int
        public var rawSize: Int
        public var checksum: UInt64
        public var decision: Decision
        public var tensors: [Tensor]

        public var name: String { kind.blockName(layer: layer) }
    }

    public struct Header: Sendable, Equatable {
        public var major: UInt16
        public var minor: UInt16
        public var imageSize: Int
        public var metadataOffset: Int
        public var metadataSize: Int
        public var metadataChecksum: UInt64
        public var indexOffset: Int
        public var indexSize: Int
        public var indexChecksum: UInt64
        public var blockCount: Int
        /// Disk bandwidth (bytes/s) the codec rule assumed.
        public var diskBandwidth: Double
    }

    // MARK: Encoding

    struct Writer {
        var bytes: [UInt8] = []
        mutating func u8(_ v: UInt8) { bytes.append(v) }
        mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        mutating func i32(_ v: Int) { u32(UInt32(bitPattern: Int32(v))) }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        mutating func int(_ v: Int) { u64(UInt64(v)) }
        mutating func f64(_ v: Double) { u64(v.bitPattern) }
    }

    static func encode(_ h: Header) -> [UInt8] {
        var w = Writer()
        w.bytes.append(contentsOf: magic)
        w.u16(h.major); w.u16(h.minor); w.u32(UInt32(alignment))
        w.int(h.imageSize); w.int(h.metadataOffset); w.int(h.metadataSize); w.u64(h.metadataChecksum)
        w.int(h.indexOffset); w.int(h.indexSize); w.u64(h.indexChecksum)
        w.u32(UInt32(h.blockCount)); w.u32(0); w.f64(h.diskBandwidth)
        w.bytes.append(contentsOf: [UInt8](repeating: 0, count: 120 - w.bytes.count))
        let sum = w.bytes.withUnsafeBytes { XXHash64.hash($0) }
        w.u64(sum)
        return w.bytes
    }

    static func encode(_ entries: [Entry]) -> [UInt8] {
        var w = Writer()
        for e in entries {
            w.u8(e.kind.rawValue); w.u8(e.codec.rawValue); w.u16(0); w.i32(e.layer); w.i32(e.level)
            w.int(e.payloadOffset); w.int(e.storedSize); w.int(e.rawSize); w.u64(e.checksum)
            w.u8(e.decision.candidate.rawValue); w.u8(0); w.u16(0); w.i32(e.decision.candidateLevel)
            w.int(e.decision.candidateSize); w.f64(e.decision.candidateDecodeSeconds)
            w.u32(UInt32(e.tensors.count))
            for t in e.tensors {
                let name = Array(t.name.utf8)
                w.u16(UInt16(name.count)); w.bytes.append(contentsOf: name)
                w.int(t.imageOffset); w.int(t.byteCount); w.u8(UInt8(t.planeWidth))
            }
        }
        return w.bytes
    }

    // MARK: Decoding

    struct Reader {
        let bytes: [UInt8]
        var at = 0
        mutating func take<T: FixedWidthInteger>(_: T.Type) throws(BlockFileError) -> T {
            guard at + MemoryLayout<T>.size <= bytes.count else { throw .badIndex("entry runs past the index end at byte \(at)") }
            defer { at += MemoryLayout<T>.size }
            let offset = at
            return T(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) })
        }
        mutating func int() throws(BlockFileError) -> Int {
            let v = try take(UInt64.self)
            guard v <= UInt64(Int.max) else { throw .badIndex("value \(v) out of range at byte \(at - 8)") }
            return Int(v)
        }
        mutating func i32() throws(BlockFileError) -> Int { Int(Int32(bitPattern: try take(UInt32.self))) }
        mutating func f64() throws(BlockFileError) -> Double { Double(bitPattern: try take(UInt64.self)) }
    }

    static func decodeHeader(_ b: [UInt8], path: String) throws(BlockFileError) -> Header {
        guard b.count >= headerSize, Array(b[0..<8]) == magic else { throw .notBlockFile(path) }
        var r = Reader(bytes: b, at: 8)
        let major = try r.take(UInt16.self), minor = try r.take(UInt16.self)
        guard major == majorVersion else { throw .unsupportedVersion(path, major: Int(major), minor: Int(minor)) }
        let stored = UInt64(littleEndian: b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 120, as: UInt64.self) })
        guard b.withUnsafeBytes({ XXHash64.hash(UnsafeRawBufferPointer(rebasing: $0[0..<120])) }) == stored else { throw .badHeader(path, "header checksum mismatch") }
        guard try r.take(UInt32.self) == UInt32(alignment) else { throw .badHeader(path, "alignment is not \(alignment)") }
        let imageSize = try r.int(), metadataOffset = try r.int(), metadataSize = try r.int()
        let metadataChecksum = try r.take(UInt64.self)
        let indexOffset = try r.int(), indexSize = try r.int()
        let indexChecksum = try r.take(UInt64.self)
        let blockCount = Int(try r.take(UInt32.self))
        _ = try r.take(UInt32.self)
        let bandwidth = try r.f64()
        return Header(major: major, minor: minor, imageSize: imageSize, metadataOffset: metadataOffset, metadataSize: metadataSize,
                      metadataChecksum: metadataChecksum, indexOffset: indexOffset, indexSize: indexSize, indexChecksum: indexChecksum,
                      blockCount: blockCount, diskBandwidth: bandwidth)
    }

    static func decodeIndex(_ b: [UInt8], count: Int, imageSize: Int) throws(BlockFileError) -> [Entry] {
        var r = Reader(bytes: b)
        var entries: [Entry] = []
        for _ in 0..<count {
            guard let kind = Kind(rawValue: try r.take(UInt8.self)) else { throw .badIndex("unknown block kind at byte \(r.at - 1)") }
            guard let codec = BlockCodec(rawValue: try r.take(UInt8.self)) else { throw .badIndex("unknown codec at byte \(r.at - 1)") }
            _ = try r.take(UInt16.self)
            let layer = try r.i32(), level = try r.i32()
            let offset = try r.int(), stored = try r.int(), raw = try r.int(), sum = try r.take(UInt64.self)
            guard let candidate = BlockCodec(rawValue: try r.take(UInt8.self)) else { throw .badIndex("unknown codec at byte \(r.at - 1)") }
            _ = try r.take(UInt8.self); _ = try r.take(UInt16.self)
            let decision = Decision(candidate: candidate, candidateLevel: try r.i32(), candidateSize: try r.int(), candidateDecodeSeconds: try r.f64())
            let n = Int(try r.take(UInt32.self))
            var tensors: [Tensor] = []
            var total = 0
            for _ in 0..<n {
                let len = Int(try r.take(UInt16.self))
                guard r.at + len <= b.count else { throw .badIndex("tensor name runs past the index end") }
                let name = String(decoding: b[r.at..<r.at + len], as: UTF8.self)
                r.at += len
                let t = Tensor(name: name, imageOffset: try r.int(), byteCount: try r.int(), planeWidth: Int(try r.take(UInt8.self)))
                guard t.imageOffset <= imageSize, t.byteCount <= imageSize - t.imageOffset else {
                    throw .badIndex("tensor '\(name)' lies outside the \(imageSize)-byte image")
                }
                // Each size is checked against the image, but their sum can still pass Int.max.
                let (sum, overflow) = total.addingReportingOverflow(t.byteCount)
                guard !overflow else { throw .badIndex("block's tensor sizes overflow") }
                total = sum
                tensors.append(t)
            }
            guard total == raw else { throw .badIndex("block's tensors hold \(total) bytes, its raw size says \(raw)") }
            guard offset % alignment == 0 else { throw .badIndex("payload offset \(offset) is not \(alignment)-aligned") }
            entries.append(Entry(kind: kind, layer: layer, codec: codec, level: level, payloadOffset: offset, storedSize: stored,
                                 rawSize: raw, checksum: sum, decision: decision, tensors: tensors))
        }
        return entries
    }

    /// Header and index from byte buffers, without a file: the checks ``readIndex(path:)`` makes
    /// on them, except the index checksum and the payloads' place in the file (the fuzz target
    /// `blockfile` calls it on arbitrary bytes, fixing up the header checksum first so mutations
    /// reach the fields behind it; it must throw, never trap).
    @_spi(Fuzzing) public static func parse(header: [UInt8], index: [UInt8]) throws(BlockFileError) -> (Header, [Entry]) {
        let h = try decodeHeader(header, path: "<buffer>")
        return (h, try decodeIndex(index, count: h.blockCount, imageSize: h.imageSize))
    }

    /// Up to `count` bytes at `at` (fewer at the end of the file).
    static func readBytes(_ f: borrowing FileHandle, count: Int, at: Int) throws(BlockFileError) -> [UInt8] {
        guard count > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        var failure: SystemError?
        out.withUnsafeMutableBytes { b in
            do throws(SystemError) { got = try f.read(into: b.baseAddress!, count: count, at: at) } catch { failure = error }
        }
        if let failure { throw .io(failure) }
        if got < count { out.removeLast(count - got) }
        return out
    }

    /// Whether `file` starts with the block file magic (false for short or unreadable files).
    static func hasMagic(_ file: borrowing FileHandle) -> Bool { (try? readBytes(file, count: 8, at: 0)) == magic }

    /// Header and index, checked (the index against its checksum and the file's size).
    public static func readIndex(path: String) throws(BlockFileError) -> (Header, [Entry]) {
        let f: FileHandle
        do { f = try FileHandle(readingFrom: path) } catch { throw .io(error) }
        return try readIndex(f)
    }

    static func readIndex(_ f: borrowing FileHandle) throws(BlockFileError) -> (Header, [Entry]) {
        let path = f.path
        let size: Int
        do { size = try f.size() } catch { throw .io(error) }
        let head = try readBytes(f, count: headerSize, at: 0)
        guard head.count == headerSize else {
            if head.count >= 8 && Array(head[0..<8]) == magic { throw .truncated(path, what: "header", needed: headerSize, size: size) }
            throw .notBlockFile(path)
        }
        let h = try decodeHeader(head, path: path)
        guard h.indexOffset <= size, h.indexSize <= size - h.indexOffset else {
            throw .truncated(path, what: "block index", needed: h.indexOffset + h.indexSize, size: size)
        }
        let index = try readBytes(f, count: h.indexSize, at: h.indexOffset)
        guard index.withUnsafeBytes({ XXHash64.hash($0) }) == h.indexChecksum else { throw .badIndex("index checksum mismatch (the file is corrupt)") }
        let entries = try decodeIndex(index, count: h.blockCount, imageSize: h.imageSize)
        for e in entries where e.payloadOffset > size || e.storedSize > size - e.payloadOffset {
            throw .truncated(path, what: "block \(e.name)", needed: e.payloadOffset + e.storedSize, size: size)
        }
        return (h, entries)
    }

    /// The GGUF image of a block file: where each tensor's bytes are found.
    struct Image: ~Copyable {
        /// Anonymous memory the size of the GGUF image, holding the header and metadata and the
        /// decoded bytes of every tensor not in `stored`. Pages of tensors found in `stored` are
        /// never touched, so they cost no memory.
        var region: MappedRegion
        /// Image offset of a tensor → offset in the block file where its bytes lie as stored: the
        /// tensors of raw blocks (no codec, no byte planes) whose file position keeps the image's
        /// alignment. They are mapped from the file, like a GGUF's, and can stream from it.
        var stored: [Int: Int]
        /// The blocks that need decoding (compressed or in byte planes).
        var decoded: [Entry]
    }

    /// Tensors larger than this are left out of the image when it is built for streaming
    /// (`matricesInMemory: false`): they are matrices, which the offload runtime decodes itself.
    /// Norms and other vectors are always decoded at open; the largest plausible one (16384 F32)
    /// is 64 KiB, while SmolLM2's smallest matrices are 69 KiB (at 256 KiB, 16 MiB of its
    /// attention matrices were copied into memory for nothing). A smaller matrix is merely kept.
    public static let lazyTensorBytes = 64 << 10

    /// Decodes one checked payload into `raw` (the block's tensors, in index order, planes joined)
    /// with `coder`. `scratch` must hold the largest tensor in planes (``planeScratchBytes``).
    public static func decode(_ e: Entry, payload: UnsafeRawBufferPointer, coder: BlockCoder,
                              into raw: UnsafeMutableRawBufferPointer, scratch: UnsafeMutableRawBufferPointer?) -> Bool {
        guard raw.count >= e.rawSize else { return false }
        let out = UnsafeMutableRawBufferPointer(rebasing: raw[0..<e.rawSize])
        return coder.decompress(payload, codec: e.codec, into: out) && joinPlanes(e, out, scratch: scratch)
    }

    /// Bytes of scratch ``decode(_:payload:coder:into:scratch:)`` needs for `e`: its largest
    /// tensor in byte planes (joined one tensor at a time), 0 if none.
    public static func planeScratchBytes(_ e: Entry) -> Int {
        e.tensors.filter { $0.planeWidth > 1 }.map(\.byteCount).max() ?? 0
    }

    /// Rejoins, in place, the tensors of decoded bytes `raw` that were stored in byte planes.
    public static func joinPlanes(_ e: Entry, _ raw: UnsafeMutableRawBufferPointer, scratch: UnsafeMutableRawBufferPointer?) -> Bool {
        var at = 0
        for t in e.tensors {
            if t.planeWidth > 1 {
                guard let scratch, scratch.count >= t.byteCount else { return false }
                let s = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<t.byteCount])
                s.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[at..<at + t.byteCount]))
                BytePlanes.join(UnsafeRawBufferPointer(s), width: t.planeWidth, into: UnsafeMutableRawBufferPointer(rebasing: raw[at..<at + t.byteCount]))
            }
            at += t.byteCount
        }
        return true
    }

    /// Rebuilds the GGUF image, checking every block's checksum, and parses it. Every block is
    /// verified before use, so a flipped bit is an error naming the block. Raw blocks are not
    /// copied: their tensors are found in place (``Image/stored``), which saves a copy of the
    /// model at open and lets the offload runtime read them from the file.
    /// With `matricesInMemory` false (a capped run), tensors of decoded blocks larger than
    /// ``lazyTensorBytes`` are checked and decoded but not kept: the offload runtime reads and
    /// decodes their blocks itself, so the image never holds the model.
    static func image(_ f: borrowing FileHandle, alignment tensorAlignment: Int = 32, matricesInMemory: Bool = true) throws(BlockFileError) -> Image {
        let (h, entries) = try readIndex(f)
        let path = f.path
        let coder = BlockCoder()
        var region: MappedRegion
        do { region = try MappedRegion(anonymous: h.imageSize) } catch { throw .io(error) }
        // The metadata's whole pages are mapped from the file (it is stored verbatim at a page
        // boundary), not copied: a copy would stay in anonymous memory for the engine's lifetime
        // after the parse, and count against a cap, where a GGUF's metadata pages are dropped.
        let page = Int(getpagesize())
        let fileSize: Int
        do { fileSize = try f.size() } catch { throw .io(error) }
        // A mapping past the end of the file would fault (SIGBUS) instead of failing.
        guard h.metadataOffset <= fileSize, h.metadataSize <= fileSize - h.metadataOffset else {
            throw .truncated(path, what: "metadata", needed: h.metadataOffset + h.metadataSize, size: fileSize)
        }
        guard h.metadataSize <= h.imageSize else { throw .badIndex("metadata larger than the image") }
        let mapped = h.metadataOffset % page == 0 ? h.metadataSize / page * page : 0
        if mapped > 0 {
            do { try region.mapFile(f, offset: h.metadataOffset, pages: mapped / page) } catch { throw .io(error) }
        }
        let image = region.mutableBytes
        var redirects: [Int: Int] = [:]
        var decoded: [Entry] = []
        do {
            // Past the mapped whole pages (or all of it, if not mapped), copy; then check it all.
            let rest = try readBytes(f, count: h.metadataSize - mapped, at: h.metadataOffset + mapped)
            guard rest.count == h.metadataSize - mapped else {
                throw .truncated(path, what: "metadata", needed: h.metadataOffset + h.metadataSize, size: h.metadataOffset + mapped + rest.count)
            }
            rest.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: image[mapped..<h.metadataSize]).copyMemory(from: $0) }
            guard XXHash64.hash(UnsafeRawBufferPointer(rebasing: image[0..<h.metadataSize])) == h.metadataChecksum else {
                throw .badIndex("metadata checksum mismatch (the file is corrupt)")
            }
            func needsDecode(_ e: Entry) -> Bool { !(e.codec == .none && e.tensors.allSatisfy { $0.planeWidth <= 1 }) }
            // For streaming, a decoded block none of whose tensors stays in memory is left to the
            // offload runtime, which reads, checks and decodes it itself (at load or first use).
            func skipped(_ e: Entry) -> Bool { !matricesInMemory && needsDecode(e) && e.tensors.allSatisfy { $0.byteCount > lazyTensorBytes } }
            // Scratch is mapped, not malloc'ed, so all of it goes back to the system when open
            // ends (a freed heap block would stay in the process and count against a cap).
            let storedMax = max(1, entries.filter { !skipped($0) }.map(\.storedSize).max() ?? 1)
            let rawMax = max(1, entries.filter { needsDecode($0) && !skipped($0) }.map(\.rawSize).max() ?? 1)
            let temp: MappedRegion
            do { temp = try MappedRegion(anonymous: storedMax) } catch { throw .io(error) }
            let rawTemp: MappedRegion
            do { rawTemp = try MappedRegion(anonymous: rawMax) } catch { throw .io(error) }
            let stored = temp.mutableBytes, raw = rawTemp.mutableBytes
            for e in entries {
                if skipped(e) { decoded.append(e); continue }
                let s = UnsafeMutableRawBufferPointer(rebasing: stored[0..<e.storedSize])
                let got: Int
                do throws(SystemError) { got = try f.read(into: s.baseAddress!, count: e.storedSize, at: e.payloadOffset) } catch { throw .io(error) }
                guard got == e.storedSize else { throw .truncated(path, what: "block \(e.name)", needed: e.payloadOffset + e.storedSize, size: e.payloadOffset + got) }
                guard XXHash64.hash(UnsafeRawBufferPointer(s)) == e.checksum else { throw .checksum(path, block: e.name, offset: e.payloadOffset) }
                // Under a cap, checking the file must not fill the page cache, which counts
                // against the cap's cgroup (a 25 % cap prefilled 2-3× slower while it reclaimed).
                if !matricesInMemory { f.dropCachedPages(offset: e.payloadOffset, count: e.storedSize) }
                if !needsDecode(e) {
                    var at = e.payloadOffset
                    for t in e.tensors {
                        if at % tensorAlignment == t.imageOffset % tensorAlignment {
                            redirects[t.imageOffset] = at
                        } else {
                            let src = UnsafeRawBufferPointer(rebasing: s[(at - e.payloadOffset)..<(at - e.payloadOffset + t.byteCount)])
                            UnsafeMutableRawBufferPointer(rebasing: image[t.imageOffset..<t.imageOffset + t.byteCount]).copyMemory(from: src)
                        }
                        at += t.byteCount
                    }
                    continue
                }
                let r = UnsafeMutableRawBufferPointer(rebasing: raw[0..<e.rawSize])
                guard coder.decompress(UnsafeRawBufferPointer(s), codec: e.codec, into: r) else {
                    throw .decode(path, block: e.name, codec: e.codec.description)
                }
                var at = 0
                decoded.append(e)
                for t in e.tensors {
                    if matricesInMemory || t.byteCount <= lazyTensorBytes {
                        let src = UnsafeRawBufferPointer(rebasing: r[at..<at + t.byteCount])
                        let dst = UnsafeMutableRawBufferPointer(rebasing: image[t.imageOffset..<t.imageOffset + t.byteCount])
                        BytePlanes.join(src, width: t.planeWidth, into: dst)
                    }
                    at += t.byteCount
                }
            }
        }
        region.seal()
        return Image(region: region, stored: redirects, decoded: decoded)
    }
}

/// Why a block file was refused: one line naming the file and, where it applies, the block.
public enum BlockFileError: Error, CustomStringConvertible, Sendable, Equatable {
    case io(SystemError)
    case notBlockFile(String)
    case unsupportedVersion(String, major: Int, minor: Int)
    case badHeader(String, String)
    case badIndex(String)
    case truncated(String, what: String, needed: Int, size: Int)
    case checksum(String, block: String, offset: Int)
    case decode(String, block: String, codec: String)

    public var description: String {
        switch self {
        case .io(let e): e.description
        case .notBlockFile(let p): "\(p) is not a FlexRun block file"
        case let .unsupportedVersion(p, major, minor):
            "\(p) is block file format \(major).\(minor); this flexrun reads major version \(BlockFile.majorVersion)"
        case let .badHeader(p, why): "\(p): corrupt block file header: \(why)"
        case .badIndex(let why): "corrupt block file index: \(why)"
        case let .truncated(p, what, needed, size): "\(p) is truncated: \(what) needs \(needed) bytes, the file has \(size)"
        case let .checksum(p, block, offset): "\(p): block \(block) at byte \(offset) fails its checksum: the file is corrupt"
        case let .decode(p, block, codec): "\(p): block \(block) does not decode with \(codec): the file is corrupt"
        }
    }
}
