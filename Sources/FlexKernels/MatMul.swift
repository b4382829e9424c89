/// Y = X · Wᵀ for a quantized weight matrix W (rows × cols) and a batch of activation rows X.
///
/// This is the hot spot of the whole engine: every projection of every layer runs here.
/// Strategy (first version, to be replaced by integer dot products in the kernels issue):
/// each weight row is dequantized once into per-thread scratch, then dotted with up to four
/// activation rows at a time, so a prefill batch pays the dequantization once per weight pass.
public enum MatMul {
    /// - Parameters:
    ///   - x: `batch` rows of `w.cols` floats, row stride `ldx`.
    ///   - y: `batch` rows of `w.rows` floats, row stride `ldy`.
    ///   - scratch: per-thread buffers of `scratchStride` ≥ `w.cols` floats, `pool.threadCount` of them.
    public static func compute(_ w: QuantMatrix, x: UnsafePointer<Float>, ldx: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                               batch: Int, pool: WorkerPool, scratch: UnsafeMutablePointer<Float>, scratchStride: Int) {
        precondition(scratchStride >= w.cols)
        let rowsPerTask = 8
        let tasks = (w.rows + rowsPerTask - 1) / rowsPerTask
        pool.parallelFor(tasks) { task, thread in
            let row = scratch + thread * scratchStride
            let end = min(w.rows, (task + 1) * rowsPerTask)
            for r in task * rowsPerTask..<end {
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
                    y[b * ldy + r] = Vector.dot(row, x + b * ldx, w.cols)
                    b += 1
                }
            }
        }
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
