import Foundation
import Glibc
import Testing

/// A `flexrun` run in the background, its stdout and stderr going to files, so a test can wait
/// for output to start and then signal it.
final class BackgroundRun {
    let process = Process()
    let stdoutPath: String
    let stderrPath: String

    init(_ args: [String], directory: String = FileManager.default.temporaryDirectory.path) throws {
        let id = UUID().uuidString
        stdoutPath = directory + "/flexrun-bg-\(id).out"
        stderrPath = directory + "/flexrun-bg-\(id).err"
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = CLITests.binary
        process.arguments = args
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: stdoutPath)
        try? FileManager.default.removeItem(atPath: stderrPath)
    }

    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Polls `condition` every 20 ms for up to `seconds`; false if it never held or the process
    /// ended first.
    func wait(upTo seconds: Double = 120, until condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return process.isRunning }
            if !process.isRunning { return false }
            usleep(20_000)
        }
        return false
    }

    func signal(_ s: Int32) { kill(process.processIdentifier, s) }

    /// Waits for the end: killed by a signal (its number), or exited (its status).
    func end() -> (signalled: Bool, status: Int32) {
        process.waitUntilExit()
        return (process.terminationReason == .uncaughtSignal, process.terminationStatus)
    }
}

/// Signals and full disks: an interrupted or failed `pack` or `prune analyze` leaves no partial
/// output, and Ctrl-C during generation still prints the stats and exits 130. Serialized: each
/// test runs a model in a child process, and the timing of the signals needs the cores.
@Suite(.serialized) struct InterruptionTests {
    static func temporaryDirectory(_ label: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func files(in dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }

    /// The size of `dir`'s partial file of `name`, if one exists.
    static func partialSize(in dir: String, of name: String) -> Int? {
        files(in: dir).first { $0.hasPrefix(name + ".partial-") }
            .flatMap { try? FileManager.default.attributesOfItem(atPath: dir + "/" + $0)[.size] as? Int }
    }

    /// SIGINT or SIGTERM while `pack` writes the real model (a 94 MiB block file): the process
    /// still ends as killed by that signal, and neither the output nor its `.partial-PID` stays.
    /// Before the cleanup handler, a ~50 MB partial file was left behind.
    @Test(.enabled(if: CLITests.smolLM2 != nil || CLITests.modelRequired), arguments: [SIGINT, SIGTERM])
    func interruptedPackLeavesNothing(signal: Int32) throws {
        let model = try #require(CLITests.smolLM2, "default model missing: run Tools/fetch-model.sh")
        let dir = try Self.temporaryDirectory("pack-signal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = try BackgroundRun(["pack", model, "-o", dir + "/m.flex", "--codec", "zstd:3", "--disk-bandwidth", "100M"])
        let started = run.wait { (Self.partialSize(in: dir, of: "m.flex") ?? 0) > 4 << 20 }
        try #require(started, "pack ended or never wrote 4 MiB before the signal: \(run.stderr)")
        run.signal(signal)
        let end = run.end()
        #expect(end.signalled && end.status == signal, "ended with \(end)")
        #expect(Self.files(in: dir).isEmpty, "left behind: \(Self.files(in: dir))")
    }

    /// A partial file of a writer that is gone (SIGKILL cannot be caught) is removed by the next
    /// `pack` of the same output; a live process's, and another output's, are left alone.
    @Test func packRemovesStalePartialFilesOfDeadProcesses() throws {
        let dir = try Self.temporaryDirectory("pack-stale")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let dead = gone.processIdentifier, live = getpid()
        let stale = "m.flex.partial-\(dead)", running = "m.flex.partial-\(live)", other = "n.flex.partial-\(dead)"
        for name in [stale, running, other] {
            _ = FileManager.default.createFile(atPath: dir + "/" + name, contents: Data(repeating: 7, count: 4096))
        }
        let r = try CLITests.run(["pack", CLITests.synthModelPath, "-o", dir + "/m.flex", "--codec", "none", "--disk-bandwidth", "1G"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(Self.files(in: dir) == ["m.flex", running, other].sorted())
    }

    /// SIGINT or SIGTERM during `prune analyze`, after a checkpoint was saved: no profile and no
    /// partial file; the checkpoint stays (by design: the same command resumes from it) and is
    /// whole. The synthetic model's GSI over 32 chunks takes about 20 s of CPU here.
    @Test(arguments: [SIGINT, SIGTERM])
    func interruptedAnalysisKeepsOnlyItsCheckpoint(signal: Int32) throws {
        let dir = try Self.temporaryDirectory("analyze-signal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let calib = CLITests.fixtures.appendingPathComponent("text/devtext.txt").path
        let run = try BackgroundRun(["prune", "analyze", "--model", CLITests.synthModelPath, "--method", "gsi", "--calib", calib,
                                     "--chunk", "64", "--tokens", "2048", "-o", dir + "/gsi.json"])
        // Checkpoints are saved after a unit of work once 5 s have passed since the last: wait for the first.
        let saved = run.wait(upTo: 300) { FileManager.default.fileExists(atPath: dir + "/gsi.json.checkpoint") }
        try #require(saved, "no checkpoint before the end: \(run.stderr)")
        run.signal(signal)
        let end = run.end()
        #expect(end.signalled && end.status == signal, "ended with \(end)")
        #expect(Self.files(in: dir) == ["gsi.json.checkpoint"])
        let checkpoint = try Data(contentsOf: URL(fileURLWithPath: dir + "/gsi.json.checkpoint"))
        #expect((try? JSONSerialization.jsonObject(with: checkpoint)) is [String: Any], "the checkpoint must be whole JSON")
    }

    /// Ctrl-C once tokens are streaming: generation stops at the next token, the text so far
    /// and the --stats lines are printed, and the exit status is 130 (the shell's for SIGINT);
    /// SIGTERM the same with 143.
    @Test(.enabled(if: CLITests.smolLM2 != nil || CLITests.modelRequired), arguments: [SIGINT, SIGTERM])
    func interruptedGenerationPrintsStatsAndExits130(signal: Int32) throws {
        _ = try #require(CLITests.smolLM2, "default model missing: run Tools/fetch-model.sh")
        let prompt = try CLITests.tempFile(Array("Write a long story about a lighthouse keeper.".utf8))
        let run = try BackgroundRun(["-n", "1500", "--ctx", "2048", "--temp", "0", "--ignore-eos", "--stats", prompt])
        let started = run.wait { run.stdout.count > 40 }
        try #require(started, "no output before the end: \(run.stderr)")
        run.signal(signal)
        let end = run.end()
        #expect(!end.signalled && end.status == 128 + signal, "ended with \(end): \(run.stderr)")
        let err = run.stderr
        #expect(err.contains("flexrun: decode: ") && err.contains("flexrun: peak RSS: ") && err.contains("flexrun: stop: cancelled"), "\(err)")
        #expect(!err.contains("decode: 1500 tokens"), "the run was not interrupted")
        #expect(run.stdout.count > 40 && run.stdout.hasSuffix("\n"))
    }

    /// The same under `--parallel`: every sequence's JSON line says it was cancelled.
    @Test(.enabled(if: CLITests.smolLM2 != nil || CLITests.modelRequired))
    func interruptedBatchExits130WithEverySequenceCancelled() throws {
        _ = try #require(CLITests.smolLM2, "default model missing: run Tools/fetch-model.sh")
        let prompts = try CLITests.tempFile(Array("Tell me about the sea.\nTell me about the mountains.\n".utf8))
        let run = try BackgroundRun(["--parallel", "2", "-n", "1500", "--ctx", "2048", "--temp", "0", "--ignore-eos", "--stats", prompts])
        // No sequence ends before the signal; --stats prints a progress line after 5 s of decoding.
        let decoding = run.wait { run.stderr.contains("flexrun: progress: ") }
        try #require(decoding, "no progress line before the end: \(run.stderr)")
        run.signal(SIGINT)
        let end = run.end()
        #expect(!end.signalled && end.status == 130, "ended with \(end): \(run.stderr)")
        let lines = run.stdout.split(separator: "\n")
        #expect(lines.count == 2 && lines.allSatisfy { $0.contains("\"stop\":\"cancelled\"") }, "\(run.stdout)")
    }

    /// A full disk during `pack` (a 1 MiB tmpfs, mounted here as root): one line naming the output
    /// and the cause, a non-zero exit, and nothing left on the disk. Skips where mount is refused.
    @Test(.enabled(if: TmpfsMount.canMount, "mounting a small tmpfs needs root and mount(8); refused here"))
    func packToAFullDiskFailsInOneLineAndLeavesNothing() throws {
        let mount = try #require(TmpfsMount(size: "1m"))
        let out = mount.path + "/m.flex"
        let r = try CLITests.run(["pack", CLITests.synthModelPath, "-o", out, "--codec", "none", "--disk-bandwidth", "1G"])
        Self.expectErrorLineAfterProgress(r, exactly: "flexrun: error: cannot write \(out): No space left on device")
        #expect(Self.files(in: mount.path).isEmpty, "left behind: \(Self.files(in: mount.path))")
        // The same for a requantized GGUF written whole.
        let gguf = mount.path + "/m.gguf"
        let g = try CLITests.run(["pack", CLITests.synthModelPath, "-o", gguf, "--requant", "q8_0", "--gguf"])
        Self.expectErrorLineAfterProgress(g, exactly: "flexrun: error: cannot write \(gguf): No space left on device")
        #expect(Self.files(in: mount.path).isEmpty, "left behind: \(Self.files(in: mount.path))")
    }

    /// A failure after progress output: a non-zero exit, and the error is the last line of stderr,
    /// on a line of its own (not glued to a progress bar), and the only error.
    static func expectErrorLineAfterProgress(_ r: CLITests.Result, exactly line: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status != 0 && r.status < 128, "status \(r.status)", sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n").map { $0.split(separator: "\r").last.map(String.init) ?? "" }
        #expect(lines.last == line, "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.components(separatedBy: "error:").count == 2, "stderr: \(r.stderr)", sourceLocation: sourceLocation)
    }
}

/// A small tmpfs (or a ramfs, which refuses O_DIRECT) mounted for a test and unmounted when
/// dropped (root only, with mount(8)).
final class TmpfsMount {
    let path: String

    init?(size: String, type: String = "tmpfs") {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-\(type)-\(UUID().uuidString)").path
        guard (try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)) != nil else { return nil }
        guard Self.tool("/bin/mount", ["-t", type] + (type == "tmpfs" ? ["-o", "size=\(size)"] : []) + [type, path]) else {
            try? FileManager.default.removeItem(atPath: path)
            return nil
        }
    }

    deinit {
        // An io_uring that read a file here lets go of it a moment after its process exits (the
        // kernel tears rings down on a workqueue): until then the mount is busy.
        for _ in 0..<100 {
            if Self.tool("/bin/umount", [path]) { break }
            usleep(100_000)
        }
        try? FileManager.default.removeItem(atPath: path)
    }

    static func tool(_ path: String, _ args: [String]) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    /// Whether this process may mount a tmpfs: root, and a mount that works (probed once).
    static let canMount: Bool = geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/bin/mount") && TmpfsMount(size: "64k") != nil
}
