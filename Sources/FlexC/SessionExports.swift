import CFlexRun
import FlexEngine

// Sessions: creation, the memory cap (from any thread) and abort requests.

@_cdecl("flexrun_session_default_params")
public func cSessionDefaultParams() -> flexrun_session_params {
    flexrun_session_params(n_ctx: 0, n_threads: 0, n_batch: 64, n_seq_max: 1, memory_limit: 0,
                           follow_cgroup_limit: true, lock_memory: true)
}

extension EngineOptions {
    /// The options of `params`, each field checked here so no engine precondition sees C input.
    init(model: Model, _ params: flexrun_session_params) throws(CFailure) {
        self.init(modelPath: model.path)
        guard params.n_ctx >= 0 else { throw .invalid("n_ctx must be 0 (the default) or positive, not \(params.n_ctx)") }
        guard (0...256).contains(params.n_threads) else { throw .invalid("n_threads must be between 0 (all CPUs) and 256, not \(params.n_threads)") }
        guard (1...4096).contains(params.n_batch) else { throw .invalid("n_batch must be between 1 and 4096, not \(params.n_batch)") }
        guard (1...1024).contains(params.n_seq_max) else { throw .invalid("n_seq_max must be between 1 and 1024, not \(params.n_seq_max)") }
        guard params.memory_limit >= 0 else { throw .invalid("memory_limit must be 0 (none) or a byte count, not \(params.memory_limit)") }
        if params.n_ctx > 0 { contextLength = Int(params.n_ctx) }
        if params.n_threads > 0 { threads = Int(params.n_threads) }
        batchSize = Int(params.n_batch)
        maxSequences = Int(params.n_seq_max)
        memoryLimit = params.memory_limit > 0 ? Int(params.memory_limit) : nil
        followCgroupLimit = params.follow_cgroup_limit
        lockMemory = params.lock_memory
    }
}

@_cdecl("flexrun_session_create")
public func cSessionCreate(_ model: OpaquePointer?, _ params: flexrun_session_params, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded { () throws(CFailure) in
        guard let out else { throw .null("out") }
        out.pointee = nil
        let m = try FlexC.model(model).model
        let options = try EngineOptions(model: m, params)
        let s = try engine { () throws(EngineError) in try Session(model: m, options: options) }
        out.pointee = SessionHandle(s).opaque
    }
}

@_cdecl("flexrun_session_free")
public func cSessionFree(_ session: OpaquePointer?) {
    if let session { SessionHandle.release(session) }
}

@_cdecl("flexrun_session_set_memory_limit")
public func cSessionSetMemoryLimit(_ session: OpaquePointer?, _ bytes: Int64) -> Int32 {
    guarded { () throws(CFailure) in
        let h = try FlexC.session(session)
        guard bytes > 0 else { throw .invalid("the memory limit must be a positive byte count, not \(bytes)") }
        // Session.setMemoryLimit is the one session call made for other threads: it plans from
        // immutable inputs and hands the plan over through a mutex.
        try engine { () throws(EngineError) in try h.session.setMemoryLimit(Int(bytes)) }
        h.memoryLimit.store(bytes, ordering: .relaxed)
    }
}

@_cdecl("flexrun_session_memory_limit")
public func cSessionMemoryLimit(_ session: OpaquePointer?) -> Int64 {
    SessionHandle.from(session)?.memoryLimit.load(ordering: .relaxed) ?? 0
}

@_cdecl("flexrun_session_request_abort")
public func cSessionRequestAbort(_ session: OpaquePointer?) -> Int32 {
    guarded { () throws(CFailure) in
        try FlexC.session(session).abort.store(true, ordering: .relaxed)
    }
}

@_cdecl("flexrun_session_n_ctx")
public func cSessionContext(_ session: OpaquePointer?) -> Int32 {
    SessionHandle.from(session).map { Int32($0.session.contextLength) } ?? 0
}

@_cdecl("flexrun_session_n_active")
public func cSessionActive(_ session: OpaquePointer?) -> Int32 {
    // Read by the thread that steps the session (the header's rule), so no race with it.
    SessionHandle.from(session).map { Int32($0.session.activeCount) } ?? 0
}
