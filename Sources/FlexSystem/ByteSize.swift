/// A memory or file size given by a user: `512M`, `4G`, `1.5GiB`, `100MB` or plain bytes.
///
/// Suffixes are binary (K = KiB = 1024), as for `ulimit` and cgroup files: a user who writes
/// `4G` for a 4 GiB device means 4·2³⁰, and a cap that rounds the other way would be exceeded.
public struct ByteSize: Equatable, Comparable, Sendable, CustomStringConvertible {
    public let bytes: Int

    public init(bytes: Int) { self.bytes = bytes }

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let text: String
        public var description: String {
            "invalid size '\(text)': expected a number with an optional unit, e.g. 512M, 4G, 1.5GiB or 1048576"
        }
    }

    public init(parsing text: String) throws(ParseError) {
        let trimmed = text.trimmingSpaces()
        var number = ""
        var unit = ""
        for ch in trimmed {
            if unit.isEmpty, ch.isASCII, ch.isNumber || ch == "." { number.append(ch) } else { unit.append(ch) }
        }
        unit = unit.trimmingSpaces().lowercased()
        guard !number.isEmpty, number.filter({ $0 == "." }).count <= 1, let value = Double(number) else {
            throw ParseError(text: text)
        }
        let multiplier: Double
        switch unit {
        case "", "b": multiplier = 1
        case "k", "kb", "kib": multiplier = 1024
        case "m", "mb", "mib": multiplier = 1024 * 1024
        case "g", "gb", "gib": multiplier = 1024 * 1024 * 1024
        case "t", "tb", "tib": multiplier = 1024 * 1024 * 1024 * 1024
        default: throw ParseError(text: text)
        }
        let total = value * multiplier
        guard total.isFinite, total >= 1, total < 9.0e18 else { throw ParseError(text: text) }
        self.bytes = Int(total.rounded(.down))
    }

    public static func < (a: ByteSize, b: ByteSize) -> Bool { a.bytes < b.bytes }

    /// Human form with binary units, e.g. "93.8 MiB".
    public var description: String { ByteSize.format(bytes) }

    public static func format(_ bytes: Int) -> String { format(bytes, digits: 1) }

    /// `bytes` in binary units with `digits` decimals, rounded by `rule`.
    public static func format(_ bytes: Int, digits: Int, rounding rule: FloatingPointRoundingRule = .toNearestOrAwayFromZero) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var i = 0
        while abs(value) >= 1024, i < units.count - 1 { value /= 1024; i += 1 }
        if i == 0 { return "\(bytes) B" }
        var scale = 1
        for _ in 0..<max(1, digits) { scale *= 10 }
        let scaled = Int((abs(value) * Double(scale)).rounded(rule))
        let fraction = String(scaled % scale)
        let sign = value < 0 ? "-" : ""
        return "\(sign)\(scaled / scale).\(String(repeating: "0", count: max(1, digits) - fraction.count))\(fraction) \(units[i])"
    }

    /// A limit and the minimum it falls short of, with as many decimals as it takes for the two
    /// to read differently (up to 3; past that, exact bytes); at that precision the minimum
    /// rounds up, so raising the limit to the printed figure is enough ("memory limit 17.1 MiB is
    /// too small … at least 17.1 MiB" helped no one). The limit rounds to nearest, as the user
    /// wrote it; it cannot then read as the minimum, which is larger.
    public static func format(limit: Int, below minimum: Int) -> (limit: String, minimum: String) {
        for digits in 1...3 where format(limit, digits: digits) != format(minimum, digits: digits) {
            return (format(limit, digits: digits), format(minimum, digits: digits, rounding: .up))
        }
        return ("\(limit) B", "\(minimum) B")
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
