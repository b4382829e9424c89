import Foundation
import Testing
@testable import FlexEngine

/// The Jinja interpreter against jinja2: every (template, conversation) in
/// `Fixtures/templates/expected.json` (written by `Tools/template_fixtures.py` with HF's settings)
/// must render to the same bytes, or throw where jinja2 raised.
@Suite struct JinjaTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/templates")

    struct Case: CustomTestStringConvertible, Sendable {
        let template: String
        let name: String
        let context: [String: JinjaValue]
        let expected: String?
        let error: String?
        var testDescription: String { "\(template)/\(name)" }
    }

    static func value(_ any: Any) -> JinjaValue {
        switch any {
        case let s as String: return .string(s)
        case let b as Bool: return .bool(b)
        case let a as [Any]: return .list(a.map(value))
        case let d as [String: Any]:
            var out = JinjaDict()
            // Fixture messages are role/content; keep that order, as Python's dicts do.
            for k in ["role", "content"] where d[k] != nil { out[k] = d[k].map(value) }
            for k in d.keys.sorted() where out[k] == nil { out[k] = d[k].map(value) }
            return .dict(out)
        default: return .none
        }
    }

    static let cases: [Case] = {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent("expected.json")),
              let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [] }
        var out: [Case] = []
        for template in root.keys.sorted() {
            guard let model = root[template] as? [String: Any], let list = model["cases"] as? [[String: Any]] else { continue }
            for c in list {
                let context: [String: JinjaValue] = [
                    "messages": value(c["messages"] ?? []),
                    "add_generation_prompt": .bool(c["add_generation_prompt"] as? Bool ?? false),
                    "bos_token": value(model["bos_token"] ?? ""), "eos_token": value(model["eos_token"] ?? ""),
                ]
                out.append(Case(template: template, name: c["name"] as? String ?? "?", context: context,
                                expected: c["expected"] as? String, error: c["error"] as? String))
            }
        }
        return out
    }()

    static func source(_ name: String) throws -> String {
        try String(contentsOf: directory.appendingPathComponent(name + ".jinja"), encoding: .utf8)
    }

    @Test func fixturesLoaded() {
        // Six templates (five families and Zephyr), seven conversations each; some raise.
        #expect(Self.cases.count == 42)
        #expect(Self.cases.contains { $0.error != nil })
    }

    @Test(arguments: cases) func rendersAsJinja2(_ c: Case) throws {
        let template = try JinjaTemplate(Self.source(c.template))
        if let expected = c.expected {
            #expect(try template.render(c.context) == expected)
        } else {
            #expect(throws: JinjaError.raised(c.error ?? "")) { try template.render(c.context) }
        }
    }

    static func render(_ source: String, _ context: [String: JinjaValue] = [:]) throws -> String {
        try JinjaTemplate(source).render(context)
    }

    @Test func whitespaceControl() throws {
        #expect(try Self.render("a  {{- 'b' -}}  \n c") == "abc")
        // trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before it too.
        #expect(try Self.render("x\n  {% if true %}\n  y\n  {% endif %}\nz") == "x\n  y\nz")
        // `{{ }}` is not a block: neither trimmed nor lstripped.
        #expect(try Self.render("  {{ 1 }}\nq") == "  1\nq")
        // `+` keeps the indentation; comments strip like blocks.
        #expect(try Self.render("  {%+ if true %}k{% endif %}") == "  k")
        #expect(try Self.render("a\n  {# note #}\nb") == "a\nb")
        // One trailing newline of the template is dropped, as jinja2 does.
        #expect(try Self.render("t\n") == "t")
    }

    @Test func loops() throws {
        let xs: JinjaValue = .list([.string("a"), .string("b"), .string("c")])
        #expect(try Self.render("{% for x in xs %}{{ loop.index0 }}{{ x }}{% if loop.first %}F{% endif %}{% if loop.last %}L{{ loop.length }}{% endif %},{% endfor %}", ["xs": xs]) == "0aF,1b,2cL3,")
        #expect(try Self.render("{% for x in xs %}{{ x }}{% else %}empty{% endfor %}", ["xs": .list([])]) == "empty")
        #expect(try Self.render("{% for x in xs if x != 'b' %}{{ x }}{{ loop.length }}{% endfor %}", ["xs": xs]) == "a2c2")
        #expect(try Self.render("{% for k, v in d | items %}{{ k }}={{ v }};{% endfor %}", ["d": .dict(["p": .int(1), "q": .int(2)])]) == "p=1;q=2;")
        // A set inside a loop does not leak out.
        #expect(try Self.render("{% set n = 0 %}{% for x in xs %}{% set n = n + 1 %}{% endfor %}{{ n }}", ["xs": xs]) == "0")
    }

    @Test func namespaceCarriesStateOutOfLoops() throws {
        let src = "{% set ns = namespace(count=0, seen=false) %}{% for x in xs %}{% set ns.count = ns.count + x %}{% endfor %}{{ ns.count }} {{ ns.seen }}"
        #expect(try Self.render(src, ["xs": .list([.int(2), .int(3)])]) == "5 False")
        #expect(throws: JinjaError.self) { try Self.render("{% set x = 1 %}{% set x.a = 2 %}") }
    }

    @Test func expressions() throws {
        #expect(try Self.render("{{ 'a\\tb\\n' ~ (1 + 2 * 3) }}") == "a\tb\n7")
        // `~` binds tighter than `+` in jinja2: this is ('a' ~ 1) + 2, a TypeError there too.
        #expect(throws: JinjaError.self) { try Self.render("{{ 'a' ~ 1 + 2 }}") }
        #expect(try Self.render("{{ -7 % 3 }} {{ 7 // 2 }} {{ 1 / 2 }} {{ 2 ** 10 }}") == "2 3 0.5 1024")
        #expect(try Self.render("{{ [1, 2, 3][1:] }} {{ 'hello'[::-1] }} {{ xs[-1] }}", ["xs": .list([.int(4), .int(5)])]) == "[2, 3] olleh 5")
        #expect(try Self.render("{{ 'b' in 'abc' }} {{ 2 not in [1] }} {{ 1 < 2 < 3 }} {{ none is none }} {{ True and not False }}") == "True True True True True")
        #expect(try Self.render("{{ d.k }}{{ d['k'] }}{{ d.missing is defined }}{{ 'yes' if d else 'no' }}", ["d": .dict(["k": .string("v")])]) == "vvFalseyes")
        #expect(try Self.render("{{ {'a': [1, 'x'], 'b': none} }}") == "{'a': [1, 'x'], 'b': None}")
        #expect(try Self.render("{% if x is string %}s{% elif x is none %}n{% else %}o{% endif %}", ["x": .none]) == "n")
    }

    @Test func filters() throws {
        #expect(try Self.render("[{{ '  é x \\n' | trim }}]") == "[é x]")
        #expect(try Self.render("{{ 'Ab' | upper }}{{ 'Ab' | lower }}{{ xs | length }}{{ missing | default('d') }}", ["xs": .list([.int(1), .int(2)])]) == "ABab2d")
        #expect(try Self.render("{{ d | tojson }}", ["d": .dict(["a": .list([.int(1), .string("é\"")]), "b": .bool(true)])]) == "{\"a\": [1, \"é\\\"\"], \"b\": true}")
        #expect(try Self.render("{{ d | tojson(indent=2) }}", ["d": .dict(["a": .int(1)])]) == "{\n  \"a\": 1\n}")
    }

    @Test func unknownFilterIsNamed() throws {
        let t = try JinjaTemplate("line one\n{{ x | indent(4) }}")
        #expect(throws: JinjaError.unsupported("filter 'indent'", at: JinjaPosition(line: 2, column: 6))) { try t.render(["x": .string("y")]) }
        #expect(throws: JinjaError.unsupported("tag 'macro'", at: JinjaPosition(line: 1, column: 4))) { try JinjaTemplate("{% macro f() %}{% endmacro %}") }
        #expect(throws: JinjaError.unsupported("test 'lower'", at: JinjaPosition(line: 1, column: 6))) { try Self.render("{{ x is lower }}") }
        #expect(throws: JinjaError.unsupported("function 'strftime_now'", at: JinjaPosition(line: 1, column: 16))) { try Self.render("{{ strftime_now('%d') }}") }
    }

    @Test func raiseExceptionNamesTheMessage() {
        #expect(throws: JinjaError.raised("no system role")) { try Self.render("a{{ raise_exception('no system role') }}") }
    }

    @Test func malformedTemplatesThrowWithPosition() {
        #expect(throws: JinjaError.syntax("unterminated '{{' tag opened at line 2, column 3", at: JinjaPosition(line: 2, column: 3))) { try JinjaTemplate("ok\n  {{ x ") }
        #expect(throws: JinjaError.syntax("unterminated '{%' tag opened at line 1, column 1", at: JinjaPosition(line: 1, column: 1))) { try JinjaTemplate("{% if x") }
        #expect(throws: JinjaError.syntax("unterminated comment '{#'", at: JinjaPosition(line: 1, column: 2))) { try JinjaTemplate("a{# x") }
        #expect(throws: JinjaError.self) { try JinjaTemplate("{% if x %}never closed") }
        #expect(throws: JinjaError.self) { try JinjaTemplate("{% endfor %}") }
        #expect(throws: JinjaError.self) { try JinjaTemplate("{{ 'unterminated }}") }
        #expect(throws: JinjaError.self) { try JinjaTemplate("{{ a $ b }}") }
        #expect(throws: JinjaError.self) { try JinjaTemplate("{{ }}") }
    }

    /// The fixtures' templates mutated 2,000 times each (ranges cut or repeated, tag and
    /// expression fragments inserted, characters flipped; seeded): parsing and rendering either
    /// succeed or throw a `JinjaError`, never trap or hang. A GGUF's template is untrusted input.
    /// Both outcomes must occur, so the mutations reach the renderer and the error paths alike.
    /// (Run once with 30,000 mutations each and another seed: 180,000 templates, no trap.)
    @Test func mutatedTemplatesThrowOrRenderNeverTrap() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ n: Int) -> Int {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Int(state % UInt64(max(1, n)))
        }
        let fragments = ["{%", "%}", "{{", "}}", "{#", "#}", "-", "(", ")", "[", "]", "'", "\"", "|", ".", "not ", " in ",
                         "loop.", "ns.", "%", "~", "1", "range(9)", "{% for m in messages %}", "{% endfor %}", "{% if x %}",
                         "{% endif %}", "{% set ns = namespace(a=1) %}", "| tojson(indent=2)", "[::-1]", "[1:]", " is defined",
                         "messages", "0.5", "'\\u00e9'", "{%- else -%}", "\n"]
        let messages: [(role: String, content: String)] = [("system", " Be brief. "), ("user", "Hi ü\n"), ("assistant", "Hello"), ("user", "Why?")]
        var rendered = 0, thrown = 0
        for name in ["smollm2", "gemma3", "llama3", "mistral", "qwen2", "zephyr"] {
            let base = Array(try Self.source(name).unicodeScalars)
            for _ in 0..<2_000 {
                var t = base
                for _ in 0..<(1 + next(3)) {
                    let at = next(t.count + 1)
                    switch next(4) {
                    case 0: t.removeSubrange(at..<min(t.count, at + next(40)))
                    case 1: t.insert(contentsOf: t[at..<min(t.count, at + next(40))], at: at)
                    case 2: t.insert(contentsOf: fragments[next(fragments.count)].unicodeScalars, at: at)
                    default: if at < t.count { t[at] = Unicode.Scalar(UInt8(32 + next(95))) }
                    }
                }
                var text = String.UnicodeScalarView()
                text.append(contentsOf: t)
                do {
                    let template = try JinjaTemplate(String(text))
                    _ = try template.render(messages: messages, addGenerationPrompt: next(2) == 0, bosToken: "<s>", eosToken: "</s>")
                    rendered += 1
                } catch {
                    thrown += 1
                }
            }
        }
        #expect(rendered > 100 && thrown > 100, "rendered \(rendered), threw \(thrown)")
    }

    @Test func deepNestingIsAnErrorNotACrash() throws {
        let deep = String(repeating: "(", count: 100_000) + "1" + String(repeating: ")", count: 100_000)
        #expect(throws: JinjaError.self) { try JinjaTemplate("{{ \(deep) }}") }
        let nots = String(repeating: "not ", count: 100_000)
        #expect(throws: JinjaError.self) { try JinjaTemplate("{{ \(nots) x }}") }
        let ifs = String(repeating: "{% if x %}", count: 10_000) + String(repeating: "{% endif %}", count: 10_000)
        #expect(throws: JinjaError.self) { try JinjaTemplate(ifs) }
        // Within the bound it works.
        #expect(try Self.render("{{ " + String(repeating: "(", count: 20) + "1" + String(repeating: ")", count: 20) + " }}") == "1")
    }

    @Test func runawayLoopsHitTheBudget() {
        #expect(throws: JinjaError.self) { try Self.render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}") }
    }
}

/// `ChatTemplate` keeps its fixed layouts for ChatML and Gemma and runs other templates through
/// the interpreter; either way the prompt is jinja2's (without BOS, which the tokenizer adds).
@Suite struct ChatTemplateJinjaTests {
    static func expected(_ template: String, _ conversation: String) throws -> String {
        let c = try #require(JinjaTests.cases.first { $0.template == template && $0.name == conversation })
        let text = try #require(c.expected)
        // Only a template that prints `bos_token` starts with it (SmolLM2's BOS is `<|im_start|>`).
        guard try JinjaTests.source(template).contains("bos_token"), case .string(let bos)? = c.context["bos_token"],
              text.hasPrefix(bos) else { return text }
        return String(text.dropFirst(bos.count))
    }

    @Test(arguments: ["smollm2", "gemma3", "qwen2", "llama3", "mistral", "zephyr"])
    func oneUserTurnMatchesJinja2(_ name: String) throws {
        let c = try #require(JinjaTests.cases.first { $0.template == name })
        guard case .string(let eos)? = c.context["eos_token"] else { Issue.record("no eos_token"); return }
        let t = try #require(ChatTemplate(jinja: JinjaTests.source(name), eosToken: eos))
        switch name {
        case "smollm2", "qwen2": guard case .chatML = t else { Issue.record("expected ChatML, got \(t)"); return }
        case "gemma3": guard case .gemma = t else { Issue.record("expected Gemma, got \(t)"); return }
        default: guard case .jinja = t else { Issue.record("expected the interpreter, got \(t)"); return }
        }
        #expect(t.render(user: "Hello") == (try Self.expected(name, "user_only")))
    }

    /// Every fixture conversation (multi-turn, with and without the generation prompt) through
    /// `ChatTemplate.render(messages:)`, whichever way the family renders: jinja2's bytes, or an
    /// error where jinja2 raised (Gemma's and Mistral's alternation rules).
    @Test(arguments: JinjaTests.cases.filter { ["smollm2", "gemma3", "qwen2", "llama3", "mistral", "zephyr"].contains($0.template) })
    func conversationsMatchJinja2(_ c: JinjaTests.Case) throws {
        guard case .string(let eos)? = c.context["eos_token"], case .list(let list)? = c.context["messages"],
              case .bool(let prompt)? = c.context["add_generation_prompt"] else { Issue.record("bad fixture"); return }
        var messages: [ChatMessage] = []
        for m in list {
            guard case .dict(let d) = m, case .string(let role)? = d["role"], case .string(let content)? = d["content"] else {
                return   // tool calls and other shapes are the interpreter's tests
            }
            messages.append(ChatMessage(role: role, content: content))
        }
        let t = try #require(ChatTemplate(jinja: JinjaTests.source(c.template), eosToken: eos))
        if c.expected != nil {
            #expect(try t.render(messages: messages, addGenerationPrompt: prompt) == (try Self.expected(c.template, c.name)))
        } else {
            #expect(throws: EngineError.self) { try t.render(messages: messages, addGenerationPrompt: prompt) }
        }
    }

    @Test func systemTurnThroughTheInterpreter() throws {
        let llama = try #require(ChatTemplate(jinja: JinjaTests.source("llama3")))
        #expect(llama.render(user: "Hi", system: "  Be kind.\n") == (try Self.expected("llama3", "system_user")))
        // Mistral's template refuses a system role: the system text opens the user turn instead.
        let mistral = try #require(ChatTemplate(jinja: JinjaTests.source("mistral")))
        #expect(mistral.render(user: "Hi", system: "Be kind.") == "[INST] Be kind.\n\nHi [/INST]")
    }

    @Test func unparsableTemplateIsNotAChatTemplate() {
        #expect(ChatTemplate(jinja: "{% macro x() %}{% endmacro %}") == nil)
        #expect(ChatTemplate(jinja: "{{ raise_exception('never') }}") == nil)
    }
}

extension JinjaTests {
    /// Python strings are sequences of code points, not grapheme clusters: "é" as e + U+0301 is two.
    @Test func stringsCountCodePoints() throws {
        let s: JinjaValue = .string("e\u{301}x")
        #expect(try Self.render("{{ s | length }} {{ s[1:] | length }} {{ s[-1] }}", ["s": s]) == "3 2 x")
    }

    @Test func outputErrorsCarryTheirPosition() {
        #expect(throws: JinjaError.runtime("'x' is undefined", at: JinjaPosition(line: 2, column: 7))) { try Self.render("a\nb {{ x.y }}") }
    }
}
