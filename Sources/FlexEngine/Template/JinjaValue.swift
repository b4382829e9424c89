import Foundation

/// Where a template construct starts: 1-based line and column (the column counts UTF-8 bytes).
public struct JinjaPosition: Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public init(line: Int, column: Int) { self.line = line; self.column = column }
    public var description: String { "line \(line), column \(column)" }
}

/// Why a chat template could not be parsed or rendered. Every case names the construct, so a
/// GGUF whose template uses something this subset lacks says what, instead of rendering wrongly.
public enum JinjaError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The text is not a template of known syntax (an unterminated tag, a stray token).
    case syntax(String, at: JinjaPosition)
    /// Valid Jinja that this subset does not implement: "filter 'indent'", "tag 'macro'".
    case unsupported(String, at: JinjaPosition)
    /// A type or name error while rendering, as jinja2 would raise it.
    case runtime(String, at: JinjaPosition)
    /// The template called `raise_exception(message)`, as HF templates do to refuse a conversation.
    case raised(String)
    /// Nesting, loop work or output beyond the interpreter's bounds: a hostile template is an
    /// error, not a stack overflow or a hang.
    case limit(String, at: JinjaPosition)

    public var description: String {
        switch self {
        case .syntax(let m, let at): return "template syntax error at \(at): \(m)"
        case .unsupported(let m, let at): return "unsupported \(m) at \(at)"
        case .runtime(let m, let at): return "template error at \(at): \(m)"
        case .raised(let m): return "template raised: \(m)"
        case .limit(let m, let at): return "template limit at \(at): \(m)"
        }
    }
}

/// A dictionary that keeps insertion order, as Python's does (`tojson` and iteration show it).
public struct JinjaDict: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public private(set) var keys: [String] = []
    private var storage: [String: JinjaValue] = [:]

    public init() {}
    public init(dictionaryLiteral elements: (String, JinjaValue)...) {
        for (k, v) in elements { self[k] = v }
    }

    public subscript(key: String) -> JinjaValue? {
        get { storage[key] }
        set {
            if storage[key] == nil, newValue != nil { keys.append(key) }
            if newValue == nil, storage[key] != nil { keys.removeAll { $0 == key } }
            storage[key] = newValue
        }
    }
    public var count: Int { keys.count }
    /// Key-value pairs in insertion order.
    public var pairs: [(String, JinjaValue)] { keys.compactMap { k in storage[k].map { (k, $0) } } }
}

/// A value inside the interpreter, with Python's semantics where jinja2 borrows them
/// (truthiness, equality across int and float, `str()` of lists and dicts).
public enum JinjaValue: Sendable, Equatable {
    /// A missing name or attribute. Jinja's default `Undefined`: prints as "", is false, iterates
    /// as empty, but raises when its attributes or items are read.
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JinjaValue])
    case dict(JinjaDict)
    /// A `namespace()` object: an id into the renderer's namespace store, so `ns.attr = …` inside a
    /// loop reaches the outer scope (Jinja's reason for namespaces) while values stay value types.
    case namespace(Int)

    /// Python truthiness.
    var isTruthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let l): return !l.isEmpty
        case .dict(let d): return d.count > 0
        case .namespace: return true
        }
    }

    var isUndefined: Bool { if case .undefined = self { return true } else { return false } }

    /// Python's type name, for error messages that match jinja2's.
    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .list: return "list"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        }
    }

    /// A number as a Double, treating bools as Python does (True == 1).
    var number: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// Python `==`: 1 == 1.0 == True; lists and dicts compare element-wise.
    func pythonEquals(_ other: JinjaValue) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined): return true
        case (.none, .none): return true
        case (.string(let a), .string(let b)): return Array(a.unicodeScalars) == Array(b.unicodeScalars)
        case (.list(let a), .list(let b)):
            guard a.count == b.count else { return false }
            for (x, y) in zip(a, b) where !x.pythonEquals(y) { return false }
            return true
        case (.dict(let a), .dict(let b)):
            guard a.count == b.count else { return false }
            for (k, v) in a.pairs {
                guard let w = b[k], v.pythonEquals(w) else { return false }
            }
            return true
        case (.namespace(let a), .namespace(let b)): return a == b
        default:
            if let x = number, let y = other.number { return x == y }
            return false
        }
    }

    /// Python `str()`: what `{{ value }}` prints.
    var pythonString: String {
        switch self {
        case .undefined: return ""
        case .string(let s): return s
        default: return pythonRepr
        }
    }

    /// Python `repr()`, as `str()` of a container shows its elements.
    var pythonRepr: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d):
            if d.isNaN { return "nan" }
            if d.isInfinite { return d > 0 ? "inf" : "-inf" }
            if d == d.rounded(), abs(d) < 1e16 { return String(format: "%.1f", d) }
            return "\(d)"
        case .string(let s): return Self.quote(s)
        case .list(let l): return "[" + l.map(\.pythonRepr).joined(separator: ", ") + "]"
        case .dict(let d): return "{" + d.pairs.map { Self.quote($0.0) + ": " + $0.1.pythonRepr }.joined(separator: ", ") + "}"
        case .namespace: return "<Namespace>"
        }
    }

    /// Python's string repr: single quotes unless the text has one and no double quote.
    static func quote(_ s: String) -> String {
        let q: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(q)
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(c) == q { out += "\\" + String(q) }
                else if c.value < 0x20 || c.value == 0x7F { out += "\\x" + String(format: "%02x", c.value) }
                else { out.unicodeScalars.append(c) }
            }
        }
        out.append(q)
        return out
    }
}
