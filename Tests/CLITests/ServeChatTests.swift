import Foundation
import Testing

/// `flexrun serve` against the real `openai` client, and `flexrun chat` typed into a terminal.
@Suite(.serialized) struct ServeChatTests {
    /// The venv Tools/serve-venv.sh makes (Tools/test.sh runs it first).
    static let python: String? = {
        let env = ProcessInfo.processInfo.environment
        let venv = env["FLEXRUN_SERVE_VENV"] ?? ((env["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/flexrun/serve-venv")
        let p = venv + "/bin/python"
        return FileManager.default.isExecutableFile(atPath: p) ? p : nil
    }()

    static var enabled: Bool { CLITests.modelRequired || (CLITests.smolLM2 != nil && python != nil) }

    static let tools = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Tools")

    /// Acceptance 1 and 3 of the serve issue, through Tools/serve_check.py: the client's chat,
    /// streamed chat, completion and model list (greedy text equal to the CLI's), 1,000 mixed
    /// requests each answered (4xx JSON for the bad ones), abandoned streams freed, flat RSS,
    /// /metrics agreeing with the clients, the API key.
    @Test(.enabled(if: enabled)) func openAIClientAgainstServe() throws {
        let python = try #require(Self.python, "no serve venv: run Tools/serve-venv.sh")
        _ = try #require(CLITests.smolLM2, "no SmolLM2 model: run Tools/fetch-model.sh")
        let r = try CLITests.run([Self.tools.appendingPathComponent("serve_check.py").path, CLITests.binary.path, "--requests", "1000"],
                                 executable: URL(fileURLWithPath: python))
        #expect(r.status == 0, "\(r.stdout.suffix(1500))\(r.stderr.suffix(1500))")
        #expect(r.stdout.contains("serve-check: all passed"))
    }

    /// Bad serve flags are one line and a non-zero exit, before any model is opened.
    @Test func badServeFlags() throws {
        for (args, message) in [(["serve", "--parallel", "0"], "--parallel must be between 1 and 256"),
                                (["serve", "--port", "70000"], "--port must be between 0 and 65535"),
                                (["serve", "--max-body", "12Q"], "--max-body")] {
            let r = try CLITests.run(args)
            #expect(r.status != 0)
            #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1)
        }
    }

    /// A model without a chat template: `flexrun chat` says so in one line and points at `-p`.
    @Test func chatWithoutATemplateIsOneLine() throws {
        let r = try CLITests.run(["chat", "--model", CLITests.synthModelPath], stdin: "Hi\n")
        #expect(r.status != 0)
        #expect(r.stderr.contains("flexrun chat needs one: use flexrun -p TEXT"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1)
    }

    /// A port already taken is one line naming it, not a hang.
    @Test(.enabled(if: CLITests.modelRequired || CLITests.smolLM2 != nil)) func portInUseIsAnError() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &len) } }
        listen(listener, 1)
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let r = try CLITests.run(["serve", "--port", "\(port)", "--ctx", "256"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("cannot serve on 127.0.0.1:\(port)"), "\(r.stderr)")
    }

    // MARK: - Terminal chat

    static func tmux(_ args: [String]) throws -> String {
        let r = try CLITests.run(args, executable: URL(fileURLWithPath: "/usr/bin/tmux"))
        return r.stdout
    }

    /// `tmux new-session -d` forks the tmux server, which would hold a pipe's write end open
    /// forever (reading its output to the end would never return): its output goes nowhere.
    static func startTmux(_ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/tmux")
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
    }

    /// Waits until the pane shows `count` occurrences of `marker`; returns the pane.
    static func waitFor(_ session: String, _ marker: String, count: Int, seconds: Double = 120) throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        var pane = ""
        while Date() < deadline {
            pane = try tmux(["capture-pane", "-p", "-J", "-S", "-200", "-t", session])
            if pane.components(separatedBy: marker).count - 1 >= count { return pane }
            Thread.sleep(forTimeInterval: 0.2)
        }
        Issue.record("timed out waiting for \(count) × \(marker); the pane:\n\(pane)")
        return pane
    }

    /// Acceptance 5: a scripted session under tmux. The second turn prefills only its own tokens
    /// (`--stats`: most of the prompt comes from the cache) and its answer uses the first turn's
    /// content; /reset forgets it; /exit quits.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux") && (CLITests.modelRequired || CLITests.smolLM2 != nil)))
    func terminalChatKeepsContext() throws {
        let model = try #require(CLITests.smolLM2, "no SmolLM2 model")
        let session = "flexrun-chat-\(getpid())"
        try Self.startTmux(["new-session", "-d", "-x", "200", "-y", "50", "-s", session,
                           "\(CLITests.binary.path) chat --model \(model) --temp 0 -n 40 --stats; sleep 30"])
        defer { _ = try? Self.tmux(["kill-session", "-t", session]) }
        // The banner comes just before the first `> ` (which capture-pane prints without its space).
        _ = try Self.waitFor(session, "/exit quits", count: 1)
        _ = try Self.tmux(["send-keys", "-t", session, "The secret word is \"banana\". Reply OK.", "Enter"])
        _ = try Self.waitFor(session, "flexrun: turn:", count: 1)
        _ = try Self.tmux(["send-keys", "-t", session, "What is the secret word?", "Enter"])
        var pane = try Self.waitFor(session, "flexrun: turn:", count: 2)
        let turns = pane.split(separator: "\n").filter { $0.hasPrefix("flexrun: turn:") }.map(String.init)
        func numbers(_ line: String) -> (run: Int, cached: Int)? {
            let m = line.wholeMatch(of: /flexrun: turn: prompt (\d+) tokens run, (\d+) from the cache.*/)
            return m.map { (Int($0.1)!, Int($0.2)!) }
        }
        let first = try #require(numbers(turns[0])), second = try #require(numbers(turns[1]))
        #expect(first.cached == 0)
        // The first turn's prompt and reply are in the cache; only the new turn is run.
        #expect(second.cached >= first.run, "\(turns)")
        #expect(second.run < 20, "\(turns)")
        // The answer after the second question names the word only the first turn gave.
        let afterQuestion = pane.components(separatedBy: "What is the secret word?").last ?? ""
        #expect(afterQuestion.lowercased().contains("banana"), "\(pane)")
        _ = try Self.tmux(["send-keys", "-t", session, "/reset", "Enter"])
        pane = try Self.waitFor(session, "conversation reset", count: 1)
        _ = try Self.tmux(["send-keys", "-t", session, "/exit", "Enter"])
        // The program ends; the shell's `sleep` keeps the pane for the last capture.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let list = try Self.tmux(["list-panes", "-t", session, "-F", "#{pane_current_command}"])
            if !list.contains("flexrun") { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(!(try Self.tmux(["list-panes", "-t", session, "-F", "#{pane_current_command}"])).contains("flexrun"), "/exit did not quit")
    }
}
