import ArgumentParser
import FlexEngine
import FlexServe
import FlexSystem
import Foundation

/// `flexrun serve`: the OpenAI-compatible server (FlexServe) on one engine, its requests batched
/// in one session.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model over HTTP with OpenAI's API: /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics.",
        discussion: "Requests are decoded together, up to --parallel at once; more wait in a bounded queue (503 when it is full). "
            + "Loopback only unless --host says otherwise. See docs/CLI.md.")

    @OptionGroup var model: ModelOptions

    @Option(name: .long, help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(name: .long, help: "Port to listen on (0: any free port, printed at start).")
    var port = 8080

    @Option(name: .long, help: "Sequences decoded together at most (each holds a share of the KV cache).")
    var parallel = 4

    @Option(name: .customLong("queue"), help: "Requests that may wait for a free sequence; more get 503.")
    var queue = 64

    @Option(name: .customLong("api-key"), help: "Require Authorization: Bearer KEY on /v1/* and /metrics (default: the FLEXRUN_API_KEY variable, else none).")
    var apiKey: String?

    @Option(name: .customLong("max-body"), help: "Largest request body accepted (413 beyond).")
    var maxBody = "1M"

    func validate() throws {
        guard (1...256).contains(parallel) else { throw CLIError("--parallel must be between 1 and 256") }
        guard (0...65535).contains(port) else { throw CLIError("--port must be between 0 and 65535") }
        guard (0...100_000).contains(queue) else { throw CLIError("--queue must be between 0 and 100000") }
    }

    func run() throws {
        try validate()
        let body: Int
        do { body = try ByteSize(parsing: maxBody).bytes } catch { throw CLIError("--max-body: \(error)") }
        guard body >= 1024 else { throw CLIError("--max-body must be at least 1K") }
        var options = try model.engineOptions(context: nil)
        options.maxSequences = parallel
        let engine = try Engine(options: options)
        var serve = ServeOptions(modelID: URL(fileURLWithPath: options.modelPath).deletingPathExtension().lastPathComponent)
        serve.host = host
        serve.port = port
        serve.apiKey = apiKey ?? ProcessInfo.processInfo.environment["FLEXRUN_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        serve.maxBodyBytes = body
        serve.queueLimit = queue
        let server = Server(engine: engine, parallel: parallel, options: serve)
        let modelID = serve.modelID, wanted = serve.port
        let memory = memorySummary(engine)
        let host = self.host
        let failure = ServeFailure()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do {
                try await server.run { port in
                    FileHandle.standardError.write(Data(("flexrun: serving \(modelID) on http://\(host.contains(":") ? "[\(host)]" : host):\(port) "
                        + "(\(server.scheduler.parallel) sequences, context \(engine.contextLength)); memory: \(memory)\n").utf8))
                }
            } catch {
                failure.set("cannot serve on \(host):\(wanted): \(error)")
            }
            done.signal()
        }
        done.wait()
        if let message = failure.message { throw CLIError(message) }
    }
}

/// The server task's error, handed to the main thread.
final class ServeFailure: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: String?
    func set(_ m: String) { lock.withLock { stored = m } }
    var message: String? { lock.withLock { stored } }
}
