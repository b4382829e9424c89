import Foundation
import Testing
@testable import FlexFormat

@Suite struct GGUFReaderTests {
    func load(_ bytes: [UInt8]) throws(GGUFError) -> GGUFFile {
        let path = try! temporaryFile(bytes)
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        return try GGUFFile(path: path)
    }

    func expectError(_ bytes: [UInt8], _ check: (GGUFError) -> Bool, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try load(bytes)
            Issue.record("expected an error", sourceLocation: sourceLocation)
        } catch {
            #expect(check(error), "unexpected error: \(error)", sourceLocation: sourceLocation)
            #expect(!error.description.contains("\n"), "errors are one line", sourceLocation: sourceLocation)
        }
    }

    @Test func readsValidFile() throws {
        let f = try load(GGUFBuilder.small().bytes().data)
        #expect(f.version == 3)
        #expect(f.string("general.architecture") == "llama")
        #expect(f.int("llama.block_count") == 1)
        #expect(f.stringArray("tokenizer.ggml.tokens") == ["a", "b", "c"])
        let a = try #require(f.tensor(named: "a.weight"))
        #expect(a.shape == [32, 2] && a.type == .f32 && a.byteCount == 256)
        let b = try #require(f.tensor(named: "b.weight"))
        #expect(f.tensorBytes(b).first == 1 && f.tensorBytes(b).count == 34)
    }

    @Test func readsVersion2() throws {
        var b = GGUFBuilder.small()
        b.version = 2
        #expect(try load(b.bytes().data).version == 2)
    }

    @Test func rejectsWrongMagic() {
        var bytes = GGUFBuilder.small().bytes().data
        bytes[0] = UInt8(ascii: "X")
        expectError(bytes) { if case .badMagic = $0 { true } else { false } }
        expectError(Array("not a model at all, just text".utf8)) { if case .badMagic = $0 { true } else { false } }
    }

    @Test func rejectsUnknownVersion() {
        var b = GGUFBuilder.small()
        b.version = 7
        expectError(b.bytes().data) { $0 == .unsupportedVersion(7) }
    }

    @Test func rejectsEmptyFile() {
        expectError([]) { if case .truncated = $0 { true } else { false } }
    }

    @Test(arguments: [3, 10, 24, 60, 120, 200])
    func rejectsTruncatedHeader(at length: Int) {
        let bytes = GGUFBuilder.small().bytes().data
        expectError(Array(bytes.prefix(length))) { if case .truncated = $0 { true } else { false } }
    }

    @Test func rejectsTruncatedTensorData() {
        let bytes = GGUFBuilder.small().bytes().data
        expectError(Array(bytes.dropLast(40))) { e in
            if case .tensorOutOfBounds(let name, _, _, _) = e { name == "b.weight" } else { false }
        }
    }

    @Test func rejectsTensorPastEndOfFile() {
        let (bytes, infos) = GGUFBuilder.small().bytes()
        var corrupt = bytes
        corrupt.replaceSubrange(infos[0]..<infos[0] + 8, with: GGUFBuilder.le(UInt64(1 << 40)))
        expectError(corrupt) { e in
            if case .tensorOutOfBounds(let name, let offset, _, _) = e { name == "a.weight" && offset == 1 << 40 } else { false }
        }
    }

    @Test func rejectsAbsurdDimensions() {
        var b = GGUFBuilder.small()
        b.tensors[0].shape = [32, 1 << 31]
        expectError(b.bytes().data) { if case .badTensorShape(let n, _) = $0 { n == "a.weight" } else { false } }
        b.tensors[0].shape = [1 << 30, 1 << 30, 1 << 30]
        expectError(b.bytes().data) { if case .badTensorShape = $0 { true } else { false } }
        b.tensors[0].shape = [32, 0]
        expectError(b.bytes().data) { if case .badTensorShape = $0 { true } else { false } }
        b.tensors[0].shape = [32, 1, 1, 1, 1]
        expectError(b.bytes().data) { if case .badTensorShape = $0 { true } else { false } }
    }

    @Test func rejectsRowNotWholeBlocks() {
        var b = GGUFBuilder.small()
        b.tensors[1].shape = [33]
        expectError(b.bytes().data) { if case .badTensorShape(let n, let r) = $0 { n == "b.weight" && r.contains("Q8_0") } else { false } }
    }

    @Test func rejectsUnknownTensorType() {
        var b = GGUFBuilder.small()
        b.tensors[1].type = 10  // Q2_K: real ggml type, not supported here
        expectError(b.bytes().data) { $0 == .unsupportedTensorType(name: "b.weight", type: "Q2_K") }
        b.tensors[1].type = 999
        expectError(b.bytes().data) { $0 == .unsupportedTensorType(name: "b.weight", type: "type 999") }
    }

    @Test func rejectsHugeCounts() {
        var bytes = GGUFBuilder.small().bytes().data
        bytes.replaceSubrange(16..<24, with: GGUFBuilder.le(UInt64.max))
        expectError(bytes) { if case .malformed = $0 { true } else { false } }
        bytes = GGUFBuilder.small().bytes().data
        bytes.replaceSubrange(8..<16, with: GGUFBuilder.le(UInt64(1) << 60))
        expectError(bytes) { if case .malformed = $0 { true } else { false } }
    }

    @Test func rejectsHugeStringLength() {
        var bytes = GGUFBuilder.small().bytes().data
        // First metadata key's length field sits right after the 24-byte header.
        bytes.replaceSubrange(24..<32, with: GGUFBuilder.le(UInt64(1) << 62))
        expectError(bytes) { if case .truncated(let c, let o) = $0 { c.contains("metadata key") && o == 24 } else { false } }
    }

    @Test func rejectsUnknownValueType() {
        var b = GGUFBuilder()
        b.metadata.append(("weird", 42, [0, 0, 0, 0]))
        expectError(b.bytes().data) { if case .malformed(_, _, let r) = $0 { r.contains("unknown value type 42") } else { false } }
    }

    @Test func rejectsDirectoryAndMissingFile() {
        do { _ = try GGUFFile(path: "/nonexistent/model.gguf"); Issue.record("expected error") } catch {
            #expect(error.description.contains("No such file"))
        }
        do { _ = try GGUFFile(path: "/tmp"); Issue.record("expected error") } catch {
            #expect(error.description.contains("directory"))
        }
    }

    /// Random byte flips anywhere in the header must yield an error or a valid parse, never a crash.
    @Test func survivesRandomCorruption() {
        let bytes = GGUFBuilder.small().bytes().data
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var corrupt = bytes
            for _ in 0..<3 { corrupt[Int.random(in: 0..<200, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            _ = try? load(corrupt)
        }
    }
}

@Suite struct QuantBlockLayoutTests {
    @Test func blockSizesMatchGGML() {
        #expect(MemoryLayout<BlockQ4_0>.size == 18 && GGMLType.q4_0.blockBytes == 18)
        #expect(MemoryLayout<BlockQ4_1>.size == 20 && GGMLType.q4_1.blockBytes == 20)
        #expect(MemoryLayout<BlockQ5_0>.size == 22 && GGMLType.q5_0.blockBytes == 22)
        #expect(MemoryLayout<BlockQ5_1>.size == 24 && GGMLType.q5_1.blockBytes == 24)
        #expect(MemoryLayout<BlockQ8_0>.size == 34 && GGMLType.q8_0.blockBytes == 34)
        #expect(MemoryLayout<BlockQ4_K>.size == 144 && GGMLType.q4_K.blockBytes == 144)
        #expect(MemoryLayout<BlockQ5_K>.size == 176 && GGMLType.q5_K.blockBytes == 176)
        #expect(MemoryLayout<BlockQ6_K>.size == 210 && GGMLType.q6_K.blockBytes == 210)
    }

    @Test func strideEqualsSizeSoArraysOfBlocksPack() {
        #expect(MemoryLayout<BlockQ4_0>.stride == 18)
        #expect(MemoryLayout<BlockQ5_0>.stride == 22)
        #expect(MemoryLayout<BlockQ8_0>.stride == 34)
        #expect(MemoryLayout<BlockQ6_K>.stride == 210)
    }
}
