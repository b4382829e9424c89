import CLZ4
import CZstd
import FlexSystem

/// How a block's bytes are stored: the codec, and whether float tensors were split into byte
/// planes first. Both lz4 and zstd come from the system libraries.
public enum BlockCodec: UInt8, Sendable, CustomStringConvertible, CaseIterable {
    case none = 0, lz4 = 1, zstd = 2
    public var description: String { switch self { case .none: "none"; case .lz4: "lz4"; case .zstd: "zstd" } }
}

/// Compresses and decompresses blocks. A class holding one zstd context of each kind, so a
/// worker reuses them across blocks instead of allocating per call (zstd's contexts are
/// megabytes).
public final class BlockCoder {
    private let compressContext: OpaquePointer
    private let decompressContext: OpaquePointer

    public init() {
        compressContext = ZSTD_createCCtx()
        decompressContext = ZSTD_createDCtx()
    }

    deinit {
        ZSTD_freeCCtx(compressContext)
        ZSTD_freeDCtx(decompressContext)
    }

    /// Compressed bytes of `raw`, or nil when the codec cannot shrink it.
    public func compress(_ raw: UnsafeRawBufferPointer, codec: BlockCodec, level: Int) -> [UInt8]? {
        switch codec {
        case .none: return nil
        case .lz4:
            guard raw.count <= Int(LZ4_MAX_INPUT_SIZE) else { return nil }
            var out = [UInt8](repeating: 0, count: Int(LZ4_compressBound(Int32(raw.count))))
            let n = out.withUnsafeMutableBytes { o in
                LZ4_compress_default(raw.baseAddress!.assumingMemoryBound(to: CChar.self), o.baseAddress!.assumingMemoryBound(to: CChar.self),
                                     Int32(raw.count), Int32(o.count))
            }
            guard n > 0, Int(n) < raw.count else { return nil }
            return Array(out[0..<Int(n)])
        case .zstd:
            var out = [UInt8](repeating: 0, count: ZSTD_compressBound(raw.count))
            let n = out.withUnsafeMutableBytes { o in
                ZSTD_compressCCtx(compressContext, o.baseAddress, o.count, raw.baseAddress, raw.count, Int32(level))
            }
            guard ZSTD_isError(n) == 0, n < raw.count else { return nil }
            return Array(out[0..<n])
        }
    }

    /// Decompresses a zstd block that arrives in pieces: `next` fills the buffer it is given and
    /// returns how many bytes it put there (0 at the end). The output goes straight into `raw`,
    /// which must be exactly the decoded size, so a large block needs no staging copy.
    public func decompressZstdStream(into raw: UnsafeMutableRawBufferPointer, chunk: UnsafeMutableRawBufferPointer,
                                     next: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard ZSTD_isError(ZSTD_DCtx_reset(decompressContext, ZSTD_reset_session_only)) == 0 else { return false }
        var output = ZSTD_outBuffer(dst: raw.baseAddress, size: raw.count, pos: 0)
        var finished = false
        while true {
            let n = next(chunk)
            guard n > 0 else { break }
            var input = ZSTD_inBuffer(src: chunk.baseAddress, size: n, pos: 0)
            while input.pos < input.size {
                let r = ZSTD_decompressStream(decompressContext, &output, &input)
                guard ZSTD_isError(r) == 0 else { return false }
                if r == 0 { finished = true }
                if output.pos == output.size && input.pos < input.size && r != 0 { return false }
                if r == 0 && input.pos < input.size { return false }   // bytes after the frame
            }
        }
        return finished && output.pos == raw.count
    }

    /// Decompresses `stored` into exactly `raw.count` bytes; false when the data does not
    /// decode to that size (corrupt input that slipped past the checksum, or a wrong index).
    public func decompress(_ stored: UnsafeRawBufferPointer, codec: BlockCodec, into raw: UnsafeMutableRawBufferPointer) -> Bool {
        switch codec {
        case .none:
            guard stored.count == raw.count else { return false }
            raw.copyMemory(from: stored)
            return true
        case .lz4:
            let n = LZ4_decompress_safe(stored.baseAddress!.assumingMemoryBound(to: CChar.self), raw.baseAddress!.assumingMemoryBound(to: CChar.self),
                                        Int32(stored.count), Int32(raw.count))
            return Int(n) == raw.count
        case .zstd:
            let n = ZSTD_decompressDCtx(decompressContext, raw.baseAddress, raw.count, stored.baseAddress, stored.count)
            return ZSTD_isError(n) == 0 && n == raw.count
        }
    }
}

/// Byte-plane grouping of float tensors: element i's byte j moves to plane j. The exponent
/// bytes of F16/BF16/F32 weights vary little, so as a plane of their own they compress well,
/// where interleaved with mantissa bytes they look random to an LZ matcher.
public enum BytePlanes {
    /// Splits `src` into planes of `width`-byte elements; width 0 or 1 is a plain copy.
    public static func split(_ src: UnsafeRawBufferPointer, width w: Int, into dst: UnsafeMutableRawBufferPointer) {
        guard w > 1 else { dst.copyMemory(from: src); return }
        let n = src.count / w
        for i in 0..<n { for j in 0..<w { dst[j * n + i] = src[i * w + j] } }
        for k in (n * w)..<src.count { dst[k] = src[k] }
    }

    /// Undoes ``split(_:width:into:)``; width 0 or 1 is a plain copy.
    public static func join(_ src: UnsafeRawBufferPointer, width w: Int, into dst: UnsafeMutableRawBufferPointer) {
        guard w > 1 else { dst.copyMemory(from: src); return }
        let n = src.count / w
        for i in 0..<n { for j in 0..<w { dst[i * w + j] = src[j * n + i] } }
        for k in (n * w)..<src.count { dst[k] = src[k] }
    }

    /// The plane width for a tensor type: its element size for float types, nil for quantized ones.
    public static func width(for type: GGMLType) -> Int? {
        switch type {
        case .f32: 4
        case .f16, .bf16: 2
        default: nil
        }
    }
}
