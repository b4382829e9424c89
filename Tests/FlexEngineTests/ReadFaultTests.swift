import Foundation
import Testing
@testable import FlexEngine

/// A streamed read that fails mid-generation (``ReadFault``: EIO, or a short read, at the N-th
/// request) ends every API with that error: the synchronous iterator throws it, the async
/// streams throw it instead of ending with `.finished`, and the tokens before it are the
/// model's real ones. The synthetic model streams under a cap, so these need no download.
@Suite struct ReadFaultTests {
    static let model = Fixtures.url("synth/synth-llama-mixed.gguf").path
    static let prompt = "The quick brown fox"
    static let tokens = 24

    /// Options under a cap halfway between the streaming minimum and everything resident, and
    /// the read requests one pass issues there.
    static func streaming() throws -> (options: EngineOptions, requestsPerPass: Int) {
        let probe = try Engine(options: StreamingTests.options(model, limit: 1 << 40, context: 64))
        let minimum = MemoryPlan.minimumCap(probe.plan!.inputs), full = probe.plan!.totalBytes
        var options = StreamingTests.options(model, limit: minimum + (full - minimum) / 2, context: 64)
        options.readBackend = .pread
        let plan = try #require(try Engine(options: options).plan)
        let size = try FileManager.default.attributesOfItem(atPath: model)[.size] as! Int
        let perPass = plan.stages.flatMap(\.reads).reduce(0) { $0 + ReadChunk.split($1, fileSize: size, maxChunk: WeightStreamer.chunkBytes).count }
        return (options, perPass)
    }

    static func parameters() -> GenerateParameters {
        var p = GenerateParameters(maxTokens: tokens)
        p.sampling = SamplingParameters(temperature: 0)
        p.stopAtEndOfGeneration = false
        return p
    }

    /// The fault about five passes in: the prompt pass and a few tokens succeed first.
    static func faulted(_ kind: ReadFault.Kind) throws -> (engine: Engine, reference: [Int32]) {
        let (options, perPass) = try streaming()
        #expect(perPass > 0, "the weights must stream for this test")
        let reference = try StreamingTests.greedyIDs(Engine(options: options), prompt, tokens: tokens)
        var o = options
        o.readFault = ReadFault(kind, atRequest: 5 * perPass + 1)
        return (try Engine(options: o), reference)
    }

    static func cause(_ kind: ReadFault.Kind) -> String { kind == .eio ? "Input/output error" : "short read" }

    @Test(arguments: [ReadFault.Kind.eio, .short])
    func iteratorThrowsTheFailedRead(kind: ReadFault.Kind) throws {
        let (engine, reference) = try Self.faulted(kind)
        var it = try engine.generate(prompt: Self.prompt, parameters: Self.parameters())
        var ids: [Int32] = []
        let error = #expect(throws: EngineError.self) {
            while let token = try it.nextToken() { ids.append(token.id) }
        }
        #expect(error.map { "\($0)".contains(Self.cause(kind)) } == true, "\(String(describing: error))")
        #expect(ids.count >= 2 && ids.count < Self.tokens, "the fault should land mid-generation: \(ids.count) tokens")
        #expect(ids == Array(reference.prefix(ids.count)), "tokens before the fault are the model's")
        #expect(it.stats.stopReason == .error && it.error != nil)
    }

    @Test(arguments: [ReadFault.Kind.eio, .short])
    func streamThrowsTheFailedRead(kind: ReadFault.Kind) async throws {
        let (engine, reference) = try Self.faulted(kind)
        var ids: [Int32] = [], finished = false
        let error = await #expect(throws: EngineError.self) {
            for try await event in engine.stream(prompt: Self.prompt, parameters: Self.parameters()) {
                switch event {
                case .token(let id, _): ids.append(id)
                case .finished: finished = true
                }
            }
        }
        #expect(!finished, "a failed read must not end the stream with .finished")
        #expect(error.map { "\($0)".contains(Self.cause(kind)) } == true, "\(String(describing: error))")
        #expect(ids.count >= 2 && ids.count < Self.tokens && ids == Array(reference.prefix(ids.count)))
    }

    @Test func batchIteratorAndStreamThrowTheFailedRead() async throws {
        let (engine, _) = try Self.faulted(.eio)
        var it = try engine.generate(prompts: [Self.prompt, "Once upon"], parameters: Self.parameters())
        var tokens = 0
        #expect(throws: EngineError.self) {
            while let event = try it.nextEvent() { if case .token = event { tokens += 1 } }
        }
        #expect(tokens >= 2)

        let (again, _) = try Self.faulted(.eio)
        var ended = 0
        await #expect(throws: EngineError.self) {
            for try await event in again.stream(prompts: [Self.prompt, "Once upon"], parameters: Self.parameters()) {
                if case .finished(_, let s, _) = event, s.stopReason != .error { ended += 1 }
            }
        }
        #expect(ended == 0, "no sequence may end as if complete")
    }

    @Test func faultSpecsParse() {
        #expect(ReadFault(parsing: "eio:3") == ReadFault(.eio, atRequest: 3) && ReadFault(parsing: "short:1") == ReadFault(.short, atRequest: 1))
        #expect(ReadFault(parsing: "eio:0") == nil && ReadFault(parsing: "enospc:2") == nil && ReadFault(parsing: "eio") == nil)
    }
}
