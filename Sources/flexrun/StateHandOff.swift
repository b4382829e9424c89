import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

/// `flexrun prefill --serve ADDRESS`: runs the prompt, then hands its KV state to the first
/// `flexrun decode --from ADDRESS` that connects (a Unix socket path, or `tcp:127.0.0.1:PORT`).
struct Prefill: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a prompt and hand its KV state to a `flexrun decode` process over a socket.",
        discussion: "ADDRESS is a Unix socket path or tcp:HOST:PORT. The decode side must open the same model with the same --skip. See docs/CLI.md.")

    @Option(name: .customLong("serve"), help: "Where to hand the state over: a Unix socket path, or tcp:127.0.0.1:PORT.")
    var address: String

    @OptionGroup var generate: Generate

    func run() throws { try generate.run(handOff: .serve(address)) }
}

/// `flexrun decode --from ADDRESS`: continues a state a `flexrun prefill` hands over.
struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continue a KV state received from `flexrun prefill --serve` (no prompt).",
        discussion: "Waits up to 10 minutes for the prefill side. Greedy ids equal those of one uninterrupted run. See docs/CLI.md.")

    @Option(name: .customLong("from"), help: "The prefill side's address: a Unix socket path, or tcp:127.0.0.1:PORT.")
    var address: String

    @OptionGroup var generate: Generate

    func run() throws { try generate.run(handOff: .receive(address)) }
}

/// A state file's size limit: far above any state a supported context holds (SmolLM2 at 8,192
/// positions is 180 MiB), and a bound on what a corrupt length field could make us allocate.
let stateSizeLimit = 16 << 30

extension Generate {
    func readState(_ path: String) throws -> KVState {
        let bytes: [UInt8]
        do { bytes = try FlexSystem.FileHandle(readingFrom: path).readAll() } catch { throw CLIError("cannot read state file \(error)") }
        do { return try bytes.withUnsafeBytes { b throws(EngineError) in try KVState.decode(b) } } catch let e as EngineError {
            throw CLIError("\(path): \(e.cliMessage)")
        }
    }

    func receiveState(_ address: String) throws -> (KVState, (bytes: Int, seconds: Double)) {
        let t0 = Platform.now()
        let bytes: [UInt8]
        do {
            let socket = try StreamSocket.connect(to: address, timeout: 600)
            bytes = try socket.receiveMessage(limit: stateSizeLimit)
        } catch { throw CLIError("cannot receive the state: \(error)") }
        let seconds = Platform.now() - t0
        do { return (try bytes.withUnsafeBytes { b throws(EngineError) in try KVState.decode(b) }, (bytes.count, seconds)) } catch let e as EngineError {
            throw CLIError("\(address): \(e.cliMessage)")
        }
    }

    /// `--kv-prune F:R:LAYERS`, LAYERS a comma list or N@FILE (the first N of the `layer_order`
    /// of a `flexrun prune kv-handoff -o FILE`, cheapest first).
    func parseKVPruning(_ spec: String) throws -> KVPruning {
        let parts = spec.split(separator: ":", maxSplits: 2).map(String.init)
        guard parts.count == 3, let first = Int(parts[0]), let last = Int(parts[1]), first >= 0, last >= 1 else {
            throw CLIError("--kv-prune must be FIRST:LAST:LAYERS, e.g. 4:64:9,26,18 or 4:64:12@kv.json")
        }
        let layers: [Int]
        if let at = parts[2].firstIndex(of: "@") {
            guard let n = Int(parts[2][..<at]), n >= 1 else { throw CLIError("--kv-prune: '\(parts[2])' is not N@FILE") }
            let file = String(parts[2][parts[2].index(after: at)...])
            let object: Any
            do { object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) } catch {
                throw CLIError("--kv-prune: cannot read \(file): \((error as NSError).localizedDescription)")
            }
            guard let order = (object as? [String: Any])?["layer_order"] as? [Int] else {
                throw CLIError("--kv-prune: \(file) has no layer_order (write it with flexrun prune kv-handoff -o)")
            }
            guard n <= order.count else { throw CLIError("--kv-prune: \(file) orders \(order.count) layers, not \(n)") }
            layers = Array(order.prefix(n))
        } else {
            layers = try parts[2].split(separator: ",").map { s in
                guard let l = Int(s), l >= 0 else { throw CLIError("--kv-prune: '\(s)' is not a layer") }
                return l
            }
            guard !layers.isEmpty else { throw CLIError("--kv-prune: no layers") }
        }
        return KVPruning(layers: Set(layers), first: first, last: last)
    }

    func prefill(engine: Engine, prompt: String, parameters: GenerateParameters, pruning: KVPruning?) throws -> (KVState, [UInt8], Double) {
        if let l = pruning?.layers.first(where: { $0 >= engine.config.layerCount }) {
            throw CLIError("--kv-prune: layer \(l) does not exist (the model has \(engine.config.layerCount))")
        }
        let t0 = Platform.now()
        let state = try engine.prefillState(prompt: prompt, parameters: parameters, pruning: pruning)
        return (state, state.encoded(), Platform.now() - t0)
    }

    func describe(_ state: KVState, _ bytes: [UInt8], seconds: Double) -> String {
        "\(state.tokens.count) prompt tokens in \(f(seconds, 3)) s; state \(ByteSize.format(bytes.count)) "
            + "(K and V of \(state.layers.count) layers, \(ByteSize.format(state.rowBytes)))"
    }

    /// `--save-state FILE`: written whole or not at all (a temporary file renamed on success).
    func saveState(engine: Engine, prompt: String, parameters: GenerateParameters, pruning: KVPruning?, to path: String) throws {
        let (state, bytes, seconds) = try prefill(engine: engine, prompt: prompt, parameters: parameters, pruning: pruning)
        do {
            var out = try OutputFile(path: path)
            try out.write(bytes)
            try out.commit()
        } catch { throw CLIError("cannot write state file \(error)") }
        FileHandle.standardError.write(Data("flexrun: saved state: \(describe(state, bytes, seconds: seconds)) to \(path)\n".utf8))
    }

    /// `flexrun prefill --serve ADDRESS`: listens first (the decode side may connect while the
    /// prompt runs), then hands the state to the first connection.
    func serveState(engine: Engine, prompt: String, parameters: GenerateParameters, pruning: KVPruning?, on address: String) throws {
        let listener: StreamSocket
        do { listener = try StreamSocket.listen(on: address) } catch { throw CLIError("cannot listen on \(address): \(error)") }
        let (state, bytes, seconds) = try prefill(engine: engine, prompt: prompt, parameters: parameters, pruning: pruning)
        FileHandle.standardError.write(Data("flexrun: prefill: \(describe(state, bytes, seconds: seconds)); waiting on \(address)\n".utf8))
        let t0 = Platform.now()
        do {
            let peer = try listener.accept()
            try peer.send(message: bytes)
        } catch { throw CLIError("cannot hand the state over: \(error)") }
        FileHandle.standardError.write(Data("flexrun: handed over \(ByteSize.format(bytes.count)) in \(f(Platform.now() - t0, 3)) s\n".utf8))
    }
}
