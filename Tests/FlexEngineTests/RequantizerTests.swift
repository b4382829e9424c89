import Foundation
import Testing
@testable import FlexEngine
@testable import FlexFormat
import FlexKernels

/// `flexrun pack --requant`: a requantized model keeps every key and vector and stays close to
/// its source; the K-quant mixes choose llama.cpp's type for every tensor.
@Suite struct RequantizerTests {
    @Test(arguments: [GGMLType.q8_0, .q4_0, .q5_1])
    func requantizedModelKeepsMetadataAndVectors(_ target: GGMLType) throws {
        let path = Fixtures.url("synth/synth-llama-mixed.gguf").path
        let source = try GGUFFile(path: path)
        let requant = try Requantizer(target: target)
        let (file, report) = try requant.apply(to: source)
        let plan = requant.plan(for: source)
        // Every key but the two llama.cpp's quantizer sets, which say what the file now is.
        var expected = source.metadata
        expected["general.file_type"] = .unsigned(UInt64(QuantMix(.uniform(target)).fileType))
        expected["general.quantization_version"] = .unsigned(2)
        #expect(file.metadata == expected)
        // Every tensor, in llama.cpp's order: by layer, then name.
        #expect(file.tensors.map(\.name) == QuantMix.llamaCppOrder(source.tensors).map { source.tensors[$0].name })
        #expect(report.matrices == plan.compactMap { $0 }.count && report.matrices > 0)
        for (i, a) in source.tensors.enumerated() {
            let b = try #require(file.tensor(named: a.name))
            #expect(b.shape == a.shape)
            if plan[i] != nil { #expect(b.type == target, "\(a.name)") } else {
                #expect(b.type == a.type && Array(file.tensorBytes(b)) == Array(source.tensorBytes(a)), "\(a.name)")
            }
        }
        #expect(report.relativeRMSE > 0 && report.relativeRMSE < (target == .q8_0 ? 0.02 : 0.2), "\(report.relativeRMSE)")
    }

    /// Rows are quantized alone, so spreading them over threads changes no byte.
    @Test(arguments: [QuantMix(.q4_K_M), QuantMix(.uniform(.q6_K)), QuantMix(.uniform(.q5_1))])
    func threadsChangeNoByte(_ mix: QuantMix) throws {
        let source = try GGUFFile(path: Fixtures.url("synth/synth-llama-mixed.gguf").path)
        var requant = try Requantizer(mix: mix)
        let (one, _) = try requant.apply(to: source)
        requant.threads = 3
        let (three, _) = try requant.apply(to: source)
        #expect(one.imageBytes.elementsEqual(three.imageBytes))
    }

    @Test func compressionAwareNeedsQ8AndKnownTargets() {
        #expect(throws: EngineError.self) { try Requantizer(target: .f16) }
        #expect(throws: EngineError.self) { try Requantizer(target: .q4_0, compressionAware: .init(lambda: 0.01)) }
        #expect(throws: EngineError.self) { try Requantizer(mix: .init(.q4_K_M), compressionAware: .init(lambda: 0.01)) }
        #expect(QuantMix(named: "q4_k_m") == QuantMix(.q4_K_M) && QuantMix(named: "Q6_K") == QuantMix(.uniform(.q6_K)))
        #expect(QuantMix(named: "q3_k_m") == nil)
    }

    /// A llama-shaped tensor list: `layers` blocks of width `width`, FFN `ff`, optionally an
    /// untied head, in GGUF order (blocks by number, as converters write them).
    static func llamaTensors(layers: Int, width: Int, kv: Int, ff: Int, vocab: Int, head: Bool) -> [TensorInfo] {
        var names: [(String, [Int])] = [("token_embd.weight", [width, vocab]), ("output_norm.weight", [width])]
        if head { names.append(("output.weight", [width, vocab])) }
        for l in 0..<layers {
            names += [("blk.\(l).attn_norm.weight", [width]), ("blk.\(l).attn_q.weight", [width, width]),
                      ("blk.\(l).attn_k.weight", [width, kv]), ("blk.\(l).attn_v.weight", [width, kv]),
                      ("blk.\(l).attn_output.weight", [width, width]), ("blk.\(l).ffn_norm.weight", [width]),
                      ("blk.\(l).ffn_gate.weight", [width, ff]), ("blk.\(l).ffn_up.weight", [width, ff]),
                      ("blk.\(l).ffn_down.weight", [ff, width])]
        }
        return names.map { TensorInfo(name: $0.0, shape: $0.1, type: .f16, fileOffset: 0, byteCount: 0) }
    }

    static func census(_ types: [GGMLType?]) -> [GGMLType: Int] {
        types.compactMap { $0 }.reduce(into: [:]) { $0[$1, default: 0] += 1 }
    }

    /// SmolLM2-135M's shapes (30 layers, width 576, FFN 1536, tied head) under Q4_K_M: what
    /// llama.cpp's own quantizer chose for it (`Tools/kquant_models.sh`): 576-wide rows fall back
    /// (Q4_K → Q5_0, Q6_K → Q8_0, the tied embedding → Q8_0), ffn_down's 1536-wide rows do not.
    @Test func q4KMOnSmolLM2ShapesIsLlamaCppsCensus() {
        let tensors = Self.llamaTensors(layers: 30, width: 576, kv: 192, ff: 1536, vocab: 49152, head: false)
        let types = QuantMix(.q4_K_M).types(for: tensors, layers: 30)
        #expect(Self.census(types) == [.q5_0: 166, .q4_K: 16, .q6_K: 14, .q8_0: 15])
        // use_more_bits(i, 30): layers 0–2, 26–29 and 5, 8, …, 23.
        let more = Set([0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29])
        for (t, type) in zip(tensors, types) where t.name.hasSuffix("ffn_down.weight") {
            #expect(type == (more.contains(QuantMix.layer(of: t.name)) ? .q6_K : .q4_K), "\(t.name)")
        }
        for (t, type) in zip(tensors, types) where t.shape.count == 1 { #expect(type == nil, "\(t.name)") }
    }

    /// 7B-like widths (4096, FFN 11008 = 43 × 256, untied head), 4 layers: no fallback; Q6_K for
    /// the head and for attn_v and ffn_down in the layers use_more_bits picks (2 and 3 of 4); the
    /// untied embedding keeps the base type.
    @Test func mixesOnSevenBWidths() {
        let tensors = Self.llamaTensors(layers: 4, width: 4096, kv: 4096, ff: 11008, vocab: 512, head: true)
        let q4 = QuantMix(.q4_K_M).types(for: tensors, layers: 4)
        let expectedMore = (0..<4).filter { QuantMix.useMoreBits($0, 4) }.count
        #expect(Self.census(q4) == [.q4_K: 4 * 7 - 2 * expectedMore + 1, .q6_K: 2 * expectedMore + 1])
        #expect(Self.census(QuantMix(.q5_K_M).types(for: tensors, layers: 4))[.q5_K] == 4 * 7 - 2 * expectedMore + 1)
        #expect(Self.census(QuantMix(.uniform(.q6_K)).types(for: tensors, layers: 4)) == [.q6_K: 4 * 7 + 2])
        #expect(Self.census(QuantMix(.uniform(.q4_K)).types(for: tensors, layers: 4)) == [.q4_K: 4 * 7 + 2])
    }

    /// The default model requantized to Q4_K_M: llama.cpp's census (166 Q5_0, 16 Q4_K, 14 Q6_K,
    /// 15 Q8_0), llama.cpp's file type, and a model that still generates.
    @Test(.enabled(if: Fixtures.smolLM2Available)) func smolLM2Q4KMCensus() throws {
        let source = try GGUFFile(path: try Fixtures.requireSmolLM2())
        let (file, report) = try Requantizer(mix: .init(.q4_K_M)).apply(to: source)
        #expect(report.census == [.q5_0: 166, .q4_K: 16, .q6_K: 14, .q8_0: 15])
        #expect(Self.census(file.tensors.map { $0.shape.count >= 2 ? $0.type : nil }) == report.census)
        #expect(file.int("general.file_type") == 15)
        // Q4_1's values in 5–8-bit containers: close to the source.
        #expect(report.relativeRMSE < 0.06, "\(report.relativeRMSE)")
        // Where Tools/kquant_models.sh has made llama.cpp's own Q4_K_M of the same model, this one
        // is that file, byte for byte.
        let peer = URL(fileURLWithPath: source.path).deletingLastPathComponent().appendingPathComponent("SmolLM2-135M-Instruct.Q4_K_M.llamacpp.gguf")
        if let theirs = try? Data(contentsOf: peer) {
            #expect(theirs.elementsEqual(file.imageBytes), "differs from \(peer.path)")
        }
    }
}
