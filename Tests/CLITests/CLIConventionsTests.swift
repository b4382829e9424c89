import Foundation
import Testing

/// The command-line conventions llama.cpp users expect (issue 20): `-p TEXT`, `-n -1`,
/// `--stop`, `--json` and `flexrun info`.
@Suite struct CLIConventionsTests {
    var synth: String { CLITests.synthModelPath }

    func json(_ r: CLITests.Result) throws -> [String: Any] {
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        return try #require(object, "not one JSON object: \(r.stdout)")
    }

    /// `-p` is the same prompt as a file holding it; `--json` carries the same text and ids as
    /// the streamed output and `--print-ids`.
    @Test func inlinePromptAndJSONMatchTheFileRun() throws {
        let file = try CLITests.tempFile(Array("Once upon a time".utf8))
        let plain = try CLITests.run(["--model", synth, "-n", "8", "--temp", "0", "--ignore-eos", "--print-ids", file])
        #expect(plain.status == 0, "\(plain.stderr)")
        let ids = plain.stderr.split(separator: "\n").first { $0.hasPrefix("flexrun: ids: ") }.map {
            $0.dropFirst("flexrun: ids: ".count).split(separator: " ").compactMap { Int($0) }
        }
        let inline = try CLITests.run(["--model", synth, "-n", "8", "--temp", "0", "--ignore-eos", "-p", "Once upon a time"])
        #expect(inline.stdout == plain.stdout)
        let o = try json(try CLITests.run(["--model", synth, "-n", "8", "--temp", "0", "--ignore-eos", "--json", "-p", "Once upon a time"]))
        #expect(o["ids"] as? [Int] == ids && ids?.count == 8)
        #expect((o["text"] as? String).map { $0 + "\n" } == plain.stdout)
        #expect(o["stop_reason"] as? String == "token limit")
        let stats = try #require(o["stats"] as? [String: Any])
        #expect(stats["generated_tokens"] as? Int == 8 && (stats["prompt_tokens"] as? Int ?? 0) > 0)
    }

    /// `--stop`: the text ends before the first stop string (not printed), generation ends
    /// there, and `--json` says which string stopped it.
    @Test func stopStringEndsTheText() throws {
        let full = try json(try CLITests.run(["--model", synth, "-n", "24", "--temp", "0", "--ignore-eos", "--json", "-p", "Hello"]))
        let text = try #require(full["text"] as? String)
        // A stop string from the middle of the greedy text: three characters at a third of the way.
        let chars = Array(text)
        try #require(chars.count >= 9, "the synthetic model's text is too short: \(text.debugDescription)")
        let stop = String(chars[chars.count / 3..<chars.count / 3 + 3])
        let expected = String(text[..<text.firstRange(of: stop)!.lowerBound])
        let r = try CLITests.run(["--model", synth, "-n", "24", "--temp", "0", "--ignore-eos", "--json", "--stop", stop, "--stop", "\u{1F600}",
                                  "-p", "Hello"])
        let o = try json(r)
        #expect(o["text"] as? String == expected)
        #expect(o["stop_reason"] as? String == "stop string" && o["stop"] as? String == stop)
        #expect((o["ids"] as? [Int] ?? []).count < 24)
        let streamed = try CLITests.run(["--model", synth, "-n", "24", "--temp", "0", "--ignore-eos", "--stop", stop, "-p", "Hello"])
        #expect(streamed.status == 0 && streamed.stdout == expected + "\n")
    }

    /// `-n -1` runs until the context is full (the synthetic model never ends by itself here).
    @Test func unlimitedTokensRunToAFullContext() throws {
        let o = try json(try CLITests.run(["--model", synth, "-n", "-1", "--temp", "0", "--ignore-eos", "--ctx", "48", "--json", "-p", "Hello"]))
        #expect(o["stop_reason"] as? String == "context full")
        let stats = try #require(o["stats"] as? [String: Any])
        #expect((stats["prompt_tokens"] as? Int ?? 0) + (stats["generated_tokens"] as? Int ?? 0) >= 47)
    }

    @Test func promptMistakesAreOneLine() throws {
        let file = try CLITests.tempFile(Array("x".utf8))
        for (args, needle) in [(["-p", "x", file], "not both"), ([String](), "no prompt"), (["-n", "-2", "-p", "x"], "-1 for no limit"),
                               (["--parallel", "2", "--json", file], "--json and --stop are for one prompt")] {
            let r = try CLITests.run(["--model", synth] + args)
            #expect(r.status != 0 && r.status < 128 && r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
            #expect(r.stderr.contains(needle), "\(args): \(r.stderr)")
        }
    }

    /// `flexrun info`: the shapes and types of the file, and a minimum cap that `plan` agrees is
    /// the smallest that works.
    @Test func infoDescribesTheModel() throws {
        let r = try CLITests.run(["info", synth])
        #expect(r.status == 0, "\(r.stderr)")
        for key in ["architecture", "parameters", "tensor types", "tokenizer", "chat template", "in memory", "minimum cap"] {
            #expect(r.stdout.contains(key), "\(key) missing: \(r.stdout)")
        }
        let line = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("minimum cap") })
        let size = try #require(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(2).first)   // "12.3"
        let unit = try #require(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).first)   // "MiB"
        let minimum = "\(size)\(unit.prefix(1))"
        let ok = try CLITests.run(["--model", synth, "--mem-limit", bump(minimum, 1.01), "-n", "2", "--temp", "0", "-p", "Hi"])
        #expect(ok.status == 0, "at the minimum info printed (\(minimum)): \(ok.stderr)")
        let missing = try CLITests.run(["info", "/nonexistent.gguf"])
        #expect(missing.status != 0 && missing.stderr.split(separator: "\n").count == 1, "\(missing.stderr)")
    }

    /// "12.3M" × factor, as a size the CLI parses.
    func bump(_ size: String, _ factor: Double) -> String {
        let unit = size.last!, value = Double(size.dropLast())!
        return String(format: "%.3f%@", value * factor, String(unit))
    }
}
