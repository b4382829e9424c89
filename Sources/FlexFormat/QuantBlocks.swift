/// Byte layouts of ggml's quantization blocks, as fixed-size Swift structs.
///
/// Each mirrors a `block_*` struct in ggml-common.h. Quant fields are tuples of bytes so the
/// layout is exactly the C one (no padding: every field is 1- or 2-byte aligned); tests assert
/// `MemoryLayout<…>.size` against `GGMLType.blockBytes`. f16 scales are raw `UInt16` bits.
/// Kernels read blocks through raw pointers at these offsets; the structs are the contract.

public typealias Bytes4 = (UInt8, UInt8, UInt8, UInt8)
public typealias Bytes12 = (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
public typealias Bytes16 = (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
public typealias Bytes32 = (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
public typealias Bytes64 = (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
public typealias Bytes128 = (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

/// 32 weights: x = (q − 8)·d. Low nibbles hold elements 0–15, high nibbles 16–31.
public struct BlockQ4_0 { public var d: UInt16; public var qs: Bytes16 }
/// 32 weights: x = q·d + m.
public struct BlockQ4_1 { public var d: UInt16; public var m: UInt16; public var qs: Bytes16 }
/// 32 weights: 5-bit q = nibble | (bit j of qh) << 4; x = (q − 16)·d.
public struct BlockQ5_0 { public var d: UInt16; public var qh: Bytes4; public var qs: Bytes16 }
/// 32 weights: x = q·d + m with 5-bit q.
public struct BlockQ5_1 { public var d: UInt16; public var m: UInt16; public var qh: Bytes4; public var qs: Bytes16 }
/// 32 weights: x = q·d with signed 8-bit q.
public struct BlockQ8_0 { public var d: UInt16; public var qs: Bytes32 }
/// 256 weights in 8 sub-blocks of 32, each with a 6-bit scale and min packed into 12 bytes.
public struct BlockQ4_K { public var d: UInt16; public var dmin: UInt16; public var scales: Bytes12; public var qs: Bytes128 }
/// As Q4_K plus one high bit per weight in `qh`.
public struct BlockQ5_K {
    public var d: UInt16; public var dmin: UInt16; public var scales: Bytes12; public var qh: Bytes32; public var qs: Bytes128
}
/// 256 weights: 6-bit q (4 low bits in ql, 2 high bits in qh), 16 signed 8-bit scales, f16 d last.
public struct BlockQ6_K { public var ql: Bytes128; public var qh: Bytes64; public var scales: Bytes16; public var d: UInt16 }
