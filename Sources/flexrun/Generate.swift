import ArgumentParser
import Dispatch
import FlexEngine
import FlexSystem
import Foundation
import Synchronization

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate text from a prompt file (the default command).")

    @OptionGroup var model: ModelOptions

    @OptionGroup var sampling: SamplingOptions

    @Flag(name: .long, help: "Wrap the prompt in the model's chat template (ChatML).")
    var chat = false

    @Option(name: .long, help: "System message for --chat (default: the template's own).")
    var system: String?

    @Flag(name: .customLong("ignore-eos"), help: "Do not stop at end-of-generation tokens (benchmarks: every sequence runs -n tokens).")
    var ignoreEOS = false

    @Flag(name: .long, help: "Print load time, prompt and decode tok/s, peak memory and more to stderr.")
    var stats = false

    @Flag(name: .customLong("print-ids"), help: "Print the generated token ids to stderr (for comparing runs).")
    var printIDs = false

    @Option(name: .long, help: "Generate for every prompt in the file at once, N sequences batched per pass: one prompt per line, or JSONL lines {\"prompt\": ...}; writes one JSON line per sequence.")
    var parallel: Int?

    @Option(name: [.customShort("p"), .customLong("prompt")], help: "The prompt text itself, instead of a prompt file.")
    var promptText: String?

    @Option(name: .customLong("stop"), help: "Stop when the output would contain this text, which is not printed (repeatable).")
    var stop: [String] = []

    @Flag(name: .long, help: "Write one JSON object instead of streaming text: text, ids, stop reason and stats.")
    var json = false

    @Option(name: .customLong("save-state"), help: "Run the prompt only and write its KV state (with the first token) to FILE; --load-state continues it, in another process.")
    var saveState: String?

    @Option(name: .customLong("kv-prune"), help: "With --save-state or prefill --serve: hand over only the first F and last R positions of some layers (token-aware KV pruning, docs/PDTRIM.md): F:R:LAYERS, LAYERS a list (9,26,18) or N@FILE, the N cheapest layers of a prune kv-handoff JSON.")
    var kvPrune: String?

    @Option(name: .customLong("load-state"), help: "Continue a state written by --save-state instead of a prompt (sampling as when it was saved; -n counts from the state's first token).")
    var loadState: String?

    @Argument(help: "Prompt file, or - for stdin (or give -p TEXT).")
    var promptFile: String?

    /// Where a KV state goes or comes from: `--save-state`/`--load-state` files, or the socket of
    /// `flexrun prefill --serve` and `flexrun decode --from`.
    enum HandOff {
        case save(String), load(String), serve(String), receive(String)
        var needsPrompt: Bool { switch self { case .save, .serve: true; case .load, .receive: false } }
    }

    var handOff: HandOff? {
        if let saveState { return .save(saveState) }
        if let loadState { return .load(loadState) }
        return nil
    }

    func validate() throws {
        try sampling.validate()
        if promptText != nil && promptFile != nil { throw CLIError("give either -p TEXT or a prompt file, not both") }
        if saveState != nil && loadState != nil { throw CLIError("give either --save-state or --load-state, not both") }
        if parallel != nil, saveState != nil || loadState != nil { throw CLIError("--save-state and --load-state are for one sequence, not --parallel") }
        if parallel != nil, json || !stop.isEmpty { throw CLIError("--json and --stop are for one prompt; --parallel already writes one JSON line per sequence") }
        if let parallel { guard (1...1024).contains(parallel) else { throw CLIError("--parallel must be between 1 and 1024") } }
    }

    func run() throws { try run(handOff: handOff) }

    func run(handOff: HandOff?) throws {
        try validate()
        let takesPrompt = handOff?.needsPrompt ?? true
        let pruning = try kvPrune.map { spec throws -> KVPruning in
            guard handOff?.needsPrompt == true else { throw CLIError("--kv-prune goes with --save-state or flexrun prefill --serve") }
            return try parseKVPruning(spec)
        }
        if !takesPrompt, promptText != nil || promptFile != nil { throw CLIError("a state continues its own prompt: give no prompt with it") }
        if takesPrompt, promptText == nil && promptFile == nil { throw CLIError("no prompt: give a prompt file, - for stdin, or -p TEXT") }
        let prompt = takesPrompt ? try promptText ?? readText(promptFile ?? "-", what: "prompt file") : ""
        guard !takesPrompt || !prompt.isEmpty else { throw CLIError("the prompt is empty") }
        if let parallel { return try runParallel(prompts: try parsePrompts(prompt), sequences: parallel) }
        // A received state fixes the context it needs; a state is loaded before the engine opens.
        var state: KVState?
        var received = (bytes: 0, seconds: 0.0)
        switch handOff {
        case .load(let path)?: state = try readState(path)
        case .receive(let address)?: (state, received) = try receiveState(address)
        default: break
        }
        let context = state.map { s in maxTokens < 0 || model.ctx != nil ? nil : (s.tokens.count + maxTokens + 1 + 63) / 64 * 64 }
            ?? jobContext(longestPromptBytes: prompt.utf8.count)
        let engine = try Engine(options: model.engineOptions(context: context))
        let seed = sampling.seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        let cancel = CancellationToken()
        let params = parameters(seed: seed, cancel: cancel)
        installSignals(engine: engine, cancel: cancel)
        warnIfUnlocked(engine)
        switch handOff {
        case .save(let path)?: return try saveState(engine: engine, prompt: prompt, parameters: params, pruning: pruning, to: path)
        case .serve(let address)?: return try serveState(engine: engine, prompt: prompt, parameters: params, pruning: pruning, on: address)
        default: break
        }
        if received.bytes > 0, stats {
            FileHandle.standardError.write(Data("flexrun: received state: \(ByteSize.format(received.bytes)) in \(f(received.seconds, 3)) s\n".utf8))
        }

        var it = try state.map { s throws(EngineError) in try engine.generate(state: s, parameters: params) }
            ?? engine.generate(prompt: prompt, parameters: params)
        var filter = StopStrings(stop)
        var text = "", ids: [Int32] = []
        func emit(_ piece: String) throws {
            if json { text += piece } else if !piece.isEmpty { try writeStandardOutput(piece) }
        }
        while let token = it.next() {
            if filter.matched != nil { continue }   // tokens a pass produced past the stop string
            ids.append(token.id)
            try emit(filter.feed(token.text))
            // The stop string ends generation at the next token boundary; what follows is dropped.
            if filter.matched != nil { cancel.cancel() }
        }
        try emit(filter.feed(it.flushText()) + filter.flush())
        if let error = it.error { throw error }
        var s = it.stats
        if filter.matched != nil { s.generatedTokens = ids.count }
        let reason = filter.matched != nil ? "stop string" : s.stopReason.rawValue
        if json {
            try writeStandardOutput(jsonResult(text: text, ids: ids, reason: reason, stats: s, stop: filter.matched) + "\n")
        } else {
            try writeStandardOutput("\n")
        }
        if printIDs { FileHandle.standardError.write(Data("flexrun: ids: \(ids.map(String.init).joined(separator: " "))\n".utf8)) }
        if stats { printStats(s, engine: engine, seed: seed, reason: reason) }
        if filter.matched == nil, s.stopReason == .cancelled { throw Generate.cancelledExitCode }
    }

    /// `--json`: the run as one object (snake_case keys, as llama.cpp's and OpenAI's JSON).
    func jsonResult(text: String, ids: [Int32], reason: String, stats s: GenerationStats, stop: String?) throws -> String {
        var object: [String: Any] = [
            "text": text, "ids": ids.map(Int.init), "stop_reason": reason,
            "stats": [
                "load_seconds": s.loadSeconds, "prompt_tokens": s.promptTokens, "prompt_seconds": s.promptSeconds,
                "prompt_tokens_per_second": s.promptTokensPerSecond, "generated_tokens": s.generatedTokens,
                "decode_seconds": s.decodeSeconds, "decode_tokens_per_second": s.decodeTokensPerSecond,
                "bytes_read_from_disk": s.bytesReadFromDisk, "peak_resident_bytes": s.peakResidentBytes ?? 0,
                "blocks_skipped": s.blocksSkipped,
            ] as [String: Any],
        ]
        if let stop { object["stop"] = stop }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    /// Context for the job when --ctx is not given: a prompt has at most one token per byte,
    /// plus BOS and the chat template. Under a tight cap every KiB of KV cache is a KiB of
    /// weights that must be streamed instead.
    func jobContext(longestPromptBytes: Int) -> Int? {
        guard model.ctx == nil else { return nil }
        guard maxTokens >= 0 else { return nil }   // -1: as long as the default context allows
        let needed = longestPromptBytes + (chat ? 512 + (system?.utf8.count ?? 0) : 0) + maxTokens + 2
        return needed < 2048 ? (needed + 63) / 64 * 64 : nil
    }

    var maxTokens: Int { sampling.maxTokens }

    func parameters(seed: UInt64, cancel: CancellationToken) -> GenerateParameters {
        var params = sampling.parameters(seed: seed)
        params.chat = chat
        params.system = system
        params.cancellation = cancel
        params.stopAtEndOfGeneration = !ignoreEOS
        return params
    }

    /// Says once, without --stats, that the resident weights could not be locked: the kernel may
    /// then page them out under pressure, and a capped run gets slower with no other sign.
    func warnIfUnlocked(_ engine: Engine) {
        guard let refusal = engine.offloadSummary?.lockRefusal else { return }
        FileHandle.standardError.write(Data(("flexrun: warning: mlock refused (\(refusal)): the resident weights are not locked and may be "
                                             + "paged out; raise the memlock limit (ulimit -l) or pass --no-mlock to silence this\n").utf8))
    }

    func installSignals(engine: Engine, cancel: CancellationToken) {
        // Ctrl-C (or SIGTERM) stops generation at the next token, and stats are still printed;
        // the exit status is then 128 + the signal, as a shell reports one the signal killed.
        let stops = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                Generate.cancellingSignal.store(sig, ordering: .relaxed)
                cancel.cancel()
            }
            source.resume()
            return source
        }
        // SIGHUP re-reads the enclosing cgroup's memory limit and re-plans at the next token, so
        // an orchestrator can shrink or grow the cap of a running generation.
        signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangup.setEventHandler {
            guard let limit = CgroupMemory.current()?.cap else {
                FileHandle.standardError.write(Data("flexrun: warning: SIGHUP: no cgroup memory limit to follow\n".utf8)); return
            }
            do { try engine.setMemoryLimit(limit) } catch {
                FileHandle.standardError.write(Data("flexrun: warning: SIGHUP: \((error as? EngineError)?.cliMessage ?? "\(error)")\n".utf8))
            }
        }
        hangup.resume()
        // The sources live as long as the process: keep them from being released.
        Generate.signalSources = stops + [hangup]
    }
    nonisolated(unsafe) static var signalSources: [any DispatchSourceSignal] = []
    /// The signal that cancelled the generation (SIGINT until one arrives).
    static let cancellingSignal = Atomic<Int32>(SIGINT)
    /// The exit status of a cancelled generation: 130 for SIGINT, 143 for SIGTERM.
    static var cancelledExitCode: ExitCode { ExitCode(128 + cancellingSignal.load(ordering: .relaxed)) }

    func printStats(_ s: GenerationStats, engine: Engine, seed: UInt64, reason: String? = nil) {
        var lines: [String] = []
        lines.append("model: \(engine.config.architecture), \(engine.config.layerCount) layers, context \(engine.contextLength), threads \(engine.options.threads), seed \(seed)")
        lines.append("memory: " + memorySummary(engine))
        if let o = engine.offloadSummary {
            let lock = o.lockRefusal.map { "mlock refused (\($0)), running unlocked" } ?? "\(ByteSize.format(o.lockedBytes)) locked"
            let buffered = o.directIO ? "" : ", buffered (the filesystem refuses O_DIRECT: reads go through the page cache)"
            lines.append("offload: reads via \(o.reader)\(buffered), \(lock), resident set loaded in \(f(o.residentLoadSeconds, 3)) s")
        }
        lines.append("load: \(f(s.loadSeconds)) s")
        let reused = s.reusedPromptTokens > 0 ? ", \(s.reusedPromptTokens) more from a kept cache or state" : ""
        lines.append("prompt: \(s.promptTokens) tokens in \(f(s.promptSeconds, 3)) s (\(f(s.promptTokensPerSecond, 1)) tok/s)\(reused)")
        lines.append("decode: \(s.generatedTokens) tokens in \(f(s.decodeSeconds, 3)) s (\(f(s.decodeTokensPerSecond, 1)) tok/s)")
        if engine.options.speculation != .off {
            let share = s.decodeSeconds > 0 ? 100 * s.draftSeconds / s.decodeSeconds : 0
            lines.append("speculation (\(engine.options.speculation.rawValue)): \(s.draftedTokens) drafted, \(s.acceptedTokens) accepted "
                         + "(\(Int((100 * s.acceptanceRate).rounded()))%), \(s.decodePasses) passes, \(f(s.tokensPerPass)) tokens per pass, "
                         + "drafting \(f(share, 1))% of decode time")
        }
        lines += sessionLines(engine.session)
        lines.append("peak RSS: \(s.peakResidentBytes.map(ByteSize.format) ?? "unknown")\(chargedSuffix(engine)), blocks skipped: \(s.blocksSkipped)")
        // Share of the forward passes' time spent computing rather than waiting for reads: 100%
        // means every read was hidden behind compute.
        let busy = s.promptSeconds + s.decodeSeconds
        let overlap = s.bytesReadFromDisk > 0 && busy > 0 ? " (computing \(Int((100 * (1 - s.stallSeconds / busy)).rounded()))% of the time)" : ""
        lines.append("disk: \(ByteSize.format(s.bytesReadFromDisk)) read, \(ByteSize.format(Int(s.decodeBytesPerToken))) per decoded token, "
                     + "prefetch stalls \(f(s.stallSeconds, 3)) s" + overlap + (s.replans > 0 ? ", re-planned \(s.replans)×" : "")
                     + ", \(s.decodeMajorFaults) major page faults while decoding")
        lines.append("stop: \(reason ?? s.stopReason.rawValue)")
        FileHandle.standardError.write(Data(lines.map { "flexrun: " + $0 }.joined(separator: "\n").appending("\n").utf8))
    }
}

func f(_ v: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", v) }

/// One line on what the engine holds: the plan under a cap, the in-memory estimate otherwise.
func memorySummary(_ engine: Engine) -> String {
    guard let p = engine.plan else {
        let copied = engine.interleavedBytes > 0 ? " (\(ByteSize.format(engine.interleavedBytes)) of them copied out, rearranged for the kernels)" : ""
        return "\(ByteSize.format(engine.memory.total)) (\(engine.memory.breakdown)), no limit: weights mapped from the file" + copied
    }
    // Compressed blocks stream fewer bytes from disk than they decode to: say both.
    let compressed = p.stages.contains { !$0.decodes.isEmpty } ? " (\(ByteSize.format(p.readBytesPerToken)) read, compressed blocks decoded)" : ""
    let kept = p.isFullyResident ? "all weights resident" :
        "\(ByteSize.format(p.residentBytes)) of weights resident, \(ByteSize.format(p.streamedBytesPerToken)) streamed per pass\(compressed) through \(p.ringSlots) × \(ByteSize.format(p.slotBytes)) ring"
    return "\(ByteSize.format(p.totalBytes)) planned of \(ByteSize.format(p.inputs.cap)) limit; \(kept)"
}

/// The session's own lines for `--stats`: the pruning controller's decisions and the KV pages.
func sessionLines(_ session: Session) -> [String] {
    let kv = session.kvCache
    return session.pruneDecisions.map(pruneLine)
        + ["KV cache: \(kv.pagesInUse) pages in use, peak \(kv.peakPages) (\(ByteSize.format(kv.peakBytes))) of \(kv.pageCapacity) "
           + "(\(ByteSize.format(kv.capacityBytes))), \(kv.pageTokens) tokens a page"]
}

/// Peak RSS counts shared code pages that a cgroup does not charge to this process, so beside
/// it goes what the cap governs: the cgroup's own peak, or anonymous plus model file pages
/// (``ChargedMemory``; docs/CLI.md).
func chargedSuffix(_ engine: Engine) -> String {
    ChargedMemory.measure(modelPath: engine.options.modelPath).map { "; \($0.summary)" } ?? ""
}

/// One line per controller decision: when, why, what the policy skipped, and what it predicted
/// and then measured.
func pruneLine(_ d: PruneDecision) -> String {
    let why: String
    switch d.reason {
    case .capChanged: why = "the cap changed to \(ByteSize.format(d.state.cap))"
    case .kvGrowth: why = "the KV cache grew to \(d.state.batch) × \(d.state.sequenceLength) positions"
    case .sequencesChanged: why = "\(d.state.batch) sequences"
    case .throughputTarget: why = "the target of \(f(d.state.minTokensPerSecond ?? 0, 1)) tok/s"
    case .capBelowStreamingMinimum, .capBelowResidentFootprint:
        why = "\(d.reason.rawValue) (\(ByteSize.format(d.denseMinimum)) > \(ByteSize.format(d.state.cap)))"
    }
    var line = "prune [\(f(d.at, 2)) s, \(d.policy)]: \(why): skipping \(d.skipped.skipped.count) blocks (\(d.skipped)), "
        + "needs \(ByteSize.format(d.minimum)) of \(ByteSize.format(d.state.cap)); decided in \(f(d.decisionMicroseconds, 0)) µs"
    if !d.releasedLayers.isEmpty { line += "; KV of attn \(d.releasedLayers.map(String.init).joined(separator: ",")) released" }
    if let p = d.predictedTokensPerSecond { line += "; predicted \(f(p, 1)) tok/s" }
    if let m = d.measuredTokensPerSecond { line += ", measured \(f(m, 1)) tok/s" }
    if let r = d.measuredResidentBytes { line += ", RSS \(ByteSize.format(r))" }
    return line
}
