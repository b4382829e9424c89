/// An expression of the Jinja subset. Nodes that can fail at render time carry their position.
indirect enum JinjaExpr: Sendable {
    case literal(JinjaValue)
    case name(String, JinjaPosition)
    case list([JinjaExpr])
    case dict([(JinjaExpr, JinjaExpr)], JinjaPosition)
    case attribute(JinjaExpr, String, JinjaPosition)
    case item(JinjaExpr, JinjaExpr, JinjaPosition)
    case slice(JinjaExpr, JinjaExpr?, JinjaExpr?, JinjaExpr?, JinjaPosition)
    case negate(JinjaExpr, JinjaPosition)
    case not(JinjaExpr)
    case and(JinjaExpr, JinjaExpr)
    case or(JinjaExpr, JinjaExpr)
    /// `+ - * / // % ** ~`
    case binary(String, JinjaExpr, JinjaExpr, JinjaPosition)
    /// A Python comparison chain: `a < b <= c`, `x in y`, `x not in y`.
    case compare(JinjaExpr, [(String, JinjaExpr)], JinjaPosition)
    case test(JinjaExpr, name: String, args: [JinjaExpr], negated: Bool, JinjaPosition)
    case filter(JinjaExpr, name: String, args: [JinjaExpr], kwargs: [(String, JinjaExpr)], JinjaPosition)
    case call(JinjaExpr, args: [JinjaExpr], kwargs: [(String, JinjaExpr)], JinjaPosition)
    case conditional(then: JinjaExpr, condition: JinjaExpr, otherwise: JinjaExpr?)
}

/// A statement of the Jinja subset.
indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpr, JinjaPosition)
    case ifChain([(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode])
    case forLoop(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode], JinjaPosition)
    case set(name: String, JinjaExpr)
    case setAttribute(object: String, attribute: String, JinjaExpr, JinjaPosition)
}

/// Recursive-descent parser with jinja2's precedence: conditional < or < and < not < compare
/// < `+ -` < `~` < `* / // %` < `**` < unary minus < postfix (`.a`, `[i]`, call) then `|filter` and
/// `is test`. Recursion is bounded (``maxDepth``), so deeply nested input is an error, not a
/// stack overflow.
struct JinjaParser {
    static let maxDepth = 128
    private let tokens: [JinjaToken]
    private var k = 0
    private var depth = 0

    static func parse(_ source: String) throws(JinjaError) -> [JinjaNode] {
        var p = JinjaParser(tokens: try JinjaLexer.tokenize(source))
        let (nodes, endTag) = try p.parseBody(until: [])
        if let endTag { throw .syntax("unexpected '\(endTag.0)'", at: endTag.1) }
        return nodes
    }

    private init(tokens: [JinjaToken]) { self.tokens = tokens }

    private var current: JinjaToken { tokens[min(k, tokens.count - 1)] }
    private mutating func advance() { if k < tokens.count - 1 { k += 1 } }

    private mutating func enter(_ at: JinjaPosition) throws(JinjaError) {
        depth += 1
        if depth > Self.maxDepth { throw .limit("nesting deeper than \(Self.maxDepth)", at: at) }
    }
    private mutating func leave() { depth -= 1 }

    private func describe(_ t: JinjaTokenKind) -> String {
        switch t {
        case .text: return "text"
        case .exprOpen: return "'{{'"
        case .exprClose: return "'}}'"
        case .stmtOpen: return "'{%'"
        case .stmtClose: return "'%}'"
        case .name(let n): return "'\(n)'"
        case .string: return "string literal"
        case .integer(let n): return "'\(n)'"
        case .float(let d): return "'\(d)'"
        case .op(let o): return "'\(o)'"
        case .end: return "end of template"
        }
    }

    private mutating func expect(_ kind: JinjaTokenKind) throws(JinjaError) {
        guard current.kind == kind else {
            throw .syntax("expected \(describe(kind)), found \(describe(current.kind))", at: current.at)
        }
        advance()
    }
    private func isOp(_ o: String) -> Bool { current.kind == .op(o) }
    private func isName(_ n: String) -> Bool { current.kind == .name(n) }
    private mutating func expectName() throws(JinjaError) -> String {
        guard case .name(let n) = current.kind else { throw .syntax("expected a name, found \(describe(current.kind))", at: current.at) }
        advance()
        return n
    }

    // MARK: Statements

    /// Parses nodes until a `{% tag %}` whose name is in `enders` (returned with its position,
    /// the parser left after the tag name) or the end of input (nil; an error if enders expected).
    private mutating func parseBody(until enders: Set<String>) throws(JinjaError) -> ([JinjaNode], (String, JinjaPosition)?) {
        try enter(current.at); defer { leave() }
        var nodes: [JinjaNode] = []
        while true {
            let t = current
            switch t.kind {
            case .end:
                if !enders.isEmpty {
                    throw .syntax("unexpected end of template; expected one of \(enders.sorted().map { "'\($0)'" }.joined(separator: ", "))", at: t.at)
                }
                return (nodes, nil)
            case .text(let s):
                nodes.append(.text(s)); advance()
            case .exprOpen:
                advance()
                let at = current.at
                let e = try parseExpression()
                try expect(.exprClose)
                nodes.append(.output(e, at))
            case .stmtOpen:
                advance()
                let at = current.at
                let tag = try expectName()
                if enders.contains(tag) { return (nodes, (tag, at)) }
                nodes.append(try parseStatement(tag, at: at))
            default:
                throw .syntax("unexpected \(describe(t.kind))", at: t.at)
            }
        }
    }

    private mutating func parseStatement(_ tag: String, at: JinjaPosition) throws(JinjaError) -> JinjaNode {
        switch tag {
        case "if":
            var branches: [(JinjaExpr, [JinjaNode])] = []
            var condition = try parseExpression()
            try expect(.stmtClose)
            while true {
                let (body, end) = try parseBody(until: ["elif", "else", "endif"])
                branches.append((condition, body))
                guard let end else { throw .syntax("unterminated 'if'", at: at) }
                switch end.0 {
                case "elif":
                    condition = try parseExpression()
                    try expect(.stmtClose)
                case "else":
                    try expect(.stmtClose)
                    let (otherwise, _) = try parseBody(until: ["endif"])
                    try expect(.stmtClose)
                    return .ifChain(branches, otherwise: otherwise)
                default:
                    try expect(.stmtClose)
                    return .ifChain(branches, otherwise: [])
                }
            }
        case "for":
            var targets = [try expectName()]
            while isOp(",") { advance(); targets.append(try expectName()) }
            guard isName("in") else { throw .syntax("expected 'in' in 'for', found \(describe(current.kind))", at: current.at) }
            advance()
            let iterable = try parseExpression(allowConditional: false)
            var filter: JinjaExpr?
            if isName("if") { advance(); filter = try parseExpression(allowConditional: false) }
            if isName("recursive") { throw .unsupported("recursive 'for' loop", at: current.at) }
            try expect(.stmtClose)
            let (body, end) = try parseBody(until: ["else", "endfor"])
            var otherwise: [JinjaNode] = []
            if end?.0 == "else" {
                try expect(.stmtClose)
                otherwise = try parseBody(until: ["endfor"]).0
            }
            try expect(.stmtClose)
            return .forLoop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, at)
        case "set":
            let name = try expectName()
            if isOp(".") {
                advance()
                let attribute = try expectName()
                try expect(.op("="))
                let value = try parseExpression()
                try expect(.stmtClose)
                return .setAttribute(object: name, attribute: attribute, value, at)
            }
            if isOp(",") { throw .unsupported("tuple assignment in 'set'", at: current.at) }
            guard isOp("=") else { throw .unsupported("block 'set' (without '=')", at: current.at) }
            advance()
            let value = try parseExpression()
            try expect(.stmtClose)
            return .set(name: name, value)
        case "elif", "else", "endif", "endfor", "endset":
            throw .syntax("unexpected '\(tag)'", at: at)
        default:
            throw .unsupported("tag '\(tag)'", at: at)
        }
    }

    // MARK: Expressions

    mutating func parseExpression(allowConditional: Bool = true) throws(JinjaError) -> JinjaExpr {
        try enter(current.at); defer { leave() }
        let e = try parseOr()
        guard allowConditional, isName("if") else { return e }
        advance()
        let condition = try parseOr()
        var otherwise: JinjaExpr?
        if isName("else") { advance(); otherwise = try parseExpression() }
        return .conditional(then: e, condition: condition, otherwise: otherwise)
    }

    private mutating func parseOr() throws(JinjaError) -> JinjaExpr {
        var e = try parseAnd()
        while isName("or") { advance(); e = .or(e, try parseAnd()) }
        return e
    }

    private mutating func parseAnd() throws(JinjaError) -> JinjaExpr {
        var e = try parseNot()
        while isName("and") { advance(); e = .and(e, try parseNot()) }
        return e
    }

    private mutating func parseNot() throws(JinjaError) -> JinjaExpr {
        if isName("not") {
            try enter(current.at); defer { leave() }
            advance()
            return .not(try parseNot())
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws(JinjaError) -> JinjaExpr {
        let at = current.at
        let first = try parseMath1()
        var ops: [(String, JinjaExpr)] = []
        while true {
            if case .op(let o) = current.kind, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                advance(); ops.append((o, try parseMath1()))
            } else if isName("in") {
                advance(); ops.append(("in", try parseMath1()))
            } else if isName("not"), k + 1 < tokens.count, tokens[k + 1].kind == .name("in") {
                advance(); advance(); ops.append(("not in", try parseMath1()))
            } else {
                break
            }
        }
        return ops.isEmpty ? first : .compare(first, ops, at)
    }

    // The left-associative binary levels, loosest first, as jinja2's parser orders them.
    private mutating func parseMath1() throws(JinjaError) -> JinjaExpr {
        try leftAssociative(["+", "-"]) { p throws(JinjaError) in try p.parseConcat() }
    }

    private mutating func parseConcat() throws(JinjaError) -> JinjaExpr {
        try leftAssociative(["~"]) { p throws(JinjaError) in try p.parseMath2() }
    }

    private mutating func parseMath2() throws(JinjaError) -> JinjaExpr {
        try leftAssociative(["*", "/", "//", "%"]) { p throws(JinjaError) in try p.parsePow() }
    }

    private mutating func parsePow() throws(JinjaError) -> JinjaExpr {
        try leftAssociative(["**"]) { p throws(JinjaError) in try p.parseUnary() }
    }

    /// `operand (op operand)*` for the operators `ops`, folded to the left: a - b - c is (a - b) - c.
    private mutating func leftAssociative(_ ops: Set<String>,
                                          _ operand: (inout JinjaParser) throws(JinjaError) -> JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var e = try operand(&self)
        while case .op(let o) = current.kind, ops.contains(o) {
            let at = current.at
            advance()
            e = .binary(o, e, try operand(&self), at)
        }
        return e
    }

    private mutating func parseUnary(withFilter: Bool = true) throws(JinjaError) -> JinjaExpr {
        let at = current.at
        try enter(at); defer { leave() }
        var e: JinjaExpr
        if isOp("-") {
            advance(); e = .negate(try parseUnary(withFilter: false), at)
        } else if isOp("+") {
            advance(); e = try parseUnary(withFilter: false)
        } else {
            e = try parsePrimary()
        }
        e = try parsePostfix(e)
        return withFilter ? try parseFilterAndTest(e) : e
    }

    private mutating func parsePrimary() throws(JinjaError) -> JinjaExpr {
        let t = current
        switch t.kind {
        case .name(let n):
            advance()
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n, t.at)
            }
        case .string(let s):
            advance()
            var text = s
            // Adjacent literals concatenate, as in Python.
            while case .string(let more) = current.kind { text += more; advance() }
            return .literal(.string(text))
        case .integer(let n): advance(); return .literal(.int(n))
        case .float(let d): advance(); return .literal(.double(d))
        case .op("("):
            advance()
            if isOp(")") { advance(); return .list([]) }
            let e = try parseExpression()
            if isOp(",") {
                var items = [e]
                while isOp(",") { advance(); if isOp(")") { break }; items.append(try parseExpression()) }
                try expect(.op(")"))
                return .list(items)
            }
            try expect(.op(")"))
            return e
        case .op("["):
            advance()
            var items: [JinjaExpr] = []
            while !isOp("]") {
                items.append(try parseExpression())
                if !isOp(",") { break }
                advance()
            }
            try expect(.op("]"))
            return .list(items)
        case .op("{"):
            advance()
            var pairs: [(JinjaExpr, JinjaExpr)] = []
            while !isOp("}") {
                let key = try parseExpression()
                try expect(.op(":"))
                pairs.append((key, try parseExpression()))
                if !isOp(",") { break }
                advance()
            }
            try expect(.op("}"))
            return .dict(pairs, t.at)
        default:
            throw .syntax("unexpected \(describe(t.kind)) in expression", at: t.at)
        }
    }

    private mutating func parsePostfix(_ base: JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var e = base
        while true {
            let at = current.at
            if isOp(".") {
                advance()
                switch current.kind {
                case .name(let n): advance(); e = .attribute(e, n, at)
                case .integer(let n): advance(); e = .item(e, .literal(.int(n)), at)
                default: throw .syntax("expected an attribute name after '.', found \(describe(current.kind))", at: current.at)
                }
            } else if isOp("[") {
                advance()
                e = try parseSubscript(e, at: at)
            } else if isOp("(") {
                let (args, kwargs) = try parseArguments()
                e = .call(e, args: args, kwargs: kwargs, at)
            } else {
                return e
            }
        }
    }

    /// `[i]` or a slice `[a:b:c]`, any part omitted; the `[` is consumed.
    private mutating func parseSubscript(_ base: JinjaExpr, at: JinjaPosition) throws(JinjaError) -> JinjaExpr {
        var parts: [JinjaExpr?] = [nil]
        var colons = 0
        while !isOp("]") {
            if isOp(":") {
                colons += 1
                guard colons <= 2 else { throw .syntax("too many ':' in slice", at: current.at) }
                parts.append(nil); advance()
            } else {
                guard parts[parts.count - 1] == nil else { throw .syntax("expected ']' or ':', found \(describe(current.kind))", at: current.at) }
                parts[parts.count - 1] = try parseExpression()
            }
        }
        advance()
        if colons == 0 {
            guard let index = parts[0] else { throw .syntax("empty subscript", at: at) }
            return .item(base, index, at)
        }
        while parts.count < 3 { parts.append(nil) }
        return .slice(base, parts[0], parts[1], parts[2], at)
    }

    /// `( args, name=value )`; the current token is `(`.
    private mutating func parseArguments() throws(JinjaError) -> ([JinjaExpr], [(String, JinjaExpr)]) {
        try expect(.op("("))
        var args: [JinjaExpr] = []
        var kwargs: [(String, JinjaExpr)] = []
        while !isOp(")") {
            if case .name(let n) = current.kind, k + 1 < tokens.count, tokens[k + 1].kind == .op("=") {
                advance(); advance()
                kwargs.append((n, try parseExpression()))
            } else {
                guard kwargs.isEmpty else { throw .syntax("positional argument after keyword argument", at: current.at) }
                args.append(try parseExpression())
            }
            if !isOp(",") { break }
            advance()
        }
        try expect(.op(")"))
        return (args, kwargs)
    }

    private mutating func parseFilterAndTest(_ base: JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var e = base
        while true {
            let at = current.at
            if isOp("|") {
                advance()
                var name = try expectName()
                while isOp(".") { advance(); name += "." + (try expectName()) }
                var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
                if isOp("(") { (args, kwargs) = try parseArguments() }
                e = .filter(e, name: name, args: args, kwargs: kwargs, at)
            } else if isName("is") {
                advance()
                var negated = false
                if isName("not") { advance(); negated = true }
                let name = try expectName()
                var args: [JinjaExpr] = []
                if isOp("(") {
                    args = try parseArguments().0
                } else {
                    switch current.kind {
                    case .string, .integer, .float, .op("["), .op("{"):
                        args = [try parsePrimary()]
                    case .name(let n) where !["else", "or", "and", "if", "in", "not", "is"].contains(n):
                        args = [try parsePostfix(try parsePrimary())]
                    default: break
                    }
                }
                e = .test(e, name: name, args: args, negated: negated, at)
            } else if isOp("(") {
                let (args, kwargs) = try parseArguments()
                e = .call(e, args: args, kwargs: kwargs, at)
            } else {
                return e
            }
        }
    }
}
