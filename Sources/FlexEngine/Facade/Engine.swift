import FlexFormat
import FlexKernels
import FlexSystem
import Foundation
import Synchronization

/// The library facade: open a model once, then generate, stream or score text.
///
/// The core is synchronous: ``generate(prompt:parameters:)`` returns a ``TokenIterator`` that
/// computes one token per `next()` on the caller's thread. ``stream(prompt:parameters:)`` runs
/// that iterator on a dedicated thread (never the cooperative pool) and delivers events as an
/// `AsyncThrowingStream`. One generation runs at a time per engine: starting a new one ends
/// the previous iterator.
public final class Engine: @unchecked Sendable {
    // @unchecked Sendable: the mutable run state (transformer, KV cache, streamer, memoryLimit,
    // replanCount) is only touched by the thread running the current iterator; other threads
    // reach it only through the `lock` and `pendingPlan` mutexes.
    public let options: EngineOptions
    public let config: ModelConfig
    public let tokenizer: BPETokenizer
    public let chatTemplate: ChatTemplate?
    public let memory: MemoryEstimate
    public let loadSeconds: Double
    let transformer: Transformer
    let weights: ModelWeights
    let locker: MemoryLocker?
    let lock = Mutex<Int>(0)   // generation counter; the newest iterator owns the transformer
    /// The cap in force (explicit, or the cgroup's); nil runs from the mapping without a limit.
    public private(set) var memoryLimit: Int?
    /// A plan made by ``setMemoryLimit(_:)``, applied by the forward thread at the next token.
    private let pendingPlan = Mutex<MemoryPlan?>(nil)
    /// How many times a new cap has been applied.
    public private(set) var replanCount = 0

    public init(options: EngineOptions) throws(EngineError) {
        let start = Platform.now()
        let anonymousBefore = Platform.anonymousResidentBytes()
        let limit = options.memoryLimit ?? (options.followCgroupLimit ? CgroupMemory.current()?.limit : nil)
        guard options.threads >= 1, options.threads <= 256 else { throw .invalidOption("--threads must be between 1 and 256") }
        guard options.batchSize >= 1, options.batchSize <= 4096 else { throw .invalidOption("batch size must be between 1 and 4096") }
        let file: GGUFFile
        let weights: ModelWeights
        do {
            file = try GGUFFile(path: options.modelPath, randomAccess: limit != nil)
            weights = try ModelWeights(file: file)
        } catch {
            throw .model(path: options.modelPath, error)
        }
        let tokenizer: BPETokenizer
        do { tokenizer = try BPETokenizer(gguf: file) } catch { throw .tokenizer(error) }
        guard tokenizer.vocabularySize <= weights.config.vocabularySize else {
            throw .model(path: options.modelPath, .badKey("tokenizer.ggml.tokens", reason: "\(tokenizer.vocabularySize) tokens but the embedding has \(weights.config.vocabularySize) rows"))
        }
        let prefillSkip = options.prefillSkip ?? options.skip
        for b in options.skip.skipped.union(prefillSkip.skipped) where b.layer >= weights.config.layerCount {
            throw .invalidOption("block \(b) does not exist: the model has \(weights.config.layerCount) layers")
        }
        if let l = prefillSkip.skippedAttentionLayers.subtracting(options.skip.skippedAttentionLayers).min() {
            throw .invalidOption("prefill skips attn:\(l) but decode runs it: decode would attend to prompt keys that were never computed")
        }
        let config = weights.config
        let context = options.contextLength ?? min(2048, config.trainedContextLength)
        guard context >= 1, context <= 1 << 20 else { throw .invalidOption("--ctx must be between 1 and 1048576") }
        let batch = min(options.batchSize, context)

        // The runtime share of the budget: what parsing the header and building the tokenizer
        // allocated (measured, so a 262k-token vocabulary counts for what it is), plus the
        // allowance for code pages and thread stacks.
        let parsed: Int
        if let before = anonymousBefore, let after = Platform.anonymousResidentBytes() { parsed = max(0, after - before) }
        else { parsed = MemoryEstimate.parsedAllowance }
        let runtime = options.runtimeAllowance ?? (parsed + MemoryEstimate.codeAllowance)
        let keptAttention = config.layerCount - prefillSkip.skippedAttentionLayers.count
        guard (1...16).contains(options.ringSlots) else { throw .invalidOption("ring slots must be between 1 and 16") }
        func estimate(logitRows: Int) -> MemoryEstimate {
            MemoryEstimate(
                weights: file.tensors.reduce(0) { $0 + $1.byteCount },
                kvCache: KVCache.bytes(layers: keptAttention, capacity: context, kvDim: config.kvDim),
                buffers: RunState.bytes(config: config, maxBatch: batch, logitRows: logitRows, context: context,
                                        threads: options.threads, maxRow: weights.maxRowLength),
                runtime: runtime)
        }
        // Logits for a whole batch (perplexity) only when the model fits in memory with them;
        // under a tighter cap those bytes are better spent on resident weights.
        let roomy = limit.map { $0 >= estimate(logitRows: batch).total } ?? true
        let logitRows = min(batch, max(1, options.logitRows ?? (roomy ? batch : 1)))
        let estimate = estimate(logitRows: logitRows)
        let locker = options.lockMemory ? (options.memoryLocker ?? MemoryLocker()) : nil
        var streamer: WeightStreamer?
        if let limit {
            let plan = try Engine.plan(cap: limit, weights: weights, estimate: estimate, options: options)
            streamer = try WeightStreamer(plan: plan, weights: weights, backend: options.readBackend, locker: locker,
                                          interleave: options.interleaveWeights)
        }

        self.options = options
        self.config = config
        self.tokenizer = tokenizer
        self.chatTemplate = ChatTemplate(jinja: file.string("tokenizer.chat_template"))
        self.memory = estimate
        self.memoryLimit = limit
        self.weights = weights
        self.locker = locker
        let interleaved = streamer == nil && options.interleaveWeights ? InterleavedWeights(weights) : nil
        self.transformer = Transformer(weights: weights, contextLength: context, maxBatch: batch, threads: options.threads,
                                       mask: options.skip, prefillMask: prefillSkip, logitRows: logitRows, streamer: streamer,
                                       interleaved: interleaved)
        self.loadSeconds = Platform.now() - start
    }

    public var contextLength: Int { transformer.contextLength }

    /// Without a cap: bytes of Q4_1/Q8_0 matrices copied out of the mapping in the x8 layout
    /// (``EngineOptions/interleaveWeights``); 0 under a cap, where resident rows are rearranged in place.
    public var interleavedBytes: Int { transformer.interleavedBytes }

    /// The memory plan in force, nil when running from the mapping without a limit.
    public var plan: MemoryPlan? { transformer.streamer?.plan }

    /// What the offload runtime did: reader, locked bytes, mlock refusal (nil when unlimited).
    public var offloadSummary: OffloadSummary? {
        transformer.streamer.map { s in
            OffloadSummary(reader: s.readerDescription, lockedBytes: s.lockedBytes, lockRefusal: s.lockRefusal?.description,
                           residentLoadSeconds: s.loadSeconds)
        }
    }

    /// Changes the memory cap while the engine is open, from any thread. The new plan is made
    /// (and checked) now, and applied by the generating thread before its next token, so a
    /// running generation continues with the same KV cache and output. Throws, leaving the old
    /// cap in force, when the new cap is below the minimum.
    public func setMemoryLimit(_ bytes: Int) throws(EngineError) {
        let plan = try Engine.plan(cap: bytes, weights: weights, estimate: memory, options: options)
        pendingPlan.withLock { $0 = plan }
    }

    /// The plan for `cap`, with the KV cache, buffers and runtime share fixed at open.
    private static func plan(cap: Int, weights: ModelWeights, estimate: MemoryEstimate, options: EngineOptions) throws(EngineError) -> MemoryPlan {
        // Weights of a block either stage runs must be read; with different stage masks the
        // plan covers the union (streaming decode-only skips as well is left for the controller).
        let skip = options.skip.intersection(options.prefillSkip ?? options.skip)
        return try MemoryPlan.make(.init(layout: try weights.layout(skipping: skip), cap: cap, kvCacheBytes: estimate.kvCache,
                                  bufferBytes: estimate.buffers, runtimeBytes: estimate.runtime, ringSlots: options.ringSlots))
    }

    /// Applies a plan queued by ``setMemoryLimit(_:)``; called by the thread that owns the transformer.
    func applyPendingPlan() throws(EngineError) {
        guard let plan = pendingPlan.withLock({ p -> MemoryPlan? in defer { p = nil }; return p }) else { return }
        let weights = self.weights, backend = options.readBackend
        let locker = self.locker, interleave = options.interleaveWeights
        try transformer.replaceStreamer { () throws(EngineError) in
            try WeightStreamer(plan: plan, weights: weights, backend: backend, locker: locker, interleave: interleave)
        }
        memoryLimit = plan.inputs.cap
        replanCount += 1
    }

    /// The streamer's running totals (zero when nothing streams).
    var streamCounters: StreamCounters { transformer.streamer?.counters ?? StreamCounters() }

    /// Prompt text → ids, applying the chat template when asked. Emptiness and length are
    /// checked by ``generate(tokens:parameters:)``, which every path goes through.
    public func promptTokens(_ prompt: String, parameters: GenerateParameters) throws(EngineError) -> [Int32] {
        var text = prompt
        if parameters.chat {
            guard let template = chatTemplate else { throw .noChatTemplate }
            text = template.render(user: prompt, system: parameters.system)
        }
        return tokenizer.encode(text)
    }

    /// Starts a generation. The prompt is processed on the first `next()`.
    public func generate(prompt: String, parameters: GenerateParameters = GenerateParameters()) throws(EngineError) -> TokenIterator {
        try generate(tokens: promptTokens(prompt, parameters: parameters), parameters: parameters)
    }

    /// Starts a generation from token ids.
    public func generate(tokens: [Int32], parameters: GenerateParameters = GenerateParameters()) throws(EngineError) -> TokenIterator {
        guard !tokens.isEmpty else { throw .emptyPrompt }
        for t in tokens where t < 0 || Int(t) >= config.vocabularySize { throw .invalidToken(t) }
        guard tokens.count < contextLength else { throw .promptTooLong(tokens: tokens.count, context: contextLength) }
        let id = lock.withLock { g in g += 1; return g }
        return TokenIterator(engine: self, generation: id, prompt: tokens, parameters: parameters)
    }

    /// Streams a generation as events, computed on a dedicated thread. Cancelling the consuming
    /// task (or the stream's termination) stops it at the next token.
    public func stream(prompt: String, parameters: GenerateParameters = GenerateParameters()) -> AsyncThrowingStream<GenerationEvent, any Error> {
        AsyncThrowingStream { continuation in
            let token = parameters.cancellation ?? CancellationToken()
            var params = parameters
            params.cancellation = token
            continuation.onTermination = { _ in token.cancel() }
            let thread = Thread { [self, params] in
                do {
                    var it = try self.generate(prompt: prompt, parameters: params)
                    while let t = it.next() { continuation.yield(.token(id: t.id, text: t.text)) }
                    continuation.yield(.finished(it.stats))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.stackSize = 1 << 22
            thread.start()
        }
    }

    func isCurrent(_ generation: Int) -> Bool { lock.withLock { $0 == generation } }
}

/// One generated token.
public struct GeneratedToken: Sendable, Equatable {
    public let id: Int32
    /// Text completed by this token (empty while a multi-byte character is incomplete).
    public let text: String
}

/// The synchronous core of generation: a `Sequence` of tokens, one forward pass per `next()`.
public struct TokenIterator: Sequence, IteratorProtocol {
    let engine: Engine
    let generation: Int
    let prompt: [Int32]
    let parameters: GenerateParameters
    var sampler: Sampler
    var decoder = UTF8StreamDecoder()
    var pendingToken: Int32? = nil
    /// One-token input for decode steps, reused so a step allocates nothing.
    var step: [Int32] = [0]
    var started = false
    var finished = false
    /// Streamer totals when this generation started and when decoding started.
    var countersAtStart = StreamCounters()
    var countersAtDecode = StreamCounters()
    /// Why generation stopped early with an error (a weight read failed).
    public private(set) var error: EngineError?
    public private(set) var stats = GenerationStats()
    public private(set) var tokens: [Int32] = []

    init(engine: Engine, generation: Int, prompt: [Int32], parameters: GenerateParameters) {
        self.engine = engine
        self.generation = generation
        self.prompt = prompt
        self.parameters = parameters
        sampler = Sampler(parameters.sampling, vocabularySize: engine.config.vocabularySize)
        stats.loadSeconds = engine.loadSeconds
        stats.promptTokens = prompt.count
        stats.blocksSkipped = engine.options.skip.skipped.count
        tokens.reserveCapacity(Swift.min(parameters.maxTokens, engine.contextLength))
    }

    public mutating func next() -> GeneratedToken? {
        if finished { return nil }
        guard engine.isCurrent(generation) else { return finish(.cancelled) }
        if parameters.cancellation?.isCancelled == true { return finish(.cancelled) }
        let tf = engine.transformer
        let vocab = tf.vocabularySize

        do { try engine.applyPendingPlan() } catch { return fail(error) }

        if !started {
            started = true
            countersAtStart = engine.streamCounters
            let t0 = Platform.now()
            tf.reset()
            for t in prompt { sampler.accept(t) }
            var i = 0
            while i < prompt.count {
                let n = Swift.min(tf.maxBatch, prompt.count - i)
                let last = i + n == prompt.count
                do throws(EngineError) {
                    try prompt[i..<i + n].withUnsafeBufferPointer { p throws(EngineError) in try tf.forward(p, logitRows: last ? (n - 1)..<n : 0..<0, stage: .prefill) }
                } catch { return fail(error) }
                i += n
                if parameters.cancellation?.isCancelled == true { return finish(.cancelled) }
            }
            stats.promptSeconds = Platform.now() - t0
            countersAtDecode = engine.streamCounters
        } else {
            guard tokens.count < parameters.maxTokens else { return finish(.maxTokens) }
            guard tf.position < tf.contextLength else { return finish(.contextFull) }
            let t0 = Platform.now()
            step[0] = pendingToken!
            do throws(EngineError) {
                try step.withUnsafeBufferPointer { p throws(EngineError) in try tf.forward(p, logitRows: 0..<1) }
            } catch { return fail(error) }
            stats.decodeSeconds += Platform.now() - t0
        }
        if tokens.count >= parameters.maxTokens { return finish(.maxTokens) }
        let logits = UnsafeMutableBufferPointer(mutating: tf.logits(row: 0))
        let next = sampler.sample(UnsafeMutableBufferPointer(rebasing: logits[0..<vocab]))
        sampler.accept(next)
        if parameters.stopAtEndOfGeneration && engine.tokenizer.endOfGenerationTokens.contains(next) {
            return finish(.endOfGeneration)
        }
        tokens.append(next)
        stats.generatedTokens = tokens.count
        pendingToken = next
        let text = decoder.append(engine.tokenizer.pieceBytes(next))
        return GeneratedToken(id: next, text: text)
    }

    private mutating func finish(_ reason: GenerationStats.StopReason) -> GeneratedToken? {
        if !finished {
            finished = true
            stats.stopReason = reason
            stats.peakResidentBytes = Platform.peakResidentBytes()
            let now = engine.streamCounters
            stats.bytesReadFromDisk = now.bytesRead - countersAtStart.bytesRead
            stats.decodeBytesRead = started ? now.bytesRead - countersAtDecode.bytesRead : 0
            stats.stallSeconds = now.stallSeconds - countersAtStart.stallSeconds
            stats.memoryLimit = engine.memoryLimit
            stats.replans = engine.replanCount
        }
        return nil
    }

    private mutating func fail(_ e: EngineError) -> GeneratedToken? {
        error = e
        return finish(.error)
    }

    /// Text held back at the end (an incomplete character), to print after the last token.
    public mutating func flushText() -> String { decoder.flush() }
}
