import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

/// The `flexrun` entry point. Parses arguments with ArgumentParser, but turns every failure
/// into one line on stderr and a non-zero exit: a user with a bad size string or a corrupt
/// model should read what is wrong, not a usage screen or a stack trace.
@main
struct FlexRunMain {
    static func main() {
        do {
            var command = try FlexRun.parseAsRoot()
            try command.run()
        } catch let error as CLIError {
            fail(error.message)
        } catch let error as PruningProfile.ProfileError {
            fail(error.description)
        } catch let error as EngineError {
            fail(error.cliMessage)
        } catch let error as SystemError {
            fail(error.description)
        } catch {
            let code = FlexRun.exitCode(for: error)
            if code == .success || error is CleanExit { FlexRun.exit(withError: error) }
            if let exit = error as? ExitCode { Foundation.exit(exit.rawValue) }
            let message = FlexRun.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            fail(message + " (see flexrun --help)", code: code.rawValue)
        }
    }

    static func fail(_ message: String, code: Int32 = 1) -> Never {
        FileHandle.standardError.write(Data("flexrun: error: \(message)\n".utf8))
        exit(code)
    }
}

/// A user-facing error: one plain sentence. Its description is the message, because
/// ArgumentParser prints errors thrown from `validate()` with `String(describing:)`.
struct CLIError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

struct FlexRun: ParsableCommand {
    static let version = "0.1.0"
    static let configuration = CommandConfiguration(
        commandName: "flexrun",
        abstract: "Run a GGUF language model on the CPU, within a memory limit.",
        discussion: "Without a subcommand, generates text from a prompt file (or - for stdin). See docs/CLI.md.",
        version: "flexrun \(version) (\(Platform.libraryVersions))",
        subcommands: [Generate.self, Chat.self, Serve.self, Prefill.self, Decode.self, Perplexity.self, Plan.self, Info.self, Prune.self, Pack.self, Calibrate.self, Tokenize.self],
        defaultSubcommand: Generate.self)
}

/// Options shared by every subcommand that opens a model.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "GGUF model file (default: the SmolLM2 model in the local model cache).")
    var model: String?

    @Option(name: .customLong("mem-limit"), parsing: .unconditional, help: "Total memory the engine may use: 512M, 4G, 1.5GiB or bytes.")
    var memLimit: String?

    @Option(name: [.customShort("t"), .long], parsing: .unconditional, help: "Compute threads (default: all cores).")
    var threads: Int?

    @Option(name: .long, parsing: .unconditional, help: "Context length in tokens (default: min(2048, the model's)).")
    var ctx: Int?

    @Option(name: .long, help: "Blocks to skip, e.g. attn:3,ffn:17.")
    var skip: String?

    @Option(name: .customLong("prefill-skip"), help: "Blocks to skip while processing the prompt (default: as --skip).")
    var prefillSkip: String?

    @Option(name: .long, help: "Pruning profile (from flexrun prune analyze) to take a mask from; needs --budget.")
    var profile: String?

    @Option(name: .long, help: "With --profile: how many blocks to remove.")
    var budget: Int?

    @Option(name: .long, help: "Below the streaming minimum: off (refuse, exact), fit (skip blocks until the plan fits) or auto (also skip to reach --min-tps).")
    var prune: String = "off"

    @Option(name: .customLong("prune-policy"), help: "Who chooses the blocks under --prune fit|auto: greedy (in --profile's order) or rl (RAP's trained agent). Default: rl under auto when a trained agent is beside --profile (greedy's order drops attention first, which frees little streaming; docs/RAP.md), greedy otherwise.")
    var prunePolicy: String?

    @Option(name: .customLong("rl-policy"), help: "The trained agent for --prune-policy rl (default: rap-policy.json beside --profile).")
    var rlPolicy: String?

    @Option(name: .customLong("min-tps"), help: "With --prune auto: decode tokens per second (all sequences) to reach.")
    var minTPS: Double?

    @Flag(name: .customLong("resident-only"), help: "Under --mem-limit, stream nothing: kept weights and KV must fit (with --prune fit, blocks are skipped until they do).")
    var residentOnly = false

    @Option(name: .long, help: "How streamed weights are read under --mem-limit: auto, uring or pread.")
    var io: String = "auto"

    @Flag(name: .customLong("no-mlock"), help: "Do not lock the resident weights in RAM.")
    var noMlock = false

    @Option(name: .customLong("ring-slots"), help: "Staging slots for streamed weights (default 2).")
    var ringSlots: Int?

    @Option(name: .long, help: "Under a cap that cannot hold every weight, keep resident first: head-first (default) or layers-first.")
    var residency: String = "head-first"

    @Option(name: .long, help: "Speculative decoding: off (default), auto (prompt lookup where it pays) or lookup (always draft). Output stays exact.")
    var speculate: String = "off"

    @Option(name: .customLong("draft-max"), help: "Most tokens drafted per pass with --speculate (1-8, default 8).")
    var draftMax: Int = 8

    func engineOptions(context: Int? = nil) throws -> EngineOptions {
        var options = EngineOptions(modelPath: try modelPath(model))
        if let memLimit {
            do { options.memoryLimit = try ByteSize(parsing: memLimit).bytes } catch { throw CLIError("--mem-limit: \(error)") }
        }
        if let threads { options.threads = threads }
        guard let backend = ReadBackend(rawValue: io) else { throw CLIError("--io must be auto, uring or pread") }
        options.readBackend = backend
        options.lockMemory = !noMlock
        if let ringSlots { options.ringSlots = ringSlots }
        guard let order = Residency(rawValue: residency) else { throw CLIError("--residency must be head-first or layers-first") }
        options.residency = order
        guard let speculation = SpeculationMode(rawValue: speculate) else { throw CLIError("--speculate must be off, auto or lookup") }
        guard (1...8).contains(draftMax) else { throw CLIError("--draft-max must be between 1 and 8") }
        options.speculation = speculation
        options.maxDraft = draftMax
        options.contextLength = context ?? ctx
        if let skip {
            do { options.skip = try BlockMask(parsing: skip) } catch { throw CLIError("--skip: \(error)") }
        }
        guard let mode = PruneMode(rawValue: prune) else { throw CLIError("--prune must be off, fit or auto") }
        options.prune = mode
        options.residentOnly = residentOnly
        switch (profile, budget) {
        case let (path?, k?):
            guard k >= 0 else { throw CLIError("--budget must be 0 or more") }
            let profile = try PruningProfile.read(path: path)
            let mask = try profile.mask(removing: k, path: path)
            // A pdtrim profile's budget has a gentler mask for the prompt (--prefill-skip overrides it).
            let prefill = try profile.prefillMask(removing: k, path: path)
            if prefill != mask { options.prefillSkip = BlockMask(skipping: options.skip.skipped.union(prefill.skipped)) }
            options.skip = BlockMask(skipping: options.skip.skipped.union(mask.skipped))
            if mode != .off { options.pruneOrder = try profile.removalOrder(path: path) }
        case let (path?, nil) where mode != .off:
            options.pruneOrder = try PruningProfile.read(path: path).removalOrder(path: path)
        case (nil, nil):
            if mode != .off { throw CLIError("--prune \(mode.rawValue) needs --profile (the order to drop blocks in)") }
        default: throw CLIError("--profile goes with --budget, or with --prune fit|auto")
        }
        let agentFile = rlPolicy ?? ((profile.map { ($0 as NSString).deletingLastPathComponent } ?? ".") + "/rap-policy.json")
        let policy = prunePolicy ?? (mode == .auto && FileManager.default.fileExists(atPath: agentFile) ? "rl" : "greedy")
        switch policy {
        case "greedy": break
        case "rl":
            guard mode != .off else { throw CLIError("--prune-policy rl goes with --prune fit or auto") }
            options.prunePolicy = try readPolicy(agentFile)
        default: throw CLIError("--prune-policy must be greedy or rl")
        }
        if let minTPS {
            guard mode == .auto else { throw CLIError("--min-tps goes with --prune auto") }
            guard minTPS > 0, minTPS.isFinite else { throw CLIError("--min-tps must be a positive number") }
            options.minTokensPerSecond = minTPS
            options.throughput = Calibration.load(modelPath: options.modelPath, threads: options.threads)?.throughput
        }
        if let prefillSkip {
            do { options.prefillSkip = try BlockMask(parsing: prefillSkip) } catch { throw CLIError("--prefill-skip: \(error)") }
        }
        // Tests only: fail the N-th streamed read (eio:N or short:N), to check that a failing
        // disk ends the run with its cause and a non-zero exit.
        if let spec = ProcessInfo.processInfo.environment["FLEXRUN_READ_FAULT"] {
            guard let fault = ReadFault(parsing: spec) else { throw CLIError("FLEXRUN_READ_FAULT must be eio:N or short:N") }
            options.readFault = fault
        }
        return options
    }
}

/// `--model`, else the default model, which must have been fetched.
func modelPath(_ model: String?) throws -> String {
    if let model { return model }
    let path = ModelCache.defaultModelPath
    guard FileManager.default.fileExists(atPath: path) else {
        throw CLIError("default model not found at \(path); fetch it with: bash Tools/fetch-model.sh (from the FlexRun repository), or pass --model PATH")
    }
    return path
}

/// RAP's trained agent from `path`, its error as one line.
func readPolicy(_ path: String) throws -> RLPolicy {
    let result = Result { () throws(RLPolicy.FileError) in try RLPolicy.read(path: path, layers: nil) }
    switch result {
    case .success(let p): return p
    case .failure(let e): throw CLIError(e.description)
    }
}

/// Reads a prompt or text file, or stdin for "-", as UTF-8.
func readText(_ path: String, what: String) throws -> String {
    let bytes: [UInt8]
    if path == "-" {
        bytes = Array(FileHandle.standardInput.readDataToEndOfFile())
    } else {
        do {
            let file = try FlexSystem.FileHandle(readingFrom: path)
            bytes = try file.readAll()
        } catch {
            throw CLIError("cannot read \(what) \(error)")
        }
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
        throw CLIError("\(what) \(path == "-" ? "on stdin" : path) is not valid UTF-8")
    }
    return text
}

/// Writes text to fd 1 unbuffered, so streamed tokens appear as they are generated.
/// Writes generated text to stdout. A write that fails (a full disk, a closed pipe) ends the run
/// with a message and a non-zero exit: output lost with exit 0 would look like success.
func writeStandardOutput(_ text: String) throws {
    var text = text
    try text.withUTF8 { buf in
        var off = 0
        while off < buf.count {
            do throws(SystemError) { off += try retryingEINTR("write", descriptorMayBeClosed: true) { write(1, buf.baseAddress! + off, buf.count - off) } } catch {
                throw CLIError("cannot write the output: \(String(cString: strerror(error.code)))")
            }
        }
    }
}
