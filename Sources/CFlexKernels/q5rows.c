// Q5_0 and Q5_1 four rows per call (row-major), and eight interleaved rows per call (x8, the
// resident rows; AVX-512 and AVX2 bodies), against 16-bit activations.
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

// ---------------------------------------------------------------------------------------------
// Q5_0 and Q5_1 x8: rows 8g..8g+7 rearranged per block column into one group block (the bytes of
// 8 ggml blocks): d[8] (f16), for Q5_1 m[8], then qh[8] (u32), then the quants as Q4_1's x8 chunk
// pairs (chunk 2t+h, row r at cflex_x8_slot(r)): Q5_0 176 bytes (qh at 16, quants at 48), Q5_1
// 192 (m at 16, qh at 32, quants at 64). The same per-row arithmetic as the four-row kernels
// above, so a matrix may mix both layouts.
//
// A lane's fifth bit must come from its own row's qh. With AVX-512 BW one vpermw spreads the 8
// rows' qh halves over the 32 lanes of a chunk pair once per block, and per chunk pair one
// vptestmw + one masked vpaddw set the bits (a nibble is below 16, so adding 16 sets the bit).
// AVX2 has neither, so per block it spreads each row's qh halves over that row's four lanes of a
// quad (one vpermd per chunk, one vpshufb per half) and pre-shifts lane i left by 3 - i (one
// vpmullw by 8, 4, 2, 1): bit 4t+i of every lane then sits at 4t+3, and per t one shift and one
// mask put it at bit 4, ready to OR into the nibble. Three ops per 16 lanes per t instead of the
// four-row kernel's five, and no per-row reduction (gemv8_q5_avx2 below; measured in its comment).

/// Geometry of a Q5 x8 group block: `m` 1 for Q5_1.
#define Q5_GROUP(m) ((m) ? 192 : 176)
#define Q5_QH(m) ((m) ? 32 : 16)
#define Q5_QS(m) ((m) ? 64 : 48)

static void interleave8_q5(const uint8_t *s, int nb, uint8_t *o, int m) {
    const int block = m ? 24 : 22;
    size_t rb = (size_t)nb * block;
    for (int b = 0; b < nb; b++, o += Q5_GROUP(m))
        for (int r = 0; r < 8; r++) {
            const uint8_t *p = s + r * rb + (size_t)block * b;
            memcpy(o + 2 * r, p, 2);
            if (m) memcpy(o + 16 + 2 * r, p + 2, 2);
            memcpy(o + Q5_QH(m) + 4 * r, p + 2 + 2 * m, 4);
            for (int t = 0; t < 4; t++) memcpy(o + Q5_QS(m) + 32 * t + cflex_x8_slot(r), p + 6 + 2 * m + 4 * t, 4);
        }
}
void cflex_interleave8_q5_0(const void *src, int nb, void *dst) { interleave8_q5((const uint8_t *)src, nb, (uint8_t *)dst, 0); }
void cflex_interleave8_q5_1(const void *src, int nb, void *dst) { interleave8_q5((const uint8_t *)src, nb, (uint8_t *)dst, 1); }

#if CFLEX_AVX2
static int use_avx512 = 0, use_avx2 = 1;
__attribute__((constructor)) static void cflex_pick_q5_isa(void) { use_avx512 = cflex_cpu_avx512(); }

__attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static inline void gemv8_q5_avx512(const uint8_t *p, const cflex_q16_block *x, int nb, float *y, int m) {
    // Lane L (0-31) of a widened chunk pair holds row (0,1,4,5,2,3,6,7)[L/4], element L%4 of the
    // quad; lo_idx/hi_idx pick that row's low/high 16 qh bits (u16 2r and 2r+1 of the qh array).
    static const int16_t lo_rows[32] = {0, 0, 0, 0, 2, 2, 2, 2, 8, 8, 8, 8, 10, 10, 10, 10,
                                        4, 4, 4, 4, 6, 6, 6, 6, 12, 12, 12, 12, 14, 14, 14, 14};
    const __m512i lo_idx = _mm512_loadu_si512(lo_rows);
    const __m512i hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(1));
    const __m512i bit0 = _mm512_set1_epi64(0x0008000400020001LL);   // 1, 2, 4, 8 per quad
    const __m512i mask = _mm512_set1_epi16(0x0F), c16 = _mm512_set1_epi16(16);
    __m256 acc = _mm256_setzero_ps(), off = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, p += Q5_GROUP(m)) {
        for (int k = 0; k < Q5_GROUP(m); k += 64) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + k), _MM_HINT_T0);
        const int16_t *q = x[b].qs;
        __m512i qh = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + Q5_QH(m))));
        __m512i hlo = _mm512_permutexvar_epi16(lo_idx, qh), hhi = _mm512_permutexvar_epi16(hi_idx, qh);
        __m512i a = _mm512_setzero_si512(), c = _mm512_setzero_si512();
        for (int t = 0; t < 4; t++) {
            __m512i xl = _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 4 * t)));
            __m512i xh = _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 16 + 4 * t)));
            __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + Q5_QS(m) + 32 * t)));
            __asm__("" : "+v"(v));   // as in nibbles16
            __m512i bits = _mm512_slli_epi16(bit0, 4 * t);   // elements 4t..4t+3 (and 16+4t.. in hhi)
            __m512i lo = _mm512_and_si512(v, mask), hi = _mm512_srli_epi16(v, 4);
            lo = _mm512_mask_add_epi16(lo, _mm512_test_epi16_mask(hlo, bits), lo, c16);
            hi = _mm512_mask_add_epi16(hi, _mm512_test_epi16_mask(hhi, bits), hi, c16);
            a = _mm512_add_epi32(a, _mm512_madd_epi16(lo, xl));
            c = _mm512_add_epi32(c, _mm512_madd_epi16(hi, xh));
        }
        __m512i sum = _mm512_add_epi32(a, c);
        __m256i s = _mm256_hadd_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1));
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[b].d)), _mm256_cvtepi32_ps(s), acc);
        __m256 o = m ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))) : d;
        off = _mm256_fmadd_ps(o, _mm256_set1_ps(x[b].s), off);
    }
    _mm256_storeu_ps(y, m ? _mm256_add_ps(acc, off) : _mm256_fnmadd_ps(_mm256_set1_ps(16), off, acc));
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static void gemv8_q5_0_avx512(const uint8_t *p, const cflex_q16_block *x, int nb, float *y) { gemv8_q5_avx512(p, x, nb, y, 0); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static void gemv8_q5_1_avx512(const uint8_t *p, const cflex_q16_block *x, int nb, float *y) { gemv8_q5_avx512(p, x, nb, y, 1); }

/// The x8 kernel against up to CFLEX_X8_BATCH activation rows (batched decode): a block's weights
/// are widened and their high bits set once, then multiplied with every activation row. Per row
/// and activation the same integer sums and the same float steps as gemv8_q5_avx512, so the same
/// bits batched or alone.
__attribute__((always_inline, target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static inline void gemv8n_q5_avx512(const uint8_t *p, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy, int m) {
    static const int16_t lo_rows[32] = {0, 0, 0, 0, 2, 2, 2, 2, 8, 8, 8, 8, 10, 10, 10, 10,
                                        4, 4, 4, 4, 6, 6, 6, 6, 12, 12, 12, 12, 14, 14, 14, 14};
    const __m512i lo_idx = _mm512_loadu_si512(lo_rows);
    const __m512i hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(1));
    const __m512i bit0 = _mm512_set1_epi64(0x0008000400020001LL);
    const __m512i mask = _mm512_set1_epi16(0x0F), c16 = _mm512_set1_epi16(16);
    const cflex_q16_block *xj[CFLEX_X8_BATCH];
    __m256 acc[CFLEX_X8_BATCH], off[CFLEX_X8_BATCH];
    for (int j = 0; j < n; j++) { xj[j] = x + (size_t)j * xstride; acc[j] = _mm256_setzero_ps(); off[j] = _mm256_setzero_ps(); }
    for (int b = 0; b < nb; b++, p += Q5_GROUP(m)) {
        for (int k = 0; k < Q5_GROUP(m); k += 64) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + k), _MM_HINT_T0);
        __m512i qh = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + Q5_QH(m))));
        __m512i hlo = _mm512_permutexvar_epi16(lo_idx, qh), hhi = _mm512_permutexvar_epi16(hi_idx, qh);
        __m512i lo[4], hi[4];
        for (int t = 0; t < 4; t++) {
            __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + Q5_QS(m) + 32 * t)));
            __asm__("" : "+v"(v));
            __m512i bits = _mm512_slli_epi16(bit0, 4 * t);
            lo[t] = _mm512_and_si512(v, mask);
            hi[t] = _mm512_srli_epi16(v, 4);
            lo[t] = _mm512_mask_add_epi16(lo[t], _mm512_test_epi16_mask(hlo, bits), lo[t], c16);
            hi[t] = _mm512_mask_add_epi16(hi[t], _mm512_test_epi16_mask(hhi, bits), hi[t], c16);
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        __m256 o = m ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))) : d;
        for (int j = 0; j < n; j++) {
            const int16_t *q = xj[j][b].qs;
            __m512i a = _mm512_setzero_si512(), c = _mm512_setzero_si512();
            for (int t = 0; t < 4; t++) {
                a = _mm512_add_epi32(a, _mm512_madd_epi16(lo[t], _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 4 * t)))));
                c = _mm512_add_epi32(c, _mm512_madd_epi16(hi[t], _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 16 + 4 * t)))));
            }
            __m512i sum = _mm512_add_epi32(a, c);
            __m256i s = _mm256_hadd_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1));
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(xj[j][b].d)), _mm256_cvtepi32_ps(s), acc[j]);
            off[j] = _mm256_fmadd_ps(o, _mm256_set1_ps(xj[j][b].s), off[j]);
        }
    }
    for (int j = 0; j < n; j++)
        _mm256_storeu_ps(y + (size_t)j * ldy, m ? _mm256_add_ps(acc[j], off[j]) : _mm256_fnmadd_ps(_mm256_set1_ps(16), off[j], acc[j]));
}
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static void gemv8n_q5_0_avx512(const uint8_t *p, const cflex_q16_block *x, int xs, int n, int nb, float *y, int ldy) { gemv8n_q5_avx512(p, x, xs, n, nb, y, ldy, 0); }
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static void gemv8n_q5_1_avx512(const uint8_t *p, const cflex_q16_block *x, int xs, int n, int nb, float *y, int ldy) { gemv8n_q5_avx512(p, x, xs, n, nb, y, ldy, 1); }
#endif

#if CFLEX_AVX2
/// A block's qh spread for the AVX2 x8 kernels: per chunk (h = 0: rows 0, 1, 4, 5; h = 1: rows
/// 2, 3, 6, 7) and half (low 16 qh bits for the low nibbles, high 16 for the high ones), each i16
/// lane holds its row's half shifted left by 3 - i, i its place in the quad.
static inline void q5_spread(const uint8_t *qhp, __m256i *l0, __m256i *h0, __m256i *l1, __m256i *h1) {
    const __m256i rep_lo = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 8, 9, 8, 9, 8, 9, 8, 9, 0, 1, 0, 1, 0, 1, 0, 1, 8, 9, 8, 9, 8, 9, 8, 9);
    const __m256i rep_hi = _mm256_setr_epi8(2, 3, 2, 3, 2, 3, 2, 3, 10, 11, 10, 11, 10, 11, 10, 11,
                                            2, 3, 2, 3, 2, 3, 2, 3, 10, 11, 10, 11, 10, 11, 10, 11);
    const __m256i pre = _mm256_setr_epi16(8, 4, 2, 1, 8, 4, 2, 1, 8, 4, 2, 1, 8, 4, 2, 1);
    __m256i qh = _mm256_loadu_si256((const __m256i *)qhp);
    __m256i r0 = _mm256_permutevar8x32_epi32(qh, _mm256_setr_epi32(0, 0, 1, 1, 4, 4, 5, 5));
    __m256i r1 = _mm256_permutevar8x32_epi32(qh, _mm256_setr_epi32(2, 2, 3, 3, 6, 6, 7, 7));
    *l0 = _mm256_mullo_epi16(_mm256_shuffle_epi8(r0, rep_lo), pre);
    *h0 = _mm256_mullo_epi16(_mm256_shuffle_epi8(r0, rep_hi), pre);
    *l1 = _mm256_mullo_epi16(_mm256_shuffle_epi8(r1, rep_lo), pre);
    *h1 = _mm256_mullo_epi16(_mm256_shuffle_epi8(r1, rep_hi), pre);
}
/// The fifth bits of quad t from a spread half: bit 4t+i of lane i moved to bit 4 (16 or 0).
__attribute__((always_inline)) static inline __m256i q5_fifth(__m256i spread, int t) {
    __m256i v = t == 0 ? _mm256_slli_epi16(spread, 1) : _mm256_srli_epi16(spread, 4 * t - 1);
    return _mm256_and_si256(v, _mm256_set1_epi16(16));
}
/// Quad t of a group block's chunk pair, widened, with the fifth bits: lo/hi nibbles of chunks
/// 2t (rows 0, 1, 4, 5) and 2t+1 (rows 2, 3, 6, 7).
__attribute__((always_inline)) static inline void q5_quads(const uint8_t *qs, int t, __m256i sl0, __m256i sh0, __m256i sl1, __m256i sh1,
                                                           __m256i *lo0, __m256i *hi0, __m256i *lo1, __m256i *hi1) {
    const __m256i mask = _mm256_set1_epi16(0x0F);
    __m256i v0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(qs + 32 * t)));
    __m256i v1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(qs + 16 + 32 * t)));
    __asm__("" : "+x"(v0), "+x"(v1));   // as in nibbles16
    *lo0 = _mm256_or_si256(_mm256_and_si256(v0, mask), q5_fifth(sl0, t));
    *hi0 = _mm256_or_si256(_mm256_srli_epi16(v0, 4), q5_fifth(sh0, t));
    *lo1 = _mm256_or_si256(_mm256_and_si256(v1, mask), q5_fifth(sl1, t));
    *hi1 = _mm256_or_si256(_mm256_srli_epi16(v1, 4), q5_fifth(sh1, t));
}

/// x8 Q5_0/Q5_1 on AVX2, the arithmetic of the four-row kernels per row (same bits).
/// Measured with Tools/kernel-bench.c (one core, 128 x 4096 from L2, best of 3000; AVX2-only Zen 3):
/// see the comment at cflex_gemv8_q5_0 in cflex_kernels.h and docs/BENCHMARKS.md.
__attribute__((always_inline)) static inline void gemv8_q5_avx2(const uint8_t *p, const cflex_q16_block *x, int nb, float *y, int m) {
    __m256 acc = _mm256_setzero_ps(), off = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, p += Q5_GROUP(m)) {
        for (int k = 0; k < Q5_GROUP(m); k += 64) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + k), _MM_HINT_T0);
        const int16_t *q = x[b].qs;
        __m256i sl0, sh0, sl1, sh1;
        q5_spread(p + Q5_QH(m), &sl0, &sh0, &sl1, &sh1);
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
        for (int t = 0; t < 4; t++) {
            __m256i xl = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 4 * t)));
            __m256i xh = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 16 + 4 * t)));
            __m256i lo0, hi0, lo1, hi1;
            q5_quads(p + Q5_QS(m), t, sl0, sh0, sl1, sh1, &lo0, &hi0, &lo1, &hi1);
            a0 = _mm256_add_epi32(a0, _mm256_add_epi32(_mm256_madd_epi16(lo0, xl), _mm256_madd_epi16(hi0, xh)));
            a1 = _mm256_add_epi32(a1, _mm256_add_epi32(_mm256_madd_epi16(lo1, xl), _mm256_madd_epi16(hi1, xh)));
        }
        __m256i s = _mm256_hadd_epi32(a0, a1);   // rows 0-7 in order
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[b].d)), _mm256_cvtepi32_ps(s), acc);
        __m256 o = m ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))) : d;
        off = _mm256_fmadd_ps(o, _mm256_set1_ps(x[b].s), off);
    }
    _mm256_storeu_ps(y, m ? _mm256_add_ps(acc, off) : _mm256_fnmadd_ps(_mm256_set1_ps(16), off, acc));
}
static void gemv8_q5_0_avx2(const uint8_t *p, const cflex_q16_block *x, int nb, float *y) { gemv8_q5_avx2(p, x, nb, y, 0); }
static void gemv8_q5_1_avx2(const uint8_t *p, const cflex_q16_block *x, int nb, float *y) { gemv8_q5_avx2(p, x, nb, y, 1); }

/// The AVX2 x8 kernel against up to CFLEX_X8_BATCH activation rows (batched decode and prompt
/// rows): each quad widened and its fifth bits set once, then multiplied with every activation
/// row; per row and activation the steps of gemv8_q5_avx2, so the same bits.
__attribute__((always_inline)) static inline void gemv8n_q5_avx2(const uint8_t *p, const cflex_q16_block *x, int xstride, int n, int nb,
                                                                  float *y, int ldy, int m) {
    const cflex_q16_block *xj[CFLEX_X8_BATCH];
    __m256 acc[CFLEX_X8_BATCH], off[CFLEX_X8_BATCH];
    for (int j = 0; j < n; j++) { xj[j] = x + (size_t)j * xstride; acc[j] = _mm256_setzero_ps(); off[j] = _mm256_setzero_ps(); }
    for (int b = 0; b < nb; b++, p += Q5_GROUP(m)) {
        for (int k = 0; k < Q5_GROUP(m); k += 64) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + k), _MM_HINT_T0);
        __m256i sl0, sh0, sl1, sh1;
        q5_spread(p + Q5_QH(m), &sl0, &sh0, &sl1, &sh1);
        __m256i a0[CFLEX_X8_BATCH], a1[CFLEX_X8_BATCH];
        for (int j = 0; j < n; j++) { a0[j] = _mm256_setzero_si256(); a1[j] = _mm256_setzero_si256(); }
        for (int t = 0; t < 4; t++) {
            __m256i lo0, hi0, lo1, hi1;
            q5_quads(p + Q5_QS(m), t, sl0, sh0, sl1, sh1, &lo0, &hi0, &lo1, &hi1);
            for (int j = 0; j < n; j++) {
                const int16_t *q = xj[j][b].qs;
                __m256i xl = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 4 * t)));
                __m256i xh = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 16 + 4 * t)));
                a0[j] = _mm256_add_epi32(a0[j], _mm256_add_epi32(_mm256_madd_epi16(lo0, xl), _mm256_madd_epi16(hi0, xh)));
                a1[j] = _mm256_add_epi32(a1[j], _mm256_add_epi32(_mm256_madd_epi16(lo1, xl), _mm256_madd_epi16(hi1, xh)));
            }
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        __m256 o = m ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))) : d;
        for (int j = 0; j < n; j++) {
            __m256i s = _mm256_hadd_epi32(a0[j], a1[j]);
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(xj[j][b].d)), _mm256_cvtepi32_ps(s), acc[j]);
            off[j] = _mm256_fmadd_ps(o, _mm256_set1_ps(xj[j][b].s), off[j]);
        }
    }
    for (int j = 0; j < n; j++)
        _mm256_storeu_ps(y + (size_t)j * ldy, m ? _mm256_add_ps(acc[j], off[j]) : _mm256_fnmadd_ps(_mm256_set1_ps(16), off[j], acc[j]));
}
static void gemv8n_q5_0_avx2(const uint8_t *p, const cflex_q16_block *x, int xs, int n, int nb, float *y, int ldy) { gemv8n_q5_avx2(p, x, xs, n, nb, y, ldy, 0); }
static void gemv8n_q5_1_avx2(const uint8_t *p, const cflex_q16_block *x, int xs, int n, int nb, float *y, int ldy) { gemv8n_q5_avx2(p, x, xs, n, nb, y, ldy, 1); }
#endif

/// The portable x8 body: the same arithmetic, one row at a time.
static void gemv8_q5_portable(const uint8_t *p, const cflex_q16_block *x, int nb, float *y, int m) {
    for (int r = 0; r < 8; r++) {
        int slot = cflex_x8_slot(r);
        float acc = 0, off = 0;
        for (int b = 0; b < nb; b++) {
            const uint8_t *g = p + Q5_GROUP(m) * (size_t)b;
            uint32_t qh = load_u32(g + Q5_QH(m) + 4 * r);
            int32_t s = 0;
            for (int t = 0; t < 4; t++)
                for (int i = 0; i < 4; i++) {
                    uint8_t v = g[Q5_QS(m) + 32 * t + slot + i];
                    int j = 4 * t + i;
                    s += (int32_t)((v & 0xF) | ((qh >> j) & 1) << 4) * x[b].qs[j];
                    s += (int32_t)((v >> 4) | ((qh >> (j + 16)) & 1) << 4) * x[b].qs[16 + j];
                }
            float d = f16_to_f32(load_u16(g + 2 * r)), f = d * x[b].d;
            acc = fmaf(f, (float)s, acc);
            off = fmaf(m ? f16_to_f32(load_u16(g + 16 + 2 * r)) : d, x[b].s, off);
        }
        y[r] = m ? acc + off : fmaf(-16, off, acc);
    }
}

void cflex_gemv8_q5_0(const void *group, const cflex_q16_block *x, int nb, float *y) {
#if CFLEX_AVX2
    if (use_avx512) { gemv8_q5_0_avx512((const uint8_t *)group, x, nb, y); return; }
    if (use_avx2) { gemv8_q5_0_avx2((const uint8_t *)group, x, nb, y); return; }
#endif
    gemv8_q5_portable((const uint8_t *)group, x, nb, y, 0);
}
void cflex_gemv8_q5_1(const void *group, const cflex_q16_block *x, int nb, float *y) {
#if CFLEX_AVX2
    if (use_avx512) { gemv8_q5_1_avx512((const uint8_t *)group, x, nb, y); return; }
    if (use_avx2) { gemv8_q5_1_avx2((const uint8_t *)group, x, nb, y); return; }
#endif
    gemv8_q5_portable((const uint8_t *)group, x, nb, y, 1);
}

void cflex_gemv8n_q5_0(const void *group, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    if (use_avx512 && n > 1 && n <= CFLEX_X8_BATCH) { gemv8n_q5_0_avx512((const uint8_t *)group, x, xstride, n, nb, y, ldy); return; }
    if (use_avx2 && n > 1 && n <= CFLEX_X8_BATCH) { gemv8n_q5_0_avx2((const uint8_t *)group, x, xstride, n, nb, y, ldy); return; }
#endif
    for (int j = 0; j < n; j++) cflex_gemv8_q5_0(group, x + (size_t)j * xstride, nb, y + (size_t)j * ldy);
}
void cflex_gemv8n_q5_1(const void *group, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    if (use_avx512 && n > 1 && n <= CFLEX_X8_BATCH) { gemv8n_q5_1_avx512((const uint8_t *)group, x, xstride, n, nb, y, ldy); return; }
    if (use_avx2 && n > 1 && n <= CFLEX_X8_BATCH) { gemv8n_q5_1_avx2((const uint8_t *)group, x, xstride, n, nb, y, ldy); return; }
#endif
    for (int j = 0; j < n; j++) cflex_gemv8_q5_1(group, x + (size_t)j * xstride, nb, y + (size_t)j * ldy);
}
