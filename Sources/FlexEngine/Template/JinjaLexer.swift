/// One lexical unit of a template: literal text, a tag delimiter or a token inside a tag.
enum JinjaTokenKind: Equatable {
    case text(String)
    case exprOpen, exprClose, stmtOpen, stmtClose
    case name(String)
    case string(String)
    case integer(Int)
    case float(Double)
    case op(String)
    case end
}

struct JinjaToken {
    var kind: JinjaTokenKind
    var at: JinjaPosition
}

/// Splits template source into tokens, applying Jinja's whitespace control as jinja2's lexer
/// does: `{%-`/`-%}` strip all whitespace on that side; with `trimBlocks` the first newline after
/// a block or comment tag goes; with `lstripBlocks` spaces and tabs from the line start to a block
/// or comment tag go (`{%+` keeps them). HF's `apply_chat_template` turns both options on, and
/// chat templates are written for that, so they are the defaults.
struct JinjaLexer {
    private let src: [UInt8]
    private var i = 0
    private var tokens: [JinjaToken] = []
    private let trimBlocks: Bool
    private let lstripBlocks: Bool
    // Incremental line/column tracking: offsets only move forward.
    private var posOffset = 0, posLine = 1, posColumn = 1

    /// Tokenizes `source`. jinja2 normalises newlines to `\n` and drops one trailing newline
    /// (`keep_trailing_newline=False`), so this does too.
    static func tokenize(_ source: String, trimBlocks: Bool = true, lstripBlocks: Bool = true) throws(JinjaError) -> [JinjaToken] {
        var text = source.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
        if text.hasSuffix("\n") { text.removeLast() }
        var lexer = JinjaLexer(src: Array(text.utf8), trimBlocks: trimBlocks, lstripBlocks: lstripBlocks)
        try lexer.run()
        return lexer.tokens
    }

    private init(src: [UInt8], trimBlocks: Bool, lstripBlocks: Bool) {
        self.src = src; self.trimBlocks = trimBlocks; self.lstripBlocks = lstripBlocks
    }

    private mutating func position(_ offset: Int) -> JinjaPosition {
        while posOffset < offset && posOffset < src.count {
            if src[posOffset] == UInt8(ascii: "\n") { posLine += 1; posColumn = 1 } else { posColumn += 1 }
            posOffset += 1
        }
        return JinjaPosition(line: posLine, column: posColumn)
    }

    private func byte(_ k: Int) -> UInt8? { k < src.count ? src[k] : nil }

    private mutating func run() throws(JinjaError) {
        var textStart = 0
        var stripNextText = false
        while true {
            // Find the next `{{`, `{%` or `{#`.
            var open = textStart
            var kind: UInt8 = 0
            while open + 1 < src.count {
                if src[open] == UInt8(ascii: "{") {
                    let n = src[open + 1]
                    if n == UInt8(ascii: "{") || n == UInt8(ascii: "%") || n == UInt8(ascii: "#") { kind = n; break }
                }
                open += 1
            }
            if kind == 0 { open = src.count }
            let marker = kind == 0 ? nil : byte(open + 2)
            let isBlock = kind == UInt8(ascii: "%") || kind == UInt8(ascii: "#")
            var text = String(decoding: src[textStart..<open], as: UTF8.self)
            var atLineStart = textStart == 0 || src[textStart - 1] == UInt8(ascii: "\n")
            if stripNextText {
                let stripped = Self.lstripped(text)
                if stripped.count != text.count {
                    let removed = text.unicodeScalars.count - stripped.unicodeScalars.count
                    atLineStart = text.unicodeScalars.prefix(removed).last == "\n"
                }
                text = stripped
                stripNextText = false
            }
            if kind != 0 {
                if marker == UInt8(ascii: "-") {
                    text = Self.rstripped(text)
                } else if marker != UInt8(ascii: "+") && isBlock && lstripBlocks {
                    // Only spaces and tabs between the line start and the tag: drop them.
                    let u = text.unicodeScalars
                    let lineStart = u.lastIndex(of: "\n").map { u.index(after: $0) }
                    if lineStart != nil || atLineStart {
                        let from = lineStart ?? u.startIndex
                        if u[from...].allSatisfy({ $0 == " " || $0 == "\t" }) {
                            text = String(String.UnicodeScalarView(u[..<from]))
                        }
                    }
                }
            }
            if !text.isEmpty { tokens.append(JinjaToken(kind: .text(text), at: position(textStart))) }
            if kind == 0 { break }

            let at = position(open)
            i = open + 2
            if marker == UInt8(ascii: "-") || marker == UInt8(ascii: "+") { i += 1 }
            var rightStrip = false, rightKeep = false
            if kind == UInt8(ascii: "#") {
                // A comment: skip to `#}`.
                var j = i
                while j + 1 < src.count, !(src[j] == UInt8(ascii: "#") && src[j + 1] == UInt8(ascii: "}")) { j += 1 }
                guard j + 1 < src.count else { throw .syntax("unterminated comment '{#'", at: at) }
                rightStrip = j > i && src[j - 1] == UInt8(ascii: "-")
                rightKeep = j > i && src[j - 1] == UInt8(ascii: "+")
                i = j + 2
            } else {
                let isExpr = kind == UInt8(ascii: "{")
                tokens.append(JinjaToken(kind: isExpr ? .exprOpen : .stmtOpen, at: at))
                (rightStrip, rightKeep) = try lexTag(expression: isExpr, openedAt: at)
            }
            if rightStrip {
                stripNextText = true
            } else if isBlock && trimBlocks && !rightKeep && byte(i) == UInt8(ascii: "\n") {
                i += 1
            }
            textStart = i
        }
        tokens.append(JinjaToken(kind: .end, at: position(src.count)))
    }

    /// Lexes the inside of `{{ … }}` or `{% … %}` up to and including its close; returns whether
    /// the close carried `-` (strip) or `+` (keep).
    private mutating func lexTag(expression: Bool, openedAt: JinjaPosition) throws(JinjaError) -> (Bool, Bool) {
        let closer = expression ? UInt8(ascii: "}") : UInt8(ascii: "%")
        let tagName = expression ? "'{{'" : "'{%'"
        var braceDepth = 0
        while true {
            while let c = byte(i), c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { i += 1 }
            guard let c = byte(i) else { throw .syntax("unterminated \(tagName) tag opened at \(openedAt)", at: openedAt) }
            let at = position(i)
            // The close: `}}` / `%}`, optionally after `-` or `+`.
            if braceDepth == 0 {
                for (prefix, result) in [(0, (false, false)), (1, (true, false)), (1, (false, true))] {
                    let start = i + prefix
                    if prefix == 1 {
                        let want = result.0 ? UInt8(ascii: "-") : UInt8(ascii: "+")
                        guard c == want else { continue }
                    }
                    if byte(start) == closer && byte(start + 1) == UInt8(ascii: "}") {
                        tokens.append(JinjaToken(kind: expression ? .exprClose : .stmtClose, at: at))
                        i = start + 2
                        return result
                    }
                }
            }
            if Self.isNameStart(c) {
                let s = i
                while let d = byte(i), Self.isNameStart(d) || (d >= 0x30 && d <= 0x39) { i += 1 }
                tokens.append(JinjaToken(kind: .name(String(decoding: src[s..<i], as: UTF8.self)), at: at))
            } else if c >= 0x30 && c <= 0x39 {
                tokens.append(JinjaToken(kind: try lexNumber(at: at), at: at))
            } else if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") {
                tokens.append(JinjaToken(kind: .string(try lexString(quote: c, at: at)), at: at))
            } else {
                let two = byte(i + 1).map { String(decoding: [c, $0], as: UTF8.self) } ?? ""
                if ["//", "**", "==", "!=", "<=", ">="].contains(two) {
                    tokens.append(JinjaToken(kind: .op(two), at: at)); i += 2
                } else if "+-*/%~<>=()[]{},.:|".utf8.contains(c) {
                    if c == UInt8(ascii: "{") { braceDepth += 1 }
                    if c == UInt8(ascii: "}") { braceDepth -= 1 }
                    tokens.append(JinjaToken(kind: .op(String(UnicodeScalar(c))), at: at)); i += 1
                } else {
                    let scalar = String(decoding: src[i..<min(i + 4, src.count)], as: UTF8.self).unicodeScalars.first.map(String.init) ?? "?"
                    throw .syntax("unexpected character '\(scalar)' in \(tagName) tag", at: at)
                }
            }
        }
    }

    private static func isNameStart(_ c: UInt8) -> Bool {
        (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == UInt8(ascii: "_")
    }

    private mutating func lexNumber(at: JinjaPosition) throws(JinjaError) -> JinjaTokenKind {
        let s = i
        var isFloat = false
        func digits(_ k: inout Int, _ src: [UInt8]) {
            while k < src.count, (src[k] >= 0x30 && src[k] <= 0x39) || src[k] == UInt8(ascii: "_") { k += 1 }
        }
        digits(&i, src)
        if byte(i) == UInt8(ascii: "."), let d = byte(i + 1), d >= 0x30 && d <= 0x39 {
            isFloat = true; i += 1; digits(&i, src)
        }
        if let e = byte(i), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            var k = i + 1
            if let sign = byte(k), sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { k += 1 }
            if let d = byte(k), d >= 0x30 && d <= 0x39 { isFloat = true; i = k; digits(&i, src) }
        }
        let text = String(decoding: src[s..<i], as: UTF8.self).replacingOccurrences(of: "_", with: "")
        if isFloat {
            guard let d = Double(text) else { throw .syntax("bad number '\(text)'", at: at) }
            return .float(d)
        }
        guard let n = Int(text) else { throw .syntax("integer '\(text)' out of range", at: at) }
        return .integer(n)
    }

    /// A string literal with Python's escapes (jinja2 decodes them with `unicode-escape`);
    /// an unknown escape keeps its backslash, as Python does.
    private mutating func lexString(quote: UInt8, at: JinjaPosition) throws(JinjaError) -> String {
        i += 1
        var out = String.UnicodeScalarView()
        var s = i
        func flush(_ to: Int, _ src: [UInt8], _ out: inout String.UnicodeScalarView) {
            out.append(contentsOf: String(decoding: src[s..<to], as: UTF8.self).unicodeScalars)
        }
        while true {
            guard let c = byte(i) else { throw .syntax("unterminated string literal", at: at) }
            if c == quote { flush(i, src, &out); i += 1; return String(out) }
            guard c == UInt8(ascii: "\\") else { i += 1; continue }
            flush(i, src, &out)
            guard let e = byte(i + 1) else { throw .syntax("unterminated string literal", at: at) }
            i += 2
            switch e {
            case UInt8(ascii: "n"): out.append("\n")
            case UInt8(ascii: "t"): out.append("\t")
            case UInt8(ascii: "r"): out.append("\r")
            case UInt8(ascii: "\\"): out.append("\\")
            case UInt8(ascii: "'"): out.append("'")
            case UInt8(ascii: "\""): out.append("\"")
            case UInt8(ascii: "a"): out.append("\u{07}")
            case UInt8(ascii: "b"): out.append("\u{08}")
            case UInt8(ascii: "f"): out.append("\u{0C}")
            case UInt8(ascii: "v"): out.append("\u{0B}")
            case UInt8(ascii: "\n"): break
            case UInt8(ascii: "x"), UInt8(ascii: "u"), UInt8(ascii: "U"):
                let n = e == UInt8(ascii: "x") ? 2 : e == UInt8(ascii: "u") ? 4 : 8
                guard i + n <= src.count, let v = UInt32(String(decoding: src[i..<i + n], as: UTF8.self), radix: 16),
                      let scalar = Unicode.Scalar(v) else { throw .syntax("bad \\\(UnicodeScalar(e)) escape in string literal", at: at) }
                out.append(scalar); i += n
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var v = UInt32(e - 0x30), k = 0
                while k < 2, let d = byte(i), d >= 0x30 && d <= 0x37 { v = v * 8 + UInt32(d - 0x30); i += 1; k += 1 }
                if let scalar = Unicode.Scalar(v) { out.append(scalar) }
            default:
                out.append("\\"); i -= 1
            }
            s = i
        }
    }

    /// Python's `str.isspace()`: Unicode White_Space plus the separators U+001C–U+001F.
    static func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace || (0x1C...0x1F).contains(c.value) }

    static func lstripped(_ s: String) -> String {
        let u = s.unicodeScalars
        guard let first = u.firstIndex(where: { !isSpace($0) }) else { return "" }
        return String(String.UnicodeScalarView(u[first...]))
    }

    static func rstripped(_ s: String) -> String {
        let u = s.unicodeScalars
        guard let last = u.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(String.UnicodeScalarView(u[...last]))
    }
}
