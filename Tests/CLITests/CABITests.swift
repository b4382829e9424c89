import Foundation
import Testing

/// The C tools on PATH (the suite below is enabled by them, so they live outside it).
enum CToolchain {
    static func which(_ names: [String]) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        for name in names {
            for dir in path where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") { return "\(dir)/\(name)" }
        }
        return nil
    }
    static let compiler = which(["cc", "gcc", "clang"])
    static let cxxCompiler = which(["c++", "g++", "clang++"])
    static let valgrind = which(["valgrind"])

}

/// The C interface as a C program meets it: `Tools/install.sh` installs the built library, the
/// header and `flexrun.pc` into a temporary prefix, `tests/c/flexrun_test.c` and the examples are
/// compiled with `cc … $(pkg-config --cflags --libs flexrun)` against that, and run on the
/// default model. Skips where there is no C compiler; a missing model fails under
/// FLEXRUN_REQUIRE_MODEL=1, as everywhere.
@Suite(.enabled(if: CToolchain.compiler != nil, "no C compiler (cc, gcc or clang) on PATH"),
       .enabled(if: CLITests.smolLM2 != nil || CLITests.modelRequired, "needs the default model: run Tools/fetch-model.sh"))
struct CABITests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let products = CLITests.binary.deletingLastPathComponent()

    /// The install into a temporary prefix every test here builds against (once per run).
    struct Installed: Sendable {
        let prefix: String
        let flags: [String]        // pkg-config --cflags --libs flexrun
        let cTest: String          // tests/c/flexrun_test.c, compiled
        let scratch: String
    }

    static let installed: Result<Installed, InstallError> = install()
    struct InstallError: Error, CustomStringConvertible { let description: String }

    static func install() -> Result<Installed, InstallError> {
        do {
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-cabi-\(UUID().uuidString)").path
            let prefix = root + "/prefix"
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            // --strip: valgrind 3.19 gives up on the toolchain's DWARF 5 debug info.
            let r = try CLITests.run(["bash", repository.path + "/Tools/install.sh", "--prefix", prefix, "--build-dir", products.path, "--strip"],
                                     executable: URL(fileURLWithPath: "/usr/bin/env"))
            guard r.status == 0 else { return .failure(InstallError(description: "install.sh: \(r.stderr)")) }
            let pc = try CLITests.run(["pkg-config", "--cflags", "--libs", "flexrun"], executable: URL(fileURLWithPath: "/usr/bin/env"),
                                      environment: ["PKG_CONFIG_PATH": prefix + "/lib/pkgconfig"])
            guard pc.status == 0 else { return .failure(InstallError(description: "pkg-config: \(pc.stderr)")) }
            let flags = pc.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
            let cTest = root + "/flexrun_test"
            let cc = try CLITests.run(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", repository.path + "/tests/c/flexrun_test.c"]
                                      + flags + ["-lpthread", "-lm", "-o", cTest], executable: URL(fileURLWithPath: CToolchain.compiler!))
            guard cc.status == 0 else { return .failure(InstallError(description: "cc flexrun_test.c: \(cc.stderr)")) }
            return .success(Installed(prefix: prefix, flags: flags, cTest: cTest, scratch: root))
        } catch {
            return .failure(InstallError(description: "\(error)"))
        }
    }

    var model: String { CLITests.smolLM2 ?? "" }

    func setUp() throws -> Installed {
        _ = try #require(CLITests.smolLM2, "default model missing: run Tools/fetch-model.sh")
        return try Self.installed.get()
    }

    /// Runs a command of the C test program: it checks itself, so it must exit 0 with nothing on stderr.
    func runC(_ args: [String], _ installed: Installed, sourceLocation: SourceLocation = #_sourceLocation) throws -> CLITests.Result {
        let r = try CLITests.run(args, executable: URL(fileURLWithPath: installed.cTest))
        #expect(r.status == 0 && r.stderr.isEmpty, "flexrun_test \(args.joined(separator: " ")): status \(r.status)\n\(r.stderr)",
                sourceLocation: sourceLocation)
        return r
    }

    static func ids(_ line: Substring?) -> [Int] { line.map { $0.split(separator: " ").dropFirst().compactMap { Int($0) } } ?? [] }

    @Test func installLaysOutTheFiles() throws {
        let i = try setUp()
        for f in ["bin/flexrun", "lib/libflexrun.so", "include/flexrun.h", "lib/pkgconfig/flexrun.pc"] {
            #expect(FileManager.default.fileExists(atPath: i.prefix + "/" + f), "\(f) not installed")
        }
        #expect(i.flags.contains("-I\(i.prefix)/include") && i.flags.contains("-lflexrun"), "\(i.flags)")
        let version = try CLITests.run(["--version"], executable: URL(fileURLWithPath: i.prefix + "/bin/flexrun"))
        #expect(version.status == 0 && version.stdout.hasPrefix("flexrun 0.1.0"), "\(version.stdout)\(version.stderr)")
    }

    /// The C program's greedy ids are the CLI's for the same prompt: in memory, and at a cap
    /// (100 MiB) under which the default model streams part of its weights every token.
    @Test(arguments: [nil, "100M"]) func greedyIdsEqualTheCLIs(cap: String?) throws {
        let i = try setUp()
        let text = "The capital of France is"
        let prompt = try CLITests.tempFile(Array(text.utf8))
        let cli = try CLITests.run(["--model", model, "-n", "16", "--temp", "0", "--print-ids", "--ctx", "256"]
                                   + (cap.map { ["--mem-limit", $0] } ?? []) + [prompt])
        #expect(cli.status == 0, "\(cli.stderr)")
        let want = Self.ids(cli.stderr.split(separator: "\n").first { $0.hasPrefix("flexrun: ids: ") }?.dropFirst("flexrun:".count))
        let c = try runC(["ids", model, text, "16"] + (cap.map { _ in ["\(100 << 20)"] } ?? []), i)
        let got = Self.ids(c.stdout.split(separator: "\n").first { $0.hasPrefix("ids: ") })
        #expect(want.count == 16 && got == want, "C \(got) vs CLI \(want)")
    }

    /// A callback returning false after 5 tokens ends the generation there; so does
    /// `flexrun_session_request_abort` from a second thread.
    @Test func callbackAbortsAfterNTokens() throws {
        _ = try runC(["abort", model, "5"], try setUp())
    }

    /// A second pthread sets a 100 MiB cap while the first generates: same ids as uncapped,
    /// re-planned, streaming; a 1 MiB cap from that thread is refused with the minimum.
    @Test func memoryLimitChangesFromASecondThread() throws {
        _ = try runC(["limit", model, "\(100 << 20)"], try setUp())
    }

    @Test func badInputGetsCodesAndMessages() throws {
        let i = try setUp()
        let dir = i.scratch + "/errors"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = try runC(["errors", model, dir], i)
    }

    @Test func streamedTextNeverSplitsACharacter() throws {
        let r = try runC(["text", model], try setUp())
        // The run must have met tokens that split a character, or it tested nothing.
        let split = r.stdout.split(separator: " ").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        #expect(split > 0, "\(r.stdout)")
    }

    @Test func batchedSequencesGetTheirIdsAlone() throws {
        _ = try runC(["batch", model], try setUp())
    }

    /// Sessions created and freed in a loop (an app's usual life) leave no compute thread behind
    /// (a `WorkerPool` worker used to hold its pool for its whole loop, so every freed session
    /// left its threads running; the workers now hold a `WorkerCrew`).
    @Test func freedSessionsLeaveNoThreads() throws {
        let i = try setUp()
        let r = try CLITests.run(["lifecycle", model], executable: URL(fileURLWithPath: i.cTest))
        #expect(r.status == 0 && r.stderr.isEmpty, "\(r.stderr)")
    }

    /// Two sessions of one model generating on two threads at once each get their ids alone.
    @Test func sessionsOfOneModelRunOnTwoThreads() throws {
        _ = try runC(["threads", model], try setUp())
    }

    /// Memcheck over the C program's error paths, a generation in memory and under a cap, and a cap set
    /// from a second thread mid-generation (about two minutes under memcheck):
    /// no invalid reads or writes, nothing definitely lost. No suppressions were needed.
    @Test(.enabled(if: CToolchain.valgrind != nil, "valgrind is not installed (Tools/setup.sh installs it)"),
          arguments: [["errors", "DIR"], ["ids", "MODEL", "Hello", "4"], ["ids", "MODEL", "Hello", "4", "\(100 << 20)"],
                     ["limit", "MODEL", "\(100 << 20)"]])
    func cleanUnderValgrind(command: [String]) throws {
        let i = try setUp()
        let dir = i.scratch + "/valgrind-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var args = command.map { $0 == "MODEL" ? model : $0 == "DIR" ? dir : $0 }
        if args[0] == "errors" { args.insert(model, at: 1) }
        let r = try CLITests.run(["--error-exitcode=99", "--leak-check=full", "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
                                  i.cTest] + args, executable: URL(fileURLWithPath: CToolchain.valgrind!))
        #expect(r.status == 0, "valgrind \(args.joined(separator: " ")): status \(r.status)\n\(r.stderr.suffix(3000))")
        #expect(r.stderr.contains("ERROR SUMMARY: 0 errors from 0 contexts"), "\(r.stderr.suffix(3000))")
        #expect(r.stderr.contains("definitely lost: 0 bytes") || r.stderr.contains("All heap blocks were freed"), "\(r.stderr.suffix(3000))")
    }

    /// The README's C program (the ```c block of its Embedding section), built with the README's
    /// command line against the installed library and run under its 100 MiB cap.
    @Test func readmeCExample() throws {
        let i = try setUp()
        let readme = try String(contentsOf: Self.repository.appendingPathComponent("README.md"), encoding: .utf8)
        let block = try #require(readme.components(separatedBy: "```c\n").dropFirst().first?.components(separatedBy: "\n```").first,
                                 "README.md has no ```c block")
        let source = i.scratch + "/app.c", exe = i.scratch + "/app"
        try block.write(toFile: source, atomically: true, encoding: .utf8)
        let build = try CLITests.run([source] + i.flags + ["-o", exe], executable: URL(fileURLWithPath: CToolchain.compiler!))
        #expect(build.status == 0, "\(build.stderr)")
        let r = try CLITests.run([model, "The capital of France is"], executable: URL(fileURLWithPath: exe))
        #expect(r.status == 0 && r.stdout.contains(" tokens, "), "\(r.stdout)\(r.stderr)")
        let missing = try CLITests.run(["/nonexistent.gguf", "hi"], executable: URL(fileURLWithPath: exe))
        #expect(missing.status == 1 && missing.stderr.contains("No such file"), "\(missing.stderr)")
    }

    // MARK: examples/

    /// examples/minimal.cpp prints the CLI's greedy text for the same prompt.
    @Test(.enabled(if: CToolchain.cxxCompiler != nil, "no C++ compiler")) func minimalCppExample() throws {
        let i = try setUp()
        let exe = i.scratch + "/minimal"
        let build = try CLITests.run(["-std=c++17", "-Wall", "-Wextra", "-Werror", Self.repository.path + "/examples/minimal.cpp"] + i.flags + ["-o", exe],
                                     executable: URL(fileURLWithPath: CToolchain.cxxCompiler!))
        #expect(build.status == 0, "\(build.stderr)")
        let r = try CLITests.run([model, "The capital of France is", "16"], executable: URL(fileURLWithPath: exe))
        #expect(r.status == 0, "\(r.stderr)")
        let prompt = try CLITests.tempFile(Array("The capital of France is".utf8))
        let cli = try CLITests.run(["--model", model, "-n", "16", "--temp", "0", prompt])
        #expect(!r.stdout.isEmpty && r.stdout == cli.stdout, "minimal: \(r.stdout.debugDescription)\nCLI: \(cli.stdout.debugDescription)")
    }

    /// examples/chat.c answers each line of stdin in the chat template, one stats line per turn.
    @Test func chatExample() throws {
        let i = try setUp()
        let exe = i.scratch + "/chat"
        let build = try CLITests.run(["-std=c11", "-Wall", "-Wextra", "-Werror", Self.repository.path + "/examples/chat.c"] + i.flags + ["-o", exe],
                                     executable: URL(fileURLWithPath: CToolchain.compiler!))
        #expect(build.status == 0, "\(build.stderr)")
        let r = try CLITests.run([model, "-n", "12"], stdin: "What is 2+2?\n\nName a color.\n", executable: URL(fileURLWithPath: exe))
        #expect(r.status == 0, "\(r.stderr)")
        let turns = r.stderr.split(separator: "\n").filter { $0.hasPrefix("[") && $0.contains(" tokens, ") }
        #expect(turns.count == 2, "stderr: \(r.stderr)")
        #expect(r.stdout.split(separator: "\n").filter { !$0.isEmpty }.count >= 2, "stdout: \(r.stdout)")
        // A model without a chat template is refused with a message, not a crash.
        let synth = try CLITests.run([CLITests.synthModelPath], stdin: "hi\n", executable: URL(fileURLWithPath: exe))
        #expect(synth.status == 1 && synth.stderr.contains("chat template"), "\(synth.stderr)")
    }
}
