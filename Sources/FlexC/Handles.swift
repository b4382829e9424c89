import CFlexRun
import FlexEngine
import Synchronization

/// What a `flexrun_model *` points at: the shared ``Model`` and the strings the C side reads
/// from it. Immutable, so any thread may use it (the header's rule).
final class ModelHandle {
    let model: Model
    /// `flexrun_model_desc`: made once so the returned pointer lives as long as the handle.
    let description: ContiguousArray<CChar>

    init(_ model: Model) {
        self.model = model
        let c = model.config
        let text = "\(c.architecture), \(c.layerCount) layers, dim \(c.embeddingLength), \(c.headCount) heads "
            + "(\(c.kvHeadCount) kv), vocab \(c.vocabularySize), trained context \(c.trainedContextLength)"
        description = ContiguousArray(text.utf8CString)
    }

    /// The handle C holds: one retain, released by `flexrun_model_free`.
    var opaque: OpaquePointer { OpaquePointer(Unmanaged.passRetained(self).toOpaque()) }
    static func from(_ p: OpaquePointer?) -> ModelHandle? {
        p.map { Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
    }
    static func release(_ p: OpaquePointer) { Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer(p)).release() }
}

/// What a `flexrun_session *` points at: a ``Session`` plus what the C ABI adds around it.
///
/// A session runs on one thread at a time. C cannot be made to keep that rule, so `busy` checks
/// it: a second generating call while one runs gets `FLEXRUN_ERR_BUSY` instead of corrupting the
/// session. `abort` and `memoryLimit` are atomics because other threads set and read them.
final class SessionHandle {
    let session: Session
    let busy = Atomic<Bool>(false)
    /// Raised by `flexrun_session_request_abort`; the generating thread ends its sequences at the
    /// next token boundary and lowers it.
    let abort = Atomic<Bool>(false)
    /// The cap last accepted (0: none): at creation, then by `flexrun_session_set_memory_limit`.
    /// The session's own `memoryLimit` is written by the generating thread, so other threads read this.
    let memoryLimit: Atomic<Int64>
    /// Live sequences by the id C sees (only the thread holding `busy` touches it).
    var sequences: [Int32: SequenceID] = [:]
    /// One step's events, kept so steady-state steps reuse the storage.
    var events: [SequenceEvent] = []

    init(_ session: Session) {
        self.session = session
        memoryLimit = Atomic(Int64(session.memoryLimit ?? 0))
        events.reserveCapacity(max(2, 2 * session.maxSequences))
    }

    /// Runs `body` as the session's one user, or refuses with `FLEXRUN_ERR_BUSY`.
    func exclusive<T>(_ body: () throws(CFailure) -> T) throws(CFailure) -> T {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            throw CFailure(FLEXRUN_ERR_BUSY, "the session is in use by another call (one thread at a time; see flexrun.h)")
        }
        defer { busy.store(false, ordering: .releasing) }
        return try body()
    }

    var opaque: OpaquePointer { OpaquePointer(Unmanaged.passRetained(self).toOpaque()) }
    static func from(_ p: OpaquePointer?) -> SessionHandle? {
        p.map { Unmanaged<SessionHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
    }
    static func release(_ p: OpaquePointer) { Unmanaged<SessionHandle>.fromOpaque(UnsafeRawPointer(p)).release() }
}

func model(_ p: OpaquePointer?) throws(CFailure) -> ModelHandle {
    guard let h = ModelHandle.from(p) else { throw .null("model") }
    return h
}

func session(_ p: OpaquePointer?) throws(CFailure) -> SessionHandle {
    guard let h = SessionHandle.from(p) else { throw .null("session") }
    return h
}
