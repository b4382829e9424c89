#ifndef CFLEX_KERNELS_H
#define CFLEX_KERNELS_H
// Integer dot products of quantized weights with 16-bit quantized activations.
//
// Why C: these kernels need AVX2's i16 pair multiply-add (vpmaddwd) over zero/sign-extended
// weight bytes; Swift's SIMD types have no pairwise widening multiply-add to ask for it, and the
// best Swift formulation (widen to Int32, convert, FMA) is the FusedDot path measured below. Measured on this machine, matvec on a 16384x4096 Q4_1 matrix, 2 threads, p50
// (docs/BENCHMARKS.md): Swift fused dequantize+FMA (FusedDot.q4_1) 9.4-10.2 GB/s of weights;
// ggml-style 8-bit activations with vpmaddubsw 13-14 GB/s, but they break the logit bounds on
// SmolLM2 (top-20 |dlogp| 0.36-0.67 against 0.32); these 16-bit kernels 21-24 GB/s. 16-bit
// activations keep ~15 bits per block (error <= max|x|/65534), so logits stay within the bounds.
// Each kernel has a portable scalar path with the same arithmetic for builds without AVX2; the
// AVX2 path is tested against the Swift reference dequantizer. (This machine always builds the
// AVX2 path, so the scalar one is compiled and exercised only on other hosts.)
#include <stddef.h>
#include <stdint.h>

/// 32 activations quantized to int16: x ~ d*q. `s` = d*sum(q), so a weight block's offset term
/// (Q4_1's m, Q4_0's -8) costs one multiply per block.
typedef struct {
    float d;
    float s;
    int16_t qs[32];
} cflex_q16_block;

/// Quantizes n floats (n a multiple of 32) to n/32 blocks, rounding to nearest: d = max|x|/32767.
void cflex_quantize_q16(const float *x, cflex_q16_block *y, int n);

/// Sum over nb blocks of weight*activation. `w` points at ggml blocks of the named type.
float cflex_dot_q4_0(const void *w, const cflex_q16_block *x, int nb);
float cflex_dot_q5_0(const void *w, const cflex_q16_block *x, int nb);
float cflex_dot_q5_1(const void *w, const cflex_q16_block *x, int nb);

// Q4_1 and Q8_0, the formats of the shipped models, run several rows per call, in two layouts.
//
// Why: one row at a time, a Q4_1 block cost ~13 vector ops (3.3 cycles), of which only 6 did the
// multiply-adds; the rest converted and broadcast the block's scales and folded 8 partial lanes.
// That was compute-bound at 21 GB/s per core (from L2), so two cores could not keep up with memory
// whenever the bus ran faster than ~60 GB/s. Eight rows interleaved put one row per lane: the 8
// rows' scales are one vector, the integer sums reduce with one vphaddd, ~8 ops per block, 33 GB/s
// per core from L2 (1.55x; the same machine, one run, docs/BENCHMARKS.md).
//
// "x8" layout: rows 8g..8g+7 occupy the same bytes as in the row-major matrix, rearranged per block
// column b into one group block (Q4_1 160 bytes, Q8_0 272 bytes = 8 ggml blocks):
//   Q4_1: d[8] (f16, rows 0..7), m[8], then 8 chunks of 16 bytes;
//   Q8_0: d[8], then 16 chunks of 16 bytes.
// Chunk 2t+h holds bytes 4t..4t+3 of the block's quants (qs) for four rows, 4 bytes each: rows
// 0, 1, 4, 5 when h = 0 and rows 2, 3, 6, 7 when h = 1. (For Q4_1, qs byte j holds elements j
// and j+16, so chunk 2t+h covers elements 4t..4t+3 and 16+4t..16+4t+3.)
//
// Both layouts compute, per row, exactly (bit for bit) the same thing, so a matrix may be partly
// interleaved (resident rows) and partly row-major (streamed rows) without changing any logit:
//   s_b = sum of q*x over block b, exact in int32;
//   acc = fma(fl(d_b * x.d_b), (float)s_b, acc) over b in order from 0;  off likewise with
//   fma(m_b, x.s_b, off) (Q4_1);  y = acc + off.

/// Byte offset of row r (0-7) within each pair of quant chunks of an x8 group block (16h + 4k above).
int cflex_x8_slot(int r);
/// Rearranges 8 row-major rows (contiguous, nb blocks each) into nb x8 group blocks at dst.
void cflex_interleave8_q4_1(const void *src, int nb, void *dst);
void cflex_interleave8_q8_0(const void *src, int nb, void *dst);
/// y[0..8) = the 8 rows of one x8 group · x.
void cflex_gemv8_q4_1(const void *group, const cflex_q16_block *x, int nb, float *y);
void cflex_gemv8_q8_0(const void *group, const cflex_q16_block *x, int nb, float *y);
/// y[0..4) = four row-major rows (any addresses; repeat one to compute fewer) · x.
void cflex_gemv4_q4_1(const void *const *rows, const cflex_q16_block *x, int nb, float *y);
void cflex_gemv4_q8_0(const void *const *rows, const cflex_q16_block *x, int nb, float *y);

/// Q5_0 and Q5_1, four row-major rows per call (q5rows.c; the arithmetic is at its top).
void cflex_gemv4_q5_0(const void *const *rows, const cflex_q16_block *x, int nb, float *y);
void cflex_gemv4_q5_1(const void *const *rows, const cflex_q16_block *x, int nb, float *y);
/// Q5_0/Q5_1 x8 groups (176/192 bytes per block column: d[8], Q5_1's m[8], qh[8] as u32, then
/// the x8 chunk pairs), with the four-row kernels' per-row arithmetic; AVX-512 and AVX2 bodies
/// (q5rows.c says how each sets the fifth bits).
void cflex_interleave8_q5_0(const void *src, int nb, void *dst);
void cflex_interleave8_q5_1(const void *src, int nb, void *dst);
void cflex_gemv8_q5_0(const void *group, const cflex_q16_block *x, int nb, float *y);
void cflex_gemv8_q5_1(const void *group, const cflex_q16_block *x, int nb, float *y);
void cflex_gemv8n_q5_0(const void *group, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);
void cflex_gemv8n_q5_1(const void *group, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);

/// Most activation rows one call of the batched x8 kernels takes.
#define CFLEX_X8_BATCH 8
/// y[j*ldy + 0..8) = the 8 rows of one x8 group · x + j*xstride (in blocks), for j < n. The same
/// bits as n calls of cflex_gemv8_*; the weights are widened once for all n (batched decode).
void cflex_gemv8n_q4_1(const void *group, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);
void cflex_gemv8n_q8_0(const void *group, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);

/// Q4_1, Q5_0, Q5_1, Q8_0, four row-major rows against several activation rows (rows4n.c):
/// y[j*ldy + 0..4) = four rows · x + j*xstride (in blocks), for j < n (any n >= 1), the bits of n
/// calls of cflex_gemv4_* (prefill, and the row-major rows of a batched decode).
void cflex_gemv4n_q4_1(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);
void cflex_gemv4n_q5_0(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);
void cflex_gemv4n_q5_1(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);
void cflex_gemv4n_q8_0(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);

// The K-quants (Q4_K, Q5_K, Q6_K; kquants.c): a 256-element super-block against 8 activation
// blocks. `nb` counts activation blocks, as everywhere here (cols / 32, a multiple of 8). Row-major
// only, one row or four per call; both give the same bits (the arithmetic is at the top of kquants.c).
float cflex_dot_q4_K(const void *w, const cflex_q16_block *x, int nb);
float cflex_dot_q5_K(const void *w, const cflex_q16_block *x, int nb);
float cflex_dot_q6_K(const void *w, const cflex_q16_block *x, int nb);
/// y[0..4) = four row-major rows (any addresses; repeat one to compute fewer) · x.
void cflex_gemv4_q4_K(const void *const *rows, const cflex_q16_block *x, int nb, float *y);
void cflex_gemv4_q5_K(const void *const *rows, const cflex_q16_block *x, int nb, float *y);
void cflex_gemv4_q6_K(const void *const *rows, const cflex_q16_block *x, int nb, float *y);
/// y[j*ldy + 0..4) = four row-major rows · x + j*xstride (in blocks), for j < n (any n >= 1):
/// the bits of n calls of cflex_gemv4_*, with each super-block's weights unpacked once for up to
/// 8 activation rows (prefill and batched decode).
void cflex_gemv4n_q4_K(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);
void cflex_gemv4n_q5_K(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);
void cflex_gemv4n_q6_K(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy);

/// Prompt rows of the K-quants with the activation rows in the vector lanes (AVX-512 VNNI's
/// vpdpwssd where the CPU has it, else AVX2's vpmaddwd; kquants.c): the n activation rows are rearranged once per matmul into groups of 16
/// (cflex_kq_lanes_pack: per group and block, CFLEX_KQ_LANES_BLOCK bytes, 64-byte aligned: 16
/// vectors of element pairs, then the 16 rows' d and s), then each call computes
/// y[j*ldy + 0..4) = four row-major rows · activation row j for j < n, the bits of
/// cflex_gemv4n_* (and so of the decode kernels).
#define CFLEX_KQ_LANES_BLOCK 1152
void cflex_kq_lanes_pack(const cflex_q16_block *x, int xstride, int n, int nb, void *out);
/// 1 in AVX2 builds: the lane kernels run (the VNNI form where the CPU has AVX-512 VNNI and
/// FLEXRUN_KERNELS is neither avx2 nor avx512, else the AVX2 form).
int cflex_kq_lanes_available(void);
void cflex_gemm4_q4_K_lanes(const void *const *rows, const void *xt, int n, int nb, float *y, int ldy);
void cflex_gemm4_q5_K_lanes(const void *const *rows, const void *xt, int n, int nb, float *y, int ldy);
void cflex_gemm4_q6_K_lanes(const void *const *rows, const void *xt, int n, int nb, float *y, int ldy);
/// 1 when the CPU has AVX-512 VNNI (whatever FLEXRUN_KERNELS says).
int cflex_kq_lanes_cpu(void);
/// The lane kernel of ggml type `type` (12-14) whenever the CPU has AVX-512 VNNI (tests); 0 when not.
int cflex_gemm4_kquant_lanes(int type, const void *const *rows, const void *xt, int n, int nb, float *y, int ldy);
/// The AVX2 form of the lane kernels (vpmaddwd, 8 lanes; any AVX2 build), by type; 0 when not built.
int cflex_gemm4_kquant_lanes_256(int type, const void *const *rows, const void *xt, int n, int nb, float *y, int ldy);

// The float loops of the forward pass that are not matrix products (vector.c), ports of the Swift
// SIMD code they replace, with the same arithmetic (vector.c says why they are C).

/// Attention.pagedGroup: the `group` query heads that share one KV head over a paged f16 KV cache
/// (keys and values as f16 bits). FlexKernels/Attention.swift documents the parameters.
void cflex_attention_group(const float *queries, ptrdiff_t group, const uint16_t *keys, const uint16_t *values, const int32_t *pages,
                           ptrdiff_t pageTokens, ptrdiff_t pageStride, ptrdiff_t stride, ptrdiff_t first, ptrdiff_t count, ptrdiff_t ring,
                           ptrdiff_t headDim, float scale, float *scores, ptrdiff_t scoresStride, float *rows, float *out);
/// a[i] = silu(a[i]) * b[i] (Vector.swiglu) and a[i] = gelu_tanh(a[i]) * b[i] (Vector.geglu).
void cflex_swiglu(float *a, const float *b, ptrdiff_t n);
void cflex_geglu(float *a, const float *b, ptrdiff_t n);

/// K-quant x8 groups (kquants_x8.c, which has the layout): 8 rows per call with the rows in the
/// vector lanes, the four-row kernels' bits. `type` is the ggml id (12 Q4_K, 13 Q5_K, 14 Q6_K).
/// 1 when the x8 kernels run here (AVX-512 BW, VL and VNNI; FLEXRUN_KERNELS neither "avx2" nor
/// "avx512"); elsewhere cflex_gemv8_q*_K still give the right bits, slowly, and the engine keeps
/// K-quant rows row-major.
int cflex_x8k_available(void);
/// 8 row-major rows (contiguous, nb/8 super-blocks each) → one x8 group at dst.
void cflex_x8k_interleave(int type, const void *src, int nb, void *dst);
/// One x8 group → its 8 rows, row-major and contiguous at dst.
void cflex_x8k_rows(int type, const void *group, int nb, void *dst);
/// One group super-block → its 8 rows' row-major super-blocks, one after the other at dst.
void cflex_x8k_superblock(int type, const void *groupBlock, void *dst);
/// The lane kernels (cflex_gemm4_q*_K_lanes) on one x8 group: y[j*ldy + 0..8) for the n packed
/// activation rows, the same bits.
void cflex_gemm8_kquant_lanes(int type, const void *group, const void *xt, int n, int nb, float *y, int ldy);
/// Row `row` (0-7) of one group super-block → its row-major super-block at dst.
void cflex_x8k_block(int type, const void *groupBlock, int row, void *dst);
/// y[0..8) = the 8 rows of one x8 group · x.
void cflex_gemv8_q4_K(const void *group, const cflex_q16_block *x, int nb, float *y);
void cflex_gemv8_q5_K(const void *group, const cflex_q16_block *x, int nb, float *y);
void cflex_gemv8_q6_K(const void *group, const cflex_q16_block *x, int nb, float *y);
/// cflex_gemv8_q*_K on a named instruction set: scalar is the portable fallback (the baseline
/// variant's), AVX-512 the VNNI kernels where they run. Returns 0 (y untouched) when not there.
int cflex_gemv8_kquant_isa(int type, int isa, const void *group, const cflex_q16_block *x, int nb, float *y);

/// Instruction sets a kernel can be asked for by name, so that tests run every path the machine
/// has (the unsuffixed kernels pick one at load) and check they give the same bits.
enum { CFLEX_ISA_SCALAR = 0, CFLEX_ISA_AVX2 = 1, CFLEX_ISA_AVX512 = 2 };
/// 1 when this build and CPU can run `isa` (scalar always; AVX2 in AVX2 builds; AVX-512 with BW + VL).
int cflex_isa_available(int isa);
/// cflex_gemv4_q4_K/q5_K/q6_K on a named instruction set; `type` is the ggml type id (12 Q4_K,
/// 13 Q5_K, 14 Q6_K). Returns 0 (and leaves y alone) when the type or the instruction set is not there.
int cflex_gemv4_kquant_isa(int type, int isa, const void *const *rows, const cflex_q16_block *x, int nb, float *y);
/// cflex_gemv4n_q4_K/q5_K/q6_K on a named instruction set (the same contract).
int cflex_gemv4n_kquant_isa(int type, int isa, const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb,
                            float *y, int ldy);

/// cflex_gemv4n_q4_1/q5_0/q5_1/q8_0 on a named instruction set (scalar or AVX2; `type` the ggml id:
/// 3 Q4_1, 6 Q5_0, 7 Q5_1, 8 Q8_0). Returns 0 (and leaves y alone) when the type or set is not there.
int cflex_gemv4n_q32_isa(int type, int isa, const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb,
                         float *y, int ldy);

/// 1 when the AVX2 variant runs (the fast paths: x86-64 with AVX2, FMA and F16C, and FLEXRUN_KERNELS
/// is not "baseline"), 0 for the portable scalar code.
int cflex_kernels_simd(void);
/// 1 when the x8 kernels run with AVX-512 (the CPU has BW and VL, and FLEXRUN_KERNELS is not
/// "avx2"); the results are the same bits either way.
int cflex_kernels_avx512(void);
/// 1 when the batched x8 kernels use AVX-512 VNNI's vpdpwssd (FLEXRUN_KERNELS=avx2 or avx512 turns it off).
int cflex_kernels_vnni(void);

#endif
