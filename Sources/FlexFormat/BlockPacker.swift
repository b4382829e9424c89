import FlexSystem

/// Writes a GGUF as a FlexRun block file (docs/FORMAT.md), choosing each block's codec.
///
/// The speed-adaptive rule (DESIGN.md §3): a block is stored compressed only if reading the
/// smaller payload and decoding it beats reading it raw, stored/bandwidth + decode < raw/bandwidth,
/// with the decode time measured on this machine, one core, for that very block. Otherwise it
/// is stored raw, so a packed file is never slower to stream than the GGUF. The decision and its
/// numbers go into the index.
public struct BlockPacker {
    public enum CodecChoice: Sendable, Equatable, CustomStringConvertible {
        /// lz4 or zstd, whichever is smaller, kept where the rule says it pays.
        case auto
        case none
        /// Forced: used wherever it makes the block smaller, whatever the speed.
        case lz4
        case zstd(level: Int)

        public init?(parsing text: String) {
            switch text {
            case "auto": self = .auto
            case "none": self = .none
            case "lz4": self = .lz4
            case "zstd": self = .zstd(level: BlockPacker.defaultZstdLevel)
            default:
                guard text.hasPrefix("zstd:"), let l = Int(text.dropFirst(5)), (1...22).contains(l) else { return nil }
                self = .zstd(level: l)
            }
        }

        public var description: String {
            switch self {
            case .auto: "auto"
            case .none: "none"
            case .lz4: "lz4"
            case .zstd(let l): "zstd:\(l)"
            }
        }
    }

    /// zstd level for `auto` and a bare `zstd`: higher levels cost pack time, not decode time.
    public static let defaultZstdLevel = 9

    public var codec: CodecChoice = .auto
    /// Bytes per second the rule assumes for reading blocks (measured by the CLI or given).
    public var diskBandwidth: Double
    /// Try byte-plane grouping of F16/BF16/F32 tensors before compressing.
    public var bytePlanes = true

    public init(diskBandwidth: Double) { self.diskBandwidth = diskBandwidth }

    /// What was done with one block.
    public struct BlockReport: Sendable {
        public let name: String
        public let kind: BlockFile.Kind
        public let tensorTypes: [GGMLType]
        public let rawSize: Int
        public let storedSize: Int
        public let codec: BlockCodec
        public let planes: Bool
        public let decision: BlockFile.Decision
        /// Decode speed of the best candidate, raw bytes per second (0 when none was tried).
        public var candidateDecodeRate: Double { decision.candidateDecodeSeconds > 0 ? Double(rawSize) / decision.candidateDecodeSeconds : 0 }
    }

    /// The tensors of `file` grouped into blocks, in streaming order: embedding, then each
    /// layer's attention and FFN, then the head and the rest.
    public static func blocks(of file: GGUFFile) -> [(kind: BlockFile.Kind, layer: Int, tensors: [TensorInfo])] {
        var groups: [String: (kind: BlockFile.Kind, layer: Int, tensors: [TensorInfo])] = [:]
        for t in file.tensors {
            var kind = BlockFile.Kind.other, layer = -1
            let parts = t.name.split(separator: ".")
            if parts.count >= 3, parts[0] == "blk", let l = Int(parts[1]) {
                layer = l
                kind = parts[2].hasPrefix("ffn") || parts[2].hasPrefix("post_ffw") ? .ffn : .attention
            } else if t.name.hasPrefix("token_embd.") {
                kind = .embedding
            } else if t.name == "output.weight" {
                kind = .head
            }
            groups["\(kind.rawValue).\(layer)", default: (kind, layer, [])].tensors.append(t)
        }
        func rank(_ g: (kind: BlockFile.Kind, layer: Int, tensors: [TensorInfo])) -> (Int, Int, Int) {
            switch g.kind {
            case .embedding: (0, 0, 0)
            case .attention: (1, g.layer, 0)
            case .ffn: (1, g.layer, 1)
            case .head: (2, 0, 0)
            case .other: (3, 0, 0)
            }
        }
        return groups.values.sorted { rank($0) < rank($1) }
    }

    /// Packs `file` into `path` (written to a temporary file and renamed when complete).
    public func pack(_ file: GGUFFile, to path: String, progress: (Int, Int, BlockReport) -> Void = { _, _, _ in }) throws(SystemError) -> [BlockReport] {
        var out = try OutputFile(path: path)
        let header = [UInt8](repeating: 0, count: BlockFile.headerSize)
        try out.write(header)
        try out.pad(to: BlockFile.alignment)
        let metadataOffset = out.offset
        let meta = file.headerBytes
        try out.write(meta)
        try out.pad(to: BlockFile.alignment)

        let coder = BlockCoder()
        let groups = Self.blocks(of: file)
        var entries: [BlockFile.Entry] = [], reports: [BlockReport] = []
        for (i, g) in groups.enumerated() {
            let rawSize = g.tensors.reduce(0) { $0 + $1.byteCount }
            let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, rawSize), alignment: 64)
            let split = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, rawSize), alignment: 64)
            defer { raw.deallocate(); split.deallocate() }
            var at = 0
            var hasFloat = false
            for t in g.tensors {
                let src = file.tensorBytes(t)
                UnsafeMutableRawBufferPointer(rebasing: raw[at..<at + t.byteCount]).copyMemory(from: src)
                let dst = UnsafeMutableRawBufferPointer(rebasing: split[at..<at + t.byteCount])
                let w = bytePlanes ? BytePlanes.width(for: t.type) ?? 0 : 0
                BytePlanes.split(src, width: w, into: dst)
                hasFloat = hasFloat || w > 1
                at += t.byteCount
            }
            let rawView = UnsafeRawBufferPointer(rebasing: raw[0..<rawSize])
            let splitView = UnsafeRawBufferPointer(rebasing: split[0..<rawSize])

            // Candidates: each codec allowed, on the bytes as they are and, for float tensors, in planes.
            var codecs: [(BlockCodec, Int)]
            switch codec {
            case .auto: codecs = [(.lz4, 0), (.zstd, Self.defaultZstdLevel)]
            case .none: codecs = []
            case .lz4: codecs = [(.lz4, 0)]
            case .zstd(let l): codecs = [(.zstd, l)]
            }
            var best: (codec: BlockCodec, level: Int, planes: Bool, bytes: [UInt8])?
            for (c, level) in codecs {
                for planes in hasFloat ? [false, true] : [false] {
                    if let z = coder.compress(planes ? splitView : rawView, codec: c, level: level), z.count < (best?.bytes.count ?? rawSize) {
                        best = (c, level, planes, z)
                    }
                }
            }
            var decision = BlockFile.Decision(candidate: .none, candidateLevel: 0, candidateSize: rawSize, candidateDecodeSeconds: 0)
            var keep = false
            if let b = best {
                let seconds = Self.decodeSeconds(b.bytes, codec: b.codec, planes: b.planes ? g.tensors : nil, rawSize: rawSize, coder: coder)
                decision = BlockFile.Decision(candidate: b.codec, candidateLevel: b.level, candidateSize: b.bytes.count, candidateDecodeSeconds: seconds)
                keep = codec != .auto || Double(b.bytes.count) / diskBandwidth + seconds < Double(rawSize) / diskBandwidth
            }
            let payloadOffset = out.offset
            let checksum: UInt64, storedSize: Int
            if keep, let b = best {
                checksum = b.bytes.withUnsafeBytes { XXHash64.hash($0) }
                storedSize = b.bytes.count
                try out.write(b.bytes)
            } else {
                checksum = XXHash64.hash(rawView)
                storedSize = rawSize
                try out.write(rawView)
            }
            try out.pad(to: BlockFile.alignment)
            let planes = keep && best!.planes
            var offsetInBlock = 0
            let tensors = g.tensors.map { t -> BlockFile.Tensor in
                defer { offsetInBlock += t.byteCount }
                return BlockFile.Tensor(name: t.name, imageOffset: t.fileOffset, byteCount: t.byteCount,
                                        planeWidth: planes ? (BytePlanes.width(for: t.type) ?? 0) : 0)
            }
            let entry = BlockFile.Entry(kind: g.kind, layer: g.layer, codec: keep ? best!.codec : .none, level: keep ? best!.level : 0,
                                        payloadOffset: payloadOffset, storedSize: storedSize, rawSize: rawSize, checksum: checksum,
                                        decision: decision, tensors: tensors)
            entries.append(entry)
            let report = BlockReport(name: entry.name, kind: g.kind, tensorTypes: g.tensors.map(\.type), rawSize: rawSize,
                                     storedSize: storedSize, codec: entry.codec, planes: planes, decision: decision)
            reports.append(report)
            progress(i + 1, groups.count, report)
        }
        let index = BlockFile.encode(entries)
        let indexOffset = out.offset
        try out.write(index)
        let h = BlockFile.Header(major: BlockFile.majorVersion, minor: BlockFile.minorVersion, imageSize: file.fileSize,
                                 metadataOffset: metadataOffset, metadataSize: meta.count, metadataChecksum: XXHash64.hash(meta),
                                 indexOffset: indexOffset, indexSize: index.count, indexChecksum: index.withUnsafeBytes { XXHash64.hash($0) },
                                 blockCount: entries.count, diskBandwidth: diskBandwidth)
        try out.overwrite(BlockFile.encode(h), at: 0)
        try out.commit()
        return reports
    }

    /// Best of three timed decodes (decompression plus plane joining) of one block, one core.
    static func decodeSeconds(_ stored: [UInt8], codec: BlockCodec, planes tensors: [TensorInfo]?, rawSize: Int, coder: BlockCoder) -> Double {
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: rawSize, alignment: 64)
        let joined = UnsafeMutableRawBufferPointer.allocate(byteCount: rawSize, alignment: 64)
        defer { raw.deallocate(); joined.deallocate() }
        var best = Double.infinity
        for _ in 0..<3 {
            let t0 = Platform.now()
            let ok = stored.withUnsafeBytes { coder.decompress($0, codec: codec, into: raw) }
            precondition(ok, "a block just compressed does not decompress")
            if let tensors {
                var at = 0
                for t in tensors {
                    let src = UnsafeRawBufferPointer(rebasing: raw[at..<at + t.byteCount])
                    let dst = UnsafeMutableRawBufferPointer(rebasing: joined[at..<at + t.byteCount])
                    BytePlanes.join(src, width: BytePlanes.width(for: t.type) ?? 0, into: dst)
                    at += t.byteCount
                }
            }
            best = min(best, Platform.now() - t0)
        }
        return best
    }
}
