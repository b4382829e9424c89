import Benchmark
import FlexEngine
import Foundation

// End-to-end on the default model (SmolLM2-135M Q4_1): decode tok/s, prefill tok/s, and
// allocations per decoded token after warm-up (the hot path must not allocate).

let modelPath = ModelCache.defaultModelPath

let tokensMetric = BenchmarkMetric.custom("tok/s", polarity: .prefersLarger, useScalingFactor: false)

let benchmarks: @Sendable () -> Void = {
    guard FileManager.default.fileExists(atPath: modelPath) else {
        print("EndToEnd: \(modelPath) missing; run Tools/fetch-model.sh")
        return
    }
    var options = EngineOptions(modelPath: modelPath)
    options.contextLength = 512
    let engine = try! Engine(options: options)

    // One decode step per iteration, after a 6-token prompt and 8 warm-up tokens; the
    // malloc counters then show allocations per decoded token (tok/s = 1 / wall clock: a
    // custom metric would itself allocate in the harness). Greedy, and llama.cpp's default
    // sampler chain (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05).
    for (label, sampling) in [("greedy", SamplingParameters.greedy), ("sampled", SamplingParameters(seed: 7))] {
        Benchmark("decode token \(label) (SmolLM2 Q4_1)",
                  configuration: .init(metrics: [.wallClock, .mallocCountTotal, .throughput], warmupIterations: 8,
                                       maxDuration: .seconds(5), maxIterations: 400)) { benchmark in
            var params = GenerateParameters(maxTokens: 100_000, sampling: sampling)
            params.stopAtEndOfGeneration = false
            var it = try! engine.generate(prompt: "Explain what artificial intelligence is.", parameters: params)
            _ = it.next()   // prompt
            _ = it.next()   // first decode step (warm-up)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(it.next()?.id)   // the id only: boxing the whole Optional<GeneratedToken> would allocate
            }
            benchmark.stopMeasurement()
        }
    }

    // One session step with 8 sequences decoding (continuous batching): 8 tokens per iteration,
    // mallocs per step in the steady state (after the prompts and 8 warm-up steps).
    Benchmark("session step, 8 sequences greedy (SmolLM2 Q4_1)",
              configuration: .init(metrics: [.wallClock, .mallocCountTotal, .throughput], warmupIterations: 8,
                                   maxDuration: .seconds(5), maxIterations: 300)) { benchmark in
        let model = try! Model(path: modelPath)
        var o = EngineOptions(modelPath: modelPath)
        o.contextLength = 512
        o.maxSequences = 8
        let session = try! Session(model: model, options: o)
        var params = GenerateParameters(maxTokens: 100_000, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        for p in ["The capital of France is", "Write a haiku about disks.", "1, 2, 3, 4,", "Once upon a time,",
                  "def fibonacci(n):", "The three primary colors are", "Q: What is water? A:", "Les chats sont"] {
            _ = try! session.add(prompt: p, parameters: params)
        }
        var tokens = 0
        try! session.step { _ in }   // the prompts
        try! session.step { _ in }   // warm-up
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try! session.step { event in if case .token = event { tokens += 1 } }
        }
        benchmark.stopMeasurement()
        blackHole(tokens)
    }

    // The harness's own count for an empty iteration, to read the decode rows against.
    Benchmark("harness baseline (empty iteration)",
              configuration: .init(metrics: [.mallocCountTotal], warmupIterations: 8, maxDuration: .seconds(1), maxIterations: 200)) { benchmark in
        var n = 0
        for _ in benchmark.scaledIterations { n += 1; blackHole(n) }
    }

    // Prefill of a 128-token prompt (pp128).
    Benchmark("prefill 128 tokens (SmolLM2 Q4_1)",
              configuration: .init(metrics: [.wallClock, tokensMetric], warmupIterations: 1, maxDuration: .seconds(8), maxIterations: 20)) { benchmark in
        let prompt = [Int32](repeating: 0, count: 128).enumerated().map { Int32(($0.offset * 7919) % 40000 + 100) }
        var params = GenerateParameters(maxTokens: 1, sampling: .greedy)
        params.stopAtEndOfGeneration = false
        for _ in benchmark.scaledIterations {
            let t0 = DispatchTime.now().uptimeNanoseconds
            var it = try! engine.generate(tokens: prompt, parameters: params)
            blackHole(it.next())
            benchmark.measurement(tokensMetric, Int(128e9 / Double(DispatchTime.now().uptimeNanoseconds - t0)))
        }
    }
}
