import CFlexRun
import FlexEngine

// Generation: one prompt to the end (flexrun_generate), or batched sequences stepped by the
// caller (flexrun_session_add / flexrun_session_step). Both drive Session.step, the engine's one
// driver; callbacks run after a step returns, never inside the engine's pass.

@_cdecl("flexrun_generate_default_params")
public func cGenerateDefaultParams() -> flexrun_generate_params {
    let d = GenerateParameters(), s = d.sampling
    return flexrun_generate_params(max_tokens: Int32(d.maxTokens), temperature: s.temperature, top_k: Int32(s.topK), top_p: s.topP,
                                   min_p: s.minP, repeat_penalty: s.repetitionPenalty, repeat_last_n: Int32(s.repetitionWindow),
                                   seed: s.seed, chat: d.chat, system: nil, stop_at_eog: d.stopAtEndOfGeneration)
}

extension GenerateParameters {
    /// The parameters of `p`, each checked (a NaN temperature would sample nonsense silently).
    init(_ p: flexrun_generate_params) throws(CFailure) {
        guard p.max_tokens >= 0 else { throw .invalid("max_tokens must be 0 or more, not \(p.max_tokens)") }
        guard p.temperature.isFinite else { throw .invalid("temperature must be a finite number") }
        guard p.top_k >= 0 else { throw .invalid("top_k must be 0 (off) or positive, not \(p.top_k)") }
        guard p.top_p > 0, p.top_p <= 1 else { throw .invalid("top_p must be in (0, 1], not \(p.top_p)") }
        guard p.min_p >= 0, p.min_p <= 1 else { throw .invalid("min_p must be in [0, 1], not \(p.min_p)") }
        guard p.repeat_penalty > 0, p.repeat_penalty.isFinite else { throw .invalid("repeat_penalty must be positive, not \(p.repeat_penalty)") }
        guard p.repeat_last_n >= 0 else { throw .invalid("repeat_last_n must be 0 or more, not \(p.repeat_last_n)") }
        let sampling = SamplingParameters(temperature: p.temperature, topK: Int(p.top_k), topP: p.top_p, minP: p.min_p,
                                          repetitionPenalty: p.repeat_penalty, repetitionWindow: Int(p.repeat_last_n), seed: p.seed)
        self.init(maxTokens: Int(p.max_tokens), sampling: sampling, chat: p.chat)
        if let system = p.system { self.system = try string(system, "system") }
        stopAtEndOfGeneration = p.stop_at_eog
    }
}

extension flexrun_stats {
    init(_ s: GenerationStats) {
        let reason: flexrun_stop_reason = switch s.stopReason {
        case .endOfGeneration: FLEXRUN_STOP_END_OF_GENERATION
        case .maxTokens: FLEXRUN_STOP_MAX_TOKENS
        case .contextFull: FLEXRUN_STOP_CONTEXT_FULL
        case .cancelled: FLEXRUN_STOP_ABORTED
        case .error: FLEXRUN_STOP_ERROR
        }
        self.init(prompt_tokens: Int32(s.promptTokens), generated_tokens: Int32(s.generatedTokens), load_seconds: s.loadSeconds,
                  prompt_seconds: s.promptSeconds, decode_seconds: s.decodeSeconds, prompt_tokens_per_second: s.promptTokensPerSecond,
                  decode_tokens_per_second: s.decodeTokensPerSecond, bytes_read_from_disk: Int64(s.bytesReadFromDisk),
                  peak_resident_bytes: Int64(s.peakResidentBytes ?? 0), memory_limit: Int64(s.memoryLimit ?? 0),
                  replans: Int32(s.replans), stop_reason: Int32(reason.rawValue))
    }
}

/// Prompt ids of a C array, checked for NULL and length (the session checks the ids).
private func promptIDs(_ prompt: UnsafePointer<Int32>?, _ count: Int32) throws(CFailure) -> [Int32] {
    guard let prompt else { throw .null("prompt") }
    guard count > 0 else { throw .invalid("n_prompt must be positive, not \(count)") }
    return Array(UnsafeBufferPointer(start: prompt, count: Int(count)))
}

/// Calls `body` with `text` as a NUL-terminated C string and its byte count.
private func withText<R>(_ text: String, _ body: (UnsafePointer<CChar>, Int) -> R) -> R {
    text.withCString { body($0, text.utf8.count) }
}

extension SessionHandle {
    /// Runs one step, collecting its events (the engine's emit closure cannot call back into C
    /// safely: a callback could re-enter the session). Finished sequences leave `sequences`.
    func step() throws(CFailure) -> Bool {
        events.removeAll(keepingCapacity: true)
        if abort.exchange(false, ordering: .relaxed) {
            for id in sequences.values { session.cancel(id) }
        }
        do {
            return try session.step { events.append($0) }
        } catch {
            for e in events { if case .finished(let id, _) = e { sequences[Int32(truncatingIfNeeded: id.value)] = nil } }
            throw CFailure(error)
        }
    }

    /// Ends every sequence `flexrun_session_add` started (a whole-prompt generation takes the session).
    func endAll() throws(CFailure) {
        guard !sequences.isEmpty else { return }
        for id in sequences.values { session.cancel(id) }
        _ = try step()   // cancelled sequences end before the pass: no weights are read
        for e in events { if case .finished(let id, _) = e { _ = session.flushText(id) } }
        sequences.removeAll()
    }

    /// One prompt to its end, calling `callback` per token; `stats` gets the sequence's numbers.
    func generate(_ prompt: () throws(CFailure) -> [Int32], _ parameters: GenerateParameters,
                  _ callback: flexrun_token_callback?, _ user: UnsafeMutableRawPointer?, _ out: UnsafeMutablePointer<flexrun_stats>?) throws(CFailure) {
        try exclusive { () throws(CFailure) in
            try endAll()
            abort.store(false, ordering: .relaxed)
            let tokens = try prompt()
            let mine = try engine { () throws(EngineError) in try session.add(tokens: tokens, parameters: parameters) }
            sequences[Int32(truncatingIfNeeded: mine.value)] = mine
            defer { sequences[Int32(truncatingIfNeeded: mine.value)] = nil }
            var finished: GenerationStats?
            var failure: CFailure?
            // After a callback says stop it sees no more tokens, even ones the same step produced.
            var stopped = false
            while finished == nil {
                let more: Bool
                do throws(CFailure) { more = try step() } catch { failure = error; more = false }
                for e in events {
                    switch e {
                    case .token(let id, let t) where id == mine && !stopped:
                        let go = callback.map { cb in withText(t.text) { cb(t.id, $0, $1, user) } } ?? true
                        if !go { session.cancel(mine); stopped = true }
                    case .finished(let id, let s) where id == mine:
                        finished = s
                    default: break
                    }
                }
                if failure != nil || !more { break }
            }
            let rest = session.flushText(mine)
            if !rest.isEmpty, let callback { _ = withText(rest) { callback(-1, $0, $1, user) } }
            if let out, let finished { out.pointee = flexrun_stats(finished) }
            if let failure { throw failure }
        }
    }
}

@_cdecl("flexrun_generate")
public func cGenerate(_ session: OpaquePointer?, _ prompt: UnsafePointer<CChar>?, _ params: flexrun_generate_params,
                      _ callback: flexrun_token_callback?, _ user: UnsafeMutableRawPointer?, _ stats: UnsafeMutablePointer<flexrun_stats>?) -> Int32 {
    guarded { () throws(CFailure) in
        let h = try FlexC.session(session)
        let text = try string(prompt, "prompt")
        let parameters = try GenerateParameters(params)
        try h.generate({ () throws(CFailure) in
            try engine { () throws(EngineError) in try h.session.model.promptTokens(text, parameters: parameters) }
        }, parameters, callback, user, stats)
    }
}

@_cdecl("flexrun_generate_tokens")
public func cGenerateTokens(_ session: OpaquePointer?, _ prompt: UnsafePointer<Int32>?, _ count: Int32, _ params: flexrun_generate_params,
                            _ callback: flexrun_token_callback?, _ user: UnsafeMutableRawPointer?, _ stats: UnsafeMutablePointer<flexrun_stats>?) -> Int32 {
    guarded { () throws(CFailure) in
        let h = try FlexC.session(session)
        let ids = try promptIDs(prompt, count)
        try h.generate({ () throws(CFailure) in ids }, GenerateParameters(params), callback, user, stats)
    }
}

// MARK: - Batched sequences

extension SessionHandle {
    func add(_ tokens: [Int32], _ parameters: GenerateParameters, _ out: UnsafeMutablePointer<Int32>?) throws(CFailure) {
        guard let out else { throw .null("seq_id") }
        try exclusive { () throws(CFailure) in
            guard session.activeCount < session.maxSequences else {
                throw CFailure(FLEXRUN_ERR_FULL, "the session already holds \(session.maxSequences) sequences (raise n_seq_max)")
            }
            let id = try engine { () throws(EngineError) in try session.add(tokens: tokens, parameters: parameters) }
            guard let small = Int32(exactly: id.value) else { throw CFailure(FLEXRUN_ERR_INTERNAL, "sequence ids ran past INT32_MAX") }
            sequences[small] = id
            out.pointee = small
        }
    }
}

@_cdecl("flexrun_session_add")
public func cSessionAdd(_ session: OpaquePointer?, _ prompt: UnsafePointer<CChar>?, _ params: flexrun_generate_params,
                        _ seqID: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded { () throws(CFailure) in
        let h = try FlexC.session(session)
        let text = try string(prompt, "prompt")
        let parameters = try GenerateParameters(params)
        let ids = try engine { () throws(EngineError) in try h.session.model.promptTokens(text, parameters: parameters) }
        try h.add(ids, parameters, seqID)
    }
}

@_cdecl("flexrun_session_add_tokens")
public func cSessionAddTokens(_ session: OpaquePointer?, _ prompt: UnsafePointer<Int32>?, _ count: Int32, _ params: flexrun_generate_params,
                              _ seqID: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded { () throws(CFailure) in
        let h = try FlexC.session(session)
        try h.add(promptIDs(prompt, count), GenerateParameters(params), seqID)
    }
}

@_cdecl("flexrun_session_step")
public func cSessionStep(_ session: OpaquePointer?, _ callback: flexrun_event_callback?, _ user: UnsafeMutableRawPointer?) -> Int32 {
    var ran: Int32 = 0
    let status = guarded { () throws(CFailure) in
        let h = try FlexC.session(session)
        try h.exclusive { () throws(CFailure) in
            var failure: CFailure?
            let more: Bool
            do throws(CFailure) { more = try h.step() } catch { failure = error; more = false }
            var stopped: Set<SequenceID> = []   // told to stop: no more of this step's tokens
            for e in h.events {
                switch e {
                case .token(let id, _) where stopped.contains(id):
                    break
                case .token(let id, let t):
                    let go = callback.map { cb in
                        withText(t.text) { text, n in
                            var event = flexrun_event(type: Int32(FLEXRUN_EVENT_TOKEN.rawValue), seq_id: Int32(truncatingIfNeeded: id.value), token: t.id,
                                                      text: text, text_len: n, stats: nil)
                            return cb(&event, user)
                        }
                    } ?? true
                    if !go { h.session.cancel(id); stopped.insert(id) }
                case .finished(let id, let s):
                    h.sequences[Int32(truncatingIfNeeded: id.value)] = nil
                    var stats = flexrun_stats(s)
                    let rest = h.session.flushText(id)
                    if let callback {
                        _ = withText(rest) { text, n in
                            withUnsafePointer(to: &stats) { sp in
                                var event = flexrun_event(type: Int32(FLEXRUN_EVENT_FINISHED.rawValue), seq_id: Int32(truncatingIfNeeded: id.value), token: -1,
                                                          text: text, text_len: n, stats: sp)
                                return callback(&event, user)
                            }
                        }
                    }
                }
            }
            if let failure { throw failure }
            ran = more ? 1 : 0
        }
    }
    return status == FLEXRUN_OK.rawValue ? ran : status
}

@_cdecl("flexrun_session_cancel")
public func cSessionCancel(_ session: OpaquePointer?, _ seqID: Int32) -> Int32 {
    guarded { () throws(CFailure) in
        let h = try FlexC.session(session)
        try h.exclusive { () throws(CFailure) in
            if let id = h.sequences[seqID] { h.session.cancel(id) }
        }
    }
}
