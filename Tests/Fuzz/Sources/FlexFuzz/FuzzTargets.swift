@_spi(Fuzzing) import FlexFormat
import FlexEngine
import FlexSystem
import Foundation

/// libFuzzer's callback (run by ``LLVMFuzzerRunDriver`` from main.swift): one binary for every
/// target, picked by `FLEXRUN_FUZZ_TARGET` (one link instead of seven). Each target feeds the bytes to a parser that must throw on bad input and
/// never trap; a trap, a sanitizer report or a failed property (`check`) is a crash to fix.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    switch FuzzTarget.selected {
    case .gguf: FuzzTarget.gguf(bytes)
    case .blockfile: FuzzTarget.blockFile(bytes)
    case .tokenizer: FuzzTarget.tokenizer(bytes, FuzzTarget.bpe)
    case .tokenizerSP: FuzzTarget.tokenizer(bytes, FuzzTarget.sentencePiece)
    case .sizes: FuzzTarget.sizes(bytes)
    case .profile: FuzzTarget.profile(bytes)
    case .policy: FuzzTarget.policy(bytes)
    }
    return 0
}

enum FuzzTarget: String, CaseIterable {
    case gguf, blockfile, tokenizer, tokenizerSP = "tokenizer-sp", sizes, profile, policy

    static let selected: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["FLEXRUN_FUZZ_TARGET"] ?? ""
        guard let t = FuzzTarget(rawValue: name) else {
            fatalError("FLEXRUN_FUZZ_TARGET must be one of \(allCases.map(\.rawValue).joined(separator: ", ")), not '\(name)'")
        }
        return t
    }()

    /// A failed property: abort, so libFuzzer saves the input as a crash.
    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError("property failed: \(message())") }
    }

    /// The GGUF loader's whole parse (header, metadata, tensor infos against the length), then
    /// what the engine builds from an image that parses: the model config and weight views
    /// (``ModelWeights``) and the tokenizer, which must throw on whatever metadata the bytes
    /// hold; a tokenizer that builds encodes and decodes a line. The `tiny-llama` seed is a
    /// whole one-layer model, so mutations start from metadata the engine accepts.
    static func gguf(_ bytes: UnsafeRawBufferPointer) {
        guard let h = try? GGUFFile.parseHeader(bytes) else { return }
        for t in h.tensors { check(t.fileOffset + t.byteCount <= bytes.count, "tensor \(t.name) past the end") }
        guard var image = try? MappedRegion(anonymous: bytes.count) else { return }
        image.mutableBytes.copyMemory(from: bytes)
        image.seal()
        guard let file = try? GGUFFile(path: "<fuzz>", image: image) else { return }
        _ = try? ModelWeights(file: file)
        if let t = try? TokenizerModel.tokenizer(for: file) {
            _ = t.decode(t.encode("Hello, world! 123 <|im_start|>"))
        }
    }

    /// Block-file header (its checksum fixed up, so mutations reach the fields behind it) and
    /// index: the first 128 bytes are the header, the rest the index.
    static func blockFile(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= 128 else { _ = try? BlockFile.parse(header: Array(bytes), index: []); return }
        var header = Array(bytes[0..<128])
        let sum = header.withUnsafeBytes { XXHash64.hash(UnsafeRawBufferPointer(rebasing: $0[0..<120])) }
        withUnsafeBytes(of: sum.littleEndian) { for i in 0..<8 { header[120 + i] = $0[i] } }
        _ = try? BlockFile.parse(header: header, index: Array(bytes[128...]))
    }

    /// The vocabulary to fuzz a tokenizer with: `FLEXRUN_FUZZ_MODEL`, else the model named here
    /// (only its vocabulary is read).
    static func loadTokenizer(_ fallback: String) -> any Tokenizer {
        let path = ProcessInfo.processInfo.environment["FLEXRUN_FUZZ_MODEL"] ?? fallback
        do { return try Model.tokenizer(path: path) } catch { fatalError("fuzz: cannot read the tokenizer of \(path): \(error)") }
    }
    static let bpe = loadTokenizer(ModelCache.defaultModelPath)
    static let sentencePiece = loadTokenizer(ModelCache.gemma3ModelPath)

    /// Bytes a byte-level BPE vocabulary has no token for (GPT-2's byte → scalar table). They
    /// are dropped, as llama.cpp drops them: SmolLM2's vocabulary lacks some control characters
    /// (U+001D) and lead bytes that never occurred in its training text (0xF1), both found by
    /// this target. SentencePiece falls back to byte tokens and drops nothing.
    static let bpeMissingBytes: Set<UInt8> = {
        var mapped: [UInt8: Unicode.Scalar] = [:]
        var next: UInt32 = 256
        for b in 0...255 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                mapped[UInt8(b)] = Unicode.Scalar(UInt32(b))!
            } else {
                mapped[UInt8(b)] = Unicode.Scalar(next)!
                next += 1
            }
        }
        let missing = Set(mapped.filter { bpe.tokenID(String($0.value)) == nil }.keys)
        FileHandle.standardError.write(Data("fuzz: the BPE vocabulary has no token for bytes \(missing.sorted())\n".utf8))
        return missing
    }()

    /// Random bytes as text (invalid UTF-8 repaired, as every caller's String is), encoded and
    /// decoded: never a trap, and the text comes back exactly, less the bytes the vocabulary
    /// cannot represent at all. Without special-token parsing and BOS, that is every tokenizer's
    /// promise on valid UTF-8; the same bytes are also decoded as raw ids (any id in range).
    static func tokenizer(_ bytes: UnsafeRawBufferPointer, _ t: any Tokenizer) {
        let text = String(decoding: bytes, as: UTF8.self)
        let missing = selected == .tokenizer ? bpeMissingBytes : []
        let expected = String(decoding: text.utf8.filter { !missing.contains($0) }, as: UTF8.self)
        let ids = t.encode(text, addSpecial: false, parseSpecial: false)
        let back = t.decode(ids)
        check(back == expected, "decode(encode(x)) != x for \(Array(text.utf8)) → \(ids) → \(Array(back.utf8))")
        _ = t.encode(text, addSpecial: true, parseSpecial: true)
        let n = t.vocabularySize
        var raw: [Int32] = []
        var i = 0
        while i + 4 <= bytes.count {
            raw.append(Int32(truncatingIfNeeded: Int(bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self)) % n))
            i += 4
        }
        _ = t.decode(raw)
    }

    /// Size strings (`--mem-limit`), block lists (`--skip`) and their comma-separated form.
    static func sizes(_ bytes: UnsafeRawBufferPointer) {
        let text = String(decoding: bytes, as: UTF8.self)
        if let s = try? ByteSize(parsing: text) {
            check(s.bytes >= 0, "negative size \(s.bytes) from '\(text)'")
            _ = ByteSize.format(s.bytes)
        }
        if let m = try? BlockMask(parsing: text) {
            // What a mask prints, it parses back to.
            let again = try? BlockMask(parsingBlocks: m.skipped.sorted().map(\.description))
            check(again == m, "'\(text)' → \(m.skipped.sorted()) does not parse back")
        }
        _ = try? BlockMask(parsingBlocks: text.split(separator: ",", omittingEmptySubsequences: false).map(String.init))
    }

    /// Pruning profiles (with their quality table): decoded, then every accessor the engine uses.
    static func profile(_ bytes: UnsafeRawBufferPointer) {
        guard let p = try? PruningProfile.decode(Data(bytes), path: "<fuzz>") else { return }
        _ = try? p.removalOrder()
        for k in 0...min(64, p.budgets.count + 1) {
            _ = try? p.mask(removing: k)
            _ = try? p.prefillMask(removing: k)
        }
    }

    /// RAP policy files: decoded, then asked for Q-values on a neutral state.
    static func policy(_ bytes: UnsafeRawBufferPointer) {
        guard let p = try? RLPolicy.decode(Data(bytes), path: "<fuzz>", layers: nil) else { return }
        _ = p.qValues([Float](repeating: 0.5, count: RLPolicy.featureCount))
    }
}
