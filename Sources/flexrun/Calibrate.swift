import ArgumentParser
import FlexEngine
import FlexSystem
import Foundation

/// `flexrun calibrate`: measures the throughput model `--prune auto` predicts with, and caches it.
struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure this machine's decode time per block and disk rate for --prune auto, and cache them.",
        discussion: "In memory at batch 1 and 8 (dense, every attention block skipped, every FFN block skipped), at a long "
            + "context, and streaming everything at the streaming minimum. About half a minute; the result is cached under "
            + "~/.cache/flexrun/calibration/. The disk varies over a session: calibrate again before measuring.")

    @OptionGroup var model: ModelOptions

    @Option(name: .long, help: "Decode steps timed per measurement (the median is kept).")
    var steps = 24

    func run() throws {
        guard (4...512).contains(steps) else { throw CLIError("--steps must be between 4 and 512") }
        let options = try model.denseInMemoryOptions()
        let m = try Model(path: options.modelPath, streaming: true)
        let layers = m.config.layerCount
        let all = BlockMask.Block.all(layers: layers)
        let noAttention = BlockMask(skipping: all.filter { $0.kind == .attention })
        let noFFN = BlockMask(skipping: all.filter { $0.kind == .ffn })
        let line = ProgressLine(label: "calibrate")
        var done = 0
        let total = 7

        /// Median seconds of a decode step: `batch` sequences with `prompt` tokens each.
        func stepSeconds(batch: Int, mask: BlockMask, prompt: Int, cap: Int? = nil) throws -> (seconds: Double, bytes: Int) {
            var o = options
            o.maxSequences = batch
            o.contextLength = prompt + steps + 16
            o.skip = mask
            o.memoryLimit = cap
            let session = try Session(model: m, options: o)
            var params = GenerateParameters(maxTokens: steps + 2, sampling: .greedy)
            params.stopAtEndOfGeneration = false
            for b in 0..<batch {
                _ = try session.add(tokens: (0..<prompt).map { Int32(200 + ($0 * 7 + b * 13) % 4000) }, parameters: params)
            }
            var times: [Double] = []
            var generated = 0
            let bytes0 = session.streamCounters.bytesRead
            var bytesAtDecode = bytes0
            while true {
                let before = generated
                let t0 = Platform.now()
                guard try session.step({ e in if case .token = e { generated += 1 } }) else { break }
                // A decode step yields one token per sequence; the first yields come from prompts.
                if before >= batch, generated - before == batch { times.append(Platform.now() - t0) }
                if before < batch && generated >= batch { bytesAtDecode = session.streamCounters.bytesRead }
            }
            times.sort()
            let perStep = times.isEmpty ? 0 : (session.streamCounters.bytesRead - bytesAtDecode) / max(1, times.count)
            done += 1
            line.update(done: done, total: total, status: String(format: "batch %d, %d blocks skipped, %d-token prompt: %.2f ms a step",
                                                                  batch, mask.skipped.count, prompt, 1000 * (times.isEmpty ? 0 : times[times.count / 2])))
            return (times.isEmpty ? 0 : times[times.count / 2], perStep)
        }

        var attention: [Double] = [], ffn: [Double] = [], base: [Double] = [], denseSteps: [Double] = []
        for batch in [1, 8] {
            let dense = try stepSeconds(batch: batch, mask: .none, prompt: 16).seconds
            denseSteps.append(dense)
            let withoutAttention = try stepSeconds(batch: batch, mask: noAttention, prompt: 16).seconds
            let withoutFFN = try stepSeconds(batch: batch, mask: noFFN, prompt: 16).seconds
            let a = max(0, dense - withoutAttention) / Double(layers), f = max(0, dense - withoutFFN) / Double(layers)
            attention.append(a)
            ffn.append(f)
            base.append(max(0, dense - Double(layers) * (a + f)))
        }
        // The dense batch-1 step above is the short-context end of the per-position cost.
        let long = try stepSeconds(batch: 1, mask: .none, prompt: 1024).seconds
        let positionSeconds = max(0, long - denseSteps[0]) / Double(layers * (1024 - 16))
        // Streaming everything: the rate the streamer reads at when nothing else limits it.
        let inMemory = try Session(model: m, options: { var o = options; o.contextLength = 64; return o }())
        let layout = try m.layout()
        let minimum = MemoryPlan.minimumCap(.init(layout: layout, cap: 0, kvCacheBytes: inMemory.memory.kvCache,
                                                  bufferBytes: inMemory.memory.buffers, runtimeBytes: inMemory.memory.runtime,
                                                  ringSlots: options.ringSlots))
        let streamed = try stepSeconds(batch: 1, mask: .none, prompt: 16, cap: minimum + (1 << 20))
        line.finish()
        let disk = streamed.seconds > 0 ? Double(streamed.bytes) / streamed.seconds : 0
        let model = ThroughputModel(attentionSeconds: attention, ffnSeconds: ffn, baseSeconds: base, positionSeconds: positionSeconds,
                                    diskBytesPerSecond: disk)
        let c = Calibration(model: (options.modelPath as NSString).lastPathComponent,
                            modelBytes: (try? FileManager.default.attributesOfItem(atPath: options.modelPath)[.size] as? Int) ?? 0,
                            cpu: cpuModel(), threads: options.threads, measuredAt: ISO8601DateFormatter().string(from: Date()),
                            throughput: model)
        try c.save(modelPath: options.modelPath)
        print(String(format: "calibrate: attention %.3f/%.3f ms, FFN %.3f/%.3f ms a layer (batch 1/8), rest %.2f/%.2f ms; "
                     + "%.1f ns a cached position a layer; disk %.2f GB/s streaming (%.1f ms a step)",
                     1000 * attention[0], 1000 * attention[1], 1000 * ffn[0], 1000 * ffn[1], 1000 * base[0], 1000 * base[1],
                     1e9 * positionSeconds, disk / 1e9, 1000 * streamed.seconds))
        print("written to \(Calibration.path(modelPath: options.modelPath, threads: options.threads))")
    }
}

/// The CPU's model name (/proc/cpuinfo), which keys a calibration to the machine.
func cpuModel() -> String {
    guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
          let colon = line.firstIndex(of: ":") else { return "unknown" }
    return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
}
