import Foundation
import Testing
@testable import FlexEngine
@_spi(Fuzzing) import FlexFormat

/// Inputs the fuzz targets (Tests/Fuzz, `Tools/fuzz.sh`) found, kept as regression tests: each
/// file under Tests/Fuzz/regressions/TARGET goes through what that target checks.
@Suite struct FuzzRegressionTests {
    static let root = Fixtures.packageRoot.appendingPathComponent("Tests/Fuzz/regressions")

    static func inputs(_ target: String) -> [URL] {
        let dir = root.appendingPathComponent(target)
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted().map { dir.appendingPathComponent($0) }
    }

    /// A RAP policy whose bias row is shorter than its layer: the loader checked the weights'
    /// shapes but not the biases', and `QNetwork.forward` read past the row (an ASan
    /// heap-buffer-overflow in the `policy` target). Now refused with the shapes named.
    @Test func policyWithAShortBiasRowIsRefused() throws {
        let files = Self.inputs("policy")
        #expect(!files.isEmpty)
        for url in files {
            let error = #expect(throws: RLPolicy.FileError.self) { _ = try RLPolicy.decode(Data(contentsOf: url), path: url.lastPathComponent, layers: nil) }
            #expect(error.map { "\($0)".contains("shapes disagree") } == true, "\(String(describing: error))")
        }
        var net = QNetwork(widths: [8, 4, 3], seed: 1)
        #expect(net.shapeError == nil)
        net.biases[1].removeLast()
        #expect(net.shapeError != nil)
    }

    /// Random text through SmolLM2's byte-level BPE: bytes its vocabulary has no token for
    /// (control characters such as U+001D, lead bytes such as 0xF1 that its training text never
    /// held) are dropped, as llama.cpp drops them; everything else round-trips. The `tokenizer`
    /// target first took that for a broken round trip (two inputs); its property now excludes
    /// what the vocabulary cannot represent, and this pins both halves.
    @Test(.enabled(if: Fixtures.smolLM2Available)) func bpeDropsOnlyWhatItsVocabularyLacks() throws {
        let t = try Model.tokenizer(path: try Fixtures.requireSmolLM2())
        let missing = Set((0...255).filter { t.tokenID(String(ByteLevel.byteToScalar[$0])) == nil }.map(UInt8.init))
        #expect(missing.contains(0x1D) && missing.contains(0xF1) && !missing.contains(0x20))
        #expect(t.encode("\u{1D}", addSpecial: false, parseSpecial: false).isEmpty)
        let files = Self.inputs("tokenizer")
        #expect(files.count >= 2)
        for url in files {
            let text = String(decoding: try Data(contentsOf: url), as: UTF8.self)
            let back = t.decode(t.encode(text, addSpecial: false, parseSpecial: false))
            #expect(back == String(decoding: text.utf8.filter { !missing.contains($0) }, as: UTF8.self), "\(url.lastPathComponent)")
        }
    }

    /// A block-file index whose tensors each fit the (huge, claimed) image but whose sizes sum past
    /// Int.max: `decodeIndex` trapped on the addition (the `blockfile` target in CI). Now refused.
    @Test func blockIndexWhoseTensorSizesOverflowIsRefused() throws {
        let files = Self.inputs("blockfile")
        #expect(!files.isEmpty)
        for url in files {
            let bytes = [UInt8](try Data(contentsOf: url))
            #expect(bytes.count > 128)
            var header = Array(bytes[0..<128])
            let sum = header.withUnsafeBytes { XXHash64.hash(UnsafeRawBufferPointer(rebasing: $0[0..<120])) }
            withUnsafeBytes(of: sum.littleEndian) { for i in 0..<8 { header[120 + i] = $0[i] } }
            let error = #expect(throws: BlockFileError.self) { _ = try BlockFile.parse(header: header, index: Array(bytes[128...])) }
            #expect(error.map { "\($0)".contains("overflow") } == true, "\(url.lastPathComponent): \(String(describing: error))")
        }
    }

    /// `ffn:7470000000000000051`: a layer that parses as an Int, whose block index (2 × layer)
    /// overflowed when the mask was sorted (the `sizes` target in CI). Layers from 2^30 are
    /// refused, and blocks compare without forming the index.
    @Test func hugeLayerNumbersAreRefusedAndCompareWithoutOverflow() throws {
        let files = Self.inputs("sizes")
        #expect(!files.isEmpty)
        for url in files {
            let text = String(decoding: try Data(contentsOf: url), as: UTF8.self)
            #expect(throws: BlockMask.ParseError.self) { _ = try BlockMask(parsing: text) }
        }
        #expect(throws: BlockMask.ParseError.self) { _ = try BlockMask(parsing: "ffn:\(1 << 30)") }
        #expect(try BlockMask(parsing: "ffn:\((1 << 30) - 1),attn:2").description == "attn:2,ffn:\((1 << 30) - 1)")
        let huge = BlockMask.Block(.ffn, Int.max), small = BlockMask.Block(.attention, 3)
        #expect(small < huge && !(huge < small) && BlockMask.Block(.attention, 3) < BlockMask.Block(.ffn, 3))
    }

    /// A header claiming 2^24 tensors in a 24-byte file is refused as truncated at the first
    /// tensor. (The count used to size a reservation of about 1 GB first; that address space is
    /// not observable here, only that the parse ends in the error.)
    @Test func hugeTensorCountInATinyFileIsTruncation() throws {
        var b: [UInt8] = Array("GGUF".utf8) + [3, 0, 0, 0]
        withUnsafeBytes(of: UInt64(1 << 24).littleEndian) { b += $0 }
        withUnsafeBytes(of: UInt64(0).littleEndian) { b += $0 }
        let error = #expect(throws: GGUFError.self) { _ = try b.withUnsafeBytes { try GGUFFile.parseHeader($0) } }
        #expect(error.map { "\($0)".contains("tensor #0") } == true, "\(String(describing: error))")
    }
}
