// Q4_1, Q5_0, Q5_1 and Q8_0: four row-major rows against several activation rows per call
// (prefill, and the row-major rows of a batched decode).
//
// Why: prompt rows of these formats took the float path (each weight row dequantized to floats,
// then FMA with four activation rows), and the row-major rows of a batch ran the four-row decode
// kernel once per activation row, widening the same weight bytes again each time. Here a block's
// four rows are widened (nibbles, Q5's fifth bit, Q8_0's sign extension) and their scales
// converted once, then multiplied with up to N4_BATCH activation rows.
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

/// Activation rows per pass over a row's blocks: each block's widened weights are reused this many
/// times. 8, as the K-quant and x8 batched kernels.
#define N4_BATCH 8

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
// AVX2: per block, four rows' 32 quants as i16 in W[r][0] (elements 0-15) and W[r][1] (16-31),
// their d (and m) as one vector of four; then per activation row the four-row kernel's steps:
// two vpmaddwd per row, rowsums4, and the float tail on four lanes.

__attribute__((always_inline)) static inline void gemv4n_avx2(int T, const void *const *rows, const cflex_q16_block *x, int xstride,
                                                               int n, int nb, float *y, int ldy) {
    const int bytes = BLOCK_BYTES(T);
    const uint8_t *p[4] = {(const uint8_t *)rows[0], (const uint8_t *)rows[1], (const uint8_t *)rows[2], (const uint8_t *)rows[3]};
    // (d, m) of the four rows as 8 halves, reordered to d0..d3 m0..m3 for one conversion.
    const __m128i order = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const size_t ahead = prefetch_rows4((size_t)nb * bytes);
    for (int j0 = 0; j0 < n; j0 += N4_BATCH) {
        const int m = n - j0 < N4_BATCH ? n - j0 : N4_BATCH;
        __m128 acc[N4_BATCH], off[N4_BATCH];
        for (int j = 0; j < m; j++) { acc[j] = _mm_setzero_ps(); off[j] = _mm_setzero_ps(); }
        for (int b = 0; b < nb; b++) {
            const size_t o = (size_t)b * bytes;
            if (j0 == 0) prefetch4(p[0] + o, p[1] + o, p[2] + o, p[3] + o, ahead);
            __m256i W[4][2];
            for (int r = 0; r < 4; r++) {
                const uint8_t *q = p[r] + o + QS_AT(T);
                if (T == T_Q8_0) {
                    W[r][0] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)q));
                    W[r][1] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q + 16)));
                } else {
                    nibbles16(q, &W[r][0], &W[r][1]);
                    if (HAS_HIGH(T)) {
                        __m256i hl, hh;
                        high16(load_u32(p[r] + o + QH_AT(T)), &hl, &hh);
                        W[r][0] = _mm256_or_si256(W[r][0], hl);
                        W[r][1] = _mm256_or_si256(W[r][1], hh);
                    }
                }
            }
            __m128 d, mn = _mm_setzero_ps();
            if (HAS_MIN(T)) {
                __m128i raw = _mm_setr_epi32((int)load_u32(p[0] + o), (int)load_u32(p[1] + o), (int)load_u32(p[2] + o), (int)load_u32(p[3] + o));
                __m256 dm = _mm256_cvtph_ps(_mm_shuffle_epi8(raw, order));
                d = _mm256_castps256_ps128(dm);
                mn = _mm256_extractf128_ps(dm, 1);
            } else {
                d = _mm_cvtph_ps(_mm_setr_epi16((short)load_u16(p[0] + o), (short)load_u16(p[1] + o), (short)load_u16(p[2] + o),
                                                (short)load_u16(p[3] + o), 0, 0, 0, 0));
            }
            for (int j = 0; j < m; j++) {
                const cflex_q16_block *xb = x + (size_t)(j0 + j) * xstride + b;
                __m256i xa = _mm256_loadu_si256((const __m256i *)xb->qs), xh = _mm256_loadu_si256((const __m256i *)(xb->qs + 16));
                __m128i s = rowsums4(_mm256_add_epi32(_mm256_madd_epi16(W[0][0], xa), _mm256_madd_epi16(W[0][1], xh)),
                                     _mm256_add_epi32(_mm256_madd_epi16(W[1][0], xa), _mm256_madd_epi16(W[1][1], xh)),
                                     _mm256_add_epi32(_mm256_madd_epi16(W[2][0], xa), _mm256_madd_epi16(W[2][1], xh)),
                                     _mm256_add_epi32(_mm256_madd_epi16(W[3][0], xa), _mm256_madd_epi16(W[3][1], xh)));
                acc[j] = _mm_fmadd_ps(_mm_mul_ps(d, _mm_set1_ps(xb->d)), _mm_cvtepi32_ps(s), acc[j]);
                if (HAS_MIN(T)) off[j] = _mm_fmadd_ps(mn, _mm_set1_ps(xb->s), off[j]);
                else if (T == T_Q5_0) off[j] = _mm_fmadd_ps(d, _mm_set1_ps(xb->s), off[j]);
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
