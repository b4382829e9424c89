/// Turns a stream of token bytes into text without ever emitting half a code point.
///
/// A multi-byte character often spans two tokens (emoji, CJK in byte-level BPE). Bytes of an
/// incomplete trailing sequence are held back until the next token completes them; bytes that
/// can never form a valid sequence are emitted as U+FFFD, as `String(decoding:)` does.
public struct UTF8StreamDecoder: Sendable {
    private var pending: [UInt8] = []

    /// Reserves the held-back buffer up front so the first token does not allocate.
    public init() { pending.reserveCapacity(16) }

    /// Adds bytes and returns the text that is now complete (possibly empty).
    public mutating func append(_ bytes: some Sequence<UInt8>) -> String {
        pending.append(contentsOf: bytes)
        let cut = Self.completePrefixLength(pending)
        if cut == 0 { return "" }
        let text = String(decoding: pending[0..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Whatever is still held back, decoded with replacement characters (end of stream).
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the prefix that does not end inside a still-completable sequence.
    static func completePrefixLength(_ b: [UInt8]) -> Int {
        let n = b.count
        var i = n - 1
        var back = 0
        while i >= 0 && back < 4 {
            let byte = b[i]
            if byte & 0xC0 != 0x80 {
                let need: Int
                switch byte {
                case 0xC2...0xDF: need = 2
                case 0xE0...0xEF: need = 3
                case 0xF0...0xF4: need = 4
                default: return n // ASCII or invalid lead: nothing to wait for
                }
                return n - i < need ? i : n
            }
            i -= 1
            back += 1
        }
        return n
    }
}
