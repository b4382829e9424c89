import Synchronization

/// A flag any thread (a signal handler's dispatch source, a UI, an async task's termination)
/// can raise to stop a generation at the next token boundary.
public final class CancellationToken: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func cancel() { flag.store(true, ordering: .relaxed) }
    public var isCancelled: Bool { flag.load(ordering: .relaxed) }
}
