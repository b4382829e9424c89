import FlexFormat
import FlexKernels

/// Requantizes a model's weight matrices by a ``QuantMix`` (one type, or llama.cpp's Q4_K_M /
/// Q5_K_M per-tensor choice), optionally compression-aware (`flexrun pack --requant`). Vectors
/// (norms, biases) and matrices whose rows are not whole 32-element blocks keep their type and
/// bytes. The result carries llama.cpp's `general.file_type` and `general.quantization_version`.
///
/// The source is dequantized to floats first, so the result can be no more precise than the
/// source: a Q4_1 model requantized to Q8_0 holds Q4_1's values, whose codes an entropy coder
/// then finds trivially compressible. Only a higher-precision source (F32/F16/BF16) tells how
/// real weights compress (docs/BENCHMARKS.md says which is which).
public struct Requantizer: Sendable {
    public var mix: QuantMix
    /// Entropy-constrained Q8_0 (needs the uniform `q8_0` mix); nil quantizes as ggml does.
    public var compressionAware: Quantize.CompressionAware?
    /// Threads that dequantize and quantize rows of one matrix at a time (every row is
    /// quantized alone, so the bytes do not depend on it); compression-aware codes stay on one.
    public var threads = 1

    public init(mix: QuantMix, compressionAware: Quantize.CompressionAware? = nil) throws(EngineError) {
        guard compressionAware == nil || mix.recipe == .uniform(.q8_0) else {
            throw .invalidOption("`compressionAware` works on q8_0 codes (one per byte): use the q8_0 mix")
        }
        self.mix = mix
        self.compressionAware = compressionAware
    }

    public init(target: GGMLType, compressionAware: Quantize.CompressionAware? = nil) throws(EngineError) {
        guard Quantize.targets.contains(target) else {
            throw .invalidOption("cannot requantize to \(target): choose one of \(QuantMix.all.map(\.description).joined(separator: ", "))")
        }
        try self.init(mix: QuantMix(.uniform(target)), compressionAware: compressionAware)
    }

    /// The new type of each of `source`'s tensors, nil where it keeps its type and bytes.
    public func plan(for source: GGUFFile) -> [GGMLType?] {
        let arch = source.string("general.architecture") ?? "llama"
        let layers = source.int("\(arch).block_count")
            ?? Set(source.tensors.map { QuantMix.layer(of: $0.name) }.filter { $0 >= 0 }).count
        return mix.types(for: source.tensors, layers: layers)
    }

    /// What requantization cost in weight space, over the converted matrices.
    public struct Report: Sendable {
        public var matrices = 0
        public var weights = 0
        public var squaredError = 0.0
        public var squaredSource = 0.0
        /// Converted matrices per new type.
        public var census: [GGMLType: Int] = [:]
        /// √(Σ(x − x̂)² / Σx²) against the source's values.
        public var relativeRMSE: Double { squaredSource > 0 ? (squaredError / squaredSource).squareRoot() : 0 }
    }

    /// The requantized model, in memory, with `source`'s metadata, and its weight-space error.
    /// Tensors are written in llama.cpp's order (``QuantMix/llamaCppOrder(_:)``), so from the
    /// same source the file is the one `llama-quantize` writes, byte for byte (see
    /// `Tools/kquant_models.sh`). `progress(done, total)` is called after each tensor.
    public func apply(to source: GGUFFile, progress: (Int, Int) -> Void = { _, _ in }) throws -> (GGUFFile, Report) {
        let plan = plan(for: source)
        let order = QuantMix.llamaCppOrder(source.tensors)
        let tensors = order.map { i in
            let t = source.tensors[i]
            return GGUFWriter.Tensor(name: t.name, shape: t.shape, type: plan[i] ?? t.type)
        }
        var floats = UnsafeMutableBufferPointer<Float>.allocate(capacity: 1), back = UnsafeMutableBufferPointer<Float>.allocate(capacity: 1)
        defer { floats.deallocate(); back.deallocate() }
        var report = Report()
        let pool = threads > 1 ? WorkerPool(threads: threads) : nil
        // GGML_QNT_VERSION is 2 since ggml's Q4/Q5/Q8 layout change; llama.cpp writes both keys.
        let keys: KeyValuePairs<String, UInt32> = ["general.quantization_version": 2, "general.file_type": mix.fileType]
        let file = try GGUFWriter.build(metadataOf: source, settingUInt32: keys, tensors: tensors) { k, out in
            let i = order[k], t = source.tensors[i], src = source.tensorBytes(t)
            defer { progress(k + 1, tensors.count) }
            guard let target = plan[i] else { return out.copyMemory(from: src) }
            let n = t.elementCount
            if floats.count < n {
                floats.deallocate(); back.deallocate()
                floats = .allocate(capacity: n); back = .allocate(capacity: n)
            }
            // Row by row: each GGUF row starts a fresh run of blocks. Chunks of rows go to the
            // pool: source → floats → target blocks → floats again (for the error).
            let rowBytes = t.type.rowBytes(elements: t.rowLength)!, newRowBytes = target.rowBytes(elements: t.rowLength)!
            let x = floats.baseAddress!, y = back.baseAddress!, from = src.baseAddress!, to = out.baseAddress!
            let plain = compressionAware == nil, width = t.rowLength
            let perTask = (t.rowCount + 8 * threads - 1) / (8 * threads), tasks = (t.rowCount + perTask - 1) / perTask
            let chunk = { (task: Int, _: Int) in
                let rows = task * perTask..<min(t.rowCount, (task + 1) * perTask)
                for r in rows { ReferenceDequantize.row(t.type, from + r * rowBytes, x + r * width, count: width) }
                guard plain else { return }
                let first = rows.lowerBound, count = rows.count * width
                Quantize.plain(target, x + first * width, count: count, into: to + first * newRowBytes)
                ReferenceDequantize.row(target, UnsafeRawPointer(to + first * newRowBytes), y + first * width, count: count)
            }
            if let pool { pool.parallelFor(tasks, chunk) } else { for task in 0..<tasks { chunk(task, 0) } }
            if let ca = compressionAware {
                ca.q8_0(x, count: n, into: to)
                ReferenceDequantize.row(target, UnsafeRawPointer(to), y, count: n)
            }
            report.matrices += 1
            report.weights += n
            report.census[target, default: 0] += 1
            for j in 0..<n {
                let x = Double(floats[j]), e = x - Double(back[j])
                report.squaredError += e * e
                report.squaredSource += x * x
            }
        }
        return (file, report)
    }
}
