import Foundation
@testable import FlexFormat

/// Writes small GGUF files for tests, so every corruption case is built from a known-good file.
struct GGUFBuilder {
    var version: UInt32 = 3
    var metadata: [(String, UInt32, [UInt8])] = []
    var tensors: [(name: String, shape: [UInt64], type: UInt32, data: [UInt8])] = []
    var alignment = 32

    mutating func add(string key: String, _ value: String) { metadata.append((key, 8, Self.string(value))) }
    mutating func add(uint32 key: String, _ value: UInt32) { metadata.append((key, 4, Self.le(value))) }
    mutating func add(float32 key: String, _ value: Float) { metadata.append((key, 6, Self.le(value.bitPattern))) }
    mutating func add(strings key: String, _ values: [String]) {
        metadata.append((key, 9, Self.le(UInt32(8)) + Self.le(UInt64(values.count)) + values.flatMap(Self.string)))
    }
    mutating func tensor(_ name: String, shape: [UInt64], type: GGMLType, data: [UInt8]) {
        tensors.append((name, shape, type.rawValue, data))
    }

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func string(_ s: String) -> [UInt8] { le(UInt64(s.utf8.count)) + Array(s.utf8) }

    /// The file's bytes, and the byte offset of each tensor-info record's offset field.
    func bytes() -> (data: [UInt8], infoOffsets: [Int]) {
        var out: [UInt8] = Array("GGUF".utf8) + Self.le(version) + Self.le(UInt64(tensors.count)) + Self.le(UInt64(metadata.count))
        for (k, t, v) in metadata { out += Self.string(k) + Self.le(t) + v }
        var offsets: [UInt64] = []
        var cursor: UInt64 = 0
        for t in tensors {
            offsets.append(cursor)
            cursor += UInt64((t.data.count + alignment - 1) / alignment * alignment)
        }
        var infoOffsets: [Int] = []
        for (i, t) in tensors.enumerated() {
            out += Self.string(t.name) + Self.le(UInt32(t.shape.count))
            for d in t.shape { out += Self.le(d) }
            out += Self.le(t.type)
            infoOffsets.append(out.count)
            out += Self.le(offsets[i])
        }
        while out.count % alignment != 0 { out.append(0) }
        for t in tensors {
            out += t.data
            while out.count % alignment != 0 { out.append(0) }
        }
        return (out, infoOffsets)
    }

    /// A valid two-tensor file.
    static func small() -> GGUFBuilder {
        var b = GGUFBuilder()
        b.add(string: "general.architecture", "llama")
        b.add(uint32: "llama.block_count", 1)
        b.add(strings: "tokenizer.ggml.tokens", ["a", "b", "c"])
        b.tensor("a.weight", shape: [32, 2], type: .f32, data: [UInt8](repeating: 0, count: 256))
        b.tensor("b.weight", shape: [32], type: .q8_0, data: [UInt8](repeating: 1, count: 34))
        return b
    }
}

/// Writes bytes to a fresh temporary file, returning its path (removed by the caller's `defer`).
func temporaryFile(_ bytes: [UInt8], name: String = "model.gguf") throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let url = dir.appendingPathComponent(name)
    try Data(bytes).write(to: url)
    return url.path
}
