import FlexFormat
import FlexKernels

/// In-memory copies of a model's Q4_1 and Q8_0 matrices in the x8 layout, for running without a
/// memory cap: the decode kernels compute 8 interleaved rows at once, ~1.5× the row-major speed
/// where they are compute-bound (``Interleave``, `cflex_kernels.h`).
///
/// Why a copy: without a cap the model runs from its read-only file mapping, which cannot be
/// rearranged. The copy replaces the mapped pages rather than adding to them: the mapping's pages
/// are released as each matrix is copied (they stay in the page cache, outside this process), so
/// resident memory stays about one model, at open too. Matrices decoded into memory from a compressed block file are
/// left row-major (a copy would double them); the results are bit-identical either way.
final class InterleavedWeights {
    let layers: [LayerWeights]
    let output: QuantMatrix
    let tokenEmbedding: QuantMatrix
    /// Bytes of the copies.
    let byteCount: Int
    private let storage: UnsafeMutableRawPointer

    /// nil when no matrix of `weights` has an x8 layout on this build.
    init?(_ weights: ModelWeights) {
        let file = weights.file
        let all = [weights.tokenEmbedding, weights.output] + weights.layers.flatMap(\.matrices)
        // Each tensor once (a tied head is the embedding), by its bytes in the mapping.
        var offsets: [UnsafeRawPointer: Int] = [:]
        var total = 0
        for m in all where offsets[m.data] == nil && Interleave.rows(m.type, m.rows) > 0 && file.decodedBlock(of: m.data) == nil {
            offsets[m.data] = total
            total += (m.byteCount + 63) / 64 * 64
        }
        guard total > 0 else { return nil }
        storage = .allocate(byteCount: total, alignment: 64)
        byteCount = total
        var copies: [UnsafeRawPointer: QuantMatrix] = [:]
        for m in all {
            guard let at = offsets[m.data], copies[m.data] == nil else { continue }
            let dst = storage + at, n = Interleave.rows(m.type, m.rows)
            Interleave.copy(m.type, from: m.data, to: dst, rows: n, cols: m.cols)
            (dst + n * m.rowBytes).copyMemory(from: m.data + n * m.rowBytes, byteCount: (m.rows - n) * m.rowBytes)
            copies[m.data] = QuantMatrix(type: m.type, data: UnsafeRawPointer(dst), rows: m.rows, cols: m.cols).interleaved(rows: n)
            // Release as we go, so that open never holds a matrix twice.
            file.releaseMappedPages(of: UnsafeRawBufferPointer(start: m.data, count: m.byteCount))
        }
        func copy(_ m: QuantMatrix) -> QuantMatrix { copies[m.data] ?? m }
        tokenEmbedding = copy(weights.tokenEmbedding)
        output = copy(weights.output)
        layers = weights.layers.map { $0.replacingMatrices { copy($1) } }
    }

    deinit { storage.deallocate() }
}
