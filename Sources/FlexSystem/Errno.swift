import Glibc
import CFlexShims

/// A Linux errno value with the name of the call that failed, so an error reads as one line.
///
/// Following swift-system's `Errno`: I/O and input errors always throw this; only programmer
/// errors (EBADF, EFAULT) may trap.
public struct SystemError: Error, Equatable, CustomStringConvertible, Sendable {
    public let code: Int32
    public let call: String
    public let path: String?

    public init(code: Int32, call: String, path: String? = nil) {
        self.code = code
        self.call = call
        self.path = path
    }

    /// The current thread's errno, captured right after a failed call.
    public static func current(_ call: String, path: String? = nil) -> SystemError {
        SystemError(code: cflex_errno(), call: call, path: path)
    }

    public var description: String {
        let message = String(cString: strerror(code))
        if let path { return "\(path): \(message) (\(call))" }
        return "\(call): \(message)"
    }
}

/// Runs a syscall wrapper, retrying on EINTR, and turns a -1 result into a typed error.
/// The single place where FlexRun talks to errno.
@inline(__always)
public func retryingEINTR<T: BinaryInteger>(_ call: String, path: String? = nil, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let rc = body()
        if rc != -1 { return rc }
        let err = cflex_errno()
        if err == EINTR { continue }
        throw SystemError(code: err, call: call, path: path)
    }
}
