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
}
