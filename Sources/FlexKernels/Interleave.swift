import CFlexKernels
import FlexFormat

/// Rearranges resident Q4_1, Q5_0, Q5_1, Q8_0 and K-quant (Q4_K, Q5_K, Q6_K) matrices into the x8
/// layout, where the decode kernels compute 8 rows at once (layouts and measurements in
/// `cflex_kernels.h`, `q5rows.c` and `kquants_x8.c`).
///
/// Why at load and not in the file: the engine reads GGUF files as they are, and streamed rows
/// go straight from the disk to the kernels, so only rows that stay in memory are worth the
/// rearranging; it costs one pass over them at open. A group keeps the bytes of its 8 rows, so
/// the rearranged matrix takes no more memory and can be rearranged in place.
public enum Interleave {
    /// Formats with an x8 layout (AVX2 and AVX-512; Q5's fifth bits are spread per block,
    /// `q5rows.c`; the K-quants' kernels need AVX-512 VNNI, `kquants_x8.c`).
    public static func supports(_ type: GGMLType) -> Bool {
        switch type {
        case .q4_1, .q8_0, .q5_0, .q5_1: return true
        case .q4_K, .q5_K, .q6_K: return true
        default: return false
        }
    }

    /// Whether `type` is a K-quant, whose x8 groups have their own layout and kernels.
    static func isKQuant(_ type: GGMLType) -> Bool { type == .q4_K || type == .q5_K || type == .q6_K }

    /// How many of `rows` leading rows to rearrange: whole groups of 8, and none where the x8
    /// kernels would not run (builds without AVX2 take the Swift fused kernels, row-major only).
    /// K-quant groups only where the CPU has their AVX-512 VNNI kernels (elsewhere the four-row
    /// kernels beat the x8 fallback), and not for Q6_K: its four-row kernel already keeps up with
    /// the bus, and x8 measured 0.93-1.08× it from memory (2 threads, 160 MiB, alternating; Q4_K
    /// 1.25×, Q5_K 1.27×) while prompts pay 1-7 % to take groups back to rows (docs/BENCHMARKS.md).
    public static func rows(_ type: GGMLType, _ rows: Int) -> Int {
        guard supports(type), IntegerDot.simd else { return 0 }
        if isKQuant(type), !IntegerDot.x8KQuants || type == .q6_K { return 0 }
        return rows / 8 * 8
    }

    /// Copies the first `rows` rows (a multiple of 8) of a row-major matrix at `src` to `dst`,
    /// rearranged into x8 groups. `src` and `dst` must not overlap.
    public static func copy(_ type: GGMLType, from src: UnsafeRawPointer, to dst: UnsafeMutableRawPointer, rows: Int, cols: Int) {
        precondition(supports(type) && rows % 8 == 0 && cols % type.blockElements == 0)
        let groupBytes = 8 * type.rowBytes(elements: cols)!, nb = Int32(cols / 32)
        for g in 0..<rows / 8 {
            switch type {
            case .q4_K, .q5_K, .q6_K: cflex_x8k_interleave(Int32(type.rawValue), src + g * groupBytes, nb, dst + g * groupBytes)
            case .q4_1: cflex_interleave8_q4_1(src + g * groupBytes, nb, dst + g * groupBytes)
            case .q5_0: cflex_interleave8_q5_0(src + g * groupBytes, nb, dst + g * groupBytes)
            case .q5_1: cflex_interleave8_q5_1(src + g * groupBytes, nb, dst + g * groupBytes)
            default: cflex_interleave8_q8_0(src + g * groupBytes, nb, dst + g * groupBytes)
            }
        }
    }

    /// Rearranges the first `rows` rows (a multiple of 8) at `base` in place, a group at a time
    /// through `scratch` (at least ``scratchBytes(_:cols:)``).
    public static func inPlace(_ type: GGMLType, _ base: UnsafeMutableRawPointer, rows: Int, cols: Int,
                               scratch: UnsafeMutableRawPointer) {
        let groupBytes = 8 * type.rowBytes(elements: cols)!
        for g in 0..<rows / 8 {
            let group = base + g * groupBytes
            scratch.copyMemory(from: group, byteCount: groupBytes)
            copy(type, from: scratch, to: group, rows: 8, cols: cols)
        }
    }

    /// Scratch for ``inPlace(_:_:rows:cols:scratch:)``: one group.
    public static func scratchBytes(_ type: GGMLType, cols: Int) -> Int { 8 * (type.rowBytes(elements: cols) ?? 0) }
}
