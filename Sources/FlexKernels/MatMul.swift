import CFlexKernels
import FlexFormat

/// Per-thread and per-batch scratch for ``MatMul``, owned by the caller's run state so the
/// hot path never allocates.
public struct MatMulWorkspace {
    /// `threads` buffers of `rowStride` floats: dequantized weight rows (float path).
    public let rows: UnsafeMutablePointer<Float>
    public let rowStride: Int
    /// `maxBatch` × `maxCols/32` 16-bit activation blocks (integer path).
    public let activations: UnsafeMutablePointer<cflex_q16_block>
    public let activationStride: Int
    /// `maxBatch` × `maxCols/32` per-block sums of the float activations (fused path).
    public let blockSums: UnsafeMutablePointer<Float>
    /// The activations rearranged for the K-quant lane kernels (``IntegerDot/lanes(for:)``):
    /// `maxBatch` rounded up to 16 × `maxCols/32` blocks of `CFLEX_KQ_LANES_BLOCK` bytes, 64-byte
    /// aligned; nil in builds without the lane kernels.
    public let lanes: UnsafeMutableRawPointer?

    public init(rows: UnsafeMutablePointer<Float>, rowStride: Int, activations: UnsafeMutablePointer<cflex_q16_block>,
                activationStride: Int, blockSums: UnsafeMutablePointer<Float>, lanes: UnsafeMutableRawPointer? = nil) {
        self.rows = rows
        self.rowStride = rowStride
        self.activations = activations
        self.activationStride = activationStride
        self.blockSums = blockSums
        self.lanes = lanes
    }
}

/// Y = X · Wᵀ for a quantized weight matrix W (rows × cols) and a batch of activation rows X.
///
/// This is the hot spot of the whole engine: every projection of every layer runs here.
/// - Integer path, decode (batch below ``decodeBatchLimit``; Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the
///   K-quants Q4_K, Q5_K, Q6_K; AVX2 builds): each activation row is quantized once to 16-bit
///   blocks, then every weight row is dotted with it by the C kernels (vpmaddwd). ggml uses 8-bit activations here; on SmolLM2
///   that broke the logit bounds, 16 bits does not (the header of `cflex_kernels.h` has the numbers).
///   Q4_1, Q5_0, Q5_1 and Q8_0 take 8 rows per call where the matrix holds x8
///   groups (``Interleave``, the
///   resident rows) and four row-major rows per call elsewhere, with bit-identical results; the
///   K-quants four row-major rows per call (a 256-element super-block against 8 activation
///   blocks, `kquants.c`), and x8 groups where the CPU has AVX-512 VNNI (`kquants_x8.c`: the rows
///   in the lanes; a batch takes a group back to row-major rows in the thread's scratch).
/// - Integer path, prefill (AVX2 builds; Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants): as decode, but
///   row-major rows go four at a time against all the batch's activation rows (`cflex_gemv4n_*`:
///   a K-quant super-block, or a 32-element block's four rows rearranged into quad vectors, unpacked
///   once for 8 or 16 of them) and x8 groups against up to eight (`cflex_gemv8n_*`), with the bits of
///   the decode kernels: for these formats a prompt row gets the numbers of a generated one.
///   K-quant prompt batches of ``lanesMinBatch`` rows or more take the lane kernels
///   (``IntegerDot/lanes(for:)``: activation rows in the vector lanes), with the same bits.
/// - Fused path, decode where the C kernels were built without AVX2 (other architectures): the
///   Swift ``FusedDot`` kernels, which LLVM vectorises for the target; expected to beat the scalar C
///   fallback there (not measured on such a machine).
/// - Float path (prefill batches of Q4_0, whose one-row kernel has no batched form; formats without
///   a decode kernel: F32, F16, BF16; and every prefill on builds without AVX2):
///   each weight row is dequantized once into per-thread scratch and dotted with up to four
///   activation rows at a time.
/// Rows are split into tasks handed out by the pool's atomic counter.
public enum MatMul {
    /// Batches smaller than this take the decode paths (weights streamed once per token row);
    /// from here on, dequantizing a row once and reusing it across four tokens wins.
    public static let decodeBatchLimit = 4

    /// Which arithmetic a batch's rows get. A row's result depends only on its path, never on the
    /// other rows of the batch or on its place in it (tested), which is what lets a batch of
    /// sequences give each sequence exactly the numbers it gets alone.
    public enum Path: Sendable {
        /// The decode paths (integer or fused) where the format has one, whatever the batch size:
        /// one token per sequence, weights read once for all rows.
        case decode
        /// The batched integer kernels where the format has them (``IntegerDot/Kernel/prefills``),
        /// else the float path: each weight row dequantized once and dotted with every activation row.
        case prefill
        /// Decode below ``decodeBatchLimit`` rows, prefill from there on (scoring text).
        case bySize

        @inline(__always)
        func decodes(_ batch: Int) -> Bool {
            switch self {
            case .decode: return true
            case .prefill: return false
            case .bySize: return batch < decodeBatchLimit
            }
        }
    }

    public static func compute(_ w: QuantMatrix, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                               batch: Int, pool: WorkerPool, workspace ws: MatMulWorkspace, path: Path = .bySize) {
        let decode = path.decodes(batch)
        if IntegerDot.simd, let dot = IntegerDot.kernel(for: w.type), decode || dot.prefills {
            computeInteger(w, dot: dot, x: x, ldx: ldx, y: y, ldy: ldy, batch: batch, pool: pool, workspace: ws, prompt: !decode)
        } else if decode, let dot = FusedDot.kernel(for: w.type) {
            computeFused(w, dot: dot, x: x, ldx: ldx, y: y, ldy: ldy, batch: batch, pool: pool, workspace: ws)
        } else {
            computeFloat(w, x: x, ldx: ldx, y: y, ldy: ldy, batch: batch, pool: pool, workspace: ws)
        }
    }

    /// Up to three matrices applied to the same input (Q/K/V, gate/up) as one fork/join: during
    /// decode each fork/join costs microseconds, and the input is quantized once instead of per
    /// matrix. Falls back to separate ``compute(_:x:ldx:y:ldy:batch:pool:workspace:)`` calls where
    /// the integer path does not apply.
    public static func computeShared(_ w0: QuantMatrix, _ y0: UnsafeMutablePointer<Float>,
                                     _ w1: QuantMatrix, _ y1: UnsafeMutablePointer<Float>,
                                     _ w2: QuantMatrix?, _ y2: UnsafeMutablePointer<Float>?,
                                     x: UnsafePointer<Float>, batch: Int, pool: WorkerPool, workspace ws: MatMulWorkspace,
                                     path: Path = .bySize) {
        let cols = w0.cols
        let decode = path.decodes(batch)
        guard IntegerDot.simd, w1.cols == cols, w2.map({ $0.cols == cols }) ?? true,
              let d0 = IntegerDot.kernel(for: w0.type), let d1 = IntegerDot.kernel(for: w1.type),
              decode || (d0.prefills && d1.prefills),
              w2.map({ IntegerDot.kernel(for: $0.type).map { decode || $0.prefills } ?? false }) ?? true else {
            compute(w0, x: x, ldx: cols, y: y0, ldy: w0.rows, batch: batch, pool: pool, workspace: ws, path: path)
            compute(w1, x: x, ldx: cols, y: y1, ldy: w1.rows, batch: batch, pool: pool, workspace: ws, path: path)
            if let w2, let y2 { compute(w2, x: x, ldx: cols, y: y2, ldy: w2.rows, batch: batch, pool: pool, workspace: ws, path: path) }
            return
        }
        quantize(x, ldx: cols, cols: cols, batch: batch, ws)
        let packed = !decode && packLanes(cols: cols, batch: batch, w0.type, w1.type, w2?.type, ws)
        let j0 = IntegerJob(w0, d0, y0, w0.rows, batch, ws, split(w0.rows, pool).rowsPerTask, packed: packed)
        let j1 = IntegerJob(w1, d1, y1, w1.rows, batch, ws, split(w1.rows, pool).rowsPerTask, packed: packed)
        let j2 = w2.map { IntegerJob($0, IntegerDot.kernel(for: $0.type)!, y2!, $0.rows, batch, ws, split($0.rows, pool).rowsPerTask,
                                     packed: packed) }
        var job = SharedJob(jobs: (j0, j1, j2 ?? j1), t0: j0.tasks, t1: j1.tasks)
        let total = j0.tasks + j1.tasks + (j2?.tasks ?? 0)
        withUnsafePointer(to: &job) { pool.parallelFor(total, context: $0, SharedJob.run) }
    }

    /// Prompt batches from this size take the K-quant lane kernels where the CPU has them: 16
    /// activation rows fill a vector, and one pass over four weight rows at 12 already beat the
    /// row-wise batched kernels (one core, 64 rows × 4,096 from L2, best of 20; VNNI: 1.5-1.9× at
    /// 12 rows, 2.2-2.8× at 64, about even at 8; AVX2: 1.3-1.6× at 12, 1.5-2.2× at 64; docs/BENCHMARKS.md).
    public static let lanesMinBatch = 12

    /// Rearranges the quantized activations for the lane kernels when this batch takes them
    /// (a prompt batch of at least ``lanesMinBatch`` rows and a K-quant among `types`); once per
    /// matmul, shared by every task and matrix.
    static func packLanes(cols: Int, batch: Int, _ t0: GGMLType, _ t1: GGMLType?, _ t2: GGMLType?, _ ws: MatMulWorkspace) -> Bool {
        func lanes(_ t: GGMLType?) -> Bool { t.map { IntegerDot.lanes(for: $0) != nil } ?? false }
        guard batch >= lanesMinBatch, let buffer = ws.lanes, lanes(t0) || lanes(t1) || lanes(t2) else { return false }
        cflex_kq_lanes_pack(ws.activations, Int32(ws.activationStride), Int32(batch), Int32(cols / 32), buffer)
        return true
    }

    static func quantize(_ x: UnsafePointer<Float>, ldx: Int, cols: Int, batch: Int, _ ws: MatMulWorkspace) {
        precondition(ws.activationStride >= cols / 32)
        for b in 0..<batch {
            cflex_quantize_q16(x + b * ldx, ws.activations + b * ws.activationStride, Int32(cols))
        }
    }

    /// Rows per task: about eight tasks per thread (the pool's counter balances the rest), and a
    /// multiple of 8 so that x8 groups stay whole.
    @inline(__always)
    static func split(_ rows: Int, _ pool: WorkerPool) -> (rowsPerTask: Int, tasks: Int) {
        let rowsPerTask = (max(8, min(64, rows / (pool.threadCount * 8))) + 7) / 8 * 8
        return (rowsPerTask, (rows + rowsPerTask - 1) / rowsPerTask)
    }

    /// One integer-path matmul as a pool job: rows split in tasks of `rowsPerTask`.
    struct IntegerJob {
        let w: QuantMatrix, dot: IntegerDot.Kernel, y: UnsafeMutablePointer<Float>, ldy: Int, batch: Int
        let activations: UnsafeMutablePointer<cflex_q16_block>, activationStride: Int, rowsPerTask: Int
        /// Per-thread scratch (the float path's two dequantized rows, `scratchBytes` each): where a
        /// K-quant x8 group goes back to row-major rows for a batch (8 rows of at most 6.6 bits a
        /// weight fit in two float rows).
        let scratch: UnsafeMutableRawPointer, scratchBytes: Int
        /// The lane kernel and the rearranged activations, when this batch takes them.
        let lanes: (kernel: IntegerDot.LanesKernel, activations: UnsafeRawPointer)?

        init(_ w: QuantMatrix, _ dot: IntegerDot.Kernel, _ y: UnsafeMutablePointer<Float>, _ ldy: Int, _ batch: Int,
             _ ws: MatMulWorkspace, _ rowsPerTask: Int, packed: Bool = false) {
            self.w = w; self.dot = dot; self.y = y; self.ldy = ldy; self.batch = batch
            activations = ws.activations; activationStride = ws.activationStride; self.rowsPerTask = rowsPerTask
            scratch = UnsafeMutableRawPointer(ws.rows); scratchBytes = 2 * ws.rowStride * MemoryLayout<Float>.stride
            if packed, let kernel = IntegerDot.lanes(for: w.type), let buffer = ws.lanes {
                lanes = (kernel, UnsafeRawPointer(buffer))
            } else {
                lanes = nil
            }
        }

        var tasks: Int { (w.rows + rowsPerTask - 1) / rowsPerTask }

        @inline(__always)
        func run(_ task: Int, thread: Int) {
            let nb = Int32(w.cols / 32)
            let end = min(w.rows, (task + 1) * rowsPerTask)
            var r = task * rowsPerTask
            switch dot {
            case .row(let dot):
                while r < end {
                    let row = w.row(r)
                    for b in 0..<batch { y[b * ldy + r] = dot(row, activations + b * activationStride, nb) }
                    r += 1
                }
            case .rows(let four, let group, let groupN, let fourN):
                // Tasks start on multiples of 8, so x8 groups never straddle two.
                while r + 8 <= min(end, w.interleavedRows) {
                    let g = w.row(r)
                    if batch == 1 {
                        group(g, activations, nb, y + r)
                    } else {
                        // Up to four activation rows per call: the group's weights are widened once for them.
                        var b = 0
                        while b < batch {
                            let k = Swift.min(Int(CFLEX_X8_BATCH), batch - b)
                            groupN(g, activations + b * activationStride, Int32(activationStride), Int32(k), nb, y + b * ldy + r, Int32(ldy))
                            b += k
                        }
                    }
                    r += 8
                }
                if batch == 1 { rowMajor(four, from: r, to: end) } else { rowMajorBatched(fourN, from: r, to: end) }
            case .four(let four, let batched, let group):
                // K-quant x8 groups (resident rows where the CPU has the x8 kernels): 8 rows per call
                // for one activation row; a prompt batch on the lane kernels' x8 form; a small batch
                // (several sequences) takes the group back to row-major rows in this thread's
                // scratch and the batched row-major kernel (the same bits every way).
                while r + 8 <= min(end, w.interleavedRows) {
                    let g = w.row(r)
                    if batch == 1 {
                        group(g, activations, nb, y + r)
                    } else if let lanes {
                        // The lane kernel on the group, its super-blocks back to rows one at a time in L1.
                        cflex_gemm8_kquant_lanes(Int32(w.type.rawValue), g, lanes.activations, Int32(batch), nb, y + r, Int32(ldy))
                    } else {
                        let rows = scratch + thread * scratchBytes
                        precondition(8 * w.rowBytes <= scratchBytes, "x8 scratch too small")
                        cflex_x8k_rows(Int32(w.type.rawValue), g, nb, rows)
                        let back = UnsafeRawPointer(rows)
                        for h in 0..<2 {
                            var p: (UnsafeRawPointer?, UnsafeRawPointer?, UnsafeRawPointer?, UnsafeRawPointer?) =
                                (back + (4 * h) * w.rowBytes, back + (4 * h + 1) * w.rowBytes,
                                 back + (4 * h + 2) * w.rowBytes, back + (4 * h + 3) * w.rowBytes)
                            withUnsafePointer(to: &p) {
                                $0.withMemoryRebound(to: UnsafeRawPointer?.self, capacity: 4) { p in
                                    batched(p, activations, Int32(activationStride), Int32(batch), nb, y + r + 4 * h, Int32(ldy))
                                }
                            }
                        }
                    }
                    r += 8
                }
                if let lanes {
                    rowMajorLanes(lanes.kernel, lanes.activations, fallback: batched, from: r, to: end)
                } else if batch == 1 {
                    rowMajor(four, from: r, to: end)
                } else {
                    rowMajorBatched(batched, from: r, to: end)
                }
            }
        }

        /// Rows `start..<end` as the four-row kernels take them: `body` gets four row pointers,
        /// the first row's index and how many of the four are real (1–3 rows left over repeat the
        /// last one to fill the kernels' four).
        @inline(__always)
        func eachFour(from start: Int, to end: Int, _ body: (UnsafePointer<UnsafeRawPointer?>, Int, Int) -> Void) {
            var r = start
            var rows: (UnsafeRawPointer?, UnsafeRawPointer?, UnsafeRawPointer?, UnsafeRawPointer?)
            while r < end {
                let n = Swift.min(4, end - r), last = w.row(r + n - 1)
                rows = (w.row(r), n > 1 ? w.row(r + 1) : last, n > 2 ? w.row(r + 2) : last, last)
                withUnsafePointer(to: &rows) { $0.withMemoryRebound(to: UnsafeRawPointer?.self, capacity: 4) { body($0, r, n) } }
                r += 4
            }
        }

        /// Row-major rows `r..<end`, four per call, once per activation row.
        @inline(__always)
        func rowMajor(_ four: IntegerDot.FourRowKernel, from start: Int, to end: Int) {
            let nb = Int32(w.cols / 32)
            var out = SIMD4<Float>()
            eachFour(from: start, to: end) { p, r, n in
                for b in 0..<batch {
                    if n == 4 {
                        four(p, activations + b * activationStride, nb, y + b * ldy + r)
                        continue
                    }
                    withUnsafeMutablePointer(to: &out) {
                        $0.withMemoryRebound(to: Float.self, capacity: 4) { four(p, activations + b * activationStride, nb, $0) }
                    }
                    for i in 0..<n { y[b * ldy + r + i] = out[i] }
                }
            }
        }

        /// Row-major rows `r..<end` against every activation row: four weight rows per call, unpacked
        /// once per super-block for up to eight activation rows (the kernel's chunk); a short last
        /// group goes through a small buffer. Each result is the bits of ``rowMajor``'s.
        @inline(__always)
        func rowMajorBatched(_ kernel: IntegerDot.FourRowBatchKernel, from start: Int, to end: Int) {
            let nb = Int32(w.cols / 32)
            var out = (SIMD16<Float>(), SIMD16<Float>())   // 8 activation rows × 4 results per call
            eachFour(from: start, to: end) { p, r, n in
                if n == 4 {
                    kernel(p, activations, Int32(activationStride), Int32(batch), nb, y + r, Int32(ldy))
                    return
                }
                withUnsafeMutableBytes(of: &out) { raw in
                    let o = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                    var b = 0
                    while b < batch {
                        let k = Swift.min(8, batch - b)
                        kernel(p, activations + b * activationStride, Int32(activationStride), Int32(k), nb, o, 4)
                        for j in 0..<k { for i in 0..<n { y[(b + j) * ldy + r + i] = o[4 * j + i] } }
                        b += k
                    }
                }
            }
        }

        /// Row-major rows against the activations in lanes (``IntegerDot/LanesKernel``): four weight
        /// rows per call against the whole batch; 1–3 rows left over take `fallback`. The same bits.
        @inline(__always)
        func rowMajorLanes(_ kernel: IntegerDot.LanesKernel, _ packed: UnsafeRawPointer, fallback: IntegerDot.FourRowBatchKernel,
                           from start: Int, to end: Int) {
            let nb = Int32(w.cols / 32), full = start + (end - start) / 4 * 4
            eachFour(from: start, to: full) { p, r, _ in kernel(p, packed, Int32(batch), nb, y + r, Int32(ldy)) }
            if full < end { rowMajorBatched(fallback, from: full, to: end) }
        }

        static let run: WorkerPool.TaskFunction = { ctx, task, thread in
            ctx.assumingMemoryBound(to: IntegerJob.self).pointee.run(task, thread: thread)
        }
    }

    struct SharedJob {
        let jobs: (IntegerJob, IntegerJob, IntegerJob)
        let t0: Int, t1: Int
        static let run: WorkerPool.TaskFunction = { ctx, task, thread in
            let j = ctx.assumingMemoryBound(to: SharedJob.self)
            if task < j.pointee.t0 { j.pointee.jobs.0.run(task, thread: thread) }
            else if task < j.pointee.t0 + j.pointee.t1 { j.pointee.jobs.1.run(task - j.pointee.t0, thread: thread) }
            else { j.pointee.jobs.2.run(task - j.pointee.t0 - j.pointee.t1, thread: thread) }
        }
    }

    /// The integer path: 16-bit activations, C dot kernels.
    public static func computeInteger(_ w: QuantMatrix, dot: IntegerDot.Kernel, x: UnsafePointer<Float>, ldx: Int,
                                      y: UnsafeMutablePointer<Float>, ldy: Int, batch: Int, pool: WorkerPool,
                                      workspace ws: MatMulWorkspace, prompt: Bool = false) {
        quantize(x, ldx: ldx, cols: w.cols, batch: batch, ws)
        let packed = prompt && packLanes(cols: w.cols, batch: batch, w.type, nil, nil, ws)
        var job = IntegerJob(w, dot, y, ldy, batch, ws, split(w.rows, pool).rowsPerTask, packed: packed)
        let tasks = job.tasks
        withUnsafePointer(to: &job) { pool.parallelFor(tasks, context: $0, IntegerJob.run) }
    }

    struct FusedJob {
        let w: QuantMatrix, dot: FusedDot.Kernel, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int
        let batch: Int, sums: UnsafeMutablePointer<Float>, sumStride: Int, rowsPerTask: Int
        static let run: WorkerPool.TaskFunction = { ctx, task, _ in
            let j = ctx.assumingMemoryBound(to: FusedJob.self).pointee
            let nb = j.w.cols / 32
            let end = min(j.w.rows, (task + 1) * j.rowsPerTask)
            for r in task * j.rowsPerTask..<end {
                let row = j.w.row(r)
                for b in 0..<j.batch {
                    j.y[b * j.ldy + r] = j.dot(row, j.x + b * j.ldx, j.sums + b * j.sumStride, nb)
                }
            }
        }
    }

    /// The fused path: weights dequantized in registers against float activations (decode).
    public static func computeFused(_ w: QuantMatrix, dot: @escaping FusedDot.Kernel, x: UnsafePointer<Float>, ldx: Int,
                                    y: UnsafeMutablePointer<Float>, ldy: Int, batch: Int, pool: WorkerPool,
                                    workspace ws: MatMulWorkspace) {
        let (rowsPerTask, tasks) = split(w.rows, pool)
        precondition(ws.activationStride >= w.cols / 32)
        precondition(w.interleavedRows == 0, "the fused kernels read row-major rows only")
        for b in 0..<batch { FusedDot.blockSums(x + b * ldx, ws.blockSums + b * ws.activationStride, w.cols) }
        var job = FusedJob(w: w, dot: dot, x: x, ldx: ldx, y: y, ldy: ldy, batch: batch, sums: ws.blockSums,
                           sumStride: ws.activationStride, rowsPerTask: rowsPerTask)
        withUnsafePointer(to: &job) { pool.parallelFor(tasks, context: $0, FusedJob.run) }
    }

    struct FloatJob {
        let w: QuantMatrix, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int, batch: Int
        let rows: UnsafeMutablePointer<Float>, rowStride: Int, rowsPerTask: Int
        static let run: WorkerPool.TaskFunction = { ctx, task, thread in
            let j = ctx.assumingMemoryBound(to: FloatJob.self).pointee
            let (w, x, ldx, y, ldy, batch) = (j.w, j.x, j.ldx, j.y, j.ldy, j.batch)
            let row = j.rows + thread * 2 * j.rowStride, row1 = row + j.rowStride
            let end = min(w.rows, (task + 1) * j.rowsPerTask)
            var r = task * j.rowsPerTask
            // Two rows at a time against four activation rows: eight accumulators, so each
            // activation load feeds two FMAs (one row at a time was load-bound: five loads per
            // four FMAs).
            while r + 2 <= end && batch >= 4 {
                w.dequantizeRow(r, into: row)
                w.dequantizeRow(r + 1, into: row1)
                var b = 0
                while b + 4 <= batch {
                    let x0 = x + b * ldx
                    let (d0, d1) = dot2x4(row, row1, x0, x0 + ldx, x0 + 2 * ldx, x0 + 3 * ldx, w.cols)
                    for k in 0..<4 {
                        y[(b + k) * ldy + r] = d0[k]
                        y[(b + k) * ldy + r + 1] = d1[k]
                    }
                    b += 4
                }
                while b < batch {
                    y[b * ldy + r] = dot1(row, x + b * ldx, w.cols)
                    y[b * ldy + r + 1] = dot1(row1, x + b * ldx, w.cols)
                    b += 1
                }
                r += 2
            }
            while r < end {
                w.dequantizeRow(r, into: row)
                var b = 0
                while b + 4 <= batch {
                    let x0 = x + b * ldx
                    let d = dot4(row, x0, x0 + ldx, x0 + 2 * ldx, x0 + 3 * ldx, w.cols)
                    y[b * ldy + r] = d.0
                    y[(b + 1) * ldy + r] = d.1
                    y[(b + 2) * ldy + r] = d.2
                    y[(b + 3) * ldy + r] = d.3
                    b += 4
                }
                while b < batch {
                    y[b * ldy + r] = dot1(row, x + b * ldx, w.cols)
                    b += 1
                }
                r += 1
            }
        }
    }

    /// The float path: dequantize each row once (Swift SIMD), FMA with up to four activation rows.
    public static func computeFloat(_ w: QuantMatrix, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                                    batch: Int, pool: WorkerPool, workspace ws: MatMulWorkspace) {
        let (rowsPerTask, tasks) = split(w.rows, pool)
        precondition(ws.rowStride >= w.cols)
        var job = FloatJob(w: w, x: x, ldx: ldx, y: y, ldy: ldy, batch: batch, rows: ws.rows, rowStride: ws.rowStride,
                           rowsPerTask: rowsPerTask)
        withUnsafePointer(to: &job) { pool.parallelFor(tasks, context: $0, FloatJob.run) }
    }

    /// Two weight rows · four activation rows.
    @inline(__always)
    static func dot2x4(_ w0: UnsafePointer<Float>, _ w1: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                       _ c: UnsafePointer<Float>, _ d: UnsafePointer<Float>, _ n: Int) -> (SIMD4<Float>, SIMD4<Float>) {
        var s00 = SIMD8<Float>(), s01 = SIMD8<Float>(), s02 = SIMD8<Float>(), s03 = SIMD8<Float>()
        var s10 = SIMD8<Float>(), s11 = SIMD8<Float>(), s12 = SIMD8<Float>(), s13 = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            let v0 = Vector.load8(w0 + i), v1 = Vector.load8(w1 + i)
            let xa = Vector.load8(a + i), xb = Vector.load8(b + i), xc = Vector.load8(c + i), xd = Vector.load8(d + i)
            s00.addProduct(v0, xa); s10.addProduct(v1, xa)
            s01.addProduct(v0, xb); s11.addProduct(v1, xb)
            s02.addProduct(v0, xc); s12.addProduct(v1, xc)
            s03.addProduct(v0, xd); s13.addProduct(v1, xd)
            i += 8
        }
        var r0 = SIMD4(s00.sum(), s01.sum(), s02.sum(), s03.sum()), r1 = SIMD4(s10.sum(), s11.sum(), s12.sum(), s13.sum())
        while i < n {
            let x4 = SIMD4(a[i], b[i], c[i], d[i])
            r0 += w0[i] * x4; r1 += w1[i] * x4
            i += 1
        }
        return (r0, r1)
    }

    /// One weight row · one activation row, summed in exactly the order each lane of ``dot4`` and
    /// ``dot2x4`` sums (one 8-wide accumulator, then the scalar tail): a row's result must not
    /// depend on whether it fell in a group of four or in the batch's remainder.
    @inline(__always)
    static func dot1(_ w: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ n: Int) -> Float {
        var s = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            s.addProduct(Vector.load8(w + i), Vector.load8(a + i))
            i += 8
        }
        var r = s.sum()
        while i < n { r += w[i] * a[i]; i += 1 }
        return r
    }

    @inline(__always)
    static func dot4(_ w: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                     _ c: UnsafePointer<Float>, _ d: UnsafePointer<Float>, _ n: Int) -> (Float, Float, Float, Float) {
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            let wv = Vector.load8(w + i)
            s0.addProduct(wv, Vector.load8(a + i))
            s1.addProduct(wv, Vector.load8(b + i))
            s2.addProduct(wv, Vector.load8(c + i))
            s3.addProduct(wv, Vector.load8(d + i))
            i += 8
        }
        var r0 = s0.sum(), r1 = s1.sum(), r2 = s2.sum(), r3 = s3.sum()
        while i < n {
            r0 += w[i] * a[i]; r1 += w[i] * b[i]; r2 += w[i] * c[i]; r3 += w[i] * d[i]
            i += 1
        }
        return (r0, r1, r2, r3)
    }
}

/// The C integer dot kernels, by weight format.
public enum IntegerDot {
    public typealias RowKernel = @convention(c) (UnsafeRawPointer?, UnsafePointer<cflex_q16_block>?, Int32) -> Float
    public typealias FourRowKernel = @convention(c) (UnsafePointer<UnsafeRawPointer?>?, UnsafePointer<cflex_q16_block>?, Int32,
                                                     UnsafeMutablePointer<Float>?) -> Void
    public typealias GroupKernel = @convention(c) (UnsafeRawPointer?, UnsafePointer<cflex_q16_block>?, Int32,
                                                   UnsafeMutablePointer<Float>?) -> Void

    public typealias FourRowBatchKernel = @convention(c) (UnsafePointer<UnsafeRawPointer?>?, UnsafePointer<cflex_q16_block>?, Int32,
                                                          Int32, Int32, UnsafeMutablePointer<Float>?, Int32) -> Void
    public typealias GroupBatchKernel = @convention(c) (UnsafeRawPointer?, UnsafePointer<cflex_q16_block>?, Int32, Int32, Int32,
                                                        UnsafeMutablePointer<Float>?, Int32) -> Void

    /// A row at a time (Q4_0); or (Q4_1, Q8_0, Q5_0, Q5_1) four row-major rows or one x8 group at a
    /// time (against one activation row, or several with `fourN` and up to eight with `groupN`),
    /// with bit-identical results between them; or (the K-quants) four row-major rows at a time,
    /// against one activation row or (`batched`) several, or one x8 group against one activation
    /// row (`group`; where a batch meets a group, the group goes back to row-major rows first),
    /// again with the same bits.
    public enum Kernel: Sendable {
        case row(RowKernel)
        case rows(four: FourRowKernel, group: GroupKernel, groupN: GroupBatchKernel, fourN: FourRowBatchKernel)
        /// `group`: the x8 decode kernel, where the matrix holds K-quant x8 groups (``Interleave``).
        case four(FourRowKernel, batched: FourRowBatchKernel, group: GroupKernel)

        /// Whether prompt rows take this kernel too (``MatMul/Path/prefill``): every format with a
        /// batched kernel. The K-quants' unpacks a super-block once for several activation rows and
        /// beats dequantizing to floats (a 7B-width 2-layer Q4_K_M file, 2 threads, a 279-token
        /// prompt: 170 -> 277 tok/s, one run, alternating). Q4_1, Q5_0, Q5_1 and Q8_0's
        /// (`rows4n.c`, and the x8 groups' `cflex_gemv8n_*`) measured about even with the float
        /// path or faster on SmolLM2's and Gemma 3 270M's shapes (batch 128, one core, best of 60, in the
        /// engine's layout: int/float 0.99-1.09 for Q5_0 at 576 and 640 columns, 1.41 at 2,048;
        /// 1.16-1.56 for Q8_0; 0.97-1.58 for Q4_1; 1.02-1.58 for Q5_1; docs/BENCHMARKS.md), and give
        /// prompt rows the decode kernels' bits. Q4_0 (`.row`) keeps the float path: its one-row
        /// kernel's lane-wise sums have no batched form yet.
        public var prefills: Bool {
            switch self {
            case .four, .rows: return true
            case .row: return false
            }
        }
    }

    public static func kernel(for type: GGMLType) -> Kernel? {
        switch type {
        case .q4_0: return .row(cflex_dot_q4_0)
        case .q4_1: return .rows(four: cflex_gemv4_q4_1, group: cflex_gemv8_q4_1, groupN: cflex_gemv8n_q4_1, fourN: cflex_gemv4n_q4_1)
        case .q5_0: return .rows(four: cflex_gemv4_q5_0, group: cflex_gemv8_q5_0, groupN: cflex_gemv8n_q5_0, fourN: cflex_gemv4n_q5_0)
        case .q5_1: return .rows(four: cflex_gemv4_q5_1, group: cflex_gemv8_q5_1, groupN: cflex_gemv8n_q5_1, fourN: cflex_gemv4n_q5_1)
        case .q8_0: return .rows(four: cflex_gemv4_q8_0, group: cflex_gemv8_q8_0, groupN: cflex_gemv8n_q8_0, fourN: cflex_gemv4n_q8_0)
        case .q4_K: return .four(cflex_gemv4_q4_K, batched: cflex_gemv4n_q4_K, group: cflex_gemv8_q4_K)
        case .q5_K: return .four(cflex_gemv4_q5_K, batched: cflex_gemv4n_q5_K, group: cflex_gemv8_q5_K)
        case .q6_K: return .four(cflex_gemv4_q6_K, batched: cflex_gemv4n_q6_K, group: cflex_gemv8_q6_K)
        default: return nil
        }
    }

    /// Four row-major K-quant rows against a batch whose activations ``MatMul`` rearranged into
    /// vector lanes (`cflex_kq_lanes_pack`): rows, packed activations, batch, blocks, y, ldy.
    public typealias LanesKernel = @convention(c) (UnsafePointer<UnsafeRawPointer?>?, UnsafeRawPointer?, Int32, Int32,
                                                   UnsafeMutablePointer<Float>?, Int32) -> Void

    /// Whether the lane kernels run (the AVX2 variant: with AVX-512 VNNI where the CPU has it).
    public static let lanesAvailable: Bool = cflex_kq_lanes_available() != 0

    /// The lane kernel for a K-quant prompt batch, where the CPU has one: the bits of the
    /// batched kernel, 2-3× its speed from 16 activation rows on (docs/BENCHMARKS.md).
    public static func lanes(for type: GGMLType) -> LanesKernel? {
        guard lanesAvailable else { return nil }
        switch type {
        case .q4_K: return cflex_gemm4_q4_K_lanes
        case .q5_K: return cflex_gemm4_q5_K_lanes
        case .q6_K: return cflex_gemm4_q6_K_lanes
        default: return nil
        }
    }


    /// Whether ``MatMul`` runs these integer kernels. On x86-64 always: the AVX2 variant where the
    /// CPU has AVX2, FMA and F16C, else the baseline variant's scalar code, which gives the same
    /// bits (the `_isa` tests) and ran ~5× faster than the Swift ``FusedDot`` and float paths
    /// there, whose FMAs are libm calls without `-mfma` (SmolLM2 Q4_1, one thread,
    /// `FLEXRUN_KERNELS=baseline`: decode 14.1 against 2.4 tok/s, prefill 13.9 against 3.4). Elsewhere the C kernels have only their
    /// scalar code and ``MatMul`` prefers ``FusedDot``, which LLVM vectorises for the target.
    #if arch(x86_64)
    public static let simd = true
    #else
    public static let simd: Bool = cflex_kernels_simd() != 0
    #endif
    /// Whether the AVX2 variant of the C kernels runs (CFlexKernels/dispatch.c).
    public static let avx2: Bool = cflex_kernels_simd() != 0
    /// Whether the x8 kernels use AVX-512 on this CPU (`FLEXRUN_KERNELS=avx2` turns it off).
    public static let avx512: Bool = cflex_kernels_avx512() != 0
    /// Whether the batched x8 kernels use AVX-512 VNNI on this CPU.
    public static let vnni: Bool = cflex_kernels_vnni() != 0
    /// Whether the K-quant x8 kernels run here (AVX-512 VNNI), so that ``Interleave`` lays out resident
    /// K-quant rows in x8 groups.
    public static let x8KQuants: Bool = cflex_x8k_available() != 0
}

/// Owns the memory behind a ``MatMulWorkspace``, sized for a pool, a widest row and a batch.
public struct MatMulScratch: ~Copyable {
    let rows: UnsafeMutablePointer<Float>
    let activations: UnsafeMutablePointer<cflex_q16_block>
    let blockSums: UnsafeMutablePointer<Float>
    let lanes: UnsafeMutableRawPointer?
    public let rowStride: Int
    public let activationStride: Int
    public let byteCount: Int

    public init(threads: Int, maxCols: Int, maxBatch: Int) {
        rowStride = (maxCols + 15) / 16 * 16
        activationStride = (maxCols + 31) / 32
        rows = .allocate(capacity: threads * 2 * rowStride)   // two dequantized rows per thread
        rows.initialize(repeating: 0, count: threads * 2 * rowStride)
        activations = .allocate(capacity: maxBatch * activationStride)
        activations.initialize(repeating: cflex_q16_block(), count: maxBatch * activationStride)
        blockSums = .allocate(capacity: maxBatch * activationStride)
        blockSums.initialize(repeating: 0, count: maxBatch * activationStride)
        let laneBytes = Self.laneBytes(maxCols: maxCols, maxBatch: maxBatch)
        if laneBytes > 0 {
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: laneBytes, alignment: 64)
            buffer.initializeMemory(as: UInt8.self, repeating: 0, count: laneBytes)
            lanes = buffer
        } else {
            lanes = nil
        }
        byteCount = Self.bytes(threads: threads, maxCols: maxCols, maxBatch: maxBatch)
    }

    /// The lane kernels' rearranged activations: none in builds without them or where the batch
    /// never reaches ``MatMul/lanesMinBatch``.
    static func laneBytes(maxCols: Int, maxBatch: Int) -> Int {
        guard IntegerDot.lanesAvailable, maxBatch >= MatMul.lanesMinBatch else { return 0 }
        return (maxBatch + 15) / 16 * ((maxCols + 31) / 32) * Int(CFLEX_KQ_LANES_BLOCK)
    }

    public static func bytes(threads: Int, maxCols: Int, maxBatch: Int) -> Int {
        threads * 2 * ((maxCols + 15) / 16 * 16) * 4 + maxBatch * ((maxCols + 31) / 32) * (MemoryLayout<cflex_q16_block>.stride + 4)
            + laneBytes(maxCols: maxCols, maxBatch: maxBatch)
    }

    public var workspace: MatMulWorkspace {
        MatMulWorkspace(rows: rows, rowStride: rowStride, activations: activations, activationStride: activationStride,
                        blockSums: blockSums, lanes: lanes)
    }

    deinit {
        rows.deallocate()
        activations.deallocate()
        blockSums.deallocate()
        lanes?.deallocate()
    }
}
