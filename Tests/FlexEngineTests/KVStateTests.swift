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

/// Token-aware KV pruning: the pruned layers hand over their first F and last R positions, and
/// attention reads those at their true positions.
@Suite(.enabled(if: Fixtures.smolLM2Available), .serialized) struct KVPruningTests {
    static func engine(limit: Int? = nil) throws -> Engine {
        var o = try SessionTests.options(sequences: 2, context: 256, limit: limit)
        o.modelPath = try Fixtures.requireSmolLM2()
        return try Engine(options: o)
    }

    static let prompt = String(repeating: "The river ran past the old mill, and the miller counted the sacks of grain. ", count: 6)

    @Test func prunedStateKeepsTheFirstAndLastTokensOfTheChosenLayers() throws {
        let e = try Self.engine()
        var p = GenerateParameters(maxTokens: 24, sampling: .greedy)
        p.stopAtEndOfGeneration = false
        let full = try e.prefillState(prompt: Self.prompt, parameters: p)
        let n = full.tokens.count
        #expect(n > 100)
        let pruning = KVPruning(layers: [3, 7, 20], first: 4, last: 32)
        let pruned = try e.prefillState(prompt: Self.prompt, parameters: p, pruning: pruning)
        for rows in pruned.layers {
            if pruning.layers.contains(rows.layer) {
                #expect(rows.positions == [0..<4, (n - 32)..<n])
            } else {
                #expect(rows.positions == [0..<n])
            }
        }
        let kvDim = full.kvDim
        #expect(full.rowBytes - pruned.rowBytes == 3 * (n - 36) * 2 * kvDim * 2)
        // The file keeps the ranges.
        let back = try pruned.encoded().withUnsafeBytes { b throws(EngineError) in try KVState.decode(b) }
        #expect(back == pruned)
        // The same pruned state decodes to the same ids in memory and under a cap (the shifted
        // rows are read the same way on both paths), and its first token is the full state's.
        var a = try e.generate(state: back, parameters: p)
        let inMemory = try KVStateTests.ids(&a)
        let capped = try Self.engine(limit: e.memory.total / 2)
        var b = try capped.generate(state: back, parameters: p)
        #expect(try KVStateTests.ids(&b) == inMemory)
        #expect(inMemory.first == full.pending.first)
    }

    /// Pruning that leaves nothing out is exactly the full hand-off; a small hole in one layer
    /// moves the continuation's log-likelihood a little; cutting every layer to 8 tokens moves it
    /// a lot. (A hole read wrongly, at the wrong rows or over stale ones, breaks the middle case.)
    @Test func continuationLossFollowsWhatIsLeftOut() throws {
        let e = try Self.engine()
        let tokens = e.tokenizer.encode(Self.prompt)
        let prompt = Array(tokens.prefix(tokens.count - 33)), continuation = Array(tokens.suffix(33))
        var p = GenerateParameters(maxTokens: 1, sampling: .greedy)
        p.keepCache = true
        var it = try e.generate(tokens: prompt, parameters: p)
        while it.next() != nil {}
        let id = try #require(it.sequence)
        defer { e.session.release(id) }
        func loss(_ pruning: KVPruning?) throws -> Double {
            let nll = try e.session.scoreContinuation(of: e.session.exportState(of: id, pruning: pruning), tokens: continuation)
            #expect(nll.count == 32)
            return nll.reduce(0, +) / Double(nll.count)
        }
        let n = prompt.count
        let full = try loss(nil)
        #expect(try loss(KVPruning(layers: Set(0..<30), first: n, last: n)) == full)
        let small = try loss(KVPruning(layers: [10], first: n / 2 - 2, last: n / 2 - 2))
        #expect(small != full && abs(small - full) < 0.05, "one layer missing 4 middle positions: \(small) vs \(full)")
        let severe = try loss(KVPruning(layers: Set(0..<30), first: 4, last: 4))
        #expect(severe > full + 0.2, "every layer cut to 8 positions: \(severe) vs \(full)")
        // The text repeats: its continuation is easy with the whole prompt in view.
        #expect(full < 1.0)
    }
}
