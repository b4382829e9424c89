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
float cflex_dot_q4_1(const void *w, const cflex_q16_block *x, int nb);
float cflex_dot_q5_0(const void *w, const cflex_q16_block *x, int nb);
float cflex_dot_q5_1(const void *w, const cflex_q16_block *x, int nb);
float cflex_dot_q8_0(const void *w, const cflex_q16_block *x, int nb);

/// 1 when compiled with AVX2+FMA (the fast paths), 0 for the portable scalar build.
int cflex_kernels_simd(void);

#endif
