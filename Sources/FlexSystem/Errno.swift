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
/// The single place where FlexRun talks to errno: every call that sets it goes through here
/// (or through ``preadFully(_:into:count:at:atLeast:direct:path:)``, which is built on it).
///
/// As in swift-system, programmer errors trap rather than throw: EFAULT (a bad pointer) always,
/// EBADF (a descriptor we closed or never opened) unless `descriptorMayBeClosed` says the caller
/// does not own the descriptor (fd 1, which the user may have closed with `>&-`).
@inline(__always)
public func retryingEINTR<T: BinaryInteger>(_ call: String, path: String? = nil, descriptorMayBeClosed: Bool = false,
                                            _ body: () -> T) throws(SystemError) -> T {
    while true {
        let rc = body()
        if rc != -1 { return rc }
        let err = cflex_errno()
        if err == EINTR { continue }
        precondition(err != EFAULT, "\(call): bad address (a FlexRun bug)")
        precondition(err != EBADF || descriptorMayBeClosed, "\(call): bad file descriptor (a FlexRun bug)")
        throw SystemError(code: err, call: call, path: path)
    }
}

/// ``retryingEINTR(_:path:descriptorMayBeClosed:_:)`` for calls that return a negated errno
/// instead of setting errno (liburing's). Retrying an interrupted `io_uring_submit` is safe:
/// liburing resubmits whatever the kernel had not consumed.
@inline(__always)
public func retryingEINTR(negatedErrno call: String, path: String? = nil, _ body: () -> Int32) throws(SystemError) -> Int32 {
    while true {
        let rc = body()
        if rc >= 0 { return rc }
        if -rc == EINTR { continue }
        precondition(-rc != EFAULT && -rc != EBADF, "\(call): \(String(cString: strerror(-rc))) (a FlexRun bug)")
        throw SystemError(code: -rc, call: call, path: path)
    }
}

/// Reads `count` bytes at `offset` with pread, continuing short reads, until `needed` bytes
/// (default all of `count`) have arrived or the file ends; returns the bytes read. The one pread
/// loop: the loader, the block-file reader, the streamer's pread workers and its decode workers
/// all read through it.
///
/// `direct`: the descriptor was opened with O_DIRECT, where a read ending off a 4 KiB boundary
/// happens only at the end of the file, and continuing from an unaligned offset would fail.
public func preadFully(_ descriptor: Int32, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int,
                       atLeast needed: Int? = nil, direct: Bool = false, path: String? = nil) throws(SystemError) -> Int {
    let target = min(needed ?? count, count)
    var done = 0
    while done < target {
        let n = try retryingEINTR("pread", path: path) { pread(descriptor, buffer + done, count - done, off_t(offset + done)) }
        if n == 0 { break }
        done += n
        if direct && done % 4096 != 0 { break }
    }
    return done
}
