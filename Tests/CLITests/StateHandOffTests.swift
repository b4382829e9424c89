import Foundation
import Testing

/// KV state hand-off between processes: `--save-state` / `--load-state`, and `flexrun prefill
/// --serve` / `flexrun decode --from` over a Unix socket, each giving the ids of one run.
@Suite(.serialized) struct StateHandOffTests {
    static var enabled: Bool { CLITests.modelRequired || CLITests.smolLM2 != nil }

    static func ids(_ r: CLITests.Result) -> String? {
        r.stderr.split(separator: "\n").first { $0.hasPrefix("flexrun: ids:") }.map(String.init)
    }

    static let run = ["-p", "Once upon a time", "-n", "24", "--seed", "3", "--print-ids"]

    @Test(.enabled(if: enabled)) func saveThenLoadInAnotherProcessEqualsOneRun() throws {
        let reference = try CLITests.run(Self.run)
        let file = CLITests.temporaryDirectory + "/state-\(UUID().uuidString).kv"
        defer { unlink(file) }
        let save = try CLITests.run(["-p", "Once upon a time", "-n", "24", "--seed", "3", "--save-state", file])
        #expect(save.status == 0, "\(save.stderr)")
        #expect(save.stdout.isEmpty, "the prefill side prints no text")
        #expect(save.stderr.contains("saved state: 4 prompt tokens"))
        let load = try CLITests.run(["--load-state", file, "-n", "24", "--print-ids", "--mem-limit", "70M"])
        #expect(load.status == 0, "\(load.stderr)")
        #expect(Self.ids(load) != nil && Self.ids(load) == Self.ids(reference))
        #expect(load.stdout == reference.stdout)
    }

    @Test(.enabled(if: enabled)) func prefillAndDecodeOverASocket() throws {
        let reference = try CLITests.run(Self.run)
        let socket = CLITests.temporaryDirectory + "/handoff-\(getpid()).sock"
        let prefill = Process()
        prefill.executableURL = CLITests.binary
        prefill.arguments = ["prefill", "--serve", socket, "-p", "Once upon a time", "-n", "24", "--seed", "3"]
        let err = Pipe()
        prefill.standardError = err
        prefill.standardOutput = FileHandle.nullDevice
        try prefill.run()
        let decode = try CLITests.run(["decode", "--from", socket, "-n", "24", "--print-ids", "--stats"])
        prefill.waitUntilExit()
        let prefillLog = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(prefill.terminationStatus == 0, "\(prefillLog)")
        #expect(decode.status == 0, "\(decode.stderr)")
        #expect(Self.ids(decode) == Self.ids(reference))
        #expect(prefillLog.contains("handed over"))
        #expect(decode.stderr.contains("received state:"))
        #expect(!FileManager.default.fileExists(atPath: socket), "the socket file stays behind")
    }

    /// `--kv-prune`: the saved state holds fewer rows (the chosen layers keep their first F and
    /// last R positions) and still continues in another process; a layer list or the N cheapest
    /// of a kv-handoff JSON; bad specs are one line.
    @Test(.enabled(if: enabled)) func prunedStatesAreSmallerAndContinue() throws {
        let prompt = "The history of the printing press begins in the fifteenth century, when movable type changed how books were made and read."
        let full = CLITests.temporaryDirectory + "/full-\(UUID().uuidString).kv"
        let listed = CLITests.temporaryDirectory + "/listed-\(UUID().uuidString).kv"
        let ranked = CLITests.temporaryDirectory + "/ranked-\(UUID().uuidString).kv"
        let order = try CLITests.tempFile(Array(#"{"layer_order": [9, 26, 18, 22, 13, 2]}"#.utf8))
        defer { for f in [full, listed, ranked] { unlink(f) } }
        // One seed: the sampling state is part of the file.
        let a = try CLITests.run(["-p", prompt, "--seed", "3", "--save-state", full])
        let b = try CLITests.run(["-p", prompt, "--seed", "3", "--save-state", listed, "--kv-prune", "2:4:9,26,18,22,13,2"])
        let c = try CLITests.run(["-p", prompt, "--seed", "3", "--save-state", ranked, "--kv-prune", "2:4:6@\(order)"])
        #expect(a.status == 0 && b.status == 0 && c.status == 0, "\(a.stderr)\(b.stderr)\(c.stderr)")
        let sizes = try [full, listed, ranked].map { try FileManager.default.attributesOfItem(atPath: $0)[.size] as! Int }
        #expect(sizes[1] < sizes[0] && sizes[1] == sizes[2], "\(sizes)")
        let load = try CLITests.run(["--load-state", listed, "-n", "12", "--print-ids"])
        #expect(load.status == 0 && Self.ids(load) != nil, "\(load.stderr)")
        for (args, message) in [
            (["-p", "x", "--save-state", listed, "--kv-prune", "4:64"], "--kv-prune must be FIRST:LAST:LAYERS"),
            (["-p", "x", "--kv-prune", "4:64:1"], "--kv-prune goes with --save-state"),
            (["-p", "x", "--save-state", listed, "--kv-prune", "4:64:99"], "layer 99 does not exist"),
            (["-p", "x", "--save-state", listed, "--kv-prune", "4:64:9@/nonexistent.json"], "cannot read /nonexistent.json"),
        ] {
            let r = try CLITests.run(args)
            #expect(r.status != 0, "\(args)")
            #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
        }
    }

    @Test(.enabled(if: enabled)) func badStatesAreOneLine() throws {
        let good = CLITests.temporaryDirectory + "/good-\(UUID().uuidString).kv"
        defer { unlink(good) }
        _ = try CLITests.run(["-p", "Hello", "-n", "4", "--save-state", good])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))
        let truncated = try CLITests.tempFile(Array(bytes.prefix(bytes.count / 2)))
        var flipped = Array(bytes)
        flipped[flipped.count / 2] ^= 1
        let corrupt = try CLITests.tempFile(flipped)
        for (args, message) in [
            (["--load-state", truncated], "checksum mismatch"),
            (["--load-state", corrupt], "checksum mismatch"),
            (["--load-state", "/nonexistent/x.kv"], "cannot read state file"),
            (["--load-state", good, "--skip", "attn:2"], "open it with the same --skip"),
            (["--load-state", good, "--model", CLITests.synthModelPath], "another model"),
            (["--load-state", good, "-p", "x"], "give no prompt"),
            (["--save-state", "/nonexistent-dir/x.kv", "-p", "x"], "cannot write state file"),
        ] {
            let r = try CLITests.run(args)
            #expect(r.status != 0, "\(args)")
            #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
        }
    }
}
