import FlexKernels
import FlexSystem
import Synchronization

/// The mutable half of running a model (llama.cpp's `llama_context` beside ``Model``'s
/// `llama_model`): the run state, the paged KV cache, the weight source in force (mapping, x8
/// copies or a streamer), the masks in force, the sequences and their statistics.
///
/// Sequences are batched (continuous batching): ``add(tokens:parameters:continuing:)`` queues one, and each
/// ``step(_:)`` runs one forward pass holding the next token of every generating sequence plus
/// prompt chunks of new ones, so under a cap the weights are streamed once for all of them. A
/// sequence gets exactly the ids it gets alone: each row's arithmetic depends only on whether it
/// is a prompt or a generated row (`ForwardBatch`), and its attention reads only its own pages.
///
/// A session runs on one thread at a time. From any other thread only ``setMemoryLimit(_:)``
/// and the published ``memoryLimit``, ``replanCount``, ``plan`` and ``offloadSummary`` may be
/// used; everything else (``kvCache``, ``mask``, ``pruneDecisions``, …) belongs to the stepping thread.
public final class Session: @unchecked Sendable {
    // @unchecked Sendable: the run state (transformer, sequences, masks, controller) is touched
    // only by the thread calling step/add/cancel. Other threads reach the session only through
    // two mutexes: `pendingPlan` (setMemoryLimit) and `published` (memoryLimit, replanCount, plan,
    // offloadSummary), which the stepping thread rewrites whenever it swaps the source or the cap.
    public let model: Model
    public let options: EngineOptions
    public let memory: MemoryEstimate
    let transformer: Transformer
    let locker: MemoryLocker?
    /// The cap in force (explicit, or the cgroup's); nil runs from memory without a limit.
    /// Safe to read from any thread.
    public internal(set) var memoryLimit: Int? {
        get { published.withLock { $0.memoryLimit } }
        set { published.withLock { $0.memoryLimit = newValue } }
    }
    let pendingPlan = Mutex<PendingLimit?>(nil)
    /// What other threads may read while a generation runs. The stepping thread writes it (after
    /// each source swap and cap change); readers take a copy under the lock, so they never see
    /// the transformer's source half-swapped.
    struct Published: Sendable {
        var memoryLimit: Int?
        var replanCount = 0
        var plan: MemoryPlan?
        var offload: OffloadSummary?
    }
    let published: Mutex<Published>
    /// `--prune fit|auto`: the pruning controller (nil when off or without a cap), and the
    /// user's own skips, which every mask it chooses keeps.
    var controller: PruningController?
    let userSkip: BlockMask
    let userPrefillSkip: BlockMask
    /// When the session opened (decision times are logged from it).
    let openedAt = Platform.now()
    /// Decode rows and seconds since the last decision, and whether its RSS is yet to be read.
    var measuringDecision = DecisionMeter()
    /// Set when a re-plan closed the weight stream and neither the new plan's stream nor the
    /// old one could open again (the file changed under the session): every later pass throws
    /// it, rather than run from the mapping, which would ignore the cap (and fault on a
    /// truncated file).
    var lostStream: EngineError?
    /// How many times a new cap has been applied. Safe to read from any thread.
    public internal(set) var replanCount: Int {
        get { published.withLock { $0.replanCount } }
        set { published.withLock { $0.replanCount = newValue } }
    }
    /// Blocks skipped when generating (and scoring), and when processing prompts. Held by the
    /// transformer, whose scoring path runs them too.
    public internal(set) var mask: BlockMask {
        get { transformer.mask }
        set { transformer.mask = newValue; maskHoles = newValue.skippedAttentionLayers }
    }
    public internal(set) var prefillMask: BlockMask {
        get { transformer.prefillMask }
        set { transformer.prefillMask = newValue; prefillHoles = newValue.skippedAttentionLayers }
    }
    /// The masks' skipped attention layers, kept so a step does not rebuild them (no allocation).
    private(set) var maskHoles: Set<Int>
    private(set) var prefillHoles: Set<Int>
    var sequences: [SequenceState] = []
    private var nextID = 0
    /// Sequence index of each logit row of the pass being run (preallocated).
    private var rowOwner: [Int]
    /// Whether the last step ran generated rows, for alternating when the stage masks differ.
    private var lastStepDecoded = false
    /// Speculative decoding: the draft length of each pass, the drafter, and this pass's drafted
    /// tokens of every sequence (preallocated; a sequence's are at its `draftStart`).
    private var drafting: DraftLengthController
    private let lookup = PromptLookup()
    private var passDrafts: [Int32]

    /// Blocks skipped to fit the cap at open (`--prune fit`), nil when none were needed.
    public let pruneDecision: PruneDecision?
    /// Every decision the controller took, at open and at each new cap, in order.
    public internal(set) var pruneDecisions: [PruneDecision] = []

    public init(model: Model, options: EngineOptions) throws(EngineError) {
        var options = options
        userSkip = options.skip
        userPrefillSkip = options.prefillSkip ?? options.skip
        let limit = options.memoryLimit ?? (options.followCgroupLimit ? CgroupMemory.current()?.cap : nil)
        guard options.threads >= 1, options.threads <= 256 else { throw .invalidOption("\(OptionField.threads) must be between 1 and 256") }
        guard options.batchSize >= 1, options.batchSize <= 4096 else { throw .invalidOption("batch size must be between 1 and 4096") }
        guard options.maxSequences >= 1, options.maxSequences <= 1024 else { throw .invalidOption("\(OptionField.maxSequences) must be between 1 and 1024") }
        guard (1...8).contains(options.maxDraft) else { throw .invalidOption("\(OptionField.maxDraft) must be between 1 and 8") }
        let config = model.config
        try Session.check(options.skip, prefill: options.prefillSkip ?? options.skip, layers: config.layerCount)
        let context = options.contextLength ?? min(2048, config.trainedContextLength)
        guard context >= 1, context <= 1 << 20 else { throw .invalidOption("\(OptionField.contextLength) must be between 1 and 1048576") }
        guard (1...16).contains(options.ringSlots) else { throw .invalidOption("ring slots must be between 1 and 16") }
        let sequences = options.maxSequences
        // A pass holds every sequence's generated row, plus prompt rows.
        let batch = max(min(options.batchSize, context), sequences)
        let pages = options.kvPages ?? PagedKVCache.pages(sequences: sequences, capacity: context)
        guard pages >= 1 else { throw .invalidOption("the KV pool needs at least one page") }
        let runtime = options.runtimeAllowance ?? (model.parsedBytes + MemoryEstimate.codeAllowance)
        func buffers(logitRows: Int) -> Int {
            RunState.bytes(config: config, maxBatch: batch, logitRows: logitRows, context: context, threads: options.threads,
                           maxRow: model.weights.maxRowLength)
        }
        // Logits for a whole batch (perplexity) only when the model fits in memory with them;
        // under a tighter cap those bytes are better spent on resident weights. Generation needs
        // one row per sequence.
        // Speculation verifies a sequence's drafted tokens in one pass: a logits row for each.
        let rowsPerSequence = options.speculation == .off ? 1 : options.maxDraft + 1
        func logitRows(roomy: Bool) -> Int { min(batch, max(sequences * rowsPerSequence, options.logitRows ?? (roomy ? batch : 1))) }
        // The pruning controller plans with the dense layout, the KV to a horizon and the
        // buffers of one logit row per sequence (a pruned session is never roomy).
        let policy = options.prune == .off ? nil : try Session.policy(options, layers: config.layerCount)
        var opening: PruningController?
        if let policy, let limit {
            let memory = MemoryModel(layout: try model.weights.layout(skipping: .none),
                                     kvBytesPerTokenPerLayer: PagedKVCache.bytesPerToken(keptLayers: 1, kvDim: config.kvDim), kvTokens: 0,
                                     bufferBytes: buffers(logitRows: logitRows(roomy: false)), runtimeBytes: runtime,
                                     ringSlots: options.ringSlots,
                                     windowedTokens: PagedKVCache.windowedTokens(layers: config.layerCount,
                                                                                 windows: options.attentionWindows ?? config.attentionWindows,
                                                                                 capacity: context, slots: sequences + 1),
                                     residency: options.residency)
            if options.prune == .auto {
                guard options.minTokensPerSecond != nil else { throw .invalidOption("\(OptionField.prune) auto needs a throughput target (\(OptionField.minTokensPerSecond))") }
                guard options.throughput != nil else {
                    throw .invalidOption("\(OptionField.prune) auto needs \(OptionField.throughput) for this machine: run `flexrun calibrate --model \(options.modelPath)` first")
                }
            }
            let c = PruningController(policy: policy, memory: memory, residentOnly: options.residentOnly,
                                      minTokensPerSecond: options.prune == .auto ? options.minTokensPerSecond : nil,
                                      throughput: options.throughput, pageTokens: PagedKVCache.defaultPageTokens, poolPages: pages,
                                      sequences: sequences, ffnOrder: options.pruneOrder ?? [])
            pruneDecision = try Session.decideAtOpen(c, options: &options, cap: limit)
            opening = c
        } else {
            pruneDecision = nil
        }
        controller = opening
        let prefillSkip = options.prefillSkip ?? options.skip
        // With a controller, attention it drops keeps its KV room (virtual until written): it may
        // come back for new sequences.
        let floor = opening == nil ? prefillSkip.attentionOnly : userPrefillSkip.attentionOnly
        func estimate(logitRows: Int) -> MemoryEstimate {
            MemoryEstimate(
                weights: model.weightBytes,
                kvCache: PagedKVCache.capacityBytes(layers: config.layerCount, kvDim: config.kvDim, floor: floor,
                                                    windows: options.attentionWindows ?? config.attentionWindows, sequences: sequences + 1,
                                                    capacity: context, pages: pages),
                buffers: buffers(logitRows: logitRows), runtime: runtime)
        }
        let roomy = opening == nil && (limit.map { $0 >= estimate(logitRows: batch).total } ?? true)
        let logitRows = logitRows(roomy: roomy)
        let estimate = estimate(logitRows: logitRows)
        let locker = options.lockMemory ? (options.memoryLocker ?? MemoryLocker()) : nil
        let source: any WeightSource
        if let limit {
            let plan: MemoryPlan
            if let opening { plan = try MemoryPlan.make(opening.memory.inputs(skipping: options.skip, cap: limit)) }
            else { plan = try Session.plan(cap: limit, model: model, estimate: estimate, options: options) }
            if options.residentOnly && !plan.isFullyResident {
                let need = plan.fixedBytes + Builder.allResident(plan.inputs.layout).residentBytes
                throw .invalidOption("\(OptionField.residentOnly): the weights, KV cache, buffers and runtime need \(ByteSize.format(need)) but the limit is "
                                     + "\(ByteSize.format(limit)); raise \(OptionField.memoryLimit), lower \(OptionField.contextLength), or set \(OptionField.prune) fit to skip blocks")
            }
            model.dropInterleaved()
            source = try WeightStreamer(plan: plan, weights: model.weights, backend: options.readBackend, locker: locker,
                                        interleave: options.interleaveWeights, fault: options.readFault)
        } else {
            source = model.inMemorySource()
        }
        pruneDecisions = pruneDecision.map { [$0] } ?? []
        measuringDecision.predicted = pruneDecision?.predictedTokensPerSecond
        self.model = model
        self.options = options
        self.memory = estimate
        published = Mutex(Session.publishing(source, memoryLimit: limit, replanCount: 0))
        self.locker = locker
        maskHoles = options.skip.skippedAttentionLayers
        prefillHoles = prefillSkip.skippedAttentionLayers
        transformer = try Transformer(weights: model.weights, source: source, contextLength: context, maxBatch: batch,
                                      threads: options.threads, mask: options.skip, prefillMask: prefillSkip, logitRows: logitRows,
                                      sequences: sequences, kvPages: pages, windows: options.attentionWindows)
        rowOwner = Array(repeating: 0, count: batch)
        drafting = DraftLengthController(mode: options.speculation, maxDraft: options.maxDraft)
        passDrafts = []
        passDrafts.reserveCapacity(options.speculation == .off ? 0 : batch)
        self.sequences.reserveCapacity(options.maxSequences)
    }

    static func check(_ skip: BlockMask, prefill: BlockMask, layers: Int) throws(EngineError) {
        for b in skip.skipped.union(prefill.skipped) where b.layer >= layers {
            throw .invalidOption("block \(b) does not exist: the model has \(layers) layers")
        }
        if let l = prefill.skippedAttentionLayers.subtracting(skip.skippedAttentionLayers).min() {
            throw .invalidOption("prefill skips attn:\(l) but decode runs it: decode would attend to prompt keys that were never computed")
        }
    }

    /// Positions one sequence may hold.
    public var contextLength: Int { transformer.contextLength }
    /// Most sequences held at once.
    public var maxSequences: Int { options.maxSequences }
    /// Sequences added and not yet finished.
    public var activeCount: Int { sequences.count }
    public var isIdle: Bool { sequences.isEmpty }

    /// KV pages: in use now, the most ever in use, and the pool.
    public var kvCache: KVCacheUsage {
        KVCacheUsage(pageTokens: transformer.cache.pageTokens, pageBytes: transformer.cache.pageBytes,
                     pagesInUse: transformer.cache.pagesInUse, peakPages: transformer.cache.peakPages,
                     pageCapacity: transformer.cache.pageCapacity)
    }

    /// The memory plan in force, nil when running from memory without a limit. Safe to read
    /// from any thread.
    public var plan: MemoryPlan? { published.withLock { $0.plan } }

    /// What the offload runtime did: reader, locked bytes, mlock refusal (nil when unlimited).
    /// Safe to read from any thread.
    public var offloadSummary: OffloadSummary? { published.withLock { $0.offload } }

    /// The snapshot other threads read, for `source` in force.
    static func publishing(_ source: any WeightSource, memoryLimit: Int?, replanCount: Int) -> Published {
        let streamer = source as? WeightStreamer
        return Published(memoryLimit: memoryLimit, replanCount: replanCount, plan: streamer?.plan,
                         offload: streamer.map { s in
                             OffloadSummary(reader: s.readerDescription, lockedBytes: s.lockedBytes, lockRefusal: s.lockRefusal?.description,
                                            residentLoadSeconds: s.loadSeconds, directIO: s.directIO)
                         })
    }

    /// Rewrites the published plan and offload summary after the stepping thread swapped the source.
    func publishSource() {
        let now = Session.publishing(transformer.source, memoryLimit: nil, replanCount: 0)
        published.withLock { $0.plan = now.plan; $0.offload = now.offload }
    }

    /// The streamer's running totals (zero when nothing streams).
    public var streamCounters: StreamCounters { transformer.streamer?.counters ?? StreamCounters() }

    // MARK: - Masks and caps

    /// Changes the blocks the next passes skip; no reopen. `prefill` (nil: `decode`) must skip
    /// no attention block that `decode` runs, and neither may run an attention block the session
    /// opened without (it has no KV room) or one a live sequence has skipped before (its keys for
    /// earlier positions were never computed; such a block comes back for new sequences only).
    public func setMask(_ decode: BlockMask, prefill: BlockMask? = nil) throws(EngineError) {
        let prefill = prefill ?? decode
        try Session.check(decode, prefill: prefill, layers: model.config.layerCount)
        if let l = transformer.floor.skippedAttentionLayers.subtracting(prefill.skippedAttentionLayers).min() {
            throw .invalidOption("attn:\(l) has no KV cache in this session (it was skipped at open); open a session that runs it")
        }
        for s in sequences where s.started {
            if let l = s.attentionHoles.subtracting((s.decoding ? decode : prefill).skippedAttentionLayers).min() {
                throw .invalidOption("attn:\(l) was skipped for sequence \(s.id) earlier; it can come back for new sequences only")
            }
        }
        mask = decode
        prefillMask = prefill
    }

    // MARK: - Sequences

    /// Refuses a prompt this session cannot run: empty, an id outside the vocabulary, or no room
    /// left in the context for a generated token.
    public func validate(prompt tokens: [Int32]) throws(EngineError) {
        guard !tokens.isEmpty else { throw .emptyPrompt }
        for t in tokens where t < 0 || Int(t) >= model.config.vocabularySize { throw .invalidToken(t) }
        guard tokens.count < contextLength else { throw .promptTooLong(tokens: tokens.count, context: contextLength) }
    }

    /// Queues a sequence; its prompt is processed by the next steps.
    ///
    /// With `continuing`, the id of a finished sequence whose cache was kept
    /// (``GenerateParameters/keepCache``), the new sequence takes over that KV cache: the
    /// positions where `tokens` agrees with what the cache holds are not run again, so a chat's
    /// next turn prefills only its own tokens (llama.cpp's prompt cache does the same). Where the
    /// prompts part (an earlier turn was dropped), the cache is cut back there and rebuilt.
    public func add(tokens: [Int32], parameters: GenerateParameters = GenerateParameters(),
                    continuing: SequenceID? = nil) throws(EngineError) -> SequenceID {
        try validate(prompt: tokens)
        transformer.releaseScoring()
        var reused = 0
        var holes: Set<Int> = []
        let slot: PagedKVCache.Slot
        if let previous = continuing {
            guard let kept = retained.removeValue(forKey: previous) else {
                throw .invalidOption("sequence \(previous) has no kept cache (it is running, was released, or did not ask to keep it)")
            }
            slot = kept.slot
            // Keep the common prefix, less at least one token: the last prompt row must run to
            // give the first logits. A ring (windowed layers) cannot go back far: rebuild then.
            var common = 0
            while common < min(kept.history.count, tokens.count - 1) && kept.history[common] == tokens[common] { common += 1 }
            if transformer.cache.ringLength > 0 && kept.history.count - common > transformer.cache.ringSlack { common = 0 }
            transformer.cache.truncate(slot, to: common)
            reused = common
            holes = common > 0 ? kept.attentionHoles : []
        } else {
            guard sequences.count + retained.count < maxSequences, let open = transformer.cache.open() else {
                let kept = retained.isEmpty ? "" : ", \(retained.count) of them kept caches (release them)"
                throw .invalidOption("the session already holds \(maxSequences) sequences\(kept) (raise \(OptionField.maxSequences))")
            }
            slot = open
        }
        var s = newSequence(prompt: tokens, parameters: parameters, slot: slot)
        s.consumed = reused
        s.started = reused > 0
        s.attentionHoles = holes
        s.stats.reusedPromptTokens = reused
        sequences.append(s)
        return s.id
    }

    /// A sequence in `slot` with the next id, and the session's figures at its start: what every
    /// way of adding one (a prompt, a kept cache, a KV state) shares.
    func newSequence(prompt: [Int32], parameters: GenerateParameters, slot: PagedKVCache.Slot) -> SequenceState {
        let id = SequenceID(value: nextID)
        nextID += 1
        var s = SequenceState(id: id, prompt: prompt, parameters: parameters, slot: slot, vocabulary: model.config.vocabularySize,
                              capacity: min(parameters.maxTokens, contextLength))
        s.stats.loadSeconds = model.loadSeconds
        s.stats.blocksSkipped = mask.skipped.count
        s.countersAtStart = streamCounters
        return s
    }

    /// Queues a prompt (in the chat template when the parameters ask).
    public func add(prompt: String, parameters: GenerateParameters = GenerateParameters()) throws(EngineError) -> SequenceID {
        try add(tokens: model.promptTokens(prompt, parameters: parameters), parameters: parameters)
    }

    /// Ends a sequence at the next step (reported there as cancelled).
    public func cancel(_ id: SequenceID) {
        if let i = sequences.firstIndex(where: { $0.id == id }) { sequences[i].cancelled = true }
    }

    /// Ends every sequence now, without events (the facade starting anew). Kept caches stay.
    func cancelAll() {
        for s in sequences { transformer.cache.close(s.slot) }
        sequences.removeAll(keepingCapacity: true)
    }

    /// A finished sequence's KV cache, kept for a later ``add(tokens:parameters:continuing:)``:
    /// the tokens its positions hold, and the attention layers some pass skipped over them.
    struct RetainedCache {
        let slot: PagedKVCache.Slot
        let history: [Int32]
        let attentionHoles: Set<Int>
        /// Generated tokens not in the cache (the last one sampled), and the sampler's state
        /// after it: what a KV state file needs to continue exactly.
        let pending: [Int32]
        let sampling: SamplingParameters
        let random: RandomSource.State
    }
    var retained: [SequenceID: RetainedCache] = [:]

    /// Gives a kept cache's pages back to the pool (a chat that ends, or starts anew).
    public func release(_ id: SequenceID) {
        if let kept = retained.removeValue(forKey: id) { transformer.cache.close(kept.slot) }
    }

    /// Ids of finished sequences whose caches are kept.
    public var keptCaches: [SequenceID] { retained.keys.sorted() }

    /// Tokens generated so far by `id` (nil once it has finished).
    public func tokens(of id: SequenceID) -> [Int32]? { sequences.first { $0.id == id }?.tokens }

    /// Runs one pass: the next token of every generating sequence and prompt rows of new ones,
    /// calling `emit` for each token and each sequence that ends. Returns false when there was
    /// nothing to do (no sequences). Steady-state steps allocate nothing. Throws when a pass fails
    /// (streamed weights cannot be read); every sequence has then ended with `.error`.
    @discardableResult
    public func step(_ emit: (SequenceEvent) -> Void) throws(EngineError) -> Bool {
        do {
            try applyPendingPlan()
            try controllerTick()
        } catch { failAll(emit); throw error }
        // Cancelled sequences end before the pass.
        var i = 0
        while i < sequences.count {
            if sequences[i].cancelled || sequences[i].parameters.cancellation?.isCancelled == true {
                finish(i, .cancelled, emit)
            } else { i += 1 }
        }
        if sequences.isEmpty { return false }
        let batch = transformer.batch
        batch.clear()
        let mixing = mask == prefillMask
        let anyPrompt = sequences.contains { !$0.decoding }
        let decodeNow = mixing || !anyPrompt || !lastStepDecoded
        // Generated rows first: they take the decode path. A sequence's drafted tokens follow
        // its pending token as decode rows too, so each gets the numbers it would get alone.
        passDrafts.removeAll(keepingCapacity: true)
        if decodeNow {
            let decoding = sequences.reduce(0) { $0 + ($1.decoding ? 1 : 0) }
            let drafts = drafting.mode != .off && decoding > 0
            var seen = 0
            i = 0
            while i < sequences.count {
                guard sequences[i].decoding else { i += 1; continue }
                seen += 1
                let s = sequences[i]
                let t0 = drafts ? Platform.now() : 0
                var drafted = 0
                if drafts {
                    // Room: the token limit, and the pass's rows and logit rows (every other
                    // sequence still to place keeps one of each).
                    let others = sequences.count - seen
                    let room = min(drafting.maxDraft, transformer.cache.rowsPerPass - 1, s.parameters.maxTokens - s.tokens.count - 1,
                                   batch.free - 1 - others, transformer.maxLogitRows - batch.logitCount - 1 - others)
                    let held = s.prompt.count
                    /// Token `j` of the sequence's history: its prompt, then what it generated.
                    func history(_ j: Int) -> Int32 { j < held ? s.prompt[j] : s.tokens[j - held] }
                    if room > 0, let found = lookup.find(count: held + s.tokens.count, limit: room, token: history) {
                        drafted = min(found.length, drafting.length(found.kind))
                        sequences[i].draftStart = passDrafts.count
                        sequences[i].draftKind = found.kind
                        for j in found.start..<(found.start + drafted) { passDrafts.append(history(j)) }
                    }
                    sequences[i].stats.draftSeconds += Platform.now() - t0
                }
                var position: Int
                do { position = try transformer.cache.append(s.slot, count: 1 + drafted) } catch {
                    // No room for the drafts: a plain row, if that fits.
                    guard drafted > 0, let p = try? transformer.cache.append(s.slot, count: 1) else {
                        finish(i, .contextFull, emit)
                        continue
                    }
                    position = p
                    drafted = 0
                }
                sequences[i].draftCount = drafted
                sequences[i].verifiedThisStep = false
                rowOwner[batch.logitCount] = i
                batch.add(token: s.pendingToken!, position: position, slot: s.slot, logits: true)
                for j in 0..<drafted {
                    rowOwner[batch.logitCount] = i
                    batch.add(token: passDrafts[sequences[i].draftStart + j], position: position + 1 + j, slot: s.slot, logits: true)
                }
                i += 1
            }
        }
        batch.decodeRows = batch.count
        if mixing || batch.count == 0 {
            i = 0
            while i < sequences.count && !batch.isFull {
                guard !sequences[i].decoding else { i += 1; continue }
                let s = sequences[i]
                let n = min(batch.free, s.prompt.count - s.consumed, transformer.cache.rowsPerPass)
                let position: Int
                do { position = try transformer.cache.append(s.slot, count: n) } catch {
                    if batch.count > 0 { break }   // the pool is short: wait for pages to come back
                    finish(i, .contextFull, emit)
                    continue
                }
                for j in 0..<n {
                    let last = s.consumed + j == s.prompt.count - 1
                    if last { rowOwner[batch.logitCount] = i }
                    batch.add(token: s.prompt[s.consumed + j], position: position + j, slot: s.slot, logits: last)
                }
                sequences[i].consumed += n
                sequences[i].promptRowsThisStep = true
                i += 1
            }
        }
        if batch.count == 0 { return !sequences.isEmpty }
        let passMask = batch.decodeRows == 0 ? prefillMask : mask
        lastStepDecoded = batch.decodeRows > 0
        let t0 = Platform.now()
        do { try transformer.forward(batch, mask: passMask) } catch {
            failAll(emit)
            throw error
        }
        let seconds = Platform.now() - t0
        measureDecision(decodeRows: batch.decodeRows, promptRows: batch.count - batch.decodeRows, seconds: seconds)
        let holes = batch.decodeRows == 0 ? prefillHoles : maskHoles
        // Timing: every sequence with a row in the pass spent the pass.
        for k in sequences.indices {
            if sequences[k].promptRowsThisStep {
                sequences[k].stats.promptSeconds += seconds
                sequences[k].promptRowsThisStep = false
                sequences[k].started = true
                if !holes.isEmpty { sequences[k].attentionHoles.formUnion(holes) }
            } else if sequences[k].decoding && batch.decodeRows > 0 {
                sequences[k].stats.decodeSeconds += seconds
                sequences[k].stats.decodePasses += 1
                if !holes.isEmpty { sequences[k].attentionHoles.formUnion(holes) }
            }
        }
        // Sample every logit row; a sequence whose prompt just ended starts generating. A
        // sequence with drafts has consecutive rows: row j verifies draft j, and the first
        // token that differs from its draft (or the row after the last draft) ends its pass.
        var ended = 0
        var draftRow = 0, lastOwner = -1
        let onlyDecodeRows = batch.count == batch.decodeRows
        for r in 0..<batch.logitCount {
            let k = rowOwner[r]
            draftRow = k == lastOwner ? draftRow + 1 : 0
            lastOwner = k
            // Rows after the chain broke (or after the sequence stopped) are discarded.
            if sequences[k].draftCount > 0 && (sequences[k].verifiedThisStep || sequences[k].stop != nil) { continue }
            if !sequences[k].decoding && sequences[k].consumed == sequences[k].prompt.count {
                sequences[k].decoding = true
                sequences[k].countersAtDecode = streamCounters
                sequences[k].majorFaultsAtDecode = Platform.majorFaults()
            }
            if sequences[k].tokens.count >= sequences[k].parameters.maxTokens {
                sequences[k].stop = .maxTokens; ended += 1; continue
            }
            let logits = UnsafeMutableBufferPointer(mutating: transformer.logits(row: r))
            let drafts = sequences[k].draftCount
            let next: Int32
            if drafts > 0 {
                let draft: Int32? = draftRow < drafts ? passDrafts[sequences[k].draftStart + draftRow] : nil
                next = draft.map { sequences[k].sampler.verify(logits, draft: $0) } ?? sequences[k].sampler.sample(logits)
                if next == draft {
                    sequences[k].acceptedThisStep += 1
                } else {
                    // The chain ends here: positions after this row's input hold rejected drafts.
                    endChain(k, keeping: draftRow)
                }
            } else {
                next = sequences[k].sampler.sample(logits)
            }
            sequences[k].sampler.accept(next)
            if sequences[k].parameters.stopAtEndOfGeneration && model.stopTokens.contains(next) {
                sequences[k].stop = .endOfGeneration; ended += 1; continue
            }
            sequences[k].tokens.append(next)
            sequences[k].stats.generatedTokens = sequences[k].tokens.count
            sequences[k].pendingToken = next
            let text = sequences[k].decoder.append(model.tokenizer.pieceBytes(next))
            emit(.token(sequences[k].id, GeneratedToken(id: next, text: text)))
            if sequences[k].tokens.count >= sequences[k].parameters.maxTokens { sequences[k].stop = .maxTokens; ended += 1 }
        }
        // Speculation's bookkeeping: counts, and the pass cost and acceptance for `auto`.
        if batch.decodeRows > 0 && drafting.mode != .off {
            var decoding = 0, drafted = 0, accepted = 0, kind = PromptLookup.Kind.long
            for k in sequences.indices where sequences[k].decoding {
                decoding += 1
                kind = sequences[k].draftKind
                drafted += sequences[k].draftCount
                accepted += sequences[k].acceptedThisStep
                sequences[k].stats.draftedTokens += sequences[k].draftCount
                sequences[k].stats.acceptedTokens += sequences[k].acceptedThisStep
                sequences[k].draftCount = 0
                sequences[k].acceptedThisStep = 0
            }
            if decoding == 1 && onlyDecodeRows { drafting.record(seconds: seconds, drafted: drafted, accepted: accepted, kind: kind) }
        }
        if ended > 0 {
            i = 0
            while i < sequences.count {
                if let reason = sequences[i].stop { finish(i, reason, emit) } else { i += 1 }
            }
        }
        return true
    }

    /// Runs one step and returns its events (allocates the array; ``step(_:)`` does not).
    public func step() throws(EngineError) -> [SequenceEvent] {
        var events: [SequenceEvent] = []
        try step { events.append($0) }
        return events
    }

    /// Text a sequence holds back at its end (an incomplete character); "" when none.
    public func flushText(_ id: SequenceID) -> String { flushed.removeValue(forKey: id) ?? "" }
    private var flushed: [SequenceID: String] = [:]

    private func finish(_ i: Int, _ reason: GenerationStats.StopReason, _ emit: (SequenceEvent) -> Void) {
        var s = sequences.remove(at: i)
        // A cache with pruned layers (a pruned hand-off) is not kept: its holes cannot be continued.
        if s.parameters.keepCache && reason != .error && !transformer.cache.hasHoles(s.slot) {
            // The cache holds the prompt and every generated token but the last, which was
            // never run; drafts past an accepted end token are cut off here.
            let held = s.prompt + s.tokens
            let length = min(transformer.cache.length(s.slot), held.count, s.decoding ? held.count : s.consumed)
            transformer.cache.truncate(s.slot, to: length)
            retained[s.id] = RetainedCache(slot: s.slot, history: Array(held[0..<length]), attentionHoles: s.attentionHoles,
                                           pending: Array(held[length...]), sampling: s.parameters.sampling, random: s.sampler.randomState)
        } else {
            transformer.cache.close(s.slot)
        }
        s.stats.stopReason = reason
        s.stats.promptTokens = s.prompt.count - s.stats.reusedPromptTokens
        s.stats.peakResidentBytes = Platform.peakResidentBytes()
        let now = streamCounters
        s.stats.bytesReadFromDisk = now.bytesRead - s.countersAtStart.bytesRead
        s.stats.decodeBytesRead = s.decoding ? now.bytesRead - s.countersAtDecode.bytesRead : 0
        s.stats.decodeMajorFaults = s.decoding ? Platform.majorFaults() - s.majorFaultsAtDecode : 0
        s.stats.stallSeconds = now.stallSeconds - s.countersAtStart.stallSeconds
        s.stats.memoryLimit = memoryLimit
        s.stats.replans = replanCount
        let rest = s.decoder.flush()
        if !rest.isEmpty { flushed[s.id] = rest }
        emit(.finished(s.id, s.stats))
    }

    /// Ends sequence `k`'s drafted chain after `keeping` accepted drafts: its KV cache keeps the
    /// pending token and those drafts, and the rejected positions return.
    private func endChain(_ k: Int, keeping: Int) {
        let s = sequences[k]
        let length = transformer.cache.length(s.slot) - (s.draftCount - keeping)
        if length < transformer.cache.length(s.slot) { transformer.cache.truncate(s.slot, to: length) }
        sequences[k].verifiedThisStep = true
    }

    private func failAll(_ emit: (SequenceEvent) -> Void) {
        while !sequences.isEmpty { finish(0, .error, emit) }
    }

    // MARK: - Scoring

    /// The scoring path (perplexity, pruning) uses the session's transformer directly, and
    /// needs the KV pool: it ends every sequence first.
    func scoringTransformer() throws(EngineError) -> Transformer {
        cancelAll()
        try applyPendingPlan()
        return transformer
    }
}
