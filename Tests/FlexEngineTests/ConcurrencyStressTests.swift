import Foundation
import Synchronization
import Testing
@testable import FlexEngine

/// Streaming generation while other threads change the cap, read the engine's published state
/// and cancel, in a loop: the facade's "from any thread" promises, exercised at once. Run under
/// ThreadSanitizer by `Tools/sanitize.sh`, where a data race fails the run; here it also checks
/// that what the readers see is consistent and that re-plans never change a token.
///
/// The synthetic model streams under a cap, so this needs no download and is quick enough for
/// a TSan build (`FLEXRUN_STRESS_ROUNDS` raises the rounds).
@Suite struct ConcurrencyStressTests {
    static let model = Fixtures.url("synth/synth-llama-mixed.gguf").path
    static let prompt = "The quick brown fox"
    static let tokens = 24
    static var rounds: Int { ProcessInfo.processInfo.environment["FLEXRUN_STRESS_ROUNDS"].flatMap(Int.init) ?? 12 }

    static func parameters(_ cancellation: CancellationToken? = nil) -> GenerateParameters {
        var p = GenerateParameters(maxTokens: tokens)
        p.sampling = SamplingParameters(temperature: 0)
        p.stopAtEndOfGeneration = false
        p.cancellation = cancellation
        return p
    }

    /// Runs `body` on a plain thread (never the cooperative pool, which a spinning reader would starve).
    static func spawn(_ body: @escaping @Sendable () -> Void) -> Thread {
        let t = Thread(block: body)
        t.start()
        return t
    }

    @Test func streamingSurvivesConcurrentCapsReadsAndCancels() async throws {
        let probe = try Engine(options: StreamingTests.options(Self.model, limit: 1 << 40, context: 64))
        let minimum = MemoryPlan.minimumCap(probe.plan!.inputs), full = probe.plan!.totalBytes
        // Three caps: near the streaming minimum, halfway, and everything resident.
        let caps = [minimum + (full - minimum) / 8, minimum + (full - minimum) / 2, full + (1 << 20)]
        let reference = try StreamingTests.greedyIDs(Engine(options: StreamingTests.options(Self.model, limit: nil, context: 64)),
                                                     Self.prompt, tokens: Self.tokens)
        var options = StreamingTests.options(Self.model, limit: caps[1], context: 64)
        options.readBackend = .pread
        let engine = try Engine(options: options)
        #expect(engine.plan.map { !$0.isFullyResident } == true, "the weights must stream for this test")

        let problems = Mutex<[String]>([])
        let readerLoops = Atomic<Int>(0), capCalls = Atomic<Int>(0)
        var completed = 0, cancelled = 0
        for round in 0..<Self.rounds {
            let stop = Atomic<Bool>(false)
            let token = CancellationToken()
            // The cap changer: cycles the three caps as fast as plans can be made.
            let changer = Self.spawn {
                var i = round
                while !stop.load(ordering: .acquiring) {
                    do { try engine.setMemoryLimit(caps[i % caps.count]) } catch { problems.withLock { $0.append("setMemoryLimit: \(error)") } }
                    i += 1
                    capCalls.add(1, ordering: .relaxed)
                    usleep(200)
                }
            }
            // The reader: every published field, checked for consistency with the caps it may hold.
            let reader = Self.spawn {
                while !stop.load(ordering: .acquiring) {
                    let limit = engine.memoryLimit, plan = engine.plan, offload = engine.offloadSummary
                    _ = engine.replanCount
                    _ = engine.memory.total
                    if let limit, !caps.contains(limit) { problems.withLock { $0.append("memoryLimit \(limit) was never set") } }
                    if let plan, !caps.contains(plan.inputs.cap) { problems.withLock { $0.append("plan for cap \(plan.inputs.cap) was never asked for") } }
                    if plan == nil || offload == nil { problems.withLock { $0.append("a capped engine published no plan or offload summary") } }
                    readerLoops.add(1, ordering: .relaxed)
                    // A breath between reads: spinning flat out took a core from the rest of the
                    // (parallel) suite for the whole test, and reads a few µs apart still land
                    // inside every re-plan.
                    usleep(20)
                }
            }
            // Every third round is cancelled from another thread a few tokens in.
            let canceller: Thread? = round % 3 == 2 ? Self.spawn { usleep(useconds_t(2_000 + 1_000 * (round % 5))); token.cancel() } : nil

            var ids: [Int32] = []
            var stopReason: GenerationStats.StopReason?
            for try await event in engine.stream(prompt: Self.prompt, parameters: Self.parameters(token)) {
                switch event {
                case .token(let id, _): ids.append(id)
                case .finished(let stats): stopReason = stats.stopReason
                }
            }
            stop.store(true, ordering: .releasing)
            while !changer.isFinished || !reader.isFinished || canceller?.isFinished == false { usleep(100) }

            // Re-plans at token boundaries never change a token: a cut-short run is a prefix.
            #expect(ids == Array(reference.prefix(ids.count)), "round \(round): ids changed under concurrent re-plans")
            if stopReason == .cancelled { cancelled += 1 } else {
                #expect(ids == reference, "round \(round) ended (\(String(describing: stopReason))) with \(ids.count) tokens")
                completed += 1
            }
        }
        #expect(problems.withLock { $0 }.isEmpty, "\(problems.withLock { $0.prefix(5) })")
        #expect(completed > 0)
        #expect(engine.replanCount > 0, "the generating thread never applied a cap")
        #expect(readerLoops.load(ordering: .relaxed) > Self.rounds && capCalls.load(ordering: .relaxed) > Self.rounds)
    }

    /// A generation started on another thread ends the running one (one generation per engine):
    /// the first iterator stops as cancelled, never with a corrupted or mixed sequence.
    @Test func aNewerGenerationFromAnotherThreadEndsTheRunningOne() throws {
        var options = StreamingTests.options(Self.model, limit: nil, context: 64)
        options.readBackend = .pread
        let engine = try Engine(options: options)
        let reference = try StreamingTests.greedyIDs(engine, Self.prompt, tokens: Self.tokens)
        for round in 0..<Self.rounds {
            var it = try engine.generate(prompt: Self.prompt, parameters: Self.parameters())
            var ids: [Int32] = []
            let started = Atomic<Bool>(false)
            let other = Self.spawn {
                while !started.load(ordering: .acquiring) { usleep(50) }
                usleep(useconds_t(500 * (round % 4)))
                _ = try? engine.generate(prompt: Self.prompt, parameters: Self.parameters())   // takes the engine, runs nothing
            }
            while let t = it.next() {
                ids.append(t.id)
                started.store(true, ordering: .releasing)
            }
            while !other.isFinished { usleep(100) }
            #expect(ids == Array(reference.prefix(ids.count)))
            #expect(it.error == nil)
            #expect(ids.count == Self.tokens || it.stats.stopReason == .cancelled)
        }
    }
}
