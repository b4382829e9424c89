import FlexFormat
import FlexKernels

/// Requantizes a model's weight matrices to another ggml type, optionally compression-aware
/// (`flexrun pack --requant`). Vectors (norms, biases) and tensors whose rows are not whole
/// 32-element blocks keep their type and bytes.
///
/// The source is dequantized to floats first, so the result can be no more precise than the
/// source: a Q4_1 model requantized to Q8_0 holds Q4_1's values, whose codes an entropy coder
/// then finds trivially compressible. Only a higher-precision source (F32/F16/BF16) tells how
/// real weights compress (docs/BENCHMARKS.md says which is which).
public struct Requantizer: Sendable {
    public var target: GGMLType
    /// Entropy-constrained Q8_0 (needs `target == .q8_0`); nil quantizes as ggml does.
    public var compressionAware: Quantize.CompressionAware?

    public init(target: GGMLType, compressionAware: Quantize.CompressionAware? = nil) throws(EngineError) {
        guard Quantize.targets.contains(target) else {
            throw .invalidOption("cannot requantize to \(target): choose one of \(Quantize.targets.map(\.description).joined(separator: ", "))")
        }
        guard compressionAware == nil || target == .q8_0 else {
            throw .invalidOption("--compression-aware works on q8_0 codes (one per byte): use --requant q8_0")
        }
        self.target = target
        self.compressionAware = compressionAware
    }

    /// Whether `t` is requantized: a matrix with rows of whole 32-element blocks.
    public func converts(_ t: TensorInfo) -> Bool { t.shape.count >= 2 && t.rowLength % 32 == 0 }

    /// What requantization cost in weight space, over the converted matrices.
    public struct Report: Sendable {
        public var matrices = 0
        public var weights = 0
        public var squaredError = 0.0
        public var squaredSource = 0.0
        /// √(Σ(x − x̂)² / Σx²) against the source's values.
        public var relativeRMSE: Double { squaredSource > 0 ? (squaredError / squaredSource).squareRoot() : 0 }
    }

    /// The requantized model, in memory, with `source`'s metadata, and its weight-space error.
    /// `progress(done, total)` is called after each tensor.
    public func apply(to source: GGUFFile, progress: (Int, Int) -> Void = { _, _ in }) throws -> (GGUFFile, Report) {
        let tensors = source.tensors.map { GGUFWriter.Tensor(name: $0.name, shape: $0.shape, type: converts($0) ? target : $0.type) }
        var floats = UnsafeMutableBufferPointer<Float>.allocate(capacity: 1), back = UnsafeMutableBufferPointer<Float>.allocate(capacity: 1)
        defer { floats.deallocate(); back.deallocate() }
        var report = Report()
        let file = try GGUFWriter.build(metadataOf: source, tensors: tensors) { i, out in
            let t = source.tensors[i], src = source.tensorBytes(t)
            defer { progress(i + 1, tensors.count) }
            guard converts(t) else { return out.copyMemory(from: src) }
            let n = t.elementCount
            if floats.count < n {
                floats.deallocate(); back.deallocate()
                floats = .allocate(capacity: n); back = .allocate(capacity: n)
            }
            // Row by row: each GGUF row starts a fresh run of blocks.
            let rowBytes = t.type.rowBytes(elements: t.rowLength)!
            for r in 0..<t.rowCount {
                ReferenceDequantize.row(t.type, src.baseAddress! + r * rowBytes, floats.baseAddress! + r * t.rowLength, count: t.rowLength)
            }
            if let ca = compressionAware {
                ca.q8_0(floats.baseAddress!, count: n, into: out.baseAddress!)
            } else {
                Quantize.plain(target, floats.baseAddress!, count: n, into: out.baseAddress!)
            }
            ReferenceDequantize.row(target, UnsafeRawPointer(out.baseAddress!), back.baseAddress!, count: n)
            report.matrices += 1
            report.weights += n
            for j in 0..<n {
                let x = Double(floats[j]), e = x - Double(back[j])
                report.squaredError += e * e
                report.squaredSource += x * x
            }
        }
        return (file, report)
    }
}
