import Foundation

/// The filters and methods chat templates use, with jinja2's (Python's) behaviour. Anything else
/// is ``JinjaError/unsupported(_:at:)`` naming it: a template that needs `indent` says so.
enum JinjaFilters {
    static func apply(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ kwargs: [String: JinjaValue], at: JinjaPosition) throws(JinjaError) -> JinjaValue {
        switch name {
        case "trim":
            return .string(JinjaLexer.rstripped(JinjaLexer.lstripped(v.pythonString)))
        case "upper": return .string(v.pythonString.uppercased())
        case "lower": return .string(v.pythonString.lowercased())
        case "capitalize":
            let s = v.pythonString
            return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
        case "string": return .string(v.pythonString)
        case "length", "count":
            switch v {
            case .string(let s): return .int(s.unicodeScalars.count)
            case .list(let l): return .int(l.count)
            case .dict(let d): return .int(d.count)
            case .undefined: return .int(0)
            default: throw .runtime("object of type '\(v.typeName)' has no len()", at: at)
            }
        case "default", "d":
            let fallback = args.first ?? kwargs["default_value"] ?? .string("")
            let boolean = (args.count > 1 ? args[1] : kwargs["boolean"])?.isTruthy ?? false
            return v.isUndefined || (boolean && !v.isTruthy) ? fallback : v
        case "first", "last":
            switch v {
            case .list(let l): return (name == "first" ? l.first : l.last) ?? .undefined(name)
            case .string(let s): return (name == "first" ? s.unicodeScalars.first : s.unicodeScalars.last).map { .string(String($0)) } ?? .undefined(name)
            default: throw .runtime("filter '\(name)' needs a list or string, not '\(v.typeName)'", at: at)
            }
        case "join":
            let sep = (args.first ?? kwargs["d"])?.pythonString ?? ""
            return .string(try elements(v, name, at).map(\.pythonString).joined(separator: sep))
        case "list": return .list(try elements(v, name, at))
        case "items":
            switch v {
            case .dict(let d): return .list(d.pairs.map { .list([.string($0.0), $0.1]) })
            case .undefined: return .list([])
            default: throw .runtime("filter 'items' needs a mapping, not '\(v.typeName)'", at: at)
            }
        case "replace":
            guard args.count >= 2 else { throw .runtime("filter 'replace' needs two arguments", at: at) }
            return .string(v.pythonString.replacingOccurrences(of: args[0].pythonString, with: args[1].pythonString))
        case "abs":
            switch v {
            case .int(let i) where i != Int.min: return .int(Swift.abs(i))
            case .double(let d): return .double(Swift.abs(d))
            default: throw .runtime("bad operand type for abs(): '\(v.typeName)'", at: at)
            }
        case "int":
            switch v {
            case .int: return v
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d) where d.isFinite && Swift.abs(d) < 9e18: return .int(Int(d))
            case .string(let s): return .int(Int(s.trimmingCharacters(in: .whitespaces)) ?? 0)
            default: return .int(0)
            }
        case "tojson":
            let indent: Int?
            switch args.first ?? kwargs["indent"] {
            case .int(let n)?: indent = n
            case nil, .none?: indent = nil
            case let other?: throw .runtime("tojson indent must be an integer, not '\(other.typeName)'", at: at)
            }
            var out = ""
            try json(v, indent: indent, level: 0, into: &out, at: at)
            return .string(out)
        default:
            throw .unsupported("filter '\(name)'", at: at)
        }
    }

    private static func elements(_ v: JinjaValue, _ filter: String, _ at: JinjaPosition) throws(JinjaError) -> [JinjaValue] {
        switch v {
        case .list(let l): return l
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .dict(let d): return d.keys.map { .string($0) }
        case .undefined: return []
        default: throw .runtime("filter '\(filter)' needs an iterable, not '\(v.typeName)'", at: at)
        }
    }

    /// HF's `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)` (not jinja2's HTML-safe
    /// one), keys in insertion order.
    private static func json(_ v: JinjaValue, indent: Int?, level: Int, into out: inout String, at: JinjaPosition) throws(JinjaError) {
        guard level < JinjaParser.maxDepth else { throw .limit("tojson nesting deeper than \(JinjaParser.maxDepth)", at: at) }
        func newline(_ l: Int) -> String { indent.map { "\n" + String(repeating: " ", count: $0 * l) } ?? "" }
        let itemSeparator = indent == nil ? ", " : ","
        switch v {
        case .undefined, .none: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            guard d.isFinite else { out += d.isNaN ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"); return }
            out += v.pythonRepr
        case .string(let s): out += jsonString(s)
        case .list(let l):
            guard !l.isEmpty else { out += "[]"; return }
            out += "["
            for (n, e) in l.enumerated() {
                out += (n == 0 ? "" : itemSeparator) + newline(level + 1)
                try json(e, indent: indent, level: level + 1, into: &out, at: at)
            }
            out += newline(level) + "]"
        case .dict(let d):
            guard d.count > 0 else { out += "{}"; return }
            out += "{"
            for (n, (k, e)) in d.pairs.enumerated() {
                out += (n == 0 ? "" : itemSeparator) + newline(level + 1) + jsonString(k) + ": "
                try json(e, indent: indent, level: level + 1, into: &out, at: at)
            }
            out += newline(level) + "}"
        case .namespace: throw .runtime("Object of type Namespace is not JSON serializable", at: at)
        }
    }

    private static func jsonString(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if c.value < 0x20 { out += "\\u" + String(repeating: "0", count: 4 - String(c.value, radix: 16).count) + String(c.value, radix: 16) }
                else { out.unicodeScalars.append(c) }
            }
        }
        return out + "\""
    }

    /// Python methods templates call on values: `s.strip()`, `d.items()`, `d.get(k)`.
    static func method(_ name: String, on v: JinjaValue, _ args: [JinjaValue], at: JinjaPosition) throws(JinjaError) -> JinjaValue {
        switch (v, name) {
        case (.undefined(let n), _): throw .runtime("'\(n)' is undefined", at: at)
        case (.string(let s), "strip"): return .string(JinjaLexer.rstripped(JinjaLexer.lstripped(s)))
        case (.string(let s), "lstrip"): return .string(JinjaLexer.lstripped(s))
        case (.string(let s), "rstrip"): return .string(JinjaLexer.rstripped(s))
        case (.string(let s), "upper"): return .string(s.uppercased())
        case (.string(let s), "lower"): return .string(s.lowercased())
        case (.string(let s), "startswith"), (.string(let s), "endswith"):
            guard case .string(let p)? = args.first else { throw .runtime("\(name)() needs a string", at: at) }
            let u = Array(s.unicodeScalars), q = Array(p.unicodeScalars)
            return .bool(name == "startswith" ? u.starts(with: q) : u.reversed().starts(with: q.reversed()))
        case (.string(let s), "split"):
            if case .string(let sep)? = args.first, !sep.isEmpty {
                return .list(s.components(separatedBy: sep).map { .string($0) })
            }
            return .list(s.split(whereSeparator: { $0.unicodeScalars.allSatisfy(JinjaLexer.isSpace) }).map { .string(String($0)) })
        case (.string(let s), "replace"):
            guard args.count >= 2 else { throw .runtime("replace() needs two arguments", at: at) }
            return .string(s.replacingOccurrences(of: args[0].pythonString, with: args[1].pythonString))
        case (.dict(let d), "items"): return .list(d.pairs.map { .list([.string($0.0), $0.1]) })
        case (.dict(let d), "keys"): return .list(d.keys.map { .string($0) })
        case (.dict(let d), "values"): return .list(d.pairs.map { $0.1 })
        case (.dict(let d), "get"):
            guard case .string(let k)? = args.first else { return args.count > 1 ? args[1] : .none }
            return d[k] ?? (args.count > 1 ? args[1] : .none)
        default:
            throw .unsupported("method '\(name)' on '\(v.typeName)'", at: at)
        }
    }
}
