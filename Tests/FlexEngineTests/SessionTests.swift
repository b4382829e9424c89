import Foundation
import Testing
@testable import FlexEngine
import FlexSystem

/// Sessions: batched sequences give each sequence exactly its own ids, the paged KV cache follows
/// the tokens held, and a mask can change between passes without reopening.
@Suite(.enabled(if: Fixtures.smolLM2Available), .serialized) struct SessionTests {
    static let prompts = [
        "The capital of France is",
        "Write a haiku about disks.",
        "1, 2, 3, 4,",
        "Once upon a time, in a small village,",
        "def fibonacci(n):",
        "The three primary colors are",
        "Q: What is the boiling point of water?\nA:",
        "Les chats sont",
    ]

    static func options(sequences: Int = 1, context: Int = 128, limit: Int? = nil) throws -> EngineOptions {
        var o = EngineOptions(modelPath: try Fixtures.requireSmolLM2())
        o.contextLength = context
        o.threads = 2
        o.maxSequences = sequences
        o.memoryLimit = limit
        o.followCgroupLimit = false
        // A fixed runtime share: the measured one moves with what other tests allocate at the
        // same time, and which blocks a cap of dense / 2 streams must not.
        o.runtimeAllowance = 24 << 20
        return o
    }

    static var greedy: GenerateParameters {
        var p = GenerateParameters(maxTokens: 24, sampling: .greedy)
        p.stopAtEndOfGeneration = false
        return p
    }

    /// Each prompt run alone, in a one-sequence engine (the reference).
    static func alone(_ engine: Engine) throws -> [[Int32]] {
        try prompts.map { p in
            var it = try engine.generate(prompt: p, parameters: greedy)
            var ids: [Int32] = []
            while let t = it.next() { ids.append(t.id) }
            if let e = it.error { throw e }
            return ids
        }
    }

    /// All prompts batched in one session: ids per prompt, and the stop reasons.
    static func batched(_ engine: Engine, parameters: GenerateParameters = greedy) throws -> (ids: [[Int32]], stats: [GenerationStats?]) {
        var ids = Array(repeating: [Int32](), count: prompts.count)
        var stats = Array(repeating: GenerationStats?.none, count: prompts.count)
        var it = try engine.generate(prompts: prompts, parameters: parameters)
        while let e = it.next() {
            switch e {
            case .token(let i, let t): ids[i].append(t.id)
            case .finished(let i, let s, _): stats[i] = s
            }
        }
        if let e = it.error { throw e }
        return (ids, stats)
    }

    /// Acceptance 1, in memory: 8 different prompts batched give every sequence its alone ids.
    @Test func batchOfEightEqualsEachAloneInMemory() throws {
        let reference = try Self.alone(Engine(options: Self.options()))
        let engine = try Engine(options: Self.options(sequences: 8))
        let (ids, stats) = try Self.batched(engine)
        for i in Self.prompts.indices {
            #expect(ids[i].count == 24)
            #expect(ids[i] == reference[i], "prompt \(i) differs batched")
            #expect(stats[i]?.stopReason == .maxTokens && stats[i]?.generatedTokens == 24)
        }
        #expect(engine.session.kvCache.pagesInUse == 0, "ended sequences keep pages")
        // A second batch on the same engine reuses the pool and gives the same ids again.
        #expect(try Self.batched(engine).ids == ids)
    }

    /// Acceptance 1 at a 50% cap: the weights stream once per step for all 8, same ids as uncapped.
    @Test func batchOfEightEqualsEachAloneAtHalfCap() throws {
        let reference = try Self.alone(Engine(options: Self.options()))
        let full = try Engine(options: Self.options(sequences: 8)).memory.total
        let engine = try Engine(options: Self.options(sequences: 8, limit: full / 2))
        let plan = try #require(engine.plan)
        #expect(!plan.isFullyResident && plan.totalBytes <= full / 2)
        let (ids, _) = try Self.batched(engine)
        #expect(ids == reference)
        // One pass streams the weights once for every sequence in it: bytes read per pass are the
        // plan's, whatever the batch.
        #expect(engine.session.streamCounters.bytesRead > 0)
    }

    /// Sampled sequences: each row has its own sampler and seed, so a batch samples what each
    /// prompt samples alone with the same seed.
    @Test func sampledSequencesEqualTheirRunAloneWithTheSameSeed() throws {
        var params = Self.greedy
        params.sampling = SamplingParameters(temperature: 0.9, seed: 1234)
        let single = try Engine(options: Self.options())
        let reference = try Self.prompts.map { p in try single.generate(prompt: p, parameters: params).map(\.id) }
        let engine = try Engine(options: Self.options(sequences: 8))
        #expect(try Self.batched(engine, parameters: params).ids == reference)
    }

    /// A sequence cancelled between steps ends at once; the others go on exactly.
    @Test func cancellingOneSequenceLeavesTheOthersExact() throws {
        let reference = try Self.alone(Engine(options: Self.options()))
        let model = try Model(path: try Fixtures.requireSmolLM2())
        let session = try Session(model: model, options: Self.options(sequences: 8))
        var ids: [SequenceID: [Int32]] = [:]
        var order: [SequenceID] = []
        for p in Self.prompts { let id = try session.add(prompt: p, parameters: Self.greedy); order.append(id); ids[id] = [] }
        var stops: [SequenceID: GenerationStats.StopReason] = [:]
        var steps = 0
        while try session.step({ e in
            switch e {
            case .token(let id, let t): ids[id]!.append(t.id)
            case .finished(let id, let s): stops[id] = s.stopReason
            }
        }) {
            steps += 1
            if steps == 5 { session.cancel(order[3]) }
        }
        #expect(stops[order[3]] == .cancelled && ids[order[3]]! == Array(reference[3].prefix(ids[order[3]]!.count)))
        #expect(ids[order[3]]!.count < 24)
        for (i, id) in order.enumerated() where i != 3 {
            #expect(ids[id] == reference[i] && stops[id] == .maxTokens, "prompt \(i)")
        }
    }

    /// Two sessions on one Model, stepped on two threads at once, each get their alone ids:
    /// the model is shared read-only, everything mutable is per session.
    @Test func twoSessionsShareOneModel() async throws {
        let reference = try Self.alone(Engine(options: Self.options()))
        let model = try Model(path: try Fixtures.requireSmolLM2())
        let options = try Self.options(sequences: 4)
        async let first = Self.runSession(model, options, prompts: Array(Self.prompts[0..<4]))
        async let second = Self.runSession(model, options, prompts: Array(Self.prompts[4..<8]))
        let (a, b) = try await (first, second)
        #expect(a + b == reference)
    }

    static func runSession(_ model: Model, _ options: EngineOptions, prompts: [String]) async throws -> [[Int32]] {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<[[Int32]], any Error>) in
            let thread = Thread {
                do {
                    let session = try Session(model: model, options: options)
                    var ids: [SequenceID: [Int32]] = [:]
                    var order: [SequenceID] = []
                    for p in prompts { let id = try session.add(prompt: p, parameters: greedy); order.append(id); ids[id] = [] }
                    while try session.step({ e in if case .token(let id, let t) = e { ids[id]!.append(t.id) } }) {}
                    c.resume(returning: order.map { ids[$0]! })
                } catch { c.resume(throwing: error) }
            }
            thread.stackSize = 1 << 22
            thread.start()
        }
    }

    /// The facade's async batched stream: every prompt's tokens, then its end, in events.
    @Test func streamOfPromptsDeliversEverySequence() async throws {
        let reference = try Self.alone(Engine(options: Self.options()))
        let engine = try Engine(options: Self.options(sequences: 4))
        var ids = Array(repeating: [Int32](), count: Self.prompts.count)
        var ended = 0
        for try await e in engine.stream(prompts: Self.prompts, parameters: Self.greedy) {
            switch e {
            case .token(let i, let t): ids[i].append(t.id)
            case .finished: ended += 1
            }
        }
        #expect(ended == Self.prompts.count && ids == reference)
    }

    /// More prompts than sequences: later prompts join as earlier ones end, still exact.
    @Test func promptsBeyondTheSlotsWaitTheirTurn() throws {
        let reference = try Self.alone(Engine(options: Self.options()))
        let engine = try Engine(options: Self.options(sequences: 3))
        #expect(try Self.batched(engine).ids == reference)
    }

    /// Acceptance 4: pages follow the tokens held and return to the pool when a sequence ends.
    @Test func kvPagesFollowTokensAndReturnToThePool() throws {
        let model = try Model(path: try Fixtures.requireSmolLM2())
        var o = try Self.options(sequences: 8, context: 2048)
        o.memoryLimit = nil
        let session = try Session(model: model, options: o)
        let pool = session.kvCache
        #expect(pool.pageCapacity == 8 * 2048 / 16)
        var ids: [SequenceID] = []
        var params = Self.greedy
        params.maxTokens = 100
        for p in Self.prompts { ids.append(try session.add(prompt: p, parameters: params)) }
        var lengths: [SequenceID: Int] = [:]
        for id in ids { lengths[id] = try model.promptTokens(Self.prompts[id.value], parameters: params).count }
        var finished = 0
        var steps = 0
        while finished < ids.count {
            try session.step { e in
                switch e {
                case .token(let id, _): lengths[id]! += 1
                case .finished: finished += 1
                }
            }
            steps += 1
            if steps == 60 {
                // Every live sequence holds ⌈positions / 16⌉ pages: positions written = its
                // length minus the token just sampled (not yet run).
                let expected = lengths.values.reduce(0) { $0 + ($1 - 1 + 15) / 16 }
                #expect(session.kvCache.pagesInUse == expected)
            }
        }
        let used = session.kvCache
        #expect(used.pagesInUse == 0, "an ended sequence's pages went back to the pool")
        // 8 sequences of ~110 positions: 7 pages each at most, against 128 reserved each.
        #expect(used.peakPages <= 8 * 7 && used.peakPages >= 8 * 6)
        #expect(used.peakBytes * 10 < used.capacityBytes)
    }

    /// A sequence cut back with truncate(to:) continues exactly as if the cut tokens never ran.
    @Test func truncateAndTheBoundsOfThePool() throws {
        // #expect cannot take a ~Copyable operand, so values are read into locals first.
        var cache = try PagedKVCache(layers: 2, kvDim: 8, floor: .none, sequences: 2, capacity: 64, pageTokens: 4, pages: 8)
        guard let a = cache.open(), let b = cache.open() else { Issue.record("no slot"); return }
        let third = cache.open()
        #expect(third == nil)
        let startA = try cache.append(a, count: 10)
        var inUse = cache.pagesInUse
        #expect(startA == 0 && inUse == 3)
        let startB = try cache.append(b, count: 4)
        cache.truncate(a, to: 5)
        inUse = cache.pagesInUse
        let lengthA = cache.length(a)
        #expect(startB == 0 && inUse == 3 && lengthA == 5)
        let again = try cache.append(a, count: 3)
        #expect(again == 5)
        // 8 pages: a holds 2, b 1; 5 left, so 20 more positions of b fit but not 21.
        var full: KVCacheFull?
        do { _ = try cache.append(b, count: 21) } catch { full = error }
        #expect(full?.reason == .pool)
        let startB2 = try cache.append(b, count: 20)
        inUse = cache.pagesInUse
        #expect(startB2 == 4 && inUse == 8)
        cache.close(b)
        inUse = cache.pagesInUse
        #expect(inUse == 2)
        full = nil
        do { _ = try cache.append(a, count: 64) } catch { full = error }
        #expect(full?.reason == .sequence)
        let peak = cache.peakPages
        #expect(peak == 8)
    }

    /// Acceptance 5 (logits): masks alternating between passes under a cap equal engines opened
    /// with each mask, and a session's mask changes without a reopen.
    @Test func masksAlternatingBetweenPassesEqualEnginesOpenedWithThem() throws {
        let a = try BlockMask(parsing: "ffn:20,ffn:25,attn:27")
        // Fewer blocks than `a`, so the two read different bytes wherever the cap puts the
        // boundary between resident and streamed layers (with the same mix of block kinds, both
        // could be wholly streamed and read the same).
        let b = try BlockMask(parsing: "ffn:22,attn:24")
        let tokens: [Int32] = [1, 504, 3458, 282, 4649, 314, 30, 216, 1125, 88]
        func reference(_ m: BlockMask) throws -> [Float] {
            var o = try Self.options()
            o.skip = m
            let e = try Engine(options: o)
            let tf = e.transformer
            try tokens.withUnsafeBufferPointer { try tf.forward($0, logitRows: (tokens.count - 1)..<tokens.count) }
            return Array(tf.logits(row: 0))
        }
        let ra = try reference(a), rb = try reference(b)
        #expect(ra != rb)
        let dense = try Engine(options: Self.options()).memory.total
        let engine = try Engine(options: Self.options(limit: dense / 2))
        #expect(engine.plan?.isFullyResident == false)
        let tf = engine.transformer
        let plan = try #require(engine.plan)
        #expect(plan.readBytesPerPass(skipping: a) < plan.readBytesPerPass(skipping: .none))
        #expect(plan.readBytesPerPass(skipping: a) != plan.readBytesPerPass(skipping: b))
        for pass in 0..<4 {
            let m = pass % 2 == 0 ? a : b
            tf.reset()
            let before = engine.session.streamCounters.bytesRead
            try tokens.withUnsafeBufferPointer { try tf.forward($0, logitRows: (tokens.count - 1)..<tokens.count, mask: m) }
            #expect(Array(tf.logits(row: 0)) == (pass % 2 == 0 ? ra : rb), "pass \(pass)")
            // Skipped blocks are never read: the pass reads what the plan says for its mask.
            #expect(engine.session.streamCounters.bytesRead - before == plan.readBytesPerPass(skipping: m), "pass \(pass)")
        }
        // A mask that changes the first layers, whose stages were read ahead for the previous
        // pass's mask: skipped reads are made late (into the same slot), and the logits still match.
        let c = try BlockMask(parsing: "ffn:0,ffn:1,attn:1")
        let rc = try reference(c), rd = try reference(.none)
        for (m, expected) in [(c, rc), (.none, rd), (c, rc)] {
            tf.reset()
            try tokens.withUnsafeBufferPointer { try tf.forward($0, logitRows: (tokens.count - 1)..<tokens.count, mask: m) }
            #expect(Array(tf.logits(row: 0)) == expected, "mask \(m)")
        }
    }

    /// Acceptance 5 (bytes): a session's mask alternating between generated tokens under a cap
    /// reads, per token, exactly the plan's bytes for the mask in force.
    @Test func alternatingMasksReadThePlansBytesPerToken() throws {
        // Both skip the same attention blocks (one a sequence skipped cannot come back for it).
        let a = try BlockMask(parsing: "ffn:10,ffn:15,ffn:20,attn:24,attn:27")
        let b = try BlockMask(parsing: "ffn:12,attn:24,attn:27,ffn:28")
        let model = try Model(path: try Fixtures.requireSmolLM2(), streaming: true)
        let dense = try Engine(options: Self.options()).memory.total
        let session = try Session(model: model, options: Self.options(limit: dense / 2))
        let plan = try #require(session.plan)
        _ = try session.add(prompt: "The capital of France is", parameters: Self.greedy)
        _ = try session.step()   // the prompt, dense
        var tokens = 0
        for step in 0..<8 {
            let m = step % 2 == 0 ? a : b
            try session.setMask(m)
            let before = session.streamCounters.bytesRead
            for e in try session.step() { if case .token = e { tokens += 1 } }
            #expect(session.streamCounters.bytesRead - before == plan.readBytesPerPass(skipping: m), "step \(step)")
        }
        #expect(tokens == 8)
    }

    /// The scoring path (perplexity) runs the masks in force: after setMask, a scored pass equals
    /// an engine opened with that mask.
    @Test func scoringFollowsTheSessionsMask() throws {
        let m = try BlockMask(parsing: "ffn:3,attn:9,ffn:20")
        let tokens: [Int32] = [1, 504, 3458, 282, 4649, 314, 30, 216]
        func last(_ e: Engine) throws -> [Float] {
            let tf = e.transformer
            tf.reset()
            try tokens.withUnsafeBufferPointer { try tf.forward($0, logitRows: (tokens.count - 1)..<tokens.count) }
            return Array(tf.logits(row: 0))
        }
        var o = try Self.options()
        o.skip = m
        let reference = try last(Engine(options: o))
        let engine = try Engine(options: Self.options())
        let dense = try last(engine)
        try engine.session.setMask(m)
        #expect(try last(engine) == reference && reference != dense)
    }

    /// setMask between generation steps: no reopen, and an attention block a live sequence has
    /// skipped cannot come back for it.
    @Test func setMaskBetweenStepsAndAttentionHoles() throws {
        let model = try Model(path: try Fixtures.requireSmolLM2())
        let session = try Session(model: model, options: Self.options(sequences: 2))
        let id = try session.add(prompt: "The capital of France is", parameters: Self.greedy)
        try session.setMask(try BlockMask(parsing: "attn:10,ffn:12"))
        _ = try session.step()
        _ = try session.step()
        try session.setMask(try BlockMask(parsing: "attn:10"))   // ffn:12 comes back: fine
        _ = try session.step()
        #expect(throws: EngineError.self) { try session.setMask(.none) }   // attn:10 has holes in the sequence
        #expect(session.mask == (try BlockMask(parsing: "attn:10")))
        session.cancel(id)
        _ = try session.step()
        try session.setMask(.none)   // no live sequence has holes now
        #expect(session.isIdle)
    }

    /// Sliding-window layers hold a ring of their window: a sequence holds at most ring-length
    /// pages of them whatever its length, and the ring returns to the pool at the end.
    @Test func windowedLayersHoldARing() throws {
        var cache = try PagedKVCache(layers: 3, kvDim: 8, floor: .none, sequences: 2, capacity: 64, pageTokens: 4, pages: 32,
                                     windows: [nil, 8, 6])
        let ring = cache.ringLength
        #expect(ring == 3)   // ⌈8 / 4⌉ + 1
        guard let s = cache.open() else { Issue.record("no slot"); return }
        _ = try cache.append(s, count: 40)
        let inUse = cache.pagesInUse, ringInUse = cache.ringPagesInUse
        #expect(inUse == 10 && ringInUse == 3)
        // Within a window, every position has its own row; a lap later the same row comes back.
        let rowsInWindow = (32..<40).map { cache.rows(s, layer: 1, position: $0).key }
        #expect(Set(rowsInWindow).count == 8)
        let again = cache.rows(s, layer: 1, position: 39 - ring * 4).key
        #expect(again == rowsInWindow[7])
        let slack = cache.ringSlack
        #expect(slack == 4)
        cache.close(s)
        let after = cache.ringPagesInUse
        #expect(after == 0)
    }

    /// Windowed layers under batching: sequences longer than the window (the ring wraps) still
    /// get their alone ids, and the window changes the output against full attention.
    @Test func windowedSequencesBatchedEqualAlone() throws {
        var o = try Self.options()
        o.attentionWindows = (0..<30).map { $0 % 2 == 1 ? 12 : nil }
        var params = Self.greedy
        params.maxTokens = 40
        let single = try Engine(options: o)
        let reference = try Self.prompts.prefix(4).map { p in try single.generate(prompt: p, parameters: params).map(\.id) }
        o.maxSequences = 4
        let batched = try Engine(options: o)
        var ids = Array(repeating: [Int32](), count: 4)
        var it = try batched.generate(prompts: Array(Self.prompts.prefix(4)), parameters: params)
        while let e = it.next() { if case .token(let i, let t) = e { ids[i].append(t.id) } }
        #expect(ids == reference)
        let full = try Engine(options: Self.options())
        let dense = try Self.prompts.prefix(4).map { p in try full.generate(prompt: p, parameters: params).map(\.id) }
        #expect(dense != reference, "a 12-token window over 40+ positions should change some ids")
    }

    /// Bad input through the session: typed errors, nothing queued.
    @Test func sessionRefusesBadInput() throws {
        let model = try Model(path: try Fixtures.requireSmolLM2())
        let session = try Session(model: model, options: Self.options(sequences: 1, context: 64))
        #expect(throws: EngineError.self) { _ = try session.add(tokens: []) }
        #expect(throws: EngineError.self) { _ = try session.add(tokens: [-1]) }
        #expect(throws: EngineError.self) { _ = try session.add(tokens: Array(repeating: 1, count: 64)) }
        _ = try session.add(tokens: [1, 2, 3])
        #expect(throws: EngineError.self) { _ = try session.add(tokens: [1]) }   // one slot only
        #expect(session.activeCount == 1)
        #expect(throws: EngineError.self) { try session.setMask(try BlockMask(parsing: "ffn:99")) }
    }
}
