import Foundation
import Testing

/// Every `flexrun` command line in the fenced code blocks of README.md and docs/CLI.md, run as
/// written: through `/bin/sh -c` with `$B` and `flexrun` meaning the built binary, in a scratch
/// directory that holds what the lines name (`prompt.txt`, `prompts.txt`, `model.gguf` and
/// `other.gguf` as the default model, `gemma-3-270m-q4_k_m.gguf`, `docs/`, `../shared/`).
/// Lines run in document order, so `--model model.flex` finds the file `pack` wrote above it.
/// The lines that are not run are in ``skipped``, each with its reason.
@Suite(.serialized) struct DocExamplesTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    struct Example: CustomStringConvertible {
        let document: String
        let command: String
        /// What the document shows the command printing (the lines after a `$ ` command up to the
        /// block's end), or nil.
        let output: String?
        var description: String { "\(document): \(command)" }
    }

    /// Lines not run, matched by prefix, and why. The synopsis block's lines are checked by
    /// ``synopsisOptionsExist()`` instead.
    static let skipped: [(prefix: String, reason: String)] = [
        ("bash Tools/quickstart.sh", "installs apt packages and fetches the model: needs the network and root"),
        ("bash Tools/test.sh", "the test suite itself"),
        ("bash Tools/install.sh", "runs its own release build (the suite holds the build lock) and installs outside the scratch "
            + "directory; CABITests runs it into a temporary prefix with --build-dir"),
        ("bash Tools/sanitize.sh", "builds the package again under ThreadSanitizer or AddressSanitizer (.build-tsan, .build-asan), "
            + "tens of minutes on 2 cores; the suites it runs are in this test run unsanitized"),
        ("bash Tools/fuzz.sh", "builds the fuzz package with -sanitize=fuzzer (.build-fuzz) and fuzzes for a minute or more; "
            + "FuzzRegressionTests replays what it found"),
        ("bash Tools/soak.sh", "1,000 generations, a few minutes; SoakTests is that run, enabled by FLEXRUN_SOAK=1"),
        ("bash Tools/baseline-check.sh", "runs the test binary under qemu for about a minute; Tools/test.sh runs it before the suite"),
        ("bash Tools/consumer-check.sh", "builds FlexRun twice in a consumer package, minutes; Tools/test.sh runs it before the suite"),
        ("bash Tools/docs.sh", "builds FlexEngine again with symbol graphs (.build-docs) and runs docc; Tools/test.sh runs it before the suite"),
        ("flexrun prefill --serve", "waits for the decode line after it, which the runner would start only once this one ended; "
            + "StateHandOffTests runs the pair as two processes"),
        ("flexrun decode --from", "needs the prefill line before it running; StateHandOffTests runs the pair"),
        ("flexrun serve --port", "serves until stopped; ServeChatTests starts the server on a free port and drives it with the openai client"),
        ("$B serve --port", "serves until stopped; ServeChatTests starts the server on a free port and drives it with the openai client"),
        ("B=.build/release/flexrun", "sets $B, which the test sets to the built binary"),
        ("$B prune analyze --method gsi", "a GSI ranking of SmolLM2's 60 blocks takes about 45 minutes (a sweep); "
            + "the committed docs/pruning/gsi.json stands in for its gsi.json in the line after it"),
    ]

    /// A synopsis line (`flexrun [generate] [options] …`): grammar, not a command.
    static func isSynopsis(_ line: String) -> Bool { line.hasPrefix("flexrun ") && (line.contains("[") || line.contains("|")) }

    static func examples(in document: String) throws -> [Example] {
        let text = try String(contentsOf: repository.appendingPathComponent(document), encoding: .utf8)
        var out: [Example] = []
        var inBlock = false, block: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("```") {
                if inBlock {
                    for (i, l) in block.enumerated() {
                        let prompt = l.hasPrefix("$ ")
                        let command = prompt ? String(l.dropFirst(2)) : l
                        guard command.hasPrefix("flexrun ") || command.hasPrefix("$B") || command.contains("| $B")
                            || command.contains("| flexrun") || command.hasPrefix("bash Tools/") || command.hasPrefix("B=") else { continue }
                        let shown = prompt ? block[(i + 1)...].prefix { !$0.hasPrefix("$ ") }.joined(separator: "\n") : ""
                        out.append(Example(document: document, command: command, output: shown.isEmpty ? nil : shown))
                    }
                    block = []
                }
                inBlock.toggle()
            } else if inBlock {
                // An indented line continues the command above it (the synopsis wraps `pack`).
                if line.hasPrefix("  "), let last = block.popLast() {
                    block.append(last + " " + line.trimmingCharacters(in: .whitespaces))
                } else {
                    block.append(line)
                }
            }
        }
        return out
    }

    /// The command without its trailing `# comment`.
    static func withoutComment(_ command: String) -> String {
        guard let r = command.range(of: "  #") ?? command.range(of: " # ") else { return command }
        return String(command[..<r.lowerBound]).trimmingCharacters(in: .whitespaces)
    }

    /// A scratch directory holding what the examples name.
    static func scratch(model: String) throws -> URL {
        let fm = FileManager.default
        let root = fm.temporaryDirectory.appendingPathComponent("flexrun-docs-\(UUID().uuidString)")
        let work = root.appendingPathComponent("work")
        try fm.createDirectory(at: work, withIntermediateDirectories: true)
        try fm.createSymbolicLink(at: root.appendingPathComponent("shared"), withDestinationURL: CLITests.fixtures.deletingLastPathComponent())
        try fm.createSymbolicLink(at: work.appendingPathComponent("docs"), withDestinationURL: repository.appendingPathComponent("docs"))
        for name in ["model.gguf", "other.gguf"] {
            try fm.createSymbolicLink(at: work.appendingPathComponent(name), withDestinationURL: URL(fileURLWithPath: model))
        }
        if let gemma = CLITests.gemma3 {
            try fm.createSymbolicLink(at: work.appendingPathComponent("gemma-3-270m-q4_k_m.gguf"), withDestinationURL: URL(fileURLWithPath: gemma))
        }
        try Data("The capital of France is".utf8).write(to: work.appendingPathComponent("prompt.txt"))
        try Data("The capital of France is\nWrite a haiku about the sea.\n{\"prompt\": \"def fibonacci(n):\"}\n".utf8)
            .write(to: work.appendingPathComponent("prompts.txt"))
        // In place of the skipped GSI analysis (see `skipped`).
        try fm.copyItem(at: repository.appendingPathComponent("docs/pruning/gsi.json"), to: work.appendingPathComponent("gsi.json"))
        return root
    }

    /// Runs `command` with `sh -c` in `directory`; stdout and stderr go to files (a pipe left
    /// unread while the other is drained could fill and stall the command).
    static func shell(_ command: String, in directory: URL) throws -> CLITests.Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        p.currentDirectoryURL = directory
        var env = ProcessInfo.processInfo.environment
        env["B"] = CLITests.binary.path
        env["PATH"] = CLITests.binary.deletingLastPathComponent().path + ":" + (env["PATH"] ?? "/usr/bin:/bin")
        p.environment = env
        let out = directory.deletingLastPathComponent().appendingPathComponent("stdout")
        let err = directory.deletingLastPathComponent().appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return CLITests.Result(status: p.terminationStatus, stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                               stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
    }

    @Test(.enabled(if: CLITests.smolLM2 != nil || CLITests.modelRequired))
    func examplesRunAsWritten() throws {
        let model = try #require(CLITests.smolLM2, "default model missing: run Tools/fetch-model.sh")
        let examples = try Self.examples(in: "README.md") + Self.examples(in: "docs/CLI.md")
        #expect(examples.count >= 20, "found \(examples.count) examples: has the parser broken?")
        let root = try Self.scratch(model: model)
        defer { try? FileManager.default.removeItem(at: root) }
        let work = root.appendingPathComponent("work")
        var ran = 0
        for example in examples {
            if Self.isSynopsis(example.command) { continue }
            if let skip = Self.skipped.first(where: { example.command.hasPrefix($0.prefix) }) {
                print("docs example skipped: \(example): \(skip.reason)")
                continue
            }
            if example.command.contains("gemma-3-270m") && CLITests.gemma3 == nil {
                if CLITests.modelRequired { Issue.record("\(example): Gemma 3 missing: run Tools/fetch-model.sh gemma3") }
                continue
            }
            let command = Self.withoutComment(example.command)
            let t0 = Date()
            let r = try Self.shell(command, in: work)
            print("docs example: \(example.document): \(command): exit \(r.status), \(String(format: "%.1f", Date().timeIntervalSince(t0))) s")
            #expect(r.status == 0, "\(example)\n\(r.stderr.suffix(2000))")
            #expect(!r.stderr.contains("error:"), "\(example)\n\(r.stderr.suffix(2000))")
            if let shown = example.output {
                #expect(r.stdout.trimmingCharacters(in: .newlines) == shown, "\(example): printed \(r.stdout)")
            }
            ran += 1
        }
        #expect(ran >= 15)
    }

    /// The synopsis at the top of docs/CLI.md: every subcommand exists and every option it names
    /// is one that subcommand's --help lists.
    @Test func synopsisOptionsExist() throws {
        let synopsis = try Self.examples(in: "docs/CLI.md").map(\.command).filter(Self.isSynopsis)
        #expect(synopsis.count >= 10)
        var helps: [String: String] = [:]
        for line in synopsis {
            let words = line.split(separator: " ").map(String.init)
            // `flexrun prune analyze …` → ["prune", "analyze"]; `[generate]` is the default subcommand.
            var sub: [String] = []
            for w in words.dropFirst() {
                if w == "[generate]" { sub.append("generate"); continue }
                guard w.first?.isLetter == true, w.allSatisfy({ $0.isLowercase || $0 == "-" }) else { break }
                sub.append(w)
            }
            let key = sub.joined(separator: " ")
            if helps[key] == nil {
                let r = try CLITests.run(sub + ["--help"])
                #expect(r.status == 0, "\(line): \(r.stderr)")
                helps[key] = r.stdout
            }
            let help = helps[key] ?? ""
            let options = line.matches(of: #/--[a-z][a-z-]*/#).map { String($0.output) }
            for option in options where option != "--help" && option != "--version" {
                #expect(help.contains(option), "\(line): \(option) is not in flexrun \(key) --help")
            }
        }
    }
}
