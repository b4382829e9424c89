import ArgumentParser
import FlexEngine
import FlexFormat
import FlexKernels
import FlexSystem
import Foundation

/// `flexrun pack`: a GGUF as a FlexRun block file (docs/FORMAT.md).
struct Pack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a GGUF as a FlexRun block file: 4 KiB-aligned blocks, compressed where it pays, checksummed.")

    @Argument(help: "GGUF model to pack.")
    var model: String

    @Option(name: .shortAndLong, help: "Block file to write (written to a temporary file, renamed when complete).")
    var output: String

    @Option(name: .long, help: "auto (lz4 or zstd where reading + decoding beats reading raw), none, lz4, zstd or zstd:LEVEL.")
    var codec: String = "auto"

    @Option(name: .customLong("disk-bandwidth"), help: "Read bandwidth the codec rule assumes, e.g. 1.2G (per second); default: measured on the model file.")
    var diskBandwidth: String?

    @Flag(name: .customLong("no-planes"), help: "Do not try byte-plane grouping of float tensors.")
    var noPlanes = false

    @Option(name: .long, help: "Requantize the weight matrices first: q4_k_m or q5_k_m (llama.cpp's mixes), or one type for all: q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0 (from the source's values: never more precise than the source).")
    var requant: String?

    @Flag(name: .long, help: "With --requant: write the requantized model as a GGUF (which llama.cpp reads too) instead of a block file.")
    var gguf = false

    @Flag(name: .customLong("compression-aware"), help: "With --requant q8_0: entropy-constrained codes that zstd stores in fewer bits (see --lambda).")
    var compressionAware = false

    @Option(name: .long, help: "With --compression-aware: squared error (relative to each tensor's mean square) traded against λ × code bits; 0.0005 (near Q8_0) … 0.03 (near 4 bits). 0 is plain Q8_0.")
    var lambda: Double?

    func run() throws {
        // SIGINT and SIGTERM remove the partial output before the signal ends the process.
        SignalCleanup.install()
        guard let choice = BlockPacker.CodecChoice(parsing: codec) else { throw CLIError("--codec must be auto, none, lz4, zstd or zstd:1…22") }
        var file: GGUFFile
        do { file = try GGUFFile(path: model) } catch { throw CLIError("\(model): \(error)") }
        guard !file.isPacked else { throw CLIError("\(model) is already a block file") }
        try checkWritable(output)
        // Writing over the source would replace the model with its block file (the output is
        // renamed into place at the end), so the same file under any name is refused.
        if let a = try? FileManager.default.attributesOfItem(atPath: model), let b = try? FileManager.default.attributesOfItem(atPath: output),
           (a[.systemNumber] as? Int) == (b[.systemNumber] as? Int), (a[.systemFileNumber] as? Int) == (b[.systemFileNumber] as? Int) {
            throw CLIError("-o \(output) is the input model itself; write the block file to another path")
        }
        if compressionAware && requant == nil { throw CLIError("--compression-aware needs --requant q8_0") }
        if lambda != nil && !compressionAware { throw CLIError("--lambda needs --compression-aware") }
        let ca: Double? = compressionAware ? (lambda ?? 0.002) : nil
        if gguf && requant == nil { throw CLIError("--gguf needs --requant") }
        if let requant {
            guard let mix = QuantMix(named: requant) else {
                throw CLIError("--requant must be one of \(QuantMix.all.map { $0.description.lowercased() }.joined(separator: ", "))")
            }
            if let l = ca, !(l >= 0 && l.isFinite) { throw CLIError("--lambda must be a number ≥ 0") }
            var requantizer: Requantizer
            do { requantizer = try Requantizer(mix: mix, compressionAware: ca.map { .init(lambda: $0) }) } catch {
                throw CLIError("--compression-aware works on q8_0 codes (one per byte): use --requant q8_0")
            }
            requantizer.threads = Platform.onlineCPUs
            let t0 = Platform.now()
            let report: Requantizer.Report
            (file, report) = try requantizer.apply(to: file) { done, total in
                FileHandle.standardError.write(Data("\rflexrun: requantizing to \(mix)\(ca.map { " (compression-aware, λ = \($0))" } ?? "") \(done)/\(total) tensors   ".utf8))
            }
            FileHandle.standardError.write(Data("\n".utf8))
            let census = report.census.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
            print(String(format: "requantized %d matrices (%d weights) to %@ (%@) in %.1f s: relative RMSE %.5f against the source's values",
                         report.matrices, report.weights, mix.description, census, Platform.now() - t0, report.relativeRMSE))
            if gguf { return try writeGGUF(file) }
        }
        let bandwidth: Double
        if let diskBandwidth {
            do { bandwidth = Double(try ByteSize(parsing: diskBandwidth).bytes) } catch { throw CLIError("--disk-bandwidth: \(error)") }
            guard bandwidth > 0 else { throw CLIError("--disk-bandwidth must be positive") }
        } else {
            bandwidth = try Self.measureReadBandwidth(model)
        }
        var packer = BlockPacker(diskBandwidth: bandwidth)
        packer.codec = choice
        packer.bytePlanes = !noPlanes
        let start = Platform.now()
        FileHandle.standardError.write(Data("flexrun: packing \(model) (\(choice), disk \(String(format: "%.2f", bandwidth / 1e9)) GB/s)\n".utf8))
        var barShown = false
        let reports = try writing(after: { barShown }) { () throws(SystemError) in try packer.pack(file, to: output) { done, total, r in
            barShown = true
            let width = 30, filled = done * width / total
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            let ratio = Double(r.rawSize) / Double(max(1, r.storedSize))
            FileHandle.standardError.write(Data(String(format: "\rflexrun: pack [%@] %d/%d %@ %@ %.2f×        ", bar, done, total, r.name, r.codec.description, ratio).utf8))
        } }
        FileHandle.standardError.write(Data("\n".utf8))
        let raw = reports.reduce(0) { $0 + $1.rawSize }, stored = reports.reduce(0) { $0 + $1.storedSize }
        let weights = file.tensors.reduce(0) { $0 + $1.elementCount }
        print(String(format: "%@: %d blocks, %@ → %@ (%.3f×), %.3f bits per weight stored, %.1f s", output, reports.count,
                     ByteSize.format(raw), ByteSize.format(stored), Double(raw) / Double(max(1, stored)),
                     8 * Double(stored) / Double(max(1, weights)), Platform.now() - start))
        for kind in ["attn", "ffn", "embed", "head", "other"] {
            let rs = reports.filter { $0.name.hasPrefix(kind) }
            guard !rs.isEmpty else { continue }
            let codecs = Dictionary(grouping: rs, by: { $0.codec.description + ($0.planes ? "+planes" : "") }).map { "\($0.key) ×\($0.value.count)" }.sorted()
            let r = rs.reduce(0) { $0 + $1.rawSize }, s = rs.reduce(0) { $0 + $1.storedSize }
            // The best candidate over the kind: its total ratio and decode speed (raw bytes out per second, one core).
            let tried = rs.filter { $0.decision.candidateSize < $0.rawSize }
            let triedRaw = tried.reduce(0) { $0 + $1.rawSize }, triedStored = tried.reduce(0) { $0 + $1.decision.candidateSize }
            let triedSeconds = tried.reduce(0.0) { $0 + $1.decision.candidateDecodeSeconds }
            let candidate = tried.isEmpty ? "–" : String(format: "%@ %.3f×, decode %.2f GB/s", tried[0].decision.candidate.description,
                                                          Double(triedRaw) / Double(triedStored), Double(triedRaw) / triedSeconds / 1e9)
            print(String(format: "  %-5@ %3d blocks  %@ → %@  kept: %@  best candidate: %@", kind, rs.count, ByteSize.format(r), ByteSize.format(s),
                         codecs.joined(separator: ", "), candidate))
        }
    }

    /// The requantized model as a plain GGUF at `output`, written to a temporary file and renamed.
    func writeGGUF(_ file: GGUFFile) throws {
        try writing { () throws(SystemError) in
            var out = try OutputFile(path: output)
            try out.write(file.imageBytes)
            try out.commit()
        }
        print("\(output): GGUF, \(file.tensors.count) tensors, \(ByteSize.format(file.imageBytes.count))")
    }

    /// Runs `body`, which writes the output, and turns its failure into one sentence naming the
    /// output (a full disk: "cannot write m.flex: No space left on device"). The partial file is
    /// already gone by then: ``OutputFile`` removes it when dropped uncommitted.
    /// `progressShown` says whether a progress bar is on the current stderr line: the error
    /// then starts a line of its own.
    func writing<T>(after progressShown: () -> Bool = { false }, _ body: () throws(SystemError) -> T) throws -> T {
        do { return try body() } catch {
            if progressShown() { FileHandle.standardError.write(Data("\n".utf8)) }
            throw CLIError("cannot write \(output): \(String(cString: strerror(error.code)))")
        }
    }

    /// O_DIRECT sequential read of up to 256 MiB of the model, 4 MiB at a time: what a block
    /// costs to read on this disk, with the page cache out of the picture.
    static func measureReadBandwidth(_ path: String) throws -> Double {
        let f = try DirectFile(path: path)
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: DirectFile.alignment)
        defer { buffer.deallocate() }
        let total = min(f.size / DirectFile.alignment * DirectFile.alignment, 256 << 20)
        guard total >= chunk else { return 1e9 }
        let t0 = Platform.now()
        var at = 0
        while at + chunk <= total { at += try f.read(into: buffer, count: chunk, at: at) }
        return Double(at) / max(1e-6, Platform.now() - t0)
    }
}
