/// Wraps a user prompt in the model's chat format.
///
/// GGUF carries a Jinja template. For the ChatML and Gemma families FlexRun recognises the
/// template by its markers and renders that family's fixed layout, including a default system
/// message the template inserts by itself (SmolLM2's "You are a helpful AI assistant named
/// SmolLM…"); those layouts are tested byte for byte against the templates and stay first, so
/// the prompts of models that already worked do not move. Any other template that FlexRun's
/// Jinja subset (``JinjaTemplate``) parses and renders is run through the interpreter
/// (``ChatTemplate/jinja(source:eosToken:)``): Llama 3, Mistral and the like.
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
    /// A template of another family, rendered by the Jinja interpreter. Kept as source (parsing
    /// is cheap next to a forward pass) so the enum stays `Equatable` and `Sendable`. The EOS
    /// text is the model's: some templates close user turns with it (Zephyr's).
    case jinja(source: String, eosToken: String)

    /// Detects the family from `tokenizer.chat_template`; nil when absent, or when the template
    /// is neither ChatML nor Gemma and the interpreter cannot parse it or render a one-user-turn
    /// conversation with it. `eosToken` is the model's EOS text, for templates that print it.
    public init?(jinja: String?, eosToken: String = "") {
        guard let t = jinja else { return nil }
        if t.contains("<|im_start|>") {
            self = .chatML(defaultSystem: ChatTemplate.literalSystem(in: t))
        } else if t.contains("<start_of_turn>") {
            // Gemma 2's template refuses a system message outright; there it is folded in as Gemma 3 does.
            self = .gemma(systemSeparator: ChatTemplate.gemmaSystemSeparator(in: t) ?? "\n\n")
        } else if let template = try? JinjaTemplate(t),
                  (try? Self.render(template, user: "Hello", system: nil, eosToken: eosToken)) != nil {
            self = .jinja(source: t, eosToken: eosToken)
        } else {
            return nil
        }
    }

    /// One user turn (after an optional system turn) and the generation prompt. BOS is empty:
    /// the tokenizer adds it (see the type's comment); EOS only closes assistant turns, which a
    /// single-turn prompt does not have, but some templates print it after each user turn too.
    static func render(_ template: JinjaTemplate, user: String, system: String?, eosToken: String) throws(JinjaError) -> String {
        var messages: [(role: String, content: String)] = []
        if let system { messages.append((role: "system", content: system)) }
        messages.append((role: "user", content: user))
        return try template.render(messages: messages, addGenerationPrompt: true, bosToken: "", eosToken: eosToken)
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
        case .jinja(let source, let eos):
            // `init?(jinja:)` proved the source parses and renders one user turn. A template that
            // refuses a system role (Mistral's alternation check) gets the system text folded
            // into the user turn, as Mistral's later templates do themselves.
            guard let template = try? JinjaTemplate(source) else { return user }
            if let text = try? Self.render(template, user: user, system: system, eosToken: eos) { return text }
            if let system, let text = try? Self.render(template, user: system + "\n\n" + user, system: nil, eosToken: eos) { return text }
            return (try? Self.render(template, user: user, system: nil, eosToken: eos)) ?? user
        }
    }

    /// A whole conversation in the template, with the assistant's generation prompt when asked:
    /// what `flexrun chat` and `flexrun serve` send. The ChatML and Gemma layouts are the
    /// families' templates written out (the same bytes as the interpreter's rendering of SmolLM2's,
    /// Qwen2's and Gemma 3's templates, tested); any other template runs through the interpreter.
    /// Throws ``EngineError/template(_:)`` for a conversation the template refuses (Gemma's and
    /// Mistral's alternation rules) or a construct the interpreter lacks.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool = true) throws(EngineError) -> String {
        switch self {
        case .chatML(let defaultSystem):
            var s = ""
            if messages.first?.role != "system", let sys = defaultSystem { s += "<|im_start|>system\n\(sys)<|im_end|>\n" }
            for m in messages { s += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
            if addGenerationPrompt { s += "<|im_start|>assistant\n" }
            return s
        case .gemma(let separator):
            var rest = messages[...]
            var prefix = ""
            if let first = rest.first, first.role == "system" {
                prefix = first.content + separator
                rest = rest.dropFirst()
            }
            var s = ""
            for (i, m) in rest.enumerated() {
                guard (m.role == "user") == (i % 2 == 0), m.role == "user" || m.role == "assistant" else {
                    throw .template("Conversation roles must alternate user/assistant/user/assistant/...")
                }
                let role = m.role == "assistant" ? "model" : m.role
                s += "<start_of_turn>\(role)\n\(i == 0 ? prefix : "")\(Self.trimmed(m.content))<end_of_turn>\n"
            }
            if addGenerationPrompt { s += "<start_of_turn>model\n" }
            return s
        case .jinja(let source, let eos):
            do {
                let template = try JinjaTemplate(source)
                return try template.render(messages: messages.map { (role: $0.role, content: $0.content) },
                                           addGenerationPrompt: addGenerationPrompt, bosToken: "", eosToken: eos)
            } catch { throw .template(error.description) }
        }
    }

    /// The text the template closes an assistant turn with, when it starts with a marker
    /// (`<|im_end|>`, `<end_of_turn>`, `<|eot_id|>`, `</s>`): the model's stop token for chat,
    /// whatever the file's EOS says. Found by rendering a two-turn conversation and reading what
    /// follows the assistant's text up to the first whitespace.
    public var assistantTerminator: String? {
        let reply = "FLEXRUN-REPLY-MARKER"
        guard let text = try? render(messages: [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: reply)],
                                     addGenerationPrompt: false),
              let at = text.range(of: reply) else { return nil }
        let after = text[at.upperBound...].prefix { !$0.isWhitespace }
        return after.isEmpty ? nil : String(after)
    }

    /// Jinja's `trim` filter: Python's `str.strip()`, whose whitespace also counts U+001C–U+001F.
    static func trimmed(_ s: String) -> String {
        func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace || (0x1C...0x1F).contains(c.value) }
        let u = s.unicodeScalars
        guard let first = u.firstIndex(where: { !isSpace($0) }), let last = u.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(u[first...last])
    }
}

/// One turn of a conversation: `role` is "system", "user" or "assistant" (what templates expect).
public struct ChatMessage: Sendable, Equatable, Hashable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
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
