/// Ends generated text at the first of some stop strings, as llama-server's `stop` and the CLI's
/// `--stop` do: text is fed as tokens arrive, and what may still be the start of a stop string is
/// held back, so nothing after a stop string (and no part of it) is ever emitted.
public struct StopStrings: Sendable {
    public let strings: [String]
    private var pending = ""
    /// The stop string that ended the text, once one has.
    public private(set) var matched: String?

    /// Empty strings are ignored (they would stop before the first character).
    public init(_ strings: [String]) {
        self.strings = strings.filter { !$0.isEmpty }
    }

    /// Takes the next piece of text and returns what can be emitted now: everything before a stop
    /// string once one appears (and nothing after it, ever), else everything but the longest
    /// tail that could begin one.
    public mutating func feed(_ text: String) -> String {
        guard matched == nil else { return "" }
        pending += text
        guard !strings.isEmpty else { defer { pending = "" }; return pending }
        // The earliest stop string in the text so far wins (the earliest start, then the longest).
        var first: (range: Range<String.Index>, string: String)?
        for s in strings {
            if let r = pending.firstRange(of: s), first.map({ r.lowerBound < $0.range.lowerBound }) ?? true { first = (r, s) }
        }
        if let first {
            matched = first.string
            defer { pending = "" }
            return String(pending[..<first.range.lowerBound])
        }
        // Hold back the longest suffix that is a prefix of a stop string.
        var hold = 0
        for s in strings {
            for k in stride(from: min(s.count - 1, pending.count), to: hold, by: -1) where pending.hasSuffix(s.prefix(k)) {
                hold = k
                break
            }
        }
        let cut = pending.index(pending.endIndex, offsetBy: -hold)
        defer { pending = String(pending[cut...]) }
        return String(pending[..<cut])
    }

    /// The text still held back, for the end of generation without a stop string.
    public mutating func flush() -> String {
        defer { pending = "" }
        return matched == nil ? pending : ""
    }
}
