import Foundation

/// A parsed chat template. Parse once (``init(_:)``), render per conversation.
///
/// The subset covers what GGUF chat templates of the SmolLM2, Gemma, Llama 3, Mistral and Qwen
/// families use; anything else is a ``JinjaError`` naming the construct, so an unsupported
/// template fails loudly instead of rendering a wrong prompt. Whitespace follows HF's
/// `apply_chat_template` (`trim_blocks` and `lstrip_blocks` on).
public struct JinjaTemplate: Sendable {
    let nodes: [JinjaNode]

    /// Parses `source`; throws ``JinjaError/syntax(_:at:)`` with the position of the first
    /// problem, or ``JinjaError/unsupported(_:at:)`` for a tag outside the subset.
    public init(_ source: String) throws(JinjaError) {
        nodes = try JinjaParser.parse(source)
    }

    /// Renders with `context` as the global variables (`messages`, `add_generation_prompt`,
    /// `bos_token`, `eos_token`, …). `raise_exception` and `namespace` are built in.
    public func render(_ context: [String: JinjaValue]) throws(JinjaError) -> String {
        var r = JinjaRenderer(globals: context)
        try r.render(nodes)
        return r.output
    }

    /// Renders a chat in HF's shape: each message a dict with `role` and `content`.
    public func render(messages: [(role: String, content: String)], addGenerationPrompt: Bool,
                       bosToken: String, eosToken: String) throws(JinjaError) -> String {
        let list = messages.map { m -> JinjaValue in .dict(["role": .string(m.role), "content": .string(m.content)]) }
        return try render(["messages": .list(list), "add_generation_prompt": .bool(addGenerationPrompt),
                           "bos_token": .string(bosToken), "eos_token": .string(eosToken)])
    }
}

/// Walks the AST. Scopes are a stack: a `for` body gets its own frame, so a `set` inside a loop
/// does not leak out (jinja2's rule, and why templates use `namespace()`).
struct JinjaRenderer {
    /// Loop iterations plus output nodes before the render gives up: a template cannot hang.
    static let maxSteps = 1_000_000
    /// Characters of output before the render gives up.
    static let maxOutput = 64 << 20

    var output = ""
    private var scopes: [[String: JinjaValue]]
    private var namespaces: [JinjaDict] = []
    private var steps = 0

    init(globals: [String: JinjaValue]) { scopes = [globals, [:]] }

    private func lookup(_ name: String) -> JinjaValue? {
        for frame in scopes.reversed() { if let v = frame[name] { return v } }
        return nil
    }

    private mutating func step(_ at: JinjaPosition) throws(JinjaError) {
        steps += 1
        if steps > Self.maxSteps { throw .limit("more than \(Self.maxSteps) steps", at: at) }
        if output.utf8.count > Self.maxOutput { throw .limit("output longer than \(Self.maxOutput) bytes", at: at) }
    }

    mutating func render(_ nodes: [JinjaNode]) throws(JinjaError) {
        for node in nodes {
            switch node {
            case .text(let s):
                output += s
            case .output(let e, let at):
                output += try eval(e).pythonString
                try step(at)
            case .ifChain(let branches, let otherwise):
                var taken = false
                for (condition, body) in branches where try eval(condition).isTruthy {
                    try render(body); taken = true; break
                }
                if !taken { try render(otherwise) }
            case .forLoop(let targets, let iterable, let filter, let body, let otherwise, let at):
                try renderFor(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, at: at)
            case .set(let name, let e):
                let v = try eval(e)
                scopes[scopes.count - 1][name] = v
            case .setAttribute(let object, let attribute, let e, let at):
                guard case .namespace(let id)? = lookup(object) else {
                    throw .runtime("cannot assign attribute on non-namespace object '\(object)'", at: at)
                }
                namespaces[id][attribute] = try eval(e)
            }
        }
    }

    private mutating func renderFor(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode],
                                    otherwise: [JinjaNode], at: JinjaPosition) throws(JinjaError) {
        var items = try iterate(try eval(iterable), at: at)
        scopes.append([:])
        defer { scopes.removeLast() }
        if let filter {
            var kept: [JinjaValue] = []
            for item in items {
                try bind(targets, to: item, at: at)
                if try eval(filter).isTruthy { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty { try render(otherwise); return }
        let n = items.count
        for (index, item) in items.enumerated() {
            try step(at)
            scopes[scopes.count - 1] = [:]
            try bind(targets, to: item, at: at)
            scopes[scopes.count - 1]["loop"] = .dict([
                "index0": .int(index), "index": .int(index + 1), "first": .bool(index == 0), "last": .bool(index == n - 1),
                "length": .int(n), "revindex": .int(n - index), "revindex0": .int(n - index - 1),
                "previtem": index > 0 ? items[index - 1] : .undefined("previtem"),
                "nextitem": index < n - 1 ? items[index + 1] : .undefined("nextitem"),
            ])
            try render(body)
        }
    }

    private mutating func bind(_ targets: [String], to item: JinjaValue, at: JinjaPosition) throws(JinjaError) {
        if targets.count == 1 { scopes[scopes.count - 1][targets[0]] = item; return }
        let parts = try iterate(item, at: at)
        guard parts.count == targets.count else {
            throw .runtime("cannot unpack \(parts.count) values into \(targets.count) loop variables", at: at)
        }
        for (t, v) in zip(targets, parts) { scopes[scopes.count - 1][t] = v }
    }

    /// The elements a `for` walks: a list's items, a dict's keys, a string's characters.
    private func iterate(_ v: JinjaValue, at: JinjaPosition) throws(JinjaError) -> [JinjaValue] {
        switch v {
        case .undefined: return []
        case .list(let l): return l
        case .dict(let d): return d.keys.map { .string($0) }
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        default: throw .runtime("'\(v.typeName)' object is not iterable", at: at)
        }
    }

    // MARK: Expressions

    mutating func eval(_ e: JinjaExpr) throws(JinjaError) -> JinjaValue {
        switch e {
        case .literal(let v): return v
        case .name(let n, _): return lookup(n) ?? .undefined(n)
        case .list(let items):
            var out: [JinjaValue] = []
            for item in items { out.append(try eval(item)) }
            return .list(out)
        case .dict(let pairs, let at):
            var d = JinjaDict()
            for (ke, ve) in pairs {
                let key = try eval(ke)
                guard case .string(let s) = key else { throw .unsupported("dict key of type '\(key.typeName)'", at: at) }
                d[s] = try eval(ve)
            }
            return .dict(d)
        case .attribute(let base, let name, let at):
            return try attribute(try eval(base), name, at: at)
        case .item(let base, let index, let at):
            return try item(try eval(base), try eval(index), at: at)
        case .slice(let base, let lo, let hi, let st, let at):
            let b = try eval(base)
            let l = try lo.map { (x) throws(JinjaError) in try eval(x) }
            let h = try hi.map { (x) throws(JinjaError) in try eval(x) }
            let s = try st.map { (x) throws(JinjaError) in try eval(x) }
            return try slice(b, l, h, s, at: at)
        case .negate(let x, let at):
            switch try eval(x) {
            case .int(let i): return .int(0 &- i)
            case .double(let d): return .double(-d)
            case .bool(let b): return .int(b ? -1 : 0)
            case let v: throw .runtime("bad operand type for unary -: '\(v.typeName)'", at: at)
            }
        case .not(let x): return .bool(!(try eval(x)).isTruthy)
        case .and(let a, let b):
            let l = try eval(a)
            return l.isTruthy ? try eval(b) : l
        case .or(let a, let b):
            let l = try eval(a)
            return l.isTruthy ? l : try eval(b)
        case .binary(let op, let a, let b, let at):
            return try binary(op, try eval(a), try eval(b), at: at)
        case .compare(let first, let ops, let at):
            var left = try eval(first)
            for (op, re) in ops {
                let right = try eval(re)
                guard try compare(op, left, right, at: at) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .test(let x, let name, let args, let negated, let at):
            let v = try eval(x)
            var a: [JinjaValue] = []
            for arg in args { a.append(try eval(arg)) }
            let r = try test(name, v, a, at: at)
            return .bool(negated ? !r : r)
        case .filter(let x, let name, let args, let kwargs, let at):
            let v = try eval(x)
            var a: [JinjaValue] = []
            for arg in args { a.append(try eval(arg)) }
            var kw: [String: JinjaValue] = [:]
            for (k, ke) in kwargs { kw[k] = try eval(ke) }
            return try JinjaFilters.apply(name, v, a, kw, at: at)
        case .call(let callee, let args, let kwargs, let at):
            var a: [JinjaValue] = []
            for arg in args { a.append(try eval(arg)) }
            var kw: [(String, JinjaValue)] = []
            for (k, ke) in kwargs { kw.append((k, try eval(ke))) }
            return try call(callee, a, kw, at: at)
        case .conditional(let then, let condition, let otherwise):
            if try eval(condition).isTruthy { return try eval(then) }
            if let otherwise { return try eval(otherwise) }
            return .undefined("conditional")
        }
    }

    /// `a.b`: a namespace attribute or a dict key; missing is undefined, but reading anything
    /// from an undefined value is jinja2's UndefinedError.
    private func attribute(_ v: JinjaValue, _ name: String, at: JinjaPosition) throws(JinjaError) -> JinjaValue {
        switch v {
        case .undefined(let n): throw .runtime("'\(n)' is undefined", at: at)
        case .dict(let d): return d[name] ?? .undefined(name)
        case .namespace(let id): return namespaces[id][name] ?? .undefined(name)
        default: return .undefined(name)
        }
    }

    /// `a[i]`: Python indexing, negative from the end; out of range is undefined (jinja2's
    /// `getitem` swallows the IndexError).
    private func item(_ v: JinjaValue, _ index: JinjaValue, at: JinjaPosition) throws(JinjaError) -> JinjaValue {
        switch (v, index) {
        case (.undefined(let n), _): throw .runtime("'\(n)' is undefined", at: at)
        case (.list(let l), .int(let i)):
            let j = i < 0 ? l.count + i : i
            return l.indices.contains(j) ? l[j] : .undefined("[\(i)]")
        case (.string(let s), .int(let i)):
            let chars = Array(s.unicodeScalars)
            let j = i < 0 ? chars.count + i : i
            return chars.indices.contains(j) ? .string(String(chars[j])) : .undefined("[\(i)]")
        case (.dict(let d), .string(let k)): return d[k] ?? .undefined(k)
        case (.namespace(let id), .string(let k)): return namespaces[id][k] ?? .undefined(k)
        case (_, .string(let k)): return .undefined(k)
        default: return .undefined("[\(index.pythonRepr)]")
        }
    }

    /// Python slicing `[lo:hi:step]` for lists and strings.
    private func slice(_ v: JinjaValue, _ lo: JinjaValue?, _ hi: JinjaValue?, _ st: JinjaValue?, at: JinjaPosition) throws(JinjaError) -> JinjaValue {
        func int(_ x: JinjaValue?) throws(JinjaError) -> Int? {
            switch x {
            case nil, .none?: return nil
            case .int(let i)?: return i
            case let y?: throw .runtime("slice indices must be integers or None, not '\(y.typeName)'", at: at)
            }
        }
        let step = try int(st) ?? 1
        guard step != 0 else { throw .runtime("slice step cannot be zero", at: at) }
        let elements: [JinjaValue]
        switch v {
        case .list(let l): elements = l
        case .string(let s): elements = s.unicodeScalars.map { .string(String($0)) }
        case .undefined(let n): throw .runtime("'\(n)' is undefined", at: at)
        default: throw .runtime("'\(v.typeName)' object is not subscriptable", at: at)
        }
        let n = elements.count
        func clamp(_ i: Int?, _ dflt: Int, low: Int, high: Int) -> Int {
            guard var i else { return dflt }
            if i < 0 { i += n }
            return Swift.min(Swift.max(i, low), high)
        }
        var picked: [JinjaValue] = []
        if step > 0 {
            var i = clamp(try int(lo), 0, low: 0, high: n)
            let end = clamp(try int(hi), n, low: 0, high: n)
            while i < end { picked.append(elements[i]); i += step }
        } else {
            var i = clamp(try int(lo), n - 1, low: -1, high: n - 1)
            let end = clamp(try int(hi), -1, low: -1, high: n - 1)
            while i > end { picked.append(elements[i]); i += step }
        }
        if case .string = v { return .string(picked.map(\.pythonString).joined()) }
        return .list(picked)
    }

    private func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue, at: JinjaPosition) throws(JinjaError) -> JinjaValue {
        if op == "~" { return .string(a.pythonString + b.pythonString) }
        if case .undefined(let n) = a { throw .runtime("'\(n)' is undefined", at: at) }
        if case .undefined(let n) = b { throw .runtime("'\(n)' is undefined", at: at) }
        func overflow() -> JinjaError { .runtime("integer overflow in '\(op)'", at: at) }
        switch (op, a, b) {
        case ("+", .string(let x), .string(let y)): return .string(x + y)
        case ("+", .list(let x), .list(let y)): return .list(x + y)
        case ("*", .string(let s), .int(let n)), ("*", .int(let n), .string(let s)):
            guard n <= 0 || s.utf8.count.multipliedReportingOverflow(by: n).partialValue <= Self.maxOutput else { throw .limit("string repetition too long", at: at) }
            return .string(n > 0 ? String(repeating: s, count: n) : "")
        case ("*", .list(let l), .int(let n)), ("*", .int(let n), .list(let l)):
            guard n <= 0 || l.count.multipliedReportingOverflow(by: n).partialValue <= Self.maxSteps else { throw .limit("list repetition too long", at: at) }
            return .list(n > 0 ? Array([[JinjaValue]](repeating: l, count: n).joined()) : [])
        case ("%", .string, _): throw .unsupported("string formatting with '%'", at: at)
        default: break
        }
        // Numbers; bools count as ints, as in Python.
        func asInt(_ v: JinjaValue) -> Int? {
            switch v { case .int(let i): return i; case .bool(let b): return b ? 1 : 0; default: return nil }
        }
        if let x = asInt(a), let y = asInt(b) {
            switch op {
            case "+": let r = x.addingReportingOverflow(y); if r.overflow { throw overflow() }; return .int(r.partialValue)
            case "-": let r = x.subtractingReportingOverflow(y); if r.overflow { throw overflow() }; return .int(r.partialValue)
            case "*": let r = x.multipliedReportingOverflow(by: y); if r.overflow { throw overflow() }; return .int(r.partialValue)
            case "/":
                guard y != 0 else { throw .runtime("division by zero", at: at) }
                return .double(Double(x) / Double(y))
            case "//", "%":
                guard y != 0 else { throw .runtime("integer division or modulo by zero", at: at) }
                guard !(x == Int.min && y == -1) else { throw overflow() }
                // Python floors: the remainder takes the divisor's sign.
                var q = x / y, r = x % y
                if r != 0 && ((r < 0) != (y < 0)) { q -= 1; r += y }
                return .int(op == "//" ? q : r)
            case "**":
                guard y >= 0 else { return .double(pow(Double(x), Double(y))) }
                var result = 1
                for _ in 0..<Swift.min(y, 64) {
                    let r = result.multipliedReportingOverflow(by: x); if r.overflow { throw overflow() }; result = r.partialValue
                }
                if y > 64 && !(x == 0 || x == 1 || x == -1) { throw overflow() }
                if y > 64 && x == -1 { return .int(y % 2 == 0 ? 1 : -1) }
                return .int(result)
            default: break
            }
        }
        if let x = a.number, let y = b.number {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/": guard y != 0 else { throw .runtime("division by zero", at: at) }; return .double(x / y)
            case "//": guard y != 0 else { throw .runtime("division by zero", at: at) }; return .double((x / y).rounded(.down))
            case "%": guard y != 0 else { throw .runtime("modulo by zero", at: at) }; return .double(x - y * (x / y).rounded(.down))
            case "**": return .double(pow(x, y))
            default: break
            }
        }
        throw .runtime("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'", at: at)
    }

    private func compare(_ op: String, _ a: JinjaValue, _ b: JinjaValue, at: JinjaPosition) throws(JinjaError) -> Bool {
        switch op {
        case "==": return a.pythonEquals(b)
        case "!=": return !a.pythonEquals(b)
        case "in", "not in":
            let found: Bool
            switch b {
            case .string(let s):
                guard case .string(let needle) = a else { throw .runtime("'in <string>' requires string as left operand, not \(a.typeName)", at: at) }
                found = needle.isEmpty || s[...].range(of: needle) != nil
            case .list(let l): found = l.contains { $0.pythonEquals(a) }
            case .dict(let d): if case .string(let k) = a { found = d[k] != nil } else { found = false }
            case .undefined: found = false
            default: throw .runtime("argument of type '\(b.typeName)' is not iterable", at: at)
            }
            return op == "in" ? found : !found
        default:
            let order: Int
            if let x = a.number, let y = b.number {
                order = x < y ? -1 : (x > y ? 1 : 0)
            } else if case .string(let x) = a, case .string(let y) = b {
                // Python compares code points.
                let xs = Array(x.unicodeScalars.map(\.value)), ys = Array(y.unicodeScalars.map(\.value))
                order = xs.lexicographicallyPrecedes(ys) ? -1 : (xs == ys ? 0 : 1)
            } else {
                throw .runtime("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'", at: at)
            }
            switch op {
            case "<": return order < 0
            case ">": return order > 0
            case "<=": return order <= 0
            default: return order >= 0
            }
        }
    }

    private func test(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], at: JinjaPosition) throws(JinjaError) -> Bool {
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": if case .none = v { return true }; return false
        case "string": if case .string = v { return true }; return false
        case "mapping": if case .dict = v { return true }; return false
        case "boolean": if case .bool = v { return true }; return false
        case "integer": if case .int = v { return true }; return false
        case "float": if case .double = v { return true }; return false
        case "number": switch v { case .int, .double, .bool: return true; default: return false }
        case "iterable": switch v { case .list, .dict, .string, .undefined: return true; default: return false }
        case "sequence": switch v { case .list, .dict, .string: return true; default: return false }
        case "true": if case .bool(true) = v { return true }; return false
        case "false": if case .bool(false) = v { return true }; return false
        case "odd", "even":
            guard case .int(let i) = v else { throw .runtime("test '\(name)' needs an integer, not '\(v.typeName)'", at: at) }
            return (i % 2 != 0) == (name == "odd")
        case "eq", "equalto", "==", "sameas":
            guard let other = args.first else { throw .runtime("test '\(name)' needs an argument", at: at) }
            return v.pythonEquals(other)
        case "ne", "!=":
            guard let other = args.first else { throw .runtime("test '\(name)' needs an argument", at: at) }
            return !v.pythonEquals(other)
        case "in":
            guard let other = args.first else { throw .runtime("test 'in' needs an argument", at: at) }
            return try compare("in", v, other, at: at)
        case "divisibleby":
            guard case .int(let i) = v, case .int(let d)? = args.first, d != 0 else { throw .runtime("test 'divisibleby' needs integers", at: at) }
            return i % d == 0
        default: throw .unsupported("test '\(name)'", at: at)
        }
    }

    private mutating func call(_ callee: JinjaExpr, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], at: JinjaPosition) throws(JinjaError) -> JinjaValue {
        switch callee {
        case .name("raise_exception", _) where lookup("raise_exception") == nil:
            throw .raised(args.first?.pythonString ?? "")
        case .name("namespace", _) where lookup("namespace") == nil:
            var d = JinjaDict()
            if case .dict(let initial)? = args.first { for (k, v) in initial.pairs { d[k] = v } }
            for (k, v) in kwargs { d[k] = v }
            namespaces.append(d)
            return .namespace(namespaces.count - 1)
        case .name("range", _) where lookup("range") == nil:
            var ints: [Int] = []
            for a in args {
                guard case .int(let i) = a else { throw .runtime("range() takes integers, not '\(a.typeName)'", at: at) }
                ints.append(i)
            }
            let (lo, hi, st) = ints.count == 1 ? (0, ints[0], 1) : ints.count == 2 ? (ints[0], ints[1], 1)
                : ints.count == 3 ? (ints[0], ints[1], ints[2]) : (0, 0, 0)
            guard st != 0 else { throw .runtime("range() needs 1 to 3 arguments and a non-zero step", at: at) }
            var out: [JinjaValue] = []
            var i = lo
            while st > 0 ? i < hi : i > hi {
                out.append(.int(i))
                if out.count > Self.maxSteps { throw .limit("range() longer than \(Self.maxSteps)", at: at) }
                i += st
            }
            return .list(out)
        case .name(let n, _):
            throw .unsupported("function '\(n)'", at: at)
        case .attribute(let base, let method, _):
            return try JinjaFilters.method(method, on: try eval(base), args, at: at)
        default:
            throw .unsupported("call of this expression", at: at)
        }
    }
}
