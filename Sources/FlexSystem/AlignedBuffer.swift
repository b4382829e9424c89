/// An owned, zero-initialised, aligned allocation of `T`, freed in `deinit`.
///
/// Used for every activation buffer and the KV cache: allocated once at start-up so the hot path
/// never allocates. 64-byte alignment keeps SIMD loads on one cache line and is what O_DIRECT
/// needs at 4 KiB when asked.
public struct AlignedBuffer<T: BitwiseCopyable>: ~Copyable {
    public let pointer: UnsafeMutablePointer<T>
    public let count: Int

    public init(count: Int, alignment: Int = 64) {
        precondition(count >= 0)
        let bytes = max(1, count * MemoryLayout<T>.stride)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: max(alignment, MemoryLayout<T>.alignment))
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        self.pointer = raw.bindMemory(to: T.self, capacity: max(count, 1))
        self.count = count
    }

    public var buffer: UnsafeMutableBufferPointer<T> { UnsafeMutableBufferPointer(start: pointer, count: count) }
    public var byteCount: Int { count * MemoryLayout<T>.stride }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}
