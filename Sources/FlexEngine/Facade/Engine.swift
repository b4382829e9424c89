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
///
/// Sendable without exception: every stored property is a `let` of a Sendable type. The
/// session's run state is touched only by the thread running the current iterator; other
/// threads reach the session through its mutexes (``setMemoryLimit(_:)``, ``plan``,
/// ``offloadSummary``, ``memoryLimit``, ``replanCount``).
public final class Engine: Sendable {
    public let model: Model
    /// The one session the facade runs its generations on.
    public let session: Session
    let lock = Mutex<Int>(0)   // generation counter; the newest iterator owns the session

    public init(options: EngineOptions) throws(EngineError) {
        let limit = options.memoryLimit ?? (options.followCgroupLimit ? CgroupMemory.current()?.cap : nil)
        model = try Model(path: options.modelPath, streaming: limit != nil, interleave: options.interleaveWeights)
        var options = options
        options.memoryLimit = limit
        session = try Session(model: model, options: options)
    }

    public var options: EngineOptions { session.options }
    public var config: ModelConfig { model.config }
    public var tokenizer: any Tokenizer { model.tokenizer }
    public var chatTemplate: ChatTemplate? { model.chatTemplate }
    public var memory: MemoryEstimate { session.memory }
    public var loadSeconds: Double { model.loadSeconds }
    var weights: ModelWeights { model.weights }
    var transformer: Transformer { session.transformer }
    /// The cap in force (explicit, or the cgroup's); nil runs from the mapping without a limit.
    public var memoryLimit: Int? { session.memoryLimit }
    /// How many times a new cap has been applied.
    public var replanCount: Int { session.replanCount }
    public var contextLength: Int { session.contextLength }

    /// Without a cap: bytes of Q4_1/Q8_0 matrices copied out of the mapping in the x8 layout
    /// (``EngineOptions/interleaveWeights``); 0 under a cap, where resident rows are rearranged in place.
    public var interleavedBytes: Int { model.interleavedBytes }

    /// The memory plan in force, nil when running from the mapping without a limit.
    public var plan: MemoryPlan? { session.plan }

    /// What the offload runtime did: reader, locked bytes, mlock refusal (nil when unlimited).
    public var offloadSummary: OffloadSummary? { session.offloadSummary }

    /// Changes the memory cap while the engine is open, from any thread. The new plan is made
    /// (and checked) now, and applied by the generating thread before its next token, so a
    /// running generation continues with the same KV cache and output. Throws, leaving the old
    /// cap in force, when the new cap is below the minimum.
    public func setMemoryLimit(_ bytes: Int) throws(EngineError) { try session.setMemoryLimit(bytes) }

    /// Applies a plan queued by ``setMemoryLimit(_:)``; called by the thread that owns the session.
    func applyPendingPlan() throws(EngineError) { try session.applyPendingPlan() }

    /// The streamer's running totals (zero when nothing streams).
    var streamCounters: StreamCounters { session.streamCounters }

    /// Prompt text → ids, applying the chat template when asked. Emptiness and length are
    /// checked by ``generate(tokens:parameters:continuing:)``, which every path goes through.
    public func promptTokens(_ prompt: String, parameters: GenerateParameters) throws(EngineError) -> [Int32] {
        try model.promptTokens(prompt, parameters: parameters)
    }

    /// Starts a generation. The prompt is processed on the first `next()`.
    public func generate(prompt: String, parameters: GenerateParameters = GenerateParameters()) throws(EngineError) -> TokenIterator {
        try generate(tokens: promptTokens(prompt, parameters: parameters), parameters: parameters)
    }

    /// Starts a generation from token ids. `continuing` takes over the kept cache of an earlier
    /// generation run with ``GenerateParameters/keepCache`` (its ``TokenIterator/sequence``), so
    /// only the tokens after the prefix the two share are run (``Conversation`` does this per turn).
    public func generate(tokens: [Int32], parameters: GenerateParameters = GenerateParameters(),
                         continuing: SequenceID? = nil) throws(EngineError) -> TokenIterator {
        try session.validate(prompt: tokens)
        let id = lock.withLock { g in g += 1; return g }
        return TokenIterator(engine: self, generation: id, prompt: tokens, parameters: parameters, continuing: continuing)
    }

    /// Runs the prompt and returns the state to continue it elsewhere (``KVState``): its KV rows,
    /// the first token sampled from the prompt's logits, and the sampler's state. The engine's
    /// cache is free again afterwards.
    public func prefillState(tokens: [Int32], parameters: GenerateParameters = GenerateParameters(),
                             pruning: KVPruning? = nil) throws(EngineError) -> KVState {
        var params = parameters
        params.keepCache = true
        params.maxTokens = 1
        var it = try generate(tokens: tokens, parameters: params)
        while it.next() != nil {}
        if let error = it.error { throw error }
        guard let id = it.sequence else { throw .state("the prompt did not run") }
        defer { session.release(id) }
        return try session.exportState(of: id, pruning: pruning)
    }

    /// ``prefillState(tokens:parameters:pruning:)`` from text (in the chat template when asked).
    public func prefillState(prompt: String, parameters: GenerateParameters = GenerateParameters(),
                             pruning: KVPruning? = nil) throws(EngineError) -> KVState {
        try prefillState(tokens: promptTokens(prompt, parameters: parameters), parameters: parameters, pruning: pruning)
    }

    /// Continues a state made by ``prefillState(tokens:parameters:pruning:)``, here or in another
    /// process: the iterator yields the state's first token, then the rest, the ids one
    /// uninterrupted run gives. Sampling follows the state's parameters; `parameters` gives the
    /// token limit (counting that first token) and the stop settings.
    public func generate(state: KVState, parameters: GenerateParameters = GenerateParameters()) throws(EngineError) -> TokenIterator {
        let id = lock.withLock { g in g += 1; return g }
        return TokenIterator(engine: self, generation: id, prompt: state.tokens, parameters: parameters, state: state)
    }

    /// Generates from several prompts at once, batched in one session (at most
    /// ``EngineOptions/maxSequences`` run together; the rest wait for a free slot). The iterator
    /// yields each sequence's tokens as ``BatchEvent``s, with the prompt's index.
    public func generate(prompts: [String], parameters: GenerateParameters = GenerateParameters()) throws(EngineError) -> BatchIterator {
        let tokens = try prompts.map { p throws(EngineError) in try promptTokens(p, parameters: parameters) }
        return try generate(tokenPrompts: tokens, parameters: parameters)
    }

    /// ``generate(prompts:parameters:)`` from token ids.
    public func generate(tokenPrompts: [[Int32]], parameters: GenerateParameters = GenerateParameters()) throws(EngineError) -> BatchIterator {
        for p in tokenPrompts { try session.validate(prompt: p) }
        let id = lock.withLock { g in g += 1; return g }
        return BatchIterator(engine: self, generation: id, prompts: tokenPrompts, parameters: parameters)
    }

    /// Streams a generation as events, computed on a dedicated thread. Cancelling the consuming
    /// task (or the stream's termination) stops it at the next token.
    public func stream(prompt: String, parameters: GenerateParameters = GenerateParameters()) -> AsyncThrowingStream<GenerationEvent, any Error> {
        detachedStream(parameters) { params, yield throws(EngineError) in
            var it = try self.generate(prompt: prompt, parameters: params)
            while let t = it.next() { yield(.token(id: t.id, text: t.text)) }
            // A failed weight read ends the iterator early: surface it, never a quiet `.finished`.
            if let error = it.error { throw error }
            yield(.finished(it.stats))
        }
    }

    /// ``generate(prompts:parameters:)`` as an `AsyncThrowingStream`, computed on a dedicated thread.
    public func stream(prompts: [String], parameters: GenerateParameters = GenerateParameters()) -> AsyncThrowingStream<BatchEvent, any Error> {
        detachedStream(parameters) { params, yield throws(EngineError) in
            var it = try self.generate(prompts: prompts, parameters: params)
            while let e = it.next() { yield(e) }
            if let error = it.error { throw error }
        }
    }

    /// Runs `body` on a dedicated thread, yielding into a stream; the stream's termination cancels
    /// the generation through a cancellation token put into the parameters.
    private func detachedStream<Event: Sendable>(
        _ parameters: GenerateParameters,
        _ body: @escaping @Sendable (GenerateParameters, (Event) -> Void) throws(EngineError) -> Void
    ) -> AsyncThrowingStream<Event, any Error> {
        AsyncThrowingStream { continuation in
            let token = parameters.cancellation ?? CancellationToken()
            var params = parameters
            params.cancellation = token
            continuation.onTermination = { _ in token.cancel() }
            let ready = params
            Engine.runDetached {
                do {
                    try body(ready) { continuation.yield($0) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
        }
    }

    /// Compute never runs on the cooperative pool: a thread of its own, with room for the pass.
    private static func runDetached(_ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.stackSize = 1 << 22
        thread.start()
    }

    func isCurrent(_ generation: Int) -> Bool { lock.withLock { $0 == generation } }
}

/// One generated token.
public struct GeneratedToken: Sendable, Equatable {
    public let id: Int32
    /// Text completed by this token (empty while a multi-byte character is incomplete).
    public let text: String
}

/// The synchronous core of generation: a `Sequence` of tokens, one session step per `next()`.
public struct TokenIterator: Sequence, IteratorProtocol {
    let engine: Engine
    let generation: Int
    let prompt: [Int32]
    let parameters: GenerateParameters
    let continuing: SequenceID?
    let state: KVState?
    /// The session's id of this generation's sequence, once the first `next()` has added it: with
    /// ``GenerateParameters/keepCache``, what a next turn continues.
    public private(set) var sequence: SequenceID?
    var finished = false
    /// Why generation stopped early with an error (a weight read failed).
    public private(set) var error: EngineError?
    public private(set) var stats = GenerationStats()
    public private(set) var tokens: [Int32] = []
    private var heldBack = ""
    private var endedAfterToken: GenerationStats?
    /// Tokens of the last step not yet returned: a speculative step can yield several.
    private var queued: [GeneratedToken] = []
    private var queuedHead = 0

    init(engine: Engine, generation: Int, prompt: [Int32], parameters: GenerateParameters, continuing: SequenceID? = nil,
         state: KVState? = nil) {
        self.engine = engine
        self.generation = generation
        self.prompt = prompt
        self.parameters = parameters
        self.continuing = continuing
        self.state = state
        stats.loadSeconds = engine.loadSeconds
        stats.promptTokens = prompt.count
        stats.blocksSkipped = engine.options.skip.skipped.count
        tokens.reserveCapacity(Swift.min(parameters.maxTokens, engine.contextLength))
    }

    public mutating func next() -> GeneratedToken? {
        if queuedHead < queued.count {
            let token = queued[queuedHead]
            queuedHead += 1
            tokens.append(token.id)
            return token
        }
        if finished { return nil }
        guard engine.isCurrent(generation) else { return finish(.cancelled) }
        if parameters.cancellation?.isCancelled == true { return finish(.cancelled) }
        let session = engine.session
        if sequence == nil {
            session.cancelAll()   // one generation at a time: an older iterator's sequence ends
            if let state {
                // The state's first token comes before anything a step produces.
                do {
                    let (id, first) = try session.add(state: state, parameters: parameters)
                    sequence = id
                    tokens.append(first.id)
                    return first
                } catch { return fail(error) }
            }
            do { sequence = try session.add(tokens: prompt, parameters: parameters, continuing: continuing) } catch { return fail(error) }
        }
        let mine = sequence!
        queued.removeAll(keepingCapacity: true)
        queuedHead = 0
        var ended: GenerationStats? = endedAfterToken
        while queued.isEmpty && ended == nil {
            do throws(EngineError) {
                let more = try session.step { event in
                    switch event {
                    case .token(let id, let t) where id == mine: queued.append(t)
                    case .finished(let id, let s) where id == mine: ended = s
                    default: break
                    }
                }
                if !more && ended == nil { ended = stats }
            } catch {
                self.error = error
                if ended == nil { ended = stats }
            }
        }
        if !queued.isEmpty {
            // The sequence may have ended in the same step (its last token): report that next time.
            endedAfterToken = ended
            queuedHead = 1
            tokens.append(queued[0].id)
            return queued[0]
        }
        finished = true
        stats = ended!
        if error != nil { stats.stopReason = .error }
        heldBack = session.flushText(mine)
        return nil
    }

    private mutating func finish(_ reason: GenerationStats.StopReason) -> GeneratedToken? {
        if !finished {
            finished = true
            if let s = sequence, engine.isCurrent(generation) {
                // The sequence's own record (prompt and decode time so far) comes with its end.
                engine.session.cancel(s)
                var final: GenerationStats?
                _ = try? engine.session.step { event in
                    if case .finished(let id, let st) = event, id == s { final = st }
                }
                if let final { stats = final }
            }
            stats.stopReason = reason
            stats.generatedTokens = tokens.count
            stats.peakResidentBytes = Platform.peakResidentBytes()
            stats.memoryLimit = engine.memoryLimit
            stats.replans = engine.replanCount
        }
        return nil
    }

    private mutating func fail(_ e: EngineError) -> GeneratedToken? {
        error = e
        return finish(.error)
    }

    /// ``next()`` that throws the error a generation ended with (a streamed read that failed),
    /// for `while let token = try iterator.nextToken() { … }`. A `for` loop over the iterator
    /// cannot see that error (`IteratorProtocol.next()` cannot throw); it must check ``error``
    /// after the loop.
    public mutating func nextToken() throws(EngineError) -> GeneratedToken? {
        if let token = next() { return token }
        if let error { throw error }
        return nil
    }

    /// Text held back at the end (an incomplete character), to print after the last token.
    public mutating func flushText() -> String {
        defer { heldBack = "" }
        return heldBack
    }
}

/// One event of a batched generation: `prompt` is the index of the prompt it belongs to.
public enum BatchEvent: Sendable {
    case token(prompt: Int, GeneratedToken)
    /// The sequence ended; `text` is what it held back (an incomplete character), usually "".
    case finished(prompt: Int, GenerationStats, heldBack: String)
}

/// Batched generation over one session: a `Sequence` of events, one session step per batch of them.
/// Prompts beyond the session's ``Session/maxSequences`` join as earlier ones end.
public struct BatchIterator: Sequence, IteratorProtocol {
    let engine: Engine
    let generation: Int
    let prompts: [[Int32]]
    let parameters: GenerateParameters
    private var nextPrompt = 0
    private var indexOf: [SequenceID: Int] = [:]
    private var pending: [BatchEvent] = []
    private var cursor = 0
    private var done = false
    /// Why generation stopped early with an error (a weight read failed).
    public private(set) var error: EngineError?

    init(engine: Engine, generation: Int, prompts: [[Int32]], parameters: GenerateParameters) {
        self.engine = engine
        self.generation = generation
        self.prompts = prompts
        self.parameters = parameters
    }

    public mutating func next() -> BatchEvent? {
        while cursor == pending.count {
            if done { return nil }
            pending.removeAll(keepingCapacity: true)
            cursor = 0
            // A newer generation took the session: end without events. A cancellation instead
            // runs one more step, in which the session ends every running sequence with a
            // `.finished` event saying so (their text so far is not lost); no new prompt starts.
            guard engine.isCurrent(generation) else {
                engine.session.cancelAll()
                done = true
                return nil
            }
            let cancelled = parameters.cancellation?.isCancelled == true
            let session = engine.session
            if nextPrompt == 0 { session.cancelAll() }
            while !cancelled && nextPrompt < prompts.count && session.activeCount < session.maxSequences {
                do {
                    let id = try session.add(tokens: prompts[nextPrompt], parameters: parameters)
                    indexOf[id] = nextPrompt
                    nextPrompt += 1
                } catch { self.error = error; done = true; return nil }
            }
            do {
                let more = try session.step { e in
                    switch e {
                    case .token(let id, let t): pending.append(.token(prompt: indexOf[id]!, t))
                    case .finished(let id, let s): pending.append(.finished(prompt: indexOf[id]!, s, heldBack: session.flushText(id)))
                    }
                }
                if cancelled || (!more && nextPrompt == prompts.count) { done = true }
            } catch {
                self.error = error
                done = true
            }
        }
        defer { cursor += 1 }
        return pending[cursor]
    }

    /// ``next()`` that throws the error the batch ended with (see ``TokenIterator/nextToken()``).
    public mutating func nextEvent() throws(EngineError) -> BatchEvent? {
        if let event = next() { return event }
        if let error { throw error }
        return nil
    }
}
