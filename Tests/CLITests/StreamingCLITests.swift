import Foundation
import Testing

/// The CLI over streamed weights: a failing read, the readers it can use, and what `--stats` says.
@Suite struct StreamingCLITests {
    static let model = CLITests.synthModelPath
    /// A cap at which the synthetic model streams with `-t 2 --ctx 64`: its minimum is 17.1 MiB
    /// (14 MiB of it the runtime allowance), all of it resident 17.4 MiB.
    static let cap = "17.2M"

    /// A read that fails mid-generation (`FLEXRUN_READ_FAULT`, tests only): the text generated so
    /// far is printed (a prefix of the full run's), then one line naming the cause, exit 1.
    @Test(arguments: [("eio:60", "Input/output error"), ("short:60", "short read")])
    func failedReadEndsTheRunNamingTheCause(fault: String, cause: String) throws {
        let prompt = try CLITests.tempFile(Array("The quick brown fox".utf8))
        let args = ["--model", Self.model, "--mem-limit", Self.cap, "-t", "2", "--io", "pread", "--no-mlock", "-n", "48", "--temp", "0",
                    "--ignore-eos", "--ctx", "64", prompt]
        let full = try CLITests.run(args)
        #expect(full.status == 0, "\(full.stderr)")
        let r = try CLITests.run(args, environment: ["FLEXRUN_READ_FAULT": fault])
        #expect(r.status == 1, "\(r.stderr)")
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 && r.stderr.hasPrefix("flexrun: error: cannot read model weights: ") && r.stderr.contains(cause), "\(r.stderr)")
        let printed = String(r.stdout.dropLast())   // the run ends its text with a newline
        #expect(!printed.isEmpty && full.stdout.hasPrefix(printed) && printed.count < full.stdout.count - 1,
                "printed \(printed.debugDescription) of \(full.stdout.debugDescription)")
        CLITests().expectOneLineError(try CLITests.run(args, environment: ["FLEXRUN_READ_FAULT": "sometimes"]), containing: "FLEXRUN_READ_FAULT")
    }

    /// A model on a filesystem that refuses O_DIRECT (a ramfs) still streams, with the same
    /// text, and `--stats` says the reads are buffered; on the usual disk it does not.
    @Test(.enabled(if: TmpfsMount.canMount, "mounting a ramfs needs root and mount(8); refused here"))
    func bufferedReadsAreReported() throws {
        let ramfs = try #require(TmpfsMount(size: "", type: "ramfs"))
        let copy = ramfs.path + "/synth.gguf"
        try FileManager.default.copyItem(atPath: Self.model, toPath: copy)
        let prompt = try CLITests.tempFile(Array("The quick brown fox".utf8))
        let args = ["--mem-limit", Self.cap, "-t", "2", "--no-mlock", "-n", "12", "--temp", "0", "--ctx", "64", "--stats", prompt]
        let direct = try CLITests.run(["--model", Self.model] + args)
        let buffered = try CLITests.run(["--model", copy] + args)
        #expect(direct.status == 0 && buffered.status == 0, "\(direct.stderr)\n\(buffered.stderr)")
        #expect(buffered.stdout == direct.stdout)
        let note = "buffered (the filesystem refuses O_DIRECT"
        #expect(buffered.stderr.contains(note) && !direct.stderr.contains(note), "\(buffered.stderr)")
        #expect(buffered.stderr.contains("disk: ") && !buffered.stderr.contains("disk: 0 B read"), "the weights must stream")
    }

    /// `--mem-limit 100M --stats` on the default model, alone in a fresh memory cgroup: beside
    /// peak RSS (which counts shared code pages and passes 100 MiB) the line gives the cgroup's
    /// own peak, and that is within the cap. Root only (it makes a child cgroup).
    @Test(.enabled(if: (CLITests.smolLM2 != nil || CLITests.modelRequired) && ChildCgroup.canCreate,
                   "needs the default model, root and a memory cgroup to make a child in"))
    func statsShowTheCgroupPeakWithinTheCap() throws {
        _ = try #require(CLITests.smolLM2, "default model missing: run Tools/fetch-model.sh")
        let group = try #require(ChildCgroup())
        let prompt = try CLITests.tempFile(Array("The capital of France is".utf8))
        let r = try group.run([CLITests.binary.path, "--mem-limit", "100M", "-n", "16", "--temp", "0", "--stats", prompt])
        #expect(r.status == 0, "\(r.stderr)")
        let line = try #require(r.stderr.split(separator: "\n").first { $0.hasPrefix("flexrun: peak RSS: ") }.map(String.init))
        #expect(line.contains("cgroup peak ") && line.contains("this process alone") && line.contains("RSS also counts shared code pages"), "\(line)")
        let peak = try #require(Self.bytes(after: "cgroup peak ", in: line))
        #expect(peak <= 100 << 20, "\(line)")
        // The group's own counter: the one printed, or a little more from the exit after it.
        let after = try #require(group.peak)
        #expect(peak <= after + 52_429 && after - peak < 1 << 20, "printed \(peak), the group's counter \(after) after the run")
        #expect(r.stderr.contains("planned of 100.0 MiB limit"), "the weights must stream under the cap")
    }

    /// Outside a cgroup of its own the same line gives anonymous plus model pages at the end,
    /// also within the cap (the test process's group here is shared, or has its own limit).
    @Test(.enabled(if: CLITests.smolLM2 != nil || CLITests.modelRequired))
    func statsShowWhatTheCapGoverns() throws {
        _ = try #require(CLITests.smolLM2, "default model missing: run Tools/fetch-model.sh")
        let prompt = try CLITests.tempFile(Array("The capital of France is".utf8))
        let r = try CLITests.run(["--mem-limit", "100M", "-n", "16", "--temp", "0", "--stats", prompt])
        #expect(r.status == 0, "\(r.stderr)")
        let line = try #require(r.stderr.split(separator: "\n").first { $0.hasPrefix("flexrun: peak RSS: ") }.map(String.init))
        if line.contains("; charged ") {
            let charged = try #require(Self.bytes(after: "; charged ", in: line))
            #expect(charged <= 100 << 20, "\(line)")
        } else {
            #expect(line.contains("cgroup peak "), "\(line)")
        }
    }

    /// "87.4 MiB" after `prefix` in `line`, in bytes.
    static func bytes(after prefix: String, in line: String) -> Int? {
        guard let r = line.range(of: prefix) else { return nil }
        let words = line[r.upperBound...].split(separator: " ")
        guard words.count >= 2, let v = Double(words[0]) else { return nil }
        let unit: [String: Double] = ["B": 1, "KiB": 1024, "MiB": 1_048_576, "GiB": 1_073_741_824]
        return unit[String(words[1]).trimmingCharacters(in: .punctuationCharacters)].map { Int(v * $0) }
    }
}

/// A child memory cgroup of this process's own group, made for one test and removed after
/// (root; v1, or v2 with the memory controller delegated to children).
final class ChildCgroup {
    let directory: String
    let version: Int

    init?() {
        guard geteuid() == 0, let cgroups = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
              let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return nil }
        let lines = cgroups.split(separator: "\n").map { $0.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false) }
        let table = mounts.split(separator: "\n").map { $0.split(separator: " ") }
        var base: String?
        if let m = table.first(where: { $0.count > 3 && $0[2] == "cgroup" && $0[3].split(separator: ",").contains("memory") }),
           let own = lines.first(where: { $0.count == 3 && $0[1].split(separator: ",").contains("memory") }) {
            let path = String(m[1]) + String(own[2])
            base = FileManager.default.fileExists(atPath: path + "/memory.limit_in_bytes") ? path : String(m[1])
            version = 1
        } else if let m = table.first(where: { $0.count > 2 && $0[2] == "cgroup2" }), let own = lines.first(where: { $0.count == 3 && $0[0] == "0" }) {
            let path = String(m[1]) + String(own[2])
            base = FileManager.default.fileExists(atPath: path) ? path : String(m[1])
            try? "+memory".write(toFile: base! + "/cgroup.subtree_control", atomically: false, encoding: .utf8)
            version = 2
        } else {
            return nil
        }
        directory = base! + "/flexrun-test-\(UUID().uuidString.prefix(8))"
        guard mkdir(directory, 0o755) == 0 else { return nil }
        guard FileManager.default.fileExists(atPath: directory + (version == 1 ? "/memory.max_usage_in_bytes" : "/memory.peak")) else {
            rmdir(directory)
            return nil
        }
    }

    deinit { rmdir(directory) }

    /// The group's own peak counter now.
    var peak: Int? {
        (try? String(contentsOfFile: directory + (version == 1 ? "/memory.max_usage_in_bytes" : "/memory.peak"), encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// Runs `command` inside the group: a shell joins it, then execs the command.
    func run(_ command: [String]) throws -> CLITests.Result {
        try CLITests.run(["-c", "echo $$ > \(directory)/cgroup.procs && exec \"$@\"", "sh"] + command,
                         executable: URL(fileURLWithPath: "/bin/sh"))
    }

    static let canCreate: Bool = ChildCgroup() != nil
}
