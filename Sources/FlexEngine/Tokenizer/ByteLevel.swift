/// GPT-2's reversible byte ↔ printable-character mapping (`bytes_to_unicode`).
///
/// Byte-level BPE vocabularies store every token as characters of this alphabet: printable
/// Latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards (space becomes 'Ġ').
enum ByteLevel {
    static let byteToScalar: [Unicode.Scalar] = {
        var printable = Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF)
        var scalars = printable
        var n = 0
        for b in 0..<256 where !printable.contains(b) {
            printable.append(b)
            scalars.append(256 + n)
            n += 1
        }
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        for (b, s) in zip(printable, scalars) { table[b] = Unicode.Scalar(UInt32(s))! }
        return table
    }()

    static let scalarToByte: [UInt32: UInt8] = {
        var m: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { m[s.value] = UInt8(b) }
        return m
    }()

    /// The byte-level string of one word's UTF-8, as the vocabulary spells it.
    static func encode(_ word: Substring) -> [String] {
        word.utf8.map { String(Character(byteToScalar[Int($0)])) }
    }

    /// Bytes of a vocabulary string; characters outside the alphabet pass through as UTF-8.
    static func decode(_ token: String, into bytes: inout [UInt8]) {
        for s in token.unicodeScalars {
            if let b = scalarToByte[s.value] { bytes.append(b) } else { bytes.append(contentsOf: Array(String(s).utf8)) }
        }
    }
}
