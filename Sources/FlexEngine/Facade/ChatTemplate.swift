/// Wraps a user prompt in the model's chat format.
///
/// GGUF carries a Jinja template; FlexRun does not run Jinja. It recognises the template family
/// by its markers and renders that family's fixed layout, including a default system message
/// the template inserts by itself (SmolLM2's "You are a helpful AI assistant named SmolLM…").
public enum ChatTemplate: Sendable, Equatable {
    /// `<|im_start|>role\ncontent<|im_end|>\n`, generation prompt `<|im_start|>assistant\n`.
    case chatML(defaultSystem: String?)

    /// Detects the family from `tokenizer.chat_template`; nil when unknown or absent.
    public init?(jinja: String?) {
        guard let t = jinja else { return nil }
        if t.contains("<|im_start|>") {
            self = .chatML(defaultSystem: ChatTemplate.literalSystem(in: t))
        } else {
            return nil
        }
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
        }
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
