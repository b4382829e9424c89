import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

/// `flexrun plan`: what the engine would hold under a cap, without generating anything.
struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the memory plan for a cap: resident and streamed weights, ring, KV cache.")

    @OptionGroup var model: ModelOptions

    @Flag(name: .long, help: "List every stage's streamed bytes and reads.")
    var verbose = false

    @Option(name: .long, help: "Plan for N sequences at once (KV pages and logits for each).")
    var parallel = 1

    func run() throws {
        var options = try model.engineOptions()
        if options.contextLength == nil { options.contextLength = 2048 }
        guard (1...1024).contains(parallel) else { throw CLIError("--parallel must be between 1 and 1024") }
        options.maxSequences = parallel
        let engine = try Engine(options: options)
        guard let p = engine.plan else {
            print("no memory limit (none given, and no cgroup limit): the model runs from a mapping of the file")
            print("in memory: \(ByteSize.format(engine.memory.total)) (\(engine.memory.breakdown))")
            return
        }
        let i = p.inputs
        func mb(_ v: Int) -> String { ByteSize.format(v) }
        print("cap                \(mb(i.cap))")
        print("  KV cache         \(mb(i.kvCacheBytes))  (\(engine.contextLength) tokens" + (parallel > 1 ? " × \(parallel) sequences)" : ")"))
        print("  buffers          \(mb(i.bufferBytes + i.layout.pinnedBytes))  (activations, logits, norms)")
        print("  runtime          \(mb(i.runtimeBytes))  (allowance: Swift runtime, code, tokenizer)")
        print("  resident weights \(mb(p.residentBytes))  of \(mb(i.layout.matrixBytes))")
        print("  staging ring     \(mb(p.ringBytes))  (\(p.ringSlots) × \(mb(p.slotBytes)))")
        print("  total            \(mb(p.totalBytes))")
        if p.isFullyResident {
            print("every weight is resident: nothing streams")
        } else {
            let layerStages = p.stages.filter { if case .layer = $0.kind { true } else { false } }.count
            print("streamed per token \(mb(p.streamedBytesPerToken)) (\(mb(p.readBytesPerToken)) in aligned reads), "
                  + "\(layerStages) layer stages + \(p.stages.count - layerStages) head chunks")
            print("minimum cap        \(mb(MemoryPlan.minimumCap(i)))")
        }
        for d in engine.session.pruneDecisions { print(pruneLine(d)) }
        if verbose {
            for s in p.stages {
                print("  \(s.kind): \(mb(s.readBytes)) in \(s.reads.count) reads; " + s.pieces.map { "\($0.tensor)[\($0.rows)]" }.joined(separator: ", "))
            }
        }
    }
}
