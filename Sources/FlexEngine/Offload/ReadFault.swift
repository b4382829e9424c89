import FlexSystem
import Glibc

/// A failure injected into the streamed weight reads, for tests: the `request`-th read request
/// (1-based, counted over every request the stage reader issues from open) fails with EIO or
/// comes back short, as a failing disk or a file truncated under the engine would.
///
/// The engine must then throw from the synchronous iterator, the async stream and the CLI, never
/// end quietly as if the answer were complete. A real fault cannot be made on demand (a short
/// read can, by truncating the file, which `StreamingTests` also does; EIO cannot), hence this.
package struct ReadFault: Sendable, Equatable {
    package enum Kind: String, Sendable { case eio, short }
    package var kind: Kind
    package var request: Int

    package init(_ kind: Kind, atRequest request: Int) {
        self.kind = kind
        self.request = request
    }

    /// `eio:N` or `short:N` (the CLI's `FLEXRUN_READ_FAULT`); nil for anything else.
    package init?(parsing text: String) {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let kind = Kind(rawValue: String(parts[0])), let n = Int(parts[1]), n >= 1 else { return nil }
        self.init(kind, atRequest: n)
    }

    /// The error the failed request reports: the same words as the readers' own.
    func error(path: String) -> EngineError {
        switch kind {
        case .eio: return .weightRead(SystemError(code: EIO, call: "pread", path: path).description)
        case .short: return .weightRead("short read: 0 of \(DirectFile.alignment) bytes (was the model file truncated?)")
        }
    }
}

/// A ``StageReader`` that passes everything to the real one and fails the slot holding the
/// ``ReadFault``'s request when it is waited for.
///
/// It sits in front of the reader only when ``EngineOptions`` asks for a fault, so an ordinary
/// run keeps the plain reader and pays nothing: no counter, no check per read.
final class FaultInjectingReader: StageReader {
    private let inner: any StageReader
    private let fault: ReadFault
    private let path: String
    private var requests = 0
    private var failingSlot: Int?

    init(_ inner: any StageReader, fault: ReadFault, path: String) {
        self.inner = inner
        self.fault = fault
        self.path = path
    }

    var description: String { inner.description }

    func start(_ chunks: [ReadChunk], shift: Int, slot: Int) throws(EngineError) {
        try inner.start(chunks, shift: shift, slot: slot)
        if requests < fault.request && requests + chunks.count >= fault.request { failingSlot = slot }
        requests += chunks.count
    }

    func wait(slot: Int) throws(EngineError) {
        try inner.wait(slot: slot)
        if slot == failingSlot {
            failingSlot = nil
            throw fault.error(path: path)
        }
    }

    func drain() { inner.drain() }
}
