/// XXH64 (Yann Collet's xxHash, 64-bit variant), written from its specification.
///
/// The block file's checksum. Why xxHash64 and not CRC32C: it runs at several GB/s in portable
/// code on any CPU (CRC32C needs the SSE4.2/ARMv8 CRC instructions to be fast), a 64-bit value
/// makes an undetected corruption of a block practically impossible (2⁻⁶⁴), and it is the hash
/// zstd itself uses for frame checksums. CRC32C's guarantee for short bursts is not needed: a
/// flipped bit anywhere changes the hash.
public enum XXHash64 {
    static let p1: UInt64 = 11_400_714_785_074_694_791
    static let p2: UInt64 = 14_029_467_366_897_019_727
    static let p3: UInt64 = 1_609_587_929_392_839_161
    static let p4: UInt64 = 9_650_029_242_287_828_579
    static let p5: UInt64 = 2_870_177_450_012_600_261

    @inline(__always) static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }
    @inline(__always) static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 { rotl(acc &+ input &* p2, 31) &* p1 }
    @inline(__always) static func merge(_ acc: UInt64, _ v: UInt64) -> UInt64 { (acc ^ round(0, v)) &* p1 &+ p4 }

    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        let n = bytes.count
        guard let base = bytes.baseAddress else { return finish(seed &+ p5, 0, UnsafeRawPointer(bitPattern: 1)!, 0) }
        var p = 0
        var h: UInt64
        if n >= 32 {
            var v1 = seed &+ p1 &+ p2, v2 = seed &+ p2, v3 = seed, v4 = seed &- p1
            while p + 32 <= n {
                v1 = round(v1, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p, as: UInt64.self)))
                v2 = round(v2, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 8, as: UInt64.self)))
                v3 = round(v3, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 16, as: UInt64.self)))
                v4 = round(v4, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p + 24, as: UInt64.self)))
                p += 32
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = merge(h, v1); h = merge(h, v2); h = merge(h, v3); h = merge(h, v4)
        } else {
            h = seed &+ p5
        }
        return finish(h &+ UInt64(n), p, base, n)
    }

    /// The same hash over bytes fed in pieces: how the offload runtime checks a block it reads
    /// in chunks (a compressed embedding decoded straight into place, never staged whole).
    public struct Stream: Sendable {
        private var v1 = p1 &+ p2, v2 = p2, v3: UInt64 = 0, v4 = 0 &- p1
        private var total = 0
        private var tail = [UInt8](repeating: 0, count: 32)
        private var tailCount = 0

        public init() {}

        private mutating func stripe(_ b: UnsafeRawPointer) {
            v1 = XXHash64.round(v1, UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)))
            v2 = XXHash64.round(v2, UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
            v3 = XXHash64.round(v3, UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
            v4 = XXHash64.round(v4, UInt64(littleEndian: b.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
        }

        public mutating func update(_ bytes: UnsafeRawBufferPointer) {
            guard let base = bytes.baseAddress, bytes.count > 0 else { return }
            total += bytes.count
            var p = 0
            if tailCount > 0 {
                let take = min(32 - tailCount, bytes.count)
                for i in 0..<take { tail[tailCount + i] = base.load(fromByteOffset: i, as: UInt8.self) }
                tailCount += take
                p = take
                guard tailCount == 32 else { return }
                tail.withUnsafeBytes { stripe($0.baseAddress!) }
                tailCount = 0
            }
            while p + 32 <= bytes.count {
                stripe(base + p)
                p += 32
            }
            for i in p..<bytes.count { tail[i - p] = base.load(fromByteOffset: i, as: UInt8.self) }
            tailCount = bytes.count - p
        }

        public func digest() -> UInt64 {
            var h: UInt64
            if total >= 32 {
                h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
                h = merge(h, v1); h = merge(h, v2); h = merge(h, v3); h = merge(h, v4)
            } else {
                h = p5
            }
            let n = tailCount
            return tail.withUnsafeBytes { XXHash64.finish(h &+ UInt64(total), 0, $0.baseAddress!, n) }
        }
    }

    private static func finish(_ start: UInt64, _ from: Int, _ base: UnsafeRawPointer, _ n: Int) -> UInt64 {
        var h = start, p = from
        while p + 8 <= n {
            h ^= round(0, UInt64(littleEndian: base.loadUnaligned(fromByteOffset: p, as: UInt64.self)))
            h = rotl(h, 27) &* p1 &+ p4
            p += 8
        }
        if p + 4 <= n {
            h ^= UInt64(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: p, as: UInt32.self))) &* p1
            h = rotl(h, 23) &* p2 &+ p3
            p += 4
        }
        while p < n {
            h ^= UInt64(base.load(fromByteOffset: p, as: UInt8.self)) &* p5
            h = rotl(h, 11) &* p1
            p += 1
        }
        h ^= h >> 33; h = h &* p2
        h ^= h >> 29; h = h &* p3
        h ^= h >> 32
        return h
    }
}
