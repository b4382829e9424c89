/// Wraps a user prompt in the model's chat format.
///
/// GGUF carries a Jinja template; FlexRun does not run Jinja. It recognises the template family
/// by its markers and renders that family's fixed layout, including a default system message
/// the template inserts by itself (SmolLM2's "You are a helpful AI assistant named SmolLM…").
/// BOS is not part of the text: the tokenizer adds it when the model asks for it, as llama.cpp
/// does (a template's leading `{{ bos_token }}` would otherwise put it there twice).
public enum ChatTemplate: Sendable, Equatable {
    /// `<|im_start|>role\ncontent<|im_end|>\n`, generation prompt `<|im_start|>assistant\n`.
    case chatML(defaultSystem: String?)
    /// Gemma's turns: `<start_of_turn>user\n{user}<end_of_turn>\n`, generation prompt
    /// `<start_of_turn>model\n`. Gemma has no system role: the template puts a system message at
    /// the start of the first user turn, followed by `systemSeparator` (a blank line in Gemma 3's
    /// template), and trims the user's text.
    case gemma(systemSeparator: String)

    /// Detects the family from `tokenizer.chat_template`; nil when unknown or absent.
    public init?(jinja: String?) {
        guard let t = jinja else { return nil }
        if t.contains("<|im_start|>") {
            self = .chatML(defaultSystem: ChatTemplate.literalSystem(in: t))
        } else if t.contains("<start_of_turn>") {
            // Gemma 2's template refuses a system message outright; there it is folded in as Gemma 3 does.
            self = .gemma(systemSeparator: ChatTemplate.gemmaSystemSeparator(in: t) ?? "\n\n")
        } else {
            return nil
        }
    }

    /// The string literal Gemma's template appends to a system message:
    /// `set first_user_prefix = messages[0]['content'] + '…'`.
    static func gemmaSystemSeparator(in template: String) -> String? {
        guard let at = template.range(of: "first_user_prefix = messages[0]['content'] + ") else { return nil }
        var rest = template[at.upperBound...].unicodeScalars.makeIterator()
        guard let quote = rest.next(), quote == "'" || quote == "\"" else { return nil }
        var literal = String.UnicodeScalarView()
        while let c = rest.next() {
            if c == quote { return String(literal) }
            guard c == "\\" else { literal.append(c); continue }
            // Jinja string escapes, as Python's.
            switch rest.next() {
            case "n": literal.append("\n")
            case "t": literal.append("\t")
            case "r": literal.append("\r")
            case let e?: literal.append(e)
            case nil: return nil
            }
        }
        return nil
    }

    /// A system message written literally into the template, if any.
    static func literalSystem(in template: String) -> String? {
        let marker = "<|im_start|>system\n"
        guard let start = template.range(of: marker) else { return nil }
        let rest = template[start.upperBound...]
        guard let end = rest.range(of: "<|im_end|>") else { return nil }
        let text = String(rest[..<end.lowerBound])
        // A Jinja expression means the system text comes from the messages, not the template.
        return text.contains("{{") || text.contains("'") || text.contains("+") ? nil : text
    }

    /// The text for one user turn followed by the assistant's generation prompt.
    public func render(user: String, system: String? = nil) -> String {
        switch self {
        case .chatML(let defaultSystem):
            var s = ""
            if let sys = system ?? defaultSystem { s += "<|im_start|>system\n\(sys)<|im_end|>\n" }
            s += "<|im_start|>user\n\(user)<|im_end|>\n<|im_start|>assistant\n"
            return s
        case .gemma(let separator):
            let prefix = system.map { $0 + separator } ?? ""
            return "<start_of_turn>user\n\(prefix)\(Self.trimmed(user))<end_of_turn>\n<start_of_turn>model\n"
        }
    }

    /// Jinja's `trim` filter: Python's `str.strip()`, whose whitespace also counts U+001C–U+001F.
    static func trimmed(_ s: String) -> String {
        func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace || (0x1C...0x1F).contains(c.value) }
        let u = s.unicodeScalars
        guard let first = u.firstIndex(where: { !isSpace($0) }), let last = u.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(u[first...last])
    }
}

extension String {
    func range(of needle: String) -> Range<String.Index>? { self[...].range(of: needle) }
}

extension Substring {
    /// First occurrence of `needle`, compared scalar by scalar (not by grapheme), so a special
    /// token is found even when the text after it starts with a combining mark, as in llama.cpp.
    func range(of needle: String) -> Range<Substring.Index>? {
        let n = Array(needle.unicodeScalars)
        guard let first = n.first else { return nil }
        let u = unicodeScalars
        var i = u.startIndex
        while i < u.endIndex {
            if u[i] == first {
                var j = i, k = 0
                while k < n.count, j < u.endIndex, u[j] == n[k] { j = u.index(after: j); k += 1 }
                if k == n.count { return i..<j }
            }
            i = u.index(after: i)
        }
        return nil
    }
}
