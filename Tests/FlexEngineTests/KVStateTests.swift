import Foundation
import Testing
@testable import FlexEngine

/// KV state hand-off: a state made by one engine and continued by another (in memory and under a
/// cap) gives the ids of one uninterrupted run; a state of another model or mask, or a damaged
/// file, is refused with one line.
@Suite(.enabled(if: Fixtures.smolLM2Available), .serialized) struct KVStateTests {
    static func ids(_ it: inout TokenIterator) throws -> [Int32] {
        var out: [Int32] = []
        while let t = it.next() { out.append(t.id) }
        if let e = it.error { throw e }
        return out
    }

    static func options(_ path: String, limit: Int? = nil, skip: BlockMask = .none) throws -> EngineOptions {
        var o = try SessionTests.options(context: 128, limit: limit)
        o.modelPath = path
        o.skip = skip
        return o
    }

    static let prompt = "The three primary colors are"

    /// Uninterrupted, then prefill on one engine and the rest on a fresh one (the state through
    /// its file bytes, as another process would get it).
    static func check(_ path: String, sampling: SamplingParameters, limit: Int? = nil, skip: BlockMask = .none) throws {
        var params = GenerateParameters(maxTokens: 24, sampling: sampling)
        params.stopAtEndOfGeneration = false
        var whole = try Engine(options: options(path, skip: skip)).generate(prompt: prompt, parameters: params)
        let reference = try ids(&whole)
        let prefill = try Engine(options: options(path, skip: skip))
        let state = try prefill.prefillState(prompt: prompt, parameters: params)
        #expect(prefill.session.keptCaches.isEmpty && prefill.session.kvCache.pagesInUse == 0, "the prefill side keeps pages")
        let bytes = state.encoded()
        let back = try bytes.withUnsafeBytes { b throws(EngineError) in try KVState.decode(b) }
        #expect(back == state)
        let decode = try Engine(options: options(path, limit: limit, skip: skip))
        var it = try decode.generate(state: back, parameters: params)
        let continued = try ids(&it)
        #expect(continued == reference, "hand-off differs from one run")
        #expect(it.stats.promptTokens == 0 && it.stats.reusedPromptTokens == state.tokens.count)
        #expect(it.stats.generatedTokens == 24)
    }

    @Test func greedyHandOffInMemory() throws { try Self.check(try Fixtures.requireSmolLM2(), sampling: .greedy) }

    @Test func sampledHandOffContinuesTheRandomStream() throws {
        try Self.check(try Fixtures.requireSmolLM2(), sampling: SamplingParameters(temperature: 0.9, seed: 11))
    }

    @Test func greedyHandOffUnderACap() throws {
        let path = try Fixtures.requireSmolLM2()
        let dense = try Engine(options: Self.options(path)).memory.total
        try Self.check(path, sampling: .greedy, limit: dense / 2)
    }

    @Test func handOffWithSkippedBlocks() throws {
        try Self.check(try Fixtures.requireSmolLM2(), sampling: .greedy, skip: BlockMask(skipping: [.init(.attention, 5), .init(.ffn, 9)]))
    }

    /// Gemma 3's windowed layers hand over their window only.
    @Test(.enabled(if: Fixtures.gemma3Available)) func windowedLayersHandOverTheirWindow() throws {
        let path = try Fixtures.requireGemma3()
        try Self.check(path, sampling: .greedy)
        var wide = try Self.options(path)
        wide.contextLength = 2048
        let engine = try Engine(options: wide)
        let long = String(repeating: "A long prompt that passes the window of the local layers. ", count: 60)
        var p = GenerateParameters(maxTokens: 4, sampling: .greedy)
        p.stopAtEndOfGeneration = false
        let state = try engine.prefillState(prompt: long, parameters: p)
        let windows = engine.config.attentionWindows
        #expect(state.tokens.count > (windows.compactMap { $0 }.max() ?? 0), "the prompt should pass the window")
        for rows in state.layers {
            if let w = windows[rows.layer] { #expect(rows.positionCount == min(w, state.tokens.count)) } else { #expect(rows.positionCount == state.tokens.count) }
        }
    }

    @Test func refusals() throws {
        let path = try Fixtures.requireSmolLM2()
        let params = GenerateParameters(maxTokens: 8, sampling: .greedy)
        let state = try Engine(options: Self.options(path)).prefillState(prompt: Self.prompt, parameters: params)
        let bytes = state.encoded()
        func refusal(_ b: [UInt8], engine: Engine? = nil) -> String? {
            do {
                let s = try b.withUnsafeBytes { p throws(EngineError) in try KVState.decode(p) }
                guard let engine else { return nil }
                _ = try engine.session.add(state: s, parameters: params)
                return nil
            } catch { return "\(error)" }
        }
        // Another model.
        let other = try Engine(options: Self.options(Fixtures.url("synth/synth-llama-mixed.gguf").path))
        #expect(refusal(bytes, engine: other)?.contains("another model") == true)
        // Another mask.
        let masked = try Engine(options: Self.options(path, skip: BlockMask(skipping: [.init(.attention, 3)])))
        #expect(refusal(bytes, engine: masked)?.contains("skipping none") == true)
        // Truncated anywhere, and any bit flipped: refused, never a crash.
        for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 97)) {
            #expect(refusal(Array(bytes[0..<cut])) != nil, "truncated at \(cut) accepted")
        }
        for at in stride(from: 8, to: bytes.count, by: max(1, bytes.count / 61)) {
            var b = bytes
            b[at] ^= 0x10
            #expect(refusal(b) != nil, "a flipped bit at \(at) accepted")
        }
        // Another version: named.
        var v = bytes
        v[8] = 9
        #expect(refusal(v)?.contains("version 9") == true)
        #expect(refusal(Array("not a state at all, just text".utf8))?.contains("not a FlexRun KV state file") == true)
    }
}
