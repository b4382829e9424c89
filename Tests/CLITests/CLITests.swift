import Foundation
import Testing

/// Runs the real `flexrun` binary (built alongside the tests) on bad input: every case must end
/// with one line on stderr and a non-zero exit, never a crash, a hang or a usage dump.
@Suite struct CLITests {
    static let binary: URL = {
        // The test bundle sits in the build products directory next to the executable.
        let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let direct = products.appendingPathComponent("flexrun")
        if FileManager.default.fileExists(atPath: direct.path) { return direct }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/flexrun")
    }()

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/fixtures")

    struct Result { let status: Int32; let stdout: String; let stderr: String }

    static func run(_ args: [String], stdin: String? = nil, executable: URL? = nil, environment: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = executable ?? binary
        p.arguments = args
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        try p.run()
        if let stdin { inp.fileHandleForWriting.write(Data(stdin.utf8)) }
        try inp.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// A file holding `bytes`, in this process's own directory, which is removed when the
    /// process exits (and, should it be killed, by the next run: directories of dead processes go).
    static func tempFile(_ bytes: [UInt8]) throws -> String {
        let url = URL(fileURLWithPath: temporaryDirectory).appendingPathComponent(UUID().uuidString)
        try Data(bytes).write(to: url)
        return url.path
    }

    static let temporaryDirectory: String = {
        let base = FileManager.default.temporaryDirectory.path
        for name in (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [] where name.hasPrefix("flexrun-cli-") {
            if let pid = pid_t(name.dropFirst("flexrun-cli-".count)), pid != getpid(), kill(pid, 0) == -1, errno == ESRCH {
                try? FileManager.default.removeItem(atPath: base + "/" + name)
            }
        }
        let dir = base + "/flexrun-cli-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: FileManager.default.temporaryDirectory.path + "/flexrun-cli-\(getpid())") }
        return dir
    }()

    func expectOneLineError(_ r: Result, containing needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status != 0, sourceLocation: sourceLocation)
        #expect(r.status < 128, "killed by a signal: \(r.status)", sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.hasPrefix("flexrun: error: "), sourceLocation: sourceLocation)
        #expect(r.stderr.contains(needle), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
    }

    static var synthModelPath: String { fixtures.appendingPathComponent("synth/synth-llama-mixed.gguf").path }
    var synthModel: String { Self.synthModelPath }

    @Test func badMemLimit() throws {
        let prompt = try Self.tempFile(Array("hi".utf8))
        expectOneLineError(try Self.run(["--model", synthModel, "--mem-limit", "4X", prompt]), containing: "invalid size '4X'")
        expectOneLineError(try Self.run(["--model", synthModel, "--mem-limit", "", prompt]), containing: "invalid size")
    }

    @Test func missingPromptFile() throws {
        expectOneLineError(try Self.run(["--model", synthModel, "/nonexistent/prompt.txt"]), containing: "No such file")
    }

    @Test func promptIsDirectory() throws {
        expectOneLineError(try Self.run(["--model", synthModel, "/tmp"]), containing: "directory")
    }

    @Test func emptyPrompt() throws {
        let prompt = try Self.tempFile([])
        expectOneLineError(try Self.run(["--model", synthModel, prompt]), containing: "prompt is empty")
        expectOneLineError(try Self.run(["--model", synthModel, "-"], stdin: ""), containing: "prompt is empty")
    }

    @Test func invalidUTF8Prompt() throws {
        let prompt = try Self.tempFile([0x66, 0xFF, 0xFE])
        expectOneLineError(try Self.run(["--model", synthModel, prompt]), containing: "not valid UTF-8")
    }

    @Test func corruptModels() throws {
        let prompt = try Self.tempFile(Array("hi".utf8))
        let good = try Array(Data(contentsOf: URL(fileURLWithPath: synthModel)))
        var badMagic = good
        badMagic[0] = 0
        expectOneLineError(try Self.run(["--model", try Self.tempFile(badMagic), prompt]), containing: "not a GGUF file")
        expectOneLineError(try Self.run(["--model", try Self.tempFile(Array(good.prefix(5000))), prompt]), containing: "truncated")
        expectOneLineError(try Self.run(["--model", try Self.tempFile(Array(good.prefix(good.count - 1000))), prompt]),
                           containing: "runs past the end of the file")
        expectOneLineError(try Self.run(["--model", "/nonexistent.gguf", prompt]), containing: "No such file")
    }

    /// Negative numbers reach the checks (not "Missing value"), and the checks' messages are
    /// plain sentences, not type dumps.
    @Test func negativeNumbersAreRefusedByName() throws {
        let prompt = try Self.tempFile(Array("hi".utf8))
        for (args, needle) in [(["--temp", "-1"], "--temp ≥ 0"), (["--temp=-1"], "--temp ≥ 0"), (["-n", "-5"], "-n must be 0 or more"),
                               (["--mem-limit", "-1"], "invalid size '-1'"), (["--ctx", "-3"], "--ctx must be"), (["-t", "-1"], "--threads must be")] {
            let r = try Self.run(["--model", synthModel] + args + [prompt])
            expectOneLineError(r, containing: needle)
            #expect(!r.stderr.contains("CLIError") && !r.stderr.contains("Missing value"), "\(args): \(r.stderr)")
        }
    }

    /// Output that cannot be written (a full disk) ends the run with a message and a non-zero
    /// exit, not exit 0 with the text lost.
    @Test func unwritableOutputFails() throws {
        let prompt = try Self.tempFile(Array("hi".utf8))
        let p = Process()
        p.executableURL = Self.binary
        p.arguments = ["--model", synthModel, "-n", "4", "--temp", "0", prompt]
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: "/dev/full"))
        let err = Pipe()
        p.standardError = err
        try p.run()
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        expectOneLineError(Result(status: p.terminationStatus, stdout: "", stderr: e), containing: "cannot write the output")
    }

    /// A refused mlock is said once on stderr without --stats, and the run still succeeds: the
    /// memlock limit is 0 and CAP_IPC_LOCK is dropped (setpriv, util-linux), as for a normal user.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")))
    func refusedMlockWarnsOnce() throws {
        let prompt = try Self.tempFile(Array("hi".utf8))
        let r = try Self.run(["-c", "ulimit -l 0 && exec /usr/bin/setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock \"$@\"",
                              "sh", Self.binary.path, "--model", synthModel, "--mem-limit", "64M", "-n", "2", "--temp", "0", prompt],
                             executable: URL(fileURLWithPath: "/bin/bash"))
        #expect(r.status == 0, "\(r.stderr)")
        let warnings = r.stderr.split(separator: "\n").filter { $0.contains("warning: mlock refused") }
        #expect(warnings.count == 1, "\(r.stderr)")
    }

    /// `pack` never writes over its own input (it would replace the model with its block file).
    @Test func packRefusesToOverwriteItsInput() throws {
        let copy = try Self.tempFile(Array(try Data(contentsOf: URL(fileURLWithPath: synthModel))))
        let before = try Data(contentsOf: URL(fileURLWithPath: copy))
        expectOneLineError(try Self.run(["pack", copy, "-o", copy]), containing: "is the input model itself")
        #expect(try Data(contentsOf: URL(fileURLWithPath: copy)) == before)
    }

    @Test func memLimitTooSmallNamesTheMinimum() throws {
        let prompt = try Self.tempFile(Array("hi".utf8))
        let r = try Self.run(["--model", synthModel, "--mem-limit", "1M", prompt])
        expectOneLineError(r, containing: "needs at least")
    }

    @Test func badIOBackendIsOneLine() throws {
        let prompt = try Self.tempFile(Array("hi".utf8))
        expectOneLineError(try Self.run(["--model", synthModel, "--io", "floppy", prompt]), containing: "--io")
    }

    /// `plan` prints the split under a cap; `--io pread --no-mlock` still generates under it.
    /// The synthetic model streams only in a narrow band above its minimum (17.1 MiB at ctx 64;
    /// from 18 MiB everything is resident), so the cap is 17.2M and both outputs must say it streams.
    @Test func planAndStreamedGenerationOnTheSyntheticModel() throws {
        let plan = try Self.run(["plan", "--model", synthModel, "--mem-limit", "17.2M", "--ctx", "64"])
        #expect(plan.status == 0, "\(plan.stderr)")
        #expect(plan.stdout.contains("resident weights") && plan.stdout.contains("staging ring"))
        #expect(plan.stdout.contains("streamed per token") && !plan.stdout.contains("nothing streams"), "\(plan.stdout)")
        let prompt = try Self.tempFile(Array("hello".utf8))
        let gen = try Self.run(["--model", synthModel, "--mem-limit", "17.2M", "--ctx", "64", "--io", "pread", "--no-mlock", "-n", "4",
                                "--temp", "0", "--stats", prompt])
        #expect(gen.status == 0, "\(gen.stderr)")
        #expect(gen.stderr.contains("memory:") && gen.stderr.contains("disk:"))
        #expect(gen.stderr.contains("streamed per pass") && !gen.stderr.contains("disk: 0 B read"), "\(gen.stderr)")
    }

    @Test func unknownOptionIsOneLine() throws {
        expectOneLineError(try Self.run(["--bogus", "x"]), containing: "--bogus")
        expectOneLineError(try Self.run(["--model", synthModel, "-n", "-3", "x"]), containing: "-n")
    }

    @Test func generatesOnSyntheticModel() throws {
        let prompt = try Self.tempFile(Array("The quick".utf8))
        let r = try Self.run(["--model", synthModel, "-n", "8", "--temp", "0", "--stats", "--ctx", "64", prompt])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stderr.contains("decode: 8 tokens"))
        #expect(!r.stdout.isEmpty)
    }

    /// --parallel: one JSON line per prompt (plain lines and JSONL mixed), parseable, in id
    /// order once sorted, and bad prompt files or counts refused in one line.
    @Test func parallelWritesOneJSONLinePerPrompt() throws {
        let prompts = try Self.tempFile(Array("The quick\n\n{\"prompt\": \"A \\\"quoted\\\"\\tline\"}\nbrown fox\n".utf8))
        let r = try Self.run(["--model", synthModel, "--parallel", "2", "-n", "5", "--temp", "0", "--ignore-eos", "--print-ids",
                              "--stats", "--ctx", "64", prompts])
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 3)
        var seen: [Int] = []
        for line in lines {
            let o = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            seen.append(try #require(o["id"] as? Int))
            #expect(o["tokens"] as? Int == 5 && (o["ids"] as? [Int])?.count == 5 && o["stop"] as? String == "token limit")
            #expect(o["text"] is String && o["prompt_tokens"] as? Int ?? 0 > 0)
        }
        #expect(seen.sorted() == [0, 1, 2])
        #expect(r.stderr.contains("aggregate:") && r.stderr.contains("KV cache:") && r.stderr.contains("2 sequences batched"))

        let bad = try Self.tempFile(Array("fine\n{\"text\": 3}\n".utf8))
        expectOneLineError(try Self.run(["--model", synthModel, "--parallel", "2", bad]), containing: "line 2")
        let empty = try Self.tempFile(Array("\n  \n".utf8))
        expectOneLineError(try Self.run(["--model", synthModel, "--parallel", "2", empty]), containing: "no prompt")
        expectOneLineError(try Self.run(["--model", synthModel, "--parallel", "0", prompts]), containing: "--parallel")
    }

    /// The library names option fields (`maxDraft`); the CLI shows its own flags instead.
    @Test func libraryRefusalsNameFlags() throws {
        let prompt = try Self.tempFile(Array("Hello".utf8))
        let draft = try Self.run(["--model", synthModel, "--draft-max", "9", prompt])
        expectOneLineError(draft, containing: "--draft-max must be between 1 and 8")
        let cap = try Self.run(["--model", synthModel, "--mem-limit", "1M", prompt])
        expectOneLineError(cap, containing: "raise --mem-limit to at least")
        for r in [draft, cap] { #expect(!r.stderr.contains("`"), "\(r.stderr)") }
    }

    @Test func perplexityRejectsShortText() throws {
        let text = try Self.tempFile(Array("too short".utf8))
        expectOneLineError(try Self.run(["perplexity", "--model", synthModel, "--ctx", "64", text]), containing: "needs at least 64")
    }

    @Test func versionNamesLibraries() throws {
        let r = try Self.run(["--version"])
        #expect(r.status == 0 && r.stdout.contains("zstd") && r.stdout.contains("liburing"))
    }

    @Test func pruneAnalyzeEvalAndProfileMasks() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-prune-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let calib = Self.fixtures.appendingPathComponent("text/devtext.txt").path
        let profile = dir.appendingPathComponent("oneshot.json").path
        let a = try Self.run(["prune", "analyze", "--model", synthModel, "--method", "oneshot", "--calib", calib,
                              "--chunk", "32", "--tokens", "96", "-o", profile])
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stdout.contains("oneshot: 8 budgets") && a.stderr.contains("flexrun: oneshot ["))
        #expect(FileManager.default.fileExists(atPath: profile) && !FileManager.default.fileExists(atPath: profile + ".checkpoint"))

        let svg = dir.appendingPathComponent("eval.svg").path
        let e = try Self.run(["prune", "eval", "--model", synthModel, "--text", calib, "--first", "96", "--tokens", "128",
                              "--chunk", "64", "--budgets", "1,2", "--svg", svg, profile])
        #expect(e.status == 0, "\(e.stderr)")
        #expect(e.stdout.contains("| blocks removed | oneshot |") && e.stdout.contains("| 2 | "))
        #expect(try String(contentsOfFile: svg, encoding: .utf8).contains("<polyline"))

        // The quality table: written into a copy of the profile, every mask the controller can choose.
        let withTable = dir.appendingPathComponent("oneshot-q.json").path
        let q = try Self.run(["prune", "quality", "--model", synthModel, "--calib", calib, "--tokens", "64", "--chunk", "32",
                              "-o", withTable, profile])
        #expect(q.status == 0, "\(q.stderr)")
        let table = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: withTable))) as? [String: Any])
        let quality = try #require(table["quality"] as? [String: Any])
        let entries = try #require(quality["entries"] as? [[String: Any]])
        // 4 layers: up to 4 attention and 4 FFN prefixes, and the 8 budgets.
        #expect(entries.filter { $0["family"] as? String == "budget" }.count == 8)
        #expect(entries.filter { $0["family"] as? String == "attention" }.count + entries.filter { $0["family"] as? String == "ffn" }.count == 8)
        #expect(entries.allSatisfy { ($0["top1"] as? Double).map { (0...1).contains($0) } ?? false && $0["nll"] is Double })
        expectOneLineError(try Self.run(["prune", "quality", "--model", synthModel, "--calib", calib, "--chunk", "4", profile]), containing: "--chunk")
        // One given mask, scored alone with the same procedure: the same numbers as its table entry.
        let entry = try #require(entries.first { $0["family"] as? String == "attention" && $0["count"] as? Int == 2 })
        let blocks = try #require(entry["blocks"] as? [String]).joined(separator: ",")
        let one = try Self.run(["prune", "quality", "--model", synthModel, "--calib", calib, "--tokens", "64", "--chunk", "32",
                                "--mask", blocks, profile])
        #expect(one.status == 0, "\(one.stderr)")
        let lines = one.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(lines.count == 2 && lines[0]["blocks"] as? String == "" && lines[1]["blocks"] as? String == blocks)
        #expect(lines.last?["top1"] as? Double == entry["top1"] as? Double && lines.last?["nll"] as? Double == entry["nll"] as? Double)
        expectOneLineError(try Self.run(["prune", "quality", "--model", synthModel, "--calib", calib, "--mask", "attn:99", profile]),
                           containing: "past the model's 4 layers")
        expectOneLineError(try Self.run(["prune", "quality", "--model", synthModel, "--calib", calib, "--mask", "attn3", profile]),
                           containing: "invalid block list")

        let prompt = try Self.tempFile(Array("The quick".utf8))
        let g = try Self.run(["--model", synthModel, "--profile", profile, "--budget", "2", "-n", "4", "--temp", "0", "--stats", prompt])
        #expect(g.status == 0 && g.stderr.contains("blocks skipped: 2"), "\(g.stderr)")
        expectOneLineError(try Self.run(["--model", synthModel, "--profile", profile, "--budget", "99", prompt]), containing: "no mask removing 99 blocks")
        expectOneLineError(try Self.run(["--model", synthModel, "--profile", profile, prompt]), containing: "--profile goes with --budget, or with --prune fit|auto")
        expectOneLineError(try Self.run(["--model", synthModel, "--prune", "fit", prompt]), containing: "--prune fit needs --profile")
        expectOneLineError(try Self.run(["--model", synthModel, "--prune", "maybe", prompt]), containing: "--prune must be off, fit or auto")
        expectOneLineError(try Self.run(["--model", synthModel, "--prune", "fit", "--profile", profile, "--prune-policy", "magic", prompt]),
                           containing: "--prune-policy must be greedy or rl")
        expectOneLineError(try Self.run(["--model", synthModel, "--prune", "fit", "--profile", profile, "--min-tps", "5", prompt]),
                           containing: "--min-tps goes with --prune auto")
        expectOneLineError(try Self.run(["--model", synthModel, "--prune", "fit", "--profile", profile, "--prune-policy", "rl",
                                         "--rl-policy", "/nonexistent/policy.json", prompt]), containing: "RAP policy /nonexistent/policy.json is not readable")
        expectOneLineError(try Self.run(["--model", synthModel, "--profile", calib, "--budget", "1", prompt]), containing: "not a flexrun-pruning-profile")

        // A checkpoint left by a run with other settings is refused, not silently mixed in.
        try Data(#"{"settings":"other","memo":{"scores":{}}}"#.utf8).write(to: URL(fileURLWithPath: profile + ".checkpoint"))
        expectOneLineError(try Self.run(["prune", "analyze", "--model", synthModel, "--method", "gsi", "--calib", calib,
                                         "--chunk", "32", "--tokens", "96", "-o", profile]), containing: "other settings")
        expectOneLineError(try Self.run(["prune", "analyze", "--model", synthModel, "--method", "magic", "--calib", calib, "-o", profile]),
                           containing: "--method must be one of")
        expectOneLineError(try Self.run(["prune", "analyze", "--model", synthModel, "--method", "gsi", "--calib", calib,
                                         "--mem-limit", "40M", "--chunk", "32", "-o", dir.appendingPathComponent("x.json").path]),
                           containing: "drop --mem-limit")
        expectOneLineError(try Self.run(["--model", synthModel, "--skip", "ffn:1", "--prefill-skip", "attn:1", prompt]),
                           containing: "prefill skips attn:1")
    }

    /// `prune analyze --method pdtrim` writes a version-2 profile whose budgets carry a prefill
    /// mask inside the decode mask; `--profile --budget` runs the prompt with it, as the explicit
    /// `--skip`/`--prefill-skip` pair does; `prune stages` scores it beside the dense model.
    @Test func pdtrimProfileRunsItsPrefillMask() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-pdtrim-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let calib = Self.fixtures.appendingPathComponent("text/devtext.txt").path
        let profile = dir.appendingPathComponent("pdtrim.json").path
        let a = try Self.run(["prune", "analyze", "--model", synthModel, "--method", "pdtrim", "--calib", calib, "--tokens", "128",
                              "--prompt-tokens", "24", "--score-tokens", "8", "--distill", "1", "--budgets", "2,3", "--prefill-share", "0.5",
                              "-o", profile])
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stdout.contains("pdtrim: 2 budgets") && a.stderr.contains("flexrun: pdtrim ["), "\(a.stdout)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: profile))) as? [String: Any])
        #expect(json["version"] as? Int == 2 && json["method"] as? String == "pdtrim")
        let budgets = try #require(json["budgets"] as? [[String: Any]])
        let three = try #require(budgets.first { $0["removed"] as? Int == 3 })
        let decode = try #require(three["blocks"] as? [String]), prefill = try #require(three["prefillBlocks"] as? [String])
        #expect(decode.count == 3 && prefill.count == 1 && Set(prefill).isSubset(of: decode))

        let prompt = try Self.tempFile(Array("The quick brown fox jumps over".utf8))
        let viaProfile = try Self.run(["--model", synthModel, "--profile", profile, "--budget", "3", "-n", "12", "--temp", "0", prompt])
        let explicit = try Self.run(["--model", synthModel, "--skip", decode.joined(separator: ","), "--prefill-skip", prefill.joined(separator: ","),
                                     "-n", "12", "--temp", "0", prompt])
        #expect(viaProfile.status == 0 && explicit.status == 0, "\(viaProfile.stderr)\(explicit.stderr)")
        #expect(viaProfile.stdout == explicit.stdout)

        let st = try Self.run(["prune", "stages", "--model", synthModel, "--text", calib, "--budgets", "2,3", "--first", "256",
                               "--windows", "2", "--prompt-tokens", "24", "--score-tokens", "8", "--decode-tokens", "4", profile])
        #expect(st.status == 0, "\(st.stderr)")
        #expect(st.stdout.contains("| dense | 0 | 0 |") && st.stdout.contains("(pdtrim) | 3 | 1 |"), "\(st.stdout)")
        expectOneLineError(try Self.run(["prune", "stages", "--model", synthModel, "--text", calib]), containing: "give at least one profile")
        expectOneLineError(try Self.run(["prune", "stages", "--model", synthModel, "--text", calib, "--budgets", "5", profile]),
                           containing: "no mask removing 5 blocks")
        expectOneLineError(try Self.run(["prune", "analyze", "--model", synthModel, "--method", "pdtrim", "--calib", calib, "--tokens", "40",
                                         "--prompt-tokens", "24", "--score-tokens", "8", "-o", profile]), containing: "more than --distill")
        expectOneLineError(try Self.run(["prune", "analyze", "--model", synthModel, "--method", "pdtrim", "--calib", calib,
                                         "--prefill-share", "1", "-o", profile]), containing: "--prefill-share")
    }

    @Test func packWritesABlockFileOrNothing() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-pack-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("m.flex").path
        let r = try Self.run(["pack", synthModel, "-o", out, "--codec", "zstd:3", "--disk-bandwidth", "1G"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("blocks") && r.stderr.contains("flexrun: pack ["))
        let prompt = try Self.tempFile(Array("The quick".utf8))
        let a = try Self.run(["--model", out, "-n", "6", "--temp", "0", "--print-ids", "--ctx", "64", prompt])
        let b = try Self.run(["--model", synthModel, "-n", "6", "--temp", "0", "--print-ids", "--ctx", "64", prompt])
        #expect(a.status == 0 && a.stdout == b.stdout && a.stderr == b.stderr, "\(a.stderr)")

        expectOneLineError(try Self.run(["pack", synthModel, "-o", out, "--codec", "brotli"]), containing: "--codec must be")
        // A corrupt source fails with one line and leaves neither the output nor a partial file.
        let bad = try Self.tempFile(Array("GGUF".utf8) + [3, 0, 0, 0] + [UInt8](repeating: 0xff, count: 40))
        let target = dir.appendingPathComponent("bad.flex").path
        expectOneLineError(try Self.run(["pack", bad, "-o", target]), containing: "GGUF")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["m.flex"])
        // A damaged block is named when the model is opened.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: out))
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: out))
        let d = try Self.run(["--model", out, "-n", "2", prompt])
        #expect(d.status != 0 && d.stderr.split(separator: "\n").count == 1 && (d.stderr.contains("fails its checksum") || d.stderr.contains("corrupt")), "\(d.stderr)")
    }

    @Test func packRequantizesAndRefusesBadRequantOptions() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-requant-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("q8.flex").path
        let r = try Self.run(["pack", synthModel, "-o", out, "--codec", "zstd", "--disk-bandwidth", "1G",
                              "--requant", "q8_0", "--compression-aware", "--lambda", "0.002"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("to Q8_0") && r.stdout.contains("relative RMSE") && r.stdout.contains("bits per weight stored"))
        let prompt = try Self.tempFile(Array("The quick".utf8))
        #expect(try Self.run(["--model", out, "-n", "4", "--temp", "0", prompt]).status == 0)
        let other = dir.appendingPathComponent("x.flex").path
        expectOneLineError(try Self.run(["pack", synthModel, "-o", other, "--requant", "q3_k"]), containing: "--requant must be one of")
        expectOneLineError(try Self.run(["pack", synthModel, "-o", other, "--compression-aware"]), containing: "needs --requant q8_0")
        expectOneLineError(try Self.run(["pack", synthModel, "-o", other, "--requant", "q8_0", "--lambda", "0.01"]), containing: "needs --compression-aware")
        expectOneLineError(try Self.run(["pack", synthModel, "-o", other, "--requant", "q4_0", "--compression-aware"]),
                           containing: "use --requant q8_0")
        expectOneLineError(try Self.run(["pack", synthModel, "-o", other, "--requant", "q8_0", "--compression-aware", "--lambda=-1"]),
                           containing: "≥ 0")
        expectOneLineError(try Self.run(["pack", synthModel, "-o", other, "--gguf"]), containing: "--gguf needs --requant")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["q8.flex"])
    }

    /// `--requant q4_k_m --gguf` writes a GGUF with llama.cpp's file type that generates.
    @Test func packWritesARequantizedGGUF() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-kquant-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("m.gguf").path
        let r = try Self.run(["pack", synthModel, "-o", out, "--requant", "q4_k_m", "--gguf"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("to Q4_K_M") && r.stdout.contains(": GGUF,"), "\(r.stdout)")
        let prompt = try Self.tempFile(Array("The quick".utf8))
        #expect(try Self.run(["--model", out, "-n", "4", "--temp", "0", prompt]).status == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["m.gguf"])
    }

    // MARK: tokenize

    /// A real model in the local model cache (the rule of FlexEngine's `ModelCache`), or nil.
    static func cachedModel(_ name: String) -> String? {
        let env = ProcessInfo.processInfo.environment
        let dir = env["FLEXRUN_MODELS"] ?? ((env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")) + "/flexrun/models")
        let path = dir + "/" + name
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }
    static let modelRequired = ProcessInfo.processInfo.environment["FLEXRUN_REQUIRE_MODEL"] == "1"
    static let smolLM2 = cachedModel("SmolLM2-135M-Instruct.Q4_1.gguf")
    static let gemma3 = cachedModel("gemma-3-270m-q4_k_m.gguf")

    /// Runs `tokenize` on every golden case of a model, through a file and through stdin, and
    /// compares the printed array with llama.cpp's ids.
    func tokenizeMatchesFixture(model: String?, fixture: String) throws {
        guard let model else {
            Issue.record("model for \(fixture) missing: run Tools/fetch-model.sh")
            return
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.fixtures.appendingPathComponent(fixture))) as! [String: Any]
        let cases = json["cases"] as! [[String: Any]]
        #expect(cases.count == 16)
        for c in cases {
            let text = c["text"] as! String, ids = c["ids"] as! [Int]
            let file = try Self.tempFile(Array(text.utf8))
            defer { try? FileManager.default.removeItem(atPath: file) }
            let r = try Self.run(["tokenize", "--model", model, file])
            #expect(r.status == 0 && r.stderr.isEmpty, "\(text.debugDescription): \(r.stderr)")
            #expect(r.stdout.hasSuffix("]\n") && r.stdout.split(separator: "\n").count == 1, "\(r.stdout)")
            let printed = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [Int]
            #expect(printed == ids, "\(text.debugDescription)")
        }
        let last = try #require(cases.last.map { ($0["text"] as! String, $0["ids"] as! [Int]) })
        let piped = try Self.run(["tokenize", "--model", model, "-"], stdin: last.0)
        #expect(try JSONSerialization.jsonObject(with: Data(piped.stdout.utf8)) as? [Int] == last.1)
    }

    @Test(.enabled(if: smolLM2 != nil || modelRequired)) func tokenizeSmolLM2MatchesLlamaCpp() throws {
        try tokenizeMatchesFixture(model: Self.smolLM2, fixture: "smollm2/tokenizer-cases.json")
    }

    @Test(.enabled(if: gemma3 != nil || modelRequired)) func tokenizeGemma3MatchesLlamaCpp() throws {
        try tokenizeMatchesFixture(model: Self.gemma3, fixture: "gemma3/tokenizer-cases.json")
    }

    @Test func tokenizePrintsOneArrayAndRefusesBadInput() throws {
        let text = try Self.tempFile(Array("the other".utf8))
        let r = try Self.run(["tokenize", "--model", synthModel, text])
        #expect(r.status == 0, "\(r.stderr)")
        let ids = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [Int])
        #expect(!ids.isEmpty && ids.allSatisfy { $0 >= 0 && $0 < 266 })
        expectOneLineError(try Self.run(["tokenize", "--model", synthModel, "/nonexistent/text.txt"]), containing: "No such file")
        expectOneLineError(try Self.run(["tokenize", "--model", synthModel, "/tmp"]), containing: "directory")
        expectOneLineError(try Self.run(["tokenize", "--model", synthModel, try Self.tempFile([0x66, 0xFF])]), containing: "not valid UTF-8")
        expectOneLineError(try Self.run(["tokenize", "--model", "/nonexistent.gguf", text]), containing: "No such file")
        var notGGUF = Array(try Data(contentsOf: URL(fileURLWithPath: synthModel)))
        notGGUF[0] = 0
        expectOneLineError(try Self.run(["tokenize", "--model", try Self.tempFile(notGGUF), text]), containing: "not a GGUF file")
        expectOneLineError(try Self.run(["tokenize", "--model", synthModel]), containing: "Missing expected argument")
    }
}
