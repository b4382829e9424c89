// Q5_0 and Q5_1 four rows per call (row-major), against 16-bit activations.
//
// Why C: as for the other formats (cflex_kernels.h), the hot loop is vpmaddwd over widened
// weights. Why four rows: the one-row kernels (cflex_dot_q5_0/q5_1) convert each block's scale,
// broadcast it and fold 8 float lanes per row; four rows share the activation loads, convert
// their four scales in one instruction and reduce their integer sums with three vphaddd, as the
// Q4_1 four-row kernel does. Per row, exactly (bit for bit) on every path:
//   s_b = sum of q*x.q over block b, q the unsigned 5-bit quant (0-31), exact in int32;
//   acc = fma(fl(d_b*x.d_b), (float)s_b, acc) over b in order from 0;
//   Q5_0 (x = (q - 16)*d): off = fma(d_b, x.s_b, off), y = acc - 16*off;
//   Q5_1 (x = q*d + m):    off = fma(m_b, x.s_b, off), y = acc + off.
#include "common.h"

#if CFLEX_AVX2
/// One Q5 row block (qh at h, nibbles at q) · the activation block halves xa (elements 0-15), xb (16-31).
static inline __m256i q5_partials(const uint8_t *h, const uint8_t *q, __m256i xa, __m256i xb) {
    __m256i lo, hi, hl, hh;
    nibbles16(q, &lo, &hi);
    high16(load_u32(h), &hl, &hh);
    return _mm256_add_epi32(_mm256_madd_epi16(_mm256_or_si256(lo, hl), xa), _mm256_madd_epi16(_mm256_or_si256(hi, hh), xb));
}
#endif

#if !CFLEX_AVX2
/// Scalar s_b of one Q5 block.
static inline int32_t q5_sum(const uint8_t *h, const uint8_t *q, const int16_t *x) {
    uint32_t qh = load_u32(h);
    int32_t s = 0;
    for (int j = 0; j < 16; j++) {
        s += (int32_t)((q[j] & 0xF) | ((qh >> j) & 1) << 4) * x[j];
        s += (int32_t)((q[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) * x[16 + j];
    }
    return s;
}
#endif

void cflex_gemv4_q5_0(const void *const *rows, const cflex_q16_block *x, int nb, float *y) {
    const uint8_t *p0 = (const uint8_t *)rows[0], *p1 = (const uint8_t *)rows[1];
    const uint8_t *p2 = (const uint8_t *)rows[2], *p3 = (const uint8_t *)rows[3];
#if CFLEX_AVX2
    const size_t ahead = prefetch_rows4((size_t)nb * 22);
    __m128 acc = _mm_setzero_ps(), off = _mm_setzero_ps();
    for (int b = 0; b < nb; b++, p0 += 22, p1 += 22, p2 += 22, p3 += 22) {
        prefetch4(p0, p1, p2, p3, ahead);
        __m256i xa = _mm256_loadu_si256((const __m256i *)x[b].qs), xb = _mm256_loadu_si256((const __m256i *)(x[b].qs + 16));
        __m128i s = rowsums4(q5_partials(p0 + 2, p0 + 6, xa, xb), q5_partials(p1 + 2, p1 + 6, xa, xb),
                             q5_partials(p2 + 2, p2 + 6, xa, xb), q5_partials(p3 + 2, p3 + 6, xa, xb));
        __m128 d = _mm_cvtph_ps(_mm_setr_epi16((short)load_u16(p0), (short)load_u16(p1), (short)load_u16(p2), (short)load_u16(p3), 0, 0, 0, 0));
        acc = _mm_fmadd_ps(_mm_mul_ps(d, _mm_set1_ps(x[b].d)), _mm_cvtepi32_ps(s), acc);
        off = _mm_fmadd_ps(d, _mm_set1_ps(x[b].s), off);
    }
    _mm_storeu_ps(y, _mm_fnmadd_ps(_mm_set1_ps(16), off, acc));
#else
    const uint8_t *p[4] = {p0, p1, p2, p3};
    for (int r = 0; r < 4; r++) {
        float acc = 0, off = 0;
        for (int b = 0; b < nb; b++) {
            const uint8_t *q = p[r] + 22 * b;
            float d = f16_to_f32(load_u16(q)), f = d * x[b].d;
            acc = fmaf(f, (float)q5_sum(q + 2, q + 6, x[b].qs), acc);
            off = fmaf(d, x[b].s, off);
        }
        y[r] = fmaf(-16, off, acc);
    }
#endif
}

void cflex_gemv4_q5_1(const void *const *rows, const cflex_q16_block *x, int nb, float *y) {
    const uint8_t *p0 = (const uint8_t *)rows[0], *p1 = (const uint8_t *)rows[1];
    const uint8_t *p2 = (const uint8_t *)rows[2], *p3 = (const uint8_t *)rows[3];
#if CFLEX_AVX2
    // (d, m) of the four rows as 8 halves, reordered to d0..d3 m0..m3 for one conversion.
    const __m128i order = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const size_t ahead = prefetch_rows4((size_t)nb * 24);
    __m128 acc = _mm_setzero_ps(), off = _mm_setzero_ps();
    for (int b = 0; b < nb; b++, p0 += 24, p1 += 24, p2 += 24, p3 += 24) {
        prefetch4(p0, p1, p2, p3, ahead);
        __m256i xa = _mm256_loadu_si256((const __m256i *)x[b].qs), xb = _mm256_loadu_si256((const __m256i *)(x[b].qs + 16));
        __m128i s = rowsums4(q5_partials(p0 + 4, p0 + 8, xa, xb), q5_partials(p1 + 4, p1 + 8, xa, xb),
                             q5_partials(p2 + 4, p2 + 8, xa, xb), q5_partials(p3 + 4, p3 + 8, xa, xb));
        __m128i raw = _mm_setr_epi32((int)load_u32(p0), (int)load_u32(p1), (int)load_u32(p2), (int)load_u32(p3));
        __m256 dm = _mm256_cvtph_ps(_mm_shuffle_epi8(raw, order));
        acc = _mm_fmadd_ps(_mm_mul_ps(_mm256_castps256_ps128(dm), _mm_set1_ps(x[b].d)), _mm_cvtepi32_ps(s), acc);
        off = _mm_fmadd_ps(_mm256_extractf128_ps(dm, 1), _mm_set1_ps(x[b].s), off);
    }
    _mm_storeu_ps(y, _mm_add_ps(acc, off));
#else
    const uint8_t *p[4] = {p0, p1, p2, p3};
    for (int r = 0; r < 4; r++) {
        float acc = 0, off = 0;
        for (int b = 0; b < nb; b++) {
            const uint8_t *q = p[r] + 24 * b;
            float f = f16_to_f32(load_u16(q)) * x[b].d;
            acc = fmaf(f, (float)q5_sum(q + 4, q + 8, x[b].qs), acc);
            off = fmaf(f16_to_f32(load_u16(q + 2)), x[b].s, off);
        }
        y[r] = acc + off;
    }
#endif
}
