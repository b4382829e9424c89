import Glibc

/// A connected or listening stream socket, closed when dropped: a Unix socket (a path) or TCP
/// (`tcp:HOST:PORT`), for handing a KV state from a prefill process to a decode process.
/// Messages are length-prefixed (`send(message:)`, `receiveMessage(limit:)`).
public struct StreamSocket: ~Copyable {
    public let descriptor: Int32
    /// The address as given, for messages.
    public let address: String
    /// A Unix socket path this process bound, unlinked when the listener is dropped.
    private let boundPath: String?

    private init(descriptor: Int32, address: String, boundPath: String? = nil) {
        self.descriptor = descriptor
        self.address = address
        self.boundPath = boundPath
    }

    deinit {
        close(descriptor)
        if let boundPath { unlink(boundPath) }
    }

    enum Address {
        case unix(String)
        case tcp(host: String, port: UInt16)
    }

    static func parse(_ address: String) throws(SystemError) -> Address {
        if address.hasPrefix("tcp:") {
            let rest = address.dropFirst(4)
            guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else {
                throw SystemError(code: EINVAL, call: "address", path: address)
            }
            return .tcp(host: String(rest[..<colon]), port: port)
        }
        guard !address.isEmpty, address.utf8.count < 108 else { throw SystemError(code: ENAMETOOLONG, call: "address", path: address) }
        return .unix(address)
    }

    /// Runs `body` with the socket address of `a`.
    static func withAddress(_ a: Address, _ body: (UnsafePointer<sockaddr>, socklen_t, Int32) throws(SystemError) -> Int32) throws(SystemError) -> Int32 {
        switch a {
        case .unix(let path):
            var sun = sockaddr_un()
            sun.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &sun.sun_path) { raw in
                for (i, b) in path.utf8.enumerated() { raw[i] = b }
            }
            return try withUnsafePointer(to: &sun) { p throws(SystemError) in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { q throws(SystemError) in
                    try body(q, socklen_t(MemoryLayout<sockaddr_un>.size), AF_UNIX)
                }
            }
        case .tcp(let host, let port):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &sin.sin_addr) == 1 else {
                throw SystemError(code: EINVAL, call: "inet_pton", path: host)
            }
            return try withUnsafePointer(to: &sin) { p throws(SystemError) in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { q throws(SystemError) in
                    try body(q, socklen_t(MemoryLayout<sockaddr_in>.size), AF_INET)
                }
            }
        }
    }

    /// Listens on `address`. A stale Unix socket file (no one listening) is replaced.
    public static func listen(on address: String) throws(SystemError) -> StreamSocket {
        let a = try parse(address)
        if case .unix(let path) = a, access(path, F_OK) == 0 {
            // Someone listening there answers a connect; a file nobody serves is stale.
            if (try? connect(to: address, timeout: 0)) != nil { throw SystemError(code: EADDRINUSE, call: "bind", path: address) }
            unlink(path)
        }
        let fd = try withAddress(a) { addr, length, family throws(SystemError) -> Int32 in
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw SystemError(code: errno, call: "socket", path: address) }
            var on: Int32 = 1
            if family == AF_INET { setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size)) }
            guard bind(fd, addr, length) == 0 else { let e = errno; close(fd); throw SystemError(code: e, call: "bind", path: address) }
            guard Glibc.listen(fd, 4) == 0 else { let e = errno; close(fd); throw SystemError(code: e, call: "listen", path: address) }
            return fd
        }
        if case .unix(let path) = a { return StreamSocket(descriptor: fd, address: address, boundPath: path) }
        return StreamSocket(descriptor: fd, address: address)
    }

    /// The next connection (blocks).
    public func accept() throws(SystemError) -> StreamSocket {
        let fd: Int32 = try retryingEINTR("accept", path: address) { Glibc.accept(descriptor, nil, nil) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return StreamSocket(descriptor: fd, address: address)
    }

    /// Connects to `address`, retrying while nothing listens there yet, for up to `timeout`
    /// seconds (the prefill side may still be running its prompt).
    public static func connect(to address: String, timeout: Double) throws(SystemError) -> StreamSocket {
        let a = try parse(address)
        let deadline = Platform.now() + timeout
        while true {
            // The descriptor, or minus the errno of a refused connect.
            let fd = try withAddress(a) { addr, length, family throws(SystemError) -> Int32 in
                let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                guard fd >= 0 else { throw SystemError(code: errno, call: "socket", path: address) }
                if Glibc.connect(fd, addr, length) == 0 { return fd }
                let e = errno
                close(fd)
                return -e
            }
            if fd >= 0 { return StreamSocket(descriptor: fd, address: address) }
            let waiting = -fd == ENOENT || -fd == ECONNREFUSED
            guard waiting, Platform.now() < deadline else { throw SystemError(code: -fd, call: "connect", path: address) }
            usleep(50_000)
        }
    }

    /// Sends a length-prefixed message (8 bytes little-endian, then the bytes).
    public func send(message: [UInt8]) throws(SystemError) {
        var framed = [UInt8]()
        framed.reserveCapacity(8 + message.count)
        withUnsafeBytes(of: UInt64(message.count).littleEndian) { framed.append(contentsOf: $0) }
        framed += message
        var off = 0
        while off < framed.count {
            let sent = framed.withUnsafeBytes { b in Glibc.send(descriptor, b.baseAddress! + off, b.count - off, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EINTR { continue }
                throw SystemError(code: errno, call: "send", path: address)
            }
            off += sent
        }
    }

    /// Receives one length-prefixed message of at most `limit` bytes; a peer that closes early
    /// is an error (EPIPE), never a short message.
    public func receiveMessage(limit: Int) throws(SystemError) -> [UInt8] {
        let header = try receive(8)
        let length = header.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard length <= UInt64(limit) else { throw SystemError(code: EMSGSIZE, call: "recv", path: address) }
        return try receive(Int(length))
    }

    private func receive(_ count: Int) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var off = 0
        while off < count {
            let n = bytes.withUnsafeMutableBytes { b in recv(descriptor, b.baseAddress! + off, count - off, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError(code: errno, call: "recv", path: address)
            }
            guard n > 0 else { throw SystemError(code: EPIPE, call: "recv", path: address) }
            off += n
        }
        return bytes
    }
}
