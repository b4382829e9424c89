import Foundation
import Glibc
import Testing
@testable import FlexEngine
import FlexFormat
import FlexKernels
@testable import FlexSystem

/// The memory planner's arithmetic, on a made-up layout: no model needed.
@Suite struct MemoryPlanTests {
    /// A SmolLM2-shaped layout: 30 layers of Q4_1 matrices laid out back to back after a Q8_0 head.
    static func layout(layers: Int = 30) -> ModelLayout {
        var offset = 1 << 20
        func t(_ name: String, _ rows: Int, _ rowBytes: Int) -> TensorExtent {
            defer { offset += (rows * rowBytes + 31) / 32 * 32 }
            return TensorExtent(name: name, fileOffset: offset, rows: rows, rowBytes: rowBytes)
        }
        let head = t("token_embd.weight", 49152, 612)
        var ls: [ModelLayout.Layer] = []
        for l in 0..<layers {
            let p = "blk.\(l)."
            ls.append(.init(attention: [t(p + "attn_q", 576, 360), t(p + "attn_k", 192, 360), t(p + "attn_v", 192, 360), t(p + "attn_o", 576, 360)],
                            ffn: [t(p + "ffn_gate", 1536, 360), t(p + "ffn_up", 1536, 360), t(p + "ffn_down", 576, 960)]))
        }
        return ModelLayout(layers: ls, head: head, embedding: nil, pinnedBytes: 140_000)
    }

    static func inputs(cap: Int, slots: Int = 2) -> MemoryPlan.Inputs {
        .init(layout: layout(), cap: cap, kvCacheBytes: 3 << 20, bufferBytes: 2 << 20, runtimeBytes: 32 << 20, ringSlots: slots)
    }

    @Test func everythingFitsMeansEverythingResident() throws {
        let p = try MemoryPlan(Self.inputs(cap: 1 << 30))
        #expect(p.isFullyResident && p.stages.isEmpty && p.ringBytes == 0)
        #expect(p.resident.values.allSatisfy { r in r.rows > 0 })
        #expect(p.residentBytes >= Self.layout().matrixBytes)
        #expect(p.totalBytes <= 1 << 30)
    }

    @Test(arguments: [0.25, 0.35, 0.5, 0.75, 0.9])
    func tightCapsStayUnderTheCapWithBalancedLayers(fraction: Double) throws {
        let model = Self.layout().matrixBytes
        let cap = Int(fraction * Double(model)) + (40 << 20)
        let p = try MemoryPlan(Self.inputs(cap: cap))
        #expect(!p.isFullyResident)
        #expect(p.totalBytes <= cap, "planned \(p.totalBytes) over cap \(cap)")
        // Nothing is both resident and streamed, and every byte of every matrix is one or the other.
        let l = Self.layout()
        for t in l.layers.flatMap(\.tensors) + [l.head] {
            let kept = p.resident[t.name]?.rows ?? 0
            let streamed = p.stages.flatMap(\.pieces).filter { $0.tensor == t.name }.map(\.rows)
            let covered = streamed.reduce(kept) { acc, r in
                #expect(r.lowerBound == acc, "\(t.name): streamed rows \(r) do not follow \(acc)")
                return r.upperBound
            }
            #expect(covered == t.rows, "\(t.name): \(covered) of \(t.rows) rows planned")
        }
        // Balanced locking: every layer streams the same bytes, to within alignment and one row.
        let perLayer = p.stages.compactMap { s -> Int? in
            if case .layer = s.kind { return s.pieces.reduce(0) { $0 + $1.bytes } } else { return nil }
        }
        if let lo = perLayer.min(), let hi = perLayer.max() { #expect(hi - lo <= 4 * 4096 + 960, "\(lo)…\(hi)") }
        // Preservation order: a layer keeps FFN rows only once its attention is whole.
        for layer in l.layers {
            let ffnKept = layer.ffn.contains { (p.resident[$0.name]?.rows ?? 0) > 0 }
            if ffnKept { #expect(layer.attention.allSatisfy { p.resident[$0.name]?.rows == $0.rows }) }
        }
        // Aligned reads waste little: at most 10% over the exact streamed bytes.
        #expect(Double(p.readBytesPerToken) <= 1.1 * Double(p.streamedBytesPerToken))
        // Every piece lies inside one read of its stage, and reads fit the slot.
        for s in p.stages {
            #expect(s.readBytes <= p.slotBytes)
            for piece in s.pieces {
                #expect(s.reads.contains { $0.slotOffset <= piece.slotOffset && piece.slotOffset + piece.bytes <= $0.slotOffset + $0.length })
            }
        }
    }

    @Test func headStaysResidentBeforeLayersGetAnything() throws {
        let l = Self.layout()
        let p = try MemoryPlan(Self.inputs(cap: (32 + 3 + 2 + 8) << 20 + l.head.bytes + (1 << 20)))
        #expect(p.resident[l.head.name]?.rows == l.head.rows)
        let small = try MemoryPlan(Self.inputs(cap: MemoryPlan.minimumCap(Self.inputs(cap: 0)) + (4 << 20)))
        #expect((small.resident[l.head.name]?.rows ?? 0) < l.head.rows)
        #expect(small.stages.contains { if case .head = $0.kind { true } else { false } })
        #expect(small.totalBytes <= small.inputs.cap)
    }

    /// Layers first: at a cap that holds every layer but not the head, the layers are whole and
    /// only head rows stream; the bytes streamed per token exceed head-first's at the same cap by
    /// the larger ring (to within a head row and alignment), since every weight is read once a pass
    /// either way.
    @Test func layersFirstKeepsTheLayersWholeAndStreamsTheHead() throws {
        let l = Self.layout()
        let layerBytes = l.layers.flatMap(\.tensors).reduce(0) { $0 + $1.bytes }
        let cap = (32 + 3 + 2 + 8) << 20 + layerBytes + l.head.bytes / 2
        var inputs = Self.inputs(cap: cap)
        inputs.residency = .layersFirst
        let p = try MemoryPlan(inputs)
        for t in l.layers.flatMap(\.tensors) { #expect(p.resident[t.name]?.rows == t.rows, "\(t.name) not whole") }
        let headRows = p.resident[l.head.name]?.rows ?? 0
        #expect(headRows > 0 && headRows < l.head.rows)
        #expect(p.stages.allSatisfy { if case .head = $0.kind { true } else { false } })
        #expect(p.totalBytes <= cap)
        let headFirst = try MemoryPlan(Self.inputs(cap: cap))
        #expect(headFirst.resident[l.head.name]?.rows == l.head.rows)
        // Every byte not resident is read once a pass in either order; what differs is the ring,
        // whose slots hold slot-sized head chunks here and smaller layer remainders head-first.
        let extraRing = p.ringBytes - headFirst.ringBytes
        #expect(extraRing > 0)
        #expect(abs(p.streamedBytesPerToken - headFirst.streamedBytesPerToken - extraRing) <= 2 * l.head.rowBytes + 64 * 4096,
                "\(p.streamedBytesPerToken) against \(headFirst.streamedBytesPerToken) with \(extraRing) more ring")
        // At the minimum both orders plan (the ring is the same) and stay under the cap.
        var tight = Self.inputs(cap: MemoryPlan.minimumCap(Self.inputs(cap: 0)) + (4 << 20))
        tight.residency = .layersFirst
        let small = try MemoryPlan(tight)
        #expect(small.totalBytes <= tight.cap)
    }

    @Test func belowTheMinimumThrowsTheMinimum() throws {
        let minimum = MemoryPlan.minimumCap(Self.inputs(cap: 0))
        #expect(throws: MemoryPlan.PlanError.capTooSmall(minimum: minimum)) { try MemoryPlan(Self.inputs(cap: minimum - 1)) }
        let p = try MemoryPlan(Self.inputs(cap: minimum))
        #expect(p.totalBytes <= minimum)
        // More slots need a bigger ring.
        #expect(MemoryPlan.minimumCap(Self.inputs(cap: 0, slots: 3)) > minimum)
    }

    @Test func cgroupLimitParsing() {
        #expect(CgroupMemory.parseLimit("max\n") == nil)
        #expect(CgroupMemory.parseLimit("9223372036854771712\n") == nil)
        #expect(CgroupMemory.parseLimit("104857600\n") == 104_857_600)
        #expect(CgroupMemory.parseLimit("garbage") == nil)
    }

    /// The followed cap is the lower of the hard and the soft limit, so an orchestrator can
    /// shrink a running engine through the soft limit before it lowers the hard one.
    @Test(arguments: [CgroupMemory.Version.v1, .v2]) func capIsTheLowerOfHardAndSoft(_ version: CgroupMemory.Version) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cg-\(version)-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (hard, soft) = version == .v1 ? ("memory.limit_in_bytes", "memory.soft_limit_in_bytes") : ("memory.max", "memory.high")
        let group = CgroupMemory(version: version, directory: dir)
        func write(_ file: String, _ text: String) throws { try text.write(toFile: dir + "/" + file, atomically: true, encoding: .utf8) }
        try write(hard, "300000000\n"); try write(soft, version == .v1 ? "9223372036854771712\n" : "max\n")
        #expect(group.cap == 300_000_000)
        try write(soft, "200000000\n")
        #expect(group.cap == 200_000_000)
        try write(hard, "100000000\n")
        #expect(group.cap == 100_000_000)
        try write(hard, "max\n")
        #expect(group.cap == 200_000_000)
    }
}

/// The streaming executor on real files: streamed weights give exactly the in-memory results.
@Suite struct StreamingTests {
    static func options(_ path: String, limit: Int?, context: Int = 128) -> EngineOptions {
        var o = EngineOptions(modelPath: path)
        o.contextLength = context
        o.threads = 2
        o.memoryLimit = limit
        o.followCgroupLimit = false
        // The same buffers and runtime share at every cap, so one plan's inputs serve all caps (the
        // measured share varies when other tests open engines in the same process at once).
        o.logitRows = 1
        o.runtimeAllowance = 16 << 20
        return o
    }

    /// Greedy ids of `tokens` generated tokens; `afterToken(n)` runs after the n-th (to change
    /// the cap mid-generation). A generation error is thrown.
    static func greedyIDs(_ engine: Engine, _ prompt: String = "The capital of France is", tokens: Int = 24,
                          afterToken: (Int) throws -> Void = { _ in }) throws -> [Int32] {
        var p = GenerateParameters(maxTokens: tokens)
        p.sampling = SamplingParameters(temperature: 0)
        p.stopAtEndOfGeneration = false
        var it = try engine.generate(prompt: prompt, parameters: p)
        var n = 0
        while it.next() != nil {
            n += 1
            try afterToken(n)
        }
        if let e = it.error { throw e }
        return it.tokens
    }

    /// A model file truncated under running engines: the streamed read fails, and both the
    /// synchronous iterator and the async stream report it (the stream used to end with a quiet
    /// `.finished`, so a failing disk looked like a short answer).
    @Test(.enabled(if: Fixtures.smolLM2Available)) func truncatedFileSurfacesFromIteratorAndStream() async throws {
        let source = try Fixtures.requireSmolLM2()
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-truncated-\(getpid()).gguf").path
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: source, toPath: copy)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let sync = try Engine(options: Self.options(copy, limit: 64 << 20))
        let async = try Engine(options: Self.options(copy, limit: 64 << 20))
        #expect(sync.plan.map { !$0.isFullyResident } == true, "the weights must stream for this test")
        let size = try FileManager.default.attributesOfItem(atPath: copy)[.size] as! Int
        #expect(truncate(copy, off_t(size / 3)) == 0)

        #expect(throws: EngineError.self) { _ = try Self.greedyIDs(sync) }
        var p = GenerateParameters(maxTokens: 8)
        p.sampling = SamplingParameters(temperature: 0)
        var finished = false, thrown: (any Error)?
        do {
            for try await event in async.stream(prompt: "The capital of France is", parameters: p) {
                if case .finished = event { finished = true }
            }
        } catch { thrown = error }
        #expect(!finished, "a failed read must not end the stream with .finished")
        #expect("\(thrown.map { String(describing: $0) } ?? "nothing")".contains("short read"))
    }

    /// A new cap whose stream cannot open (the file was truncated under the session) is refused
    /// by the next pass, and every later pass throws too: the session must neither run from the
    /// mapping, ignoring its cap (it read past the end of a truncated mapping and died of
    /// SIGBUS), nor go quiet.
    @Test(.enabled(if: Fixtures.smolLM2Available)) func failedReplanKeepsRefusing() throws {
        let source = try Fixtures.requireSmolLM2()
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-replan-\(getpid()).gguf").path
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: source, toPath: copy)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let engine = try Engine(options: Self.options(copy, limit: 64 << 20))
        #expect(engine.plan.map { !$0.isFullyResident } == true, "the weights must stream for this test")
        var p = GenerateParameters(maxTokens: 4)
        p.sampling = SamplingParameters(temperature: 0)
        p.stopAtEndOfGeneration = false
        var it = try engine.generate(prompt: "The capital of France is", parameters: p)
        while try it.nextToken() != nil {}
        #expect(it.tokens.count == 4)

        let size = try FileManager.default.attributesOfItem(atPath: copy)[.size] as! Int
        #expect(truncate(copy, off_t(size / 3)) == 0)
        try engine.setMemoryLimit(96 << 20)
        for attempt in 0..<3 {
            var again = try engine.generate(prompt: "Once upon a time", parameters: p)
            let error = #expect(throws: EngineError.self, "attempt \(attempt)") { while try again.nextToken() != nil {} }
            #expect(error.map { "\($0)".contains("short read") || "\($0)".contains("truncated") } == true, "\(String(describing: error))")
        }
        #expect(engine.memoryLimit == 64 << 20, "the refused cap must not be reported as in force")
    }

    /// Logits of every position for `tokens`, through the engine's transformer.
    static func logits(_ engine: Engine, _ tokens: [Int32]) throws -> [[Float]] {
        let tf = engine.transformer
        tf.reset()
        var out: [[Float]] = []
        for t in tokens {
            try [t].withUnsafeBufferPointer { try tf.forward($0, logitRows: 0..<1) }
            out.append(Array(tf.logits(row: 0)))
        }
        return out
    }

    /// Caps from "everything fits" down to the minimum, where even head rows stream.
    @Test(arguments: ["synth-llama-mixed.gguf", "synth-qwen2-mixed.gguf"])
    func syntheticLogitsAreBitIdenticalAtEveryCap(_ model: String) throws {
        let path = Fixtures.url("synth/\(model)").path
        let tokens: [Int32] = [1, 5, 9, 200, 17, 3, 42, 7]
        let reference = try Self.logits(Engine(options: Self.options(path, limit: nil)), tokens)
        try Self.expectLogits(of: path, equal: reference, for: tokens, atCapsBetweenFullAndMinimumOver: [2, 5])
    }

    /// `model` under caps from everything fits down to the minimum (and the fractions of the
    /// way between given as divisors): within the cap, `reference` logits at every cap, and the
    /// minimum minus one byte refused.
    static func expectLogits(of model: String, equal reference: [[Float]], for tokens: [Int32],
                             atCapsBetweenFullAndMinimumOver divisors: [Int], _ label: String = "") throws {
        let probe = try Engine(options: options(model, limit: 1 << 40))
        let minimum = MemoryPlan.minimumCap(probe.plan!.inputs), full = probe.plan!.totalBytes
        for cap in [full] + divisors.map({ minimum + (full - minimum) / $0 }) + [minimum] {
            let e = try Engine(options: options(model, limit: cap))
            #expect(e.plan!.totalBytes <= cap)
            #expect(try logits(e, tokens) == reference, "\(label)cap \(cap): logits differ")
        }
        #expect(throws: EngineError.self) { try Engine(options: options(model, limit: minimum - 1)) }
    }

    @Test(.enabled(if: Fixtures.smolLM2Available)) func smolLM2GreedyIsIdenticalUnderCaps() throws {
        let path = try Fixtures.requireSmolLM2()
        let reference = try Self.greedyIDs(Engine(options: Self.options(path, limit: nil)))
        let size = try FileHandle(readingFrom: path).size()
        for fraction in [0.75, 0.25] {
            let e = try Engine(options: Self.options(path, limit: Int(fraction * Double(size)) + (40 << 20)))
            #expect(!e.plan!.isFullyResident)
            #expect(try Self.greedyIDs(e) == reference, "fraction \(fraction)")
        }
    }

    @Test(.enabled(if: Fixtures.smolLM2Available)) func layersFirstGivesTheSameIDs() throws {
        let path = try Fixtures.requireSmolLM2()
        let reference = try Self.greedyIDs(Engine(options: Self.options(path, limit: nil)), tokens: 12)
        var o = Self.options(path, limit: 100 << 20)
        o.residency = .layersFirst
        let e = try Engine(options: o)
        #expect(e.plan!.stages.contains { if case .head = $0.kind { true } else { false } })
        #expect(try Self.greedyIDs(e, tokens: 12) == reference)
    }

    @Test(.enabled(if: Fixtures.smolLM2Available)) func preadFallbackAndRefusedMlockStillRun() throws {
        let path = try Fixtures.requireSmolLM2()
        let reference = try Self.greedyIDs(Engine(options: Self.options(path, limit: nil)), tokens: 12)
        var o = Self.options(path, limit: 80 << 20)
        o.readBackend = .pread
        o.memoryLocker = MemoryLocker.refusing(EPERM)
        let e = try Engine(options: o)
        let summary = try #require(e.offloadSummary)
        #expect(summary.reader.hasPrefix("pread"))
        #expect(summary.lockedBytes == 0)
        #expect(summary.lockRefusal?.contains("mlock") == true)
        #expect(try Self.greedyIDs(e, tokens: 12) == reference)
    }

    @Test(.enabled(if: Fixtures.smolLM2Available)) func bytesReadPerTokenMatchThePlan() throws {
        let path = try Fixtures.requireSmolLM2()
        let e = try Engine(options: Self.options(path, limit: 90 << 20))
        var p = GenerateParameters(maxTokens: 16)
        p.sampling = SamplingParameters(temperature: 0)
        p.stopAtEndOfGeneration = false
        var it = try e.generate(prompt: "Hello", parameters: p)
        while it.next() != nil {}
        let plan = e.plan!
        // Exactly one aligned pass per token (plus rare embedding-row reads), never more than 1.1× planned.
        #expect(it.stats.decodeBytesPerToken >= Double(plan.readBytesPerToken))
        #expect(it.stats.decodeBytesPerToken <= 1.1 * Double(plan.streamedBytesPerToken))
    }

    @Test(.enabled(if: Fixtures.smolLM2Available)) func capChangesMidGenerationKeepTheOutput() throws {
        let path = try Fixtures.requireSmolLM2()
        let reference = try Self.greedyIDs(Engine(options: Self.options(path, limit: nil)))
        let e = try Engine(options: Self.options(path, limit: 1 << 30))
        #expect(e.plan!.isFullyResident)
        let ids = try Self.greedyIDs(e) { n in
            if n == 8 { try e.setMemoryLimit(72 << 20) }
            if n == 16 { try e.setMemoryLimit(120 << 20) }
        }
        #expect(ids == reference)
        #expect(e.replanCount == 2 && e.memoryLimit == 120 << 20)
        #expect(throws: EngineError.self) { try e.setMemoryLimit(1 << 20) }
    }

    /// Opened without a cap, the engine runs on x8 copies of its Q4_1 matrices; a cap set mid-way
    /// drops them for a streamer (in-place x8 resident rows, row-major streamed rows), and the
    /// output does not change by a token.
    @Test(.enabled(if: Fixtures.smolLM2Available)) func capSetOnAnUncappedEngineKeepsTheOutput() throws {
        let path = try Fixtures.requireSmolLM2()
        var plain = Self.options(path, limit: nil)
        plain.interleaveWeights = false
        let reference = try Self.greedyIDs(Engine(options: plain))
        let e = try Engine(options: Self.options(path, limit: nil))
        #expect(e.plan == nil)
        #expect(e.interleavedBytes > 80 << 20 || !IntegerDot.simd)
        let ids = try Self.greedyIDs(e) { n in
            if n == 8 { try e.setMemoryLimit(72 << 20) }
        }
        #expect(ids == reference)
        #expect(e.plan != nil && e.interleavedBytes == 0)
    }
}
