// Q4_1, Q5_0, Q5_1 and Q8_0: four row-major rows against several activation rows per call
// (prefill, and the row-major rows of a batched decode).
//
// Why: prompt rows of these formats took the float path (each weight row dequantized to floats,
// then FMA with four activation rows), and the row-major rows of a batch ran the four-row decode
// kernel once per activation row, widening the same weight bytes again each time. Here a block's
// four rows are widened (nibbles, Q5's fifth bit, Q8_0's sign extension) and their scales
// converted once, then multiplied with up to N4_CHUNK activation rows.
//
// Per (row, activation row) the arithmetic is exactly the four-row decode kernels'
// (cflex_gemv4_q4_1/q8_0 in kernels.c, cflex_gemv4_q5_0/q5_1 in q5rows.c):
//   s_b = sum of q*x.q over block b, exact in int32 (|s_b| <= 32*255*32767 < 2^31);
//   acc = fma(fl(d_b*x.d_b), (float)s_b, acc) over b in order from 0;
//   Q4_1, Q5_1: off = fma(m_b, x.s_b, off), y = acc + off;
//   Q5_0:       off = fma(d_b, x.s_b, off), y = fma(-16, off, acc);
//   Q8_0:       y = acc.
// So a prompt row gets the bits of a generated one, and a row the same bits in any batch (tested
// against the decode kernels on every instruction set, cflex_gemv4n_q32_isa).
//
// No AVX-512 variant: where the CPU has it, the engine keeps the resident rows of all four formats
// in x8 groups (Interleave), which take the batched x8 kernels (cflex_gemv8n_*, AVX-512 and VNNI);
// rows that reach this kernel there are streamed rows, bound by the disk or the bus.
#include "common.h"

/// Activation rows per pass over a row's blocks: each block's rearranged weights are reused this
/// many times. Speed-up over the four-row kernel once per activation row (Tools/kernel-bench.c,
/// 128 x 1536, batch 128, three runs each): 16 rows Q5_0 2.7-3.0x, Q4_1 1.4-1.6x, Q8_0 1.3-1.5x;
/// 64 rows 3.1-3.3x, 1.6-1.7x, 1.4-1.7x; 128 rows no clearer. 64 rows of SmolLM2's or Gemma 3
/// 270M's widths (up to 2,048 columns) are at most 295 KB of activation blocks: they stay in L2.
#define N4_CHUNK 64

/// The formats, by ggml type id; block bytes, and where the scales, fifth bits and quants sit.
enum { T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8 };
#define BLOCK_BYTES(T) ((T) == T_Q4_1 ? 20 : (T) == T_Q5_0 ? 22 : (T) == T_Q5_1 ? 24 : 34)
#define HAS_MIN(T) ((T) == T_Q4_1 || (T) == T_Q5_1)
#define HAS_HIGH(T) ((T) == T_Q5_0 || (T) == T_Q5_1)
#define QH_AT(T) ((T) == T_Q5_0 ? 2 : 4)
#define QS_AT(T) ((T) == T_Q4_1 ? 4 : (T) == T_Q5_0 ? 6 : (T) == T_Q5_1 ? 8 : 2)

// ---------------------------------------------------------------------------------------------
// Portable scalar path: always compiled (the fallback of builds without AVX2, and what the tests
// hold the AVX2 path to, bit for bit, on every machine).

/// One row · one activation row: the arithmetic above, element by element.
static float row_scalar(int T, const uint8_t *p, const cflex_q16_block *x, int nb) {
    const int bytes = BLOCK_BYTES(T);
    float acc = 0, off = 0;
    for (int b = 0; b < nb; b++, p += bytes) {
        const uint8_t *q = p + QS_AT(T);
        uint32_t qh = HAS_HIGH(T) ? load_u32(p + QH_AT(T)) : 0;
        int32_t s = 0;
        if (T == T_Q8_0) {
            for (int j = 0; j < 32; j++) s += (int32_t)(int8_t)q[j] * x[b].qs[j];
        } else {
            for (int j = 0; j < 16; j++) {
                int lo = q[j] & 0xF, hi = q[j] >> 4;
                if (HAS_HIGH(T)) { lo |= (int)((qh >> j) & 1) << 4; hi |= (int)((qh >> (j + 16)) & 1) << 4; }
                s += lo * x[b].qs[j] + hi * x[b].qs[16 + j];
            }
        }
        // Separate statements: C contracts a*b+c into an FMA only within one expression.
        float d = f16_to_f32(load_u16(p)), f = d * x[b].d;
        acc = fmaf(f, (float)s, acc);
        if (HAS_MIN(T)) off = fmaf(f16_to_f32(load_u16(p + 2)), x[b].s, off);
        else if (T == T_Q5_0) off = fmaf(d, x[b].s, off);
    }
    return HAS_MIN(T) ? acc + off : T == T_Q5_0 ? fmaf(-16, off, acc) : acc;
}

static void gemv4n_scalar(int T, const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
    for (int j = 0; j < n; j++)
        for (int r = 0; r < 4; r++) y[(size_t)j * ldy + r] = row_scalar(T, (const uint8_t *)rows[r], x + (size_t)j * xstride, nb);
}

#if CFLEX_AVX2
// ---------------------------------------------------------------------------------------------
// AVX2. Per block, the four rows' quants are rearranged (a 4x4 transpose of 4-byte quads, then
// widened) so that vector V[t] holds elements 4t..4t+3 of rows 0, 1 | 2, 3, as the x8 chunks do;
// their d (and m) convert into one vector of four. Then per activation row each V[t] meets that
// row's quad t as one 64-bit broadcast load (vpmaddwd), and the eight products sum to two partials
// per row. Two activation rows at a time, one shuffle step leaves their 2 x 4 sums s_b in one
// vector, and the float tail runs on eight lanes.
// Why this shape and not the four-row decode kernel's (two vpmaddwd per row, then rowsums4): that
// one ends each block with three vphaddd and a four-lane tail per activation row. Measured with
// Tools/kernel-bench.c (one core, 128 x 1536, batch 128, three runs on a loaded machine; speed-up
// over the four-row kernel once per activation row, which absorbs the machine's drift): Q5_0 2.6-2.7x
// in the four-row kernel's shape, 2.7x with the transposed quads, 2.85-2.9x with two activation
// rows per step; Q4_1 1.35-1.5x, 1.35-1.4x, 1.5x; Q8_0 1.2-1.35x, 1.3-1.4x, 1.4-1.5x.
/// 4 rows' 16 bytes → 4 vectors: c[t] = bytes 4t..4t+3 of rows 0, 1, 2, 3.
static inline void transpose4(__m128i a0, __m128i a1, __m128i a2, __m128i a3, __m128i *c) {
    __m128i l01 = _mm_unpacklo_epi32(a0, a1), h01 = _mm_unpackhi_epi32(a0, a1);
    __m128i l23 = _mm_unpacklo_epi32(a2, a3), h23 = _mm_unpackhi_epi32(a2, a3);
    c[0] = _mm_unpacklo_epi64(l01, l23);
    c[1] = _mm_unpackhi_epi64(l01, l23);
    c[2] = _mm_unpacklo_epi64(h01, h23);
    c[3] = _mm_unpackhi_epi64(h01, h23);
}
/// V[t] · the activation block's quad t, summed over t: [r0 r0 r1 r1 | r2 r2 r3 r3], two partial
/// sums per row (exact int32).
static inline __m256i quad_sums(const __m256i *V, const uint8_t *xq) {
    __m256i a = _mm256_madd_epi16(V[0], _mm256_set1_epi64x((long long)load_u64(xq)));
    __m256i e = _mm256_madd_epi16(V[1], _mm256_set1_epi64x((long long)load_u64(xq + 8)));
    a = _mm256_add_epi32(a, _mm256_madd_epi16(V[2], _mm256_set1_epi64x((long long)load_u64(xq + 16))));
    e = _mm256_add_epi32(e, _mm256_madd_epi16(V[3], _mm256_set1_epi64x((long long)load_u64(xq + 24))));
    a = _mm256_add_epi32(a, _mm256_madd_epi16(V[4], _mm256_set1_epi64x((long long)load_u64(xq + 32))));
    e = _mm256_add_epi32(e, _mm256_madd_epi16(V[5], _mm256_set1_epi64x((long long)load_u64(xq + 40))));
    a = _mm256_add_epi32(a, _mm256_madd_epi16(V[6], _mm256_set1_epi64x((long long)load_u64(xq + 48))));
    e = _mm256_add_epi32(e, _mm256_madd_epi16(V[7], _mm256_set1_epi64x((long long)load_u64(xq + 56))));
    return _mm256_add_epi32(a, e);
}
__attribute__((always_inline)) static inline void gemv4n_avx2(int T, const void *const *rows, const cflex_q16_block *x, int xstride,
                                                               int n, int nb, float *y, int ldy) {
    const int bytes = BLOCK_BYTES(T);
    const uint8_t *p[4] = {(const uint8_t *)rows[0], (const uint8_t *)rows[1], (const uint8_t *)rows[2], (const uint8_t *)rows[3]};
    const __m128i order = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const __m256i bit0 = _mm256_set1_epi64x(0x0008000400020001LL), c16 = _mm256_set1_epi16(16), m4 = _mm256_set1_epi16(0x0F);
    const size_t ahead = prefetch_rows4((size_t)nb * bytes);
    __m128 acc[N4_CHUNK], off[N4_CHUNK];
    for (int j0 = 0; j0 < n; j0 += N4_CHUNK) {
        const int m = n - j0 < N4_CHUNK ? n - j0 : N4_CHUNK;
        for (int j = 0; j < m; j++) { acc[j] = _mm_setzero_ps(); off[j] = _mm_setzero_ps(); }
        for (int b = 0; b < nb; b++) {
            const size_t o = (size_t)b * bytes;
            if (j0 == 0) prefetch4(p[0] + o, p[1] + o, p[2] + o, p[3] + o, ahead);
            __m256i V[8];   // V[t]: elements 4t..4t+3 of rows 0..3 (i16)
            __m128i c[4];
            const uint8_t *q0 = p[0] + o + QS_AT(T), *q1 = p[1] + o + QS_AT(T), *q2 = p[2] + o + QS_AT(T), *q3 = p[3] + o + QS_AT(T);
            transpose4(_mm_loadu_si128((const __m128i *)q0), _mm_loadu_si128((const __m128i *)q1),
                       _mm_loadu_si128((const __m128i *)q2), _mm_loadu_si128((const __m128i *)q3), c);
            if (T == T_Q8_0) {
                for (int t = 0; t < 4; t++) V[t] = _mm256_cvtepi8_epi16(c[t]);
                transpose4(_mm_loadu_si128((const __m128i *)(q0 + 16)), _mm_loadu_si128((const __m128i *)(q1 + 16)),
                           _mm_loadu_si128((const __m128i *)(q2 + 16)), _mm_loadu_si128((const __m128i *)(q3 + 16)), c);
                for (int t = 0; t < 4; t++) V[4 + t] = _mm256_cvtepi8_epi16(c[t]);
            } else {
                for (int t = 0; t < 4; t++) {
                    __m256i v = _mm256_cvtepu8_epi16(c[t]);
                    __asm__("" : "+x"(v));   // as in nibbles16
                    V[t] = _mm256_and_si256(v, m4);
                    V[4 + t] = _mm256_srli_epi16(v, 4);
                }
                if (HAS_HIGH(T)) {
                    // Each row's qh low (elements 0-15) and high halves in its four i16 lanes of a quad.
                    const uint64_t rep = 0x0001000100010001ULL;
                    uint32_t h0 = load_u32(p[0] + o + QH_AT(T)), h1 = load_u32(p[1] + o + QH_AT(T));
                    uint32_t h2 = load_u32(p[2] + o + QH_AT(T)), h3 = load_u32(p[3] + o + QH_AT(T));
                    __m256i hlo = _mm256_setr_epi64x((long long)((h0 & 0xFFFF) * rep), (long long)((h1 & 0xFFFF) * rep),
                                                     (long long)((h2 & 0xFFFF) * rep), (long long)((h3 & 0xFFFF) * rep));
                    __m256i hhi = _mm256_setr_epi64x((long long)((h0 >> 16) * rep), (long long)((h1 >> 16) * rep),
                                                     (long long)((h2 >> 16) * rep), (long long)((h3 >> 16) * rep));
                    for (int t = 0; t < 4; t++) {
                        __m256i bits = _mm256_slli_epi16(bit0, 4 * t);
                        V[t] = _mm256_or_si256(V[t], _mm256_and_si256(_mm256_cmpeq_epi16(_mm256_and_si256(hlo, bits), bits), c16));
                        V[4 + t] = _mm256_or_si256(V[4 + t], _mm256_and_si256(_mm256_cmpeq_epi16(_mm256_and_si256(hhi, bits), bits), c16));
                    }
                }
            }
            __m128 d, mn;
            if (HAS_MIN(T)) {
                __m128i raw = _mm_setr_epi32((int)load_u32(p[0] + o), (int)load_u32(p[1] + o), (int)load_u32(p[2] + o), (int)load_u32(p[3] + o));
                __m256 dm = _mm256_cvtph_ps(_mm_shuffle_epi8(raw, order));
                d = _mm256_castps256_ps128(dm);
                mn = _mm256_extractf128_ps(dm, 1);
            } else {
                d = _mm_cvtph_ps(_mm_setr_epi16((short)load_u16(p[0] + o), (short)load_u16(p[1] + o), (short)load_u16(p[2] + o),
                                                (short)load_u16(p[3] + o), 0, 0, 0, 0));
                mn = d;
            }
            // Two activation rows at a time: their sums reduce together, and the float tail runs on
            // eight lanes (rows 0-3 of activation j, then of j + 1), each lane the four-lane tail's steps.
            const __m256 d2 = _mm256_set_m128(d, d), mn2 = _mm256_set_m128(mn, mn);
            int j = 0;
            for (; j + 2 <= m; j += 2) {
                const cflex_q16_block *xb = x + (size_t)(j0 + j) * xstride + b, *xc = xb + xstride;
                __m256i a = quad_sums(V, (const uint8_t *)xb->qs), c = quad_sums(V, (const uint8_t *)xc->qs);
                __m256 u = _mm256_castsi256_ps(a), v = _mm256_castsi256_ps(c);
                // Lane pairs of each row summed: [j r0 r1, j+1 r0 r1 | j r2 r3, j+1 r2 r3], then 64-bit lanes to order.
                __m256i s = _mm256_add_epi32(_mm256_castps_si256(_mm256_shuffle_ps(u, v, _MM_SHUFFLE(2, 0, 2, 0))),
                                             _mm256_castps_si256(_mm256_shuffle_ps(u, v, _MM_SHUFFLE(3, 1, 3, 1))));
                s = _mm256_permute4x64_epi64(s, _MM_SHUFFLE(3, 1, 2, 0));
                __m256 xd = _mm256_set_m128(_mm_set1_ps(xc->d), _mm_set1_ps(xb->d));
                __m256 A = _mm256_fmadd_ps(_mm256_mul_ps(d2, xd), _mm256_cvtepi32_ps(s), _mm256_set_m128(acc[j + 1], acc[j]));
                acc[j] = _mm256_castps256_ps128(A);
                acc[j + 1] = _mm256_extractf128_ps(A, 1);
                if (HAS_MIN(T) || T == T_Q5_0) {
                    __m256 xs = _mm256_set_m128(_mm_set1_ps(xc->s), _mm_set1_ps(xb->s));
                    __m256 F = _mm256_fmadd_ps(mn2, xs, _mm256_set_m128(off[j + 1], off[j]));
                    off[j] = _mm256_castps256_ps128(F);
                    off[j + 1] = _mm256_extractf128_ps(F, 1);
                }
            }
            for (; j < m; j++) {
                const cflex_q16_block *xb = x + (size_t)(j0 + j) * xstride + b;
                __m256i a = quad_sums(V, (const uint8_t *)xb->qs);
                __m128 lo = _mm_castsi128_ps(_mm256_castsi256_si128(a)), hi = _mm_castsi128_ps(_mm256_extracti128_si256(a, 1));
                __m128i s = _mm_add_epi32(_mm_castps_si128(_mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))),
                                          _mm_castps_si128(_mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))));
                acc[j] = _mm_fmadd_ps(_mm_mul_ps(d, _mm_set1_ps(xb->d)), _mm_cvtepi32_ps(s), acc[j]);
                if (HAS_MIN(T) || T == T_Q5_0) off[j] = _mm_fmadd_ps(mn, _mm_set1_ps(xb->s), off[j]);
            }
        }
        for (int j = 0; j < m; j++) {
            __m128 v = HAS_MIN(T) ? _mm_add_ps(acc[j], off[j]) : T == T_Q5_0 ? _mm_fnmadd_ps(_mm_set1_ps(16), off[j], acc[j]) : acc[j];
            _mm_storeu_ps(y + (size_t)(j0 + j) * ldy, v);
        }
    }
}
static void gemv4n_q4_1_avx2(const void *const *r, const cflex_q16_block *x, int xs, int n, int nb, float *y, int ldy) { gemv4n_avx2(T_Q4_1, r, x, xs, n, nb, y, ldy); }
static void gemv4n_q5_0_avx2(const void *const *r, const cflex_q16_block *x, int xs, int n, int nb, float *y, int ldy) { gemv4n_avx2(T_Q5_0, r, x, xs, n, nb, y, ldy); }
static void gemv4n_q5_1_avx2(const void *const *r, const cflex_q16_block *x, int xs, int n, int nb, float *y, int ldy) { gemv4n_avx2(T_Q5_1, r, x, xs, n, nb, y, ldy); }
static void gemv4n_q8_0_avx2(const void *const *r, const cflex_q16_block *x, int xs, int n, int nb, float *y, int ldy) { gemv4n_avx2(T_Q8_0, r, x, xs, n, nb, y, ldy); }
#endif

// ---------------------------------------------------------------------------------------------
// Entry points: AVX2 in AVX2 builds (on every such CPU, AVX-512 or not: see the top), else scalar.

void cflex_gemv4n_q4_1(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    gemv4n_q4_1_avx2(rows, x, xstride, n, nb, y, ldy);
#else
    gemv4n_scalar(T_Q4_1, rows, x, xstride, n, nb, y, ldy);
#endif
}
void cflex_gemv4n_q5_0(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    gemv4n_q5_0_avx2(rows, x, xstride, n, nb, y, ldy);
#else
    gemv4n_scalar(T_Q5_0, rows, x, xstride, n, nb, y, ldy);
#endif
}
void cflex_gemv4n_q5_1(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    gemv4n_q5_1_avx2(rows, x, xstride, n, nb, y, ldy);
#else
    gemv4n_scalar(T_Q5_1, rows, x, xstride, n, nb, y, ldy);
#endif
}
void cflex_gemv4n_q8_0(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    gemv4n_q8_0_avx2(rows, x, xstride, n, nb, y, ldy);
#else
    gemv4n_scalar(T_Q8_0, rows, x, xstride, n, nb, y, ldy);
#endif
}

int cflex_gemv4n_q32_isa(int type, int isa, const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb,
                         float *y, int ldy) {
    if (!cflex_isa_available(isa) || !(type == T_Q4_1 || type == T_Q5_0 || type == T_Q5_1 || type == T_Q8_0)) return 0;
    if (isa == CFLEX_ISA_SCALAR) { gemv4n_scalar(type, rows, x, xstride, n, nb, y, ldy); return 1; }
#if CFLEX_AVX2
    if (isa == CFLEX_ISA_AVX2) {
        switch (type) {
        case T_Q4_1: gemv4n_q4_1_avx2(rows, x, xstride, n, nb, y, ldy); break;
        case T_Q5_0: gemv4n_q5_0_avx2(rows, x, xstride, n, nb, y, ldy); break;
        case T_Q5_1: gemv4n_q5_1_avx2(rows, x, xstride, n, nb, y, ldy); break;
        default: gemv4n_q8_0_avx2(rows, x, xstride, n, nb, y, ldy); break;
        }
        return 1;
    }
#endif
    return 0;
}
