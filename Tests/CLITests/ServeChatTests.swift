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

    /// tmux on this process's own socket (`-L`, no config), so the test neither meets nor leaves
    /// a server anyone else uses. Each call is posix_spawn and waitpid, not Foundation's Process:
    /// on CI (stop 30) `Process.waitUntilExit` never returned for the client that forks tmux's
    /// server — the client had exited and sat unreaped — and the suite hung until the timeout.
    /// The child gets /dev/null for stdin and stderr, a file for stdout, no other descriptor
    /// (the daemonised server would otherwise hold a concurrent test's pipe open for its lifetime).
    static func tmux(_ args: [String]) throws -> String {
        let out = CLITests.temporaryDirectory + "/tmux-\(UUID().uuidString)"
        defer { unlink(out) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // glibc 2.34's closefrom action; Swift's Glibc module does not declare it.
        if let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
            _ = unsafeBitCast(sym, to: CloseFrom.self)(&actions, 3)
        }
        // Signals as a fresh process has them: the test runner's threads block and ignore some,
        // and a server (and the shell in its pane) inheriting that would outlive kill-server.
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ["tmux", "-L", tmuxSocket, "-f", "/dev/null"] + args
        var env = ProcessInfo.processInfo.environment
        if env["TERM"] == nil { env["TERM"] = "xterm-256color" }
        let cArgs = argv.map { strdup($0) } + [nil], cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (cArgs + cEnv).forEach { free($0) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, "/usr/bin/tmux", &actions, &attr, cArgs, cEnv)
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        return (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
    }

    static let tmuxSocket = "flexrun-test-\(getpid())"

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
        _ = try Self.tmux(["new-session", "-d", "-x", "200", "-y", "50", "-s", session,
                           "\(CLITests.binary.path) chat --model \(model) --temp 0 -n 40 --stats; sleep 30"])
        defer { _ = try? Self.tmux(["kill-server"]) }
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
        try #require(turns.count >= 2, "\(pane)")
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
