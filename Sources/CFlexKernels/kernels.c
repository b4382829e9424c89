#include "common.h"

int cflex_kernels_simd(void) { return CFLEX_AVX2; }

void cflex_quantize_q16(const float *x, cflex_q16_block *y, int n) {
#if CFLEX_AVX2
    // The scalar loop below, 8 lanes at a time: the same max, the same products, and vcvtps2dq
    // rounds to nearest even as lrintf does in the default rounding mode, so the same blocks.
    // Why: the scalar loop called lrintf through the PLT per element and took 6-8 % of a batched
    // decode step (perf, 8 sequences), all of it on the calling thread while the pool waited.
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i lo = _mm256_set1_epi32(-32767), hi = _mm256_set1_epi32(32767);
    for (int b = 0; b < n / 32; b++) {
        const float *v = x + 32 * b;
        __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8), v2 = _mm256_loadu_ps(v + 16), v3 = _mm256_loadu_ps(v + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 32767.0f, id = d != 0 ? 1.0f / d : 0.0f;
        __m256 s = _mm256_set1_ps(id);
        __m256i q0 = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v0, s)), lo), hi);
        __m256i q1 = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v1, s)), lo), hi);
        __m256i q2 = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v2, s)), lo), hi);
        __m256i q3 = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v3, s)), lo), hi);
        // packs interleaves 128-bit lanes: permute back to element order.
        __m256i p01 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
        __m256i p23 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q2, q3), 0xD8);
        _mm256_storeu_si256((__m256i *)y[b].qs, p01);
        _mm256_storeu_si256((__m256i *)(y[b].qs + 16), p23);
        __m256i t = _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
        __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4E));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xB1));
        int sum = _mm_cvtsi128_si32(t4);
        y[b].d = d;
        y[b].s = d * (float)sum;
    }
#else
    for (int b = 0; b < n / 32; b++) {
        const float *v = x + 32 * b;
        float amax = 0;
        for (int i = 0; i < 32; i++) { float a = fabsf(v[i]); if (a > amax) amax = a; }
        float d = amax / 32767.0f, id = d != 0 ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < 32; i++) { int q = (int)lrintf(v[i] * id); if (q > 32767) q = 32767; if (q < -32767) q = -32767; y[b].qs[i] = (int16_t)q; sum += q; }
        y[b].d = d;
        y[b].s = d * (float)sum;
    }
#endif
}

#if CFLEX_AVX2
/// 32 weight values as two vectors of 16 i16 (elements 0-15, 16-31) · the block's 32 i16
/// activations → 8 float lanes of partial sums.
static inline __m256 dot16(__m256i w_lo, __m256i w_hi, const int16_t *q) {
    __m256i a = _mm256_madd_epi16(w_lo, _mm256_loadu_si256((const __m256i *)q));
    __m256i b = _mm256_madd_epi16(w_hi, _mm256_loadu_si256((const __m256i *)(q + 16)));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(a, b));
}
/// The f16 scale at p as (d, d, 0, 0), to multiply by (x.d, x.s) in one go.
static inline __m128 dd16(const uint8_t *p) {
    __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)load_u16(p)));
    return _mm_unpacklo_ps(d, d);
}
#endif

static inline int scalar_dot(const int *w, const int16_t *q) {
    int s = 0;
    for (int j = 0; j < 32; j++) s += w[j] * q[j];
    return s;
}

/// Weight values of one block as ints (portable path).
static inline void unpack_nibbles(const uint8_t *p, uint32_t qh, int has_high, int bias, int *w) {
    for (int j = 0; j < 16; j++) {
        int h0 = has_high ? (int)((qh >> j) & 1) << 4 : 0, h1 = has_high ? (int)((qh >> (j + 16)) & 1) << 4 : 0;
        w[j] = ((p[j] & 0xF) | h0) - bias;
        w[j + 16] = ((p[j] >> 4) | h1) - bias;
    }
}

float cflex_dot_q4_0(const void *w, const cflex_q16_block *x, int nb) {
    const uint8_t *p = (const uint8_t *)w;
    float offset = 0;
#if CFLEX_AVX2
    // As cflex_dot_q4_1: (d, d)·(x.d, x.s) gives the scale and the −8 offset term in one multiply;
    // two blocks per iteration into independent accumulators.
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m128 off = _mm_setzero_ps();
    int b = 0;
    for (; b + 1 < nb; b += 2, p += 36) {
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH), _MM_HINT_T0);
        __m256i lo0, hi0, lo1, hi1;
        nibbles16(p + 2, &lo0, &hi0);
        nibbles16(p + 20, &lo1, &hi1);
        __m128 f0 = _mm_mul_ps(dd16(p), _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)&x[b].d)));
        __m128 f1 = _mm_mul_ps(dd16(p + 18), _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)&x[b + 1].d)));
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f0), dot16(lo0, hi0, x[b].qs), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f1), dot16(lo1, hi1, x[b + 1].qs), acc1);
        off = _mm_add_ps(off, _mm_add_ps(f0, f1));
    }
    for (; b < nb; b++, p += 18) {
        __m256i lo, hi;
        nibbles16(p + 2, &lo, &hi);
        __m128 f = _mm_mul_ps(dd16(p), _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)&x[b].d)));
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f), dot16(lo, hi, x[b].qs), acc0);
        off = _mm_add_ps(off, f);
    }
    offset = -8 * _mm_cvtss_f32(_mm_shuffle_ps(off, off, 1));
    return hsum(_mm256_add_ps(acc0, acc1)) + offset;
#else
    float sum = 0;
    int v[32];
    for (int b = 0; b < nb; b++, p += 18) {
        unpack_nibbles(p + 2, 0, 0, 0, v);
        float d = f16_to_f32(load_u16(p));
        sum += d * x[b].d * (float)scalar_dot(v, x[b].qs);
        offset -= 8 * d * x[b].s;
    }
    return sum + offset;
#endif
}

float cflex_dot_q5_0(const void *w, const cflex_q16_block *x, int nb) {
    const uint8_t *p = (const uint8_t *)w;
    float offset = 0;
#if CFLEX_AVX2
    // As cflex_dot_q4_0, with the fifth bit from qh and a −16 offset.
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m128 off = _mm_setzero_ps();
    int b = 0;
    for (; b + 1 < nb; b += 2, p += 44) {
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH), _MM_HINT_T0);
        __m256i lo0, hi0, lo1, hi1, h0l, h0h, h1l, h1h;
        nibbles16(p + 6, &lo0, &hi0);
        nibbles16(p + 28, &lo1, &hi1);
        high16(load_u32(p + 2), &h0l, &h0h);
        high16(load_u32(p + 24), &h1l, &h1h);
        __m128 f0 = _mm_mul_ps(dd16(p), _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)&x[b].d)));
        __m128 f1 = _mm_mul_ps(dd16(p + 22), _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)&x[b + 1].d)));
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f0), dot16(_mm256_or_si256(lo0, h0l), _mm256_or_si256(hi0, h0h), x[b].qs), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f1), dot16(_mm256_or_si256(lo1, h1l), _mm256_or_si256(hi1, h1h), x[b + 1].qs), acc1);
        off = _mm_add_ps(off, _mm_add_ps(f0, f1));
    }
    for (; b < nb; b++, p += 22) {
        __m256i lo, hi, hl, hh;
        nibbles16(p + 6, &lo, &hi);
        high16(load_u32(p + 2), &hl, &hh);
        __m128 f = _mm_mul_ps(dd16(p), _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)&x[b].d)));
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f), dot16(_mm256_or_si256(lo, hl), _mm256_or_si256(hi, hh), x[b].qs), acc0);
        off = _mm_add_ps(off, f);
    }
    offset = -16 * _mm_cvtss_f32(_mm_shuffle_ps(off, off, 1));
    return hsum(_mm256_add_ps(acc0, acc1)) + offset;
#else
    float sum = 0;
    int v[32];
    for (int b = 0; b < nb; b++, p += 22) {
        unpack_nibbles(p + 6, load_u32(p + 2), 1, 0, v);
        float d = f16_to_f32(load_u16(p));
        sum += d * x[b].d * (float)scalar_dot(v, x[b].qs);
        offset -= 16 * d * x[b].s;
    }
    return sum + offset;
#endif
}

float cflex_dot_q5_1(const void *w, const cflex_q16_block *x, int nb) {
    const uint8_t *p = (const uint8_t *)w;
    float offset = 0;
#if CFLEX_AVX2
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, p += 24) {
        __m256i lo, hi, hlo, hhi;
        nibbles16(p + 8, &lo, &hi);
        high16(load_u32(p + 4), &hlo, &hhi);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(load_u16(p)) * x[b].d), dot16(_mm256_or_si256(lo, hlo), _mm256_or_si256(hi, hhi), x[b].qs), acc);
        offset += f16_to_f32(load_u16(p + 2)) * x[b].s;
    }
    return hsum(acc) + offset;
#else
    float sum = 0;
    int v[32];
    for (int b = 0; b < nb; b++, p += 24) {
        unpack_nibbles(p + 8, load_u32(p + 4), 1, 0, v);
        sum += f16_to_f32(load_u16(p)) * x[b].d * (float)scalar_dot(v, x[b].qs);
        offset += f16_to_f32(load_u16(p + 2)) * x[b].s;
    }
    return sum + offset;
#endif
}

/* Q4_1 and Q8_0 take several rows per call, with one arithmetic for both layouts (see the
 * header): s_b exact in int32, acc = fma(fl(d_b·x.d_b), (float)s_b, acc) over the blocks in
 * order, off = fma(m_b, x.s_b, off), y = acc + off. */

/// Where row r's four bytes sit in each pair of 16-byte chunks (2t, 2t+1) of an x8 group block:
/// half 0 holds rows 0, 1, 4, 5 and half 1 rows 2, 3, 6, 7, so that one vphaddd of the two halves'
/// per-row pair sums leaves rows 0..7 in lane order. The one statement of that mapping: the
/// rearrangement, the scalar kernels and the Swift dequantizer all ask here.
int cflex_x8_slot(int r) { return 16 * ((r >> 1) & 1) + 4 * ((r & 1) | ((r >> 1) & 2)); }

/// Rearranges 8 row-major rows of nb blocks of `block` bytes, each `scales` f16 scales and then
/// 4·quads quant bytes, into x8 group blocks: the scales as arrays of 8 (one per scale), then the
/// quads as chunk pairs.
static void interleave8(const uint8_t *s, int nb, uint8_t *o, int block, int scales, int quads) {
    size_t rb = (size_t)nb * block;
    for (int b = 0; b < nb; b++, o += 8 * block)
        for (int r = 0; r < 8; r++) {
            const uint8_t *src = s + r * rb + (size_t)block * b;
            for (int j = 0; j < scales; j++) memcpy(o + 16 * j + 2 * r, src + 2 * j, 2);
            for (int t = 0; t < quads; t++) memcpy(o + 16 * scales + 32 * t + cflex_x8_slot(r), src + 2 * scales + 4 * t, 4);
        }
}

void cflex_interleave8_q4_1(const void *src, int nb, void *dst) { interleave8((const uint8_t *)src, nb, (uint8_t *)dst, 20, 2, 4); }
void cflex_interleave8_q8_0(const void *src, int nb, void *dst) { interleave8((const uint8_t *)src, nb, (uint8_t *)dst, 34, 1, 8); }

#if CFLEX_AVX2
/// One Q4_1 row block (nibbles at p) · the activation block halves xa (elements 0-15), xb (16-31).
static inline __m256i q4_1_partials(const uint8_t *p, __m256i xa, __m256i xb) {
    __m256i lo, hi;
    nibbles16(p, &lo, &hi);
    return _mm256_add_epi32(_mm256_madd_epi16(lo, xa), _mm256_madd_epi16(hi, xb));
}
static inline __m256i q8_0_partials(const uint8_t *p, __m256i xa, __m256i xb) {
    __m256i lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
    __m256i hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16)));
    return _mm256_add_epi32(_mm256_madd_epi16(lo, xa), _mm256_madd_epi16(hi, xb));
}
#endif

void cflex_gemv4_q4_1(const void *const *rows, const cflex_q16_block *x, int nb, float *y) {
    const uint8_t *p0 = (const uint8_t *)rows[0], *p1 = (const uint8_t *)rows[1];
    const uint8_t *p2 = (const uint8_t *)rows[2], *p3 = (const uint8_t *)rows[3];
#if CFLEX_AVX2
    // (d, m) of the four rows as 8 halves, reordered to d0..d3 m0..m3 for one conversion.
    const __m128i order = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    const size_t ahead = prefetch_rows4((size_t)nb * 20);
    __m128 acc = _mm_setzero_ps(), off = _mm_setzero_ps();
    for (int b = 0; b < nb; b++, p0 += 20, p1 += 20, p2 += 20, p3 += 20) {
        prefetch4(p0, p1, p2, p3, ahead);
        __m256i xa = _mm256_loadu_si256((const __m256i *)x[b].qs), xb = _mm256_loadu_si256((const __m256i *)(x[b].qs + 16));
        __m128i s = rowsums4(q4_1_partials(p0 + 4, xa, xb), q4_1_partials(p1 + 4, xa, xb),
                             q4_1_partials(p2 + 4, xa, xb), q4_1_partials(p3 + 4, xa, xb));
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
            const uint8_t *q = p[r] + 20 * b;
            int s = 0;
            for (int j = 0; j < 16; j++) s += (q[4 + j] & 0xF) * x[b].qs[j] + (q[4 + j] >> 4) * x[b].qs[16 + j];
            float f = f16_to_f32(load_u16(q)) * x[b].d;
            acc = fmaf(f, (float)s, acc);
            off = fmaf(f16_to_f32(load_u16(q + 2)), x[b].s, off);
        }
        y[r] = acc + off;
    }
#endif
}

#if CFLEX_AVX2
/// AVX-512 (BW + VL) is used where the CPU has it, chosen once at load; FLEXRUN_KERNELS=avx2 turns
/// it off (to measure, or to test that both give the same bits).
static int use_avx512 = 0;
__attribute__((constructor)) static void cflex_pick_isa(void) { use_avx512 = cflex_cpu_avx512(); }

/// The x8 kernels with 512-bit vectors: one load and widening takes both halves of a chunk pair
/// (rows 0, 1, 4, 5 in the low 256 bits, rows 2, 3, 6, 7 in the high), so a block needs half the
/// vpmaddwd. Why: the 256-bit Q4_1 kernel is bound by vpmaddwd throughput (AVX-VNNI's fused
/// vpdpwssd was no faster: 26-27 GB/s either way on one core from L2), and could not keep up with
/// the bus at its fastest (~44 of ~60 GB/s). One core from L2, same run: 25-33 GB/s (256-bit)
/// against 31-50 GB/s (512-bit). Integer sums are exact, so results are the same bits.
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static void gemv8_q4_1_avx512(const uint8_t *p, const cflex_q16_block *x, int nb, float *y) {
    const __m512i mask = _mm512_set1_epi16(0x0F);
    __m256 acc = _mm256_setzero_ps(), off = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, p += 160) {
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 128), _MM_HINT_T0);
        const int16_t *q = x[b].qs;
        __m512i a = _mm512_setzero_si512(), c = _mm512_setzero_si512();
        for (int t = 0; t < 4; t++) {
            __m512i xl = _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 4 * t)));
            __m512i xh = _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 16 + 4 * t)));
            __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + 32 + 32 * t)));
            __asm__("" : "+v"(v));   // as in nibbles16
            a = _mm512_add_epi32(a, _mm512_madd_epi16(_mm512_and_si512(v, mask), xl));
            c = _mm512_add_epi32(c, _mm512_madd_epi16(_mm512_srli_epi16(v, 4), xh));
        }
        __m512i sum = _mm512_add_epi32(a, c);
        __m256i s = _mm256_hadd_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1));
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[b].d)), _mm256_cvtepi32_ps(s), acc);
        off = _mm256_fmadd_ps(m, _mm256_set1_ps(x[b].s), off);
    }
    _mm256_storeu_ps(y, _mm256_add_ps(acc, off));
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
static void gemv8_q8_0_avx512(const uint8_t *p, const cflex_q16_block *x, int nb, float *y) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, p += 272) {
        for (int k = 0; k < 5; k++) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 64 * k), _MM_HINT_T0);
        const int16_t *q = x[b].qs;
        __m512i a = _mm512_setzero_si512(), c = _mm512_setzero_si512();
        for (int t = 0; t < 8; t += 2) {
            __m512i x0 = _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 4 * t)));
            __m512i x1 = _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 4 * t + 4)));
            a = _mm512_add_epi32(a, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p + 16 + 32 * t))), x0));
            c = _mm512_add_epi32(c, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p + 48 + 32 * t))), x1));
        }
        __m512i sum = _mm512_add_epi32(a, c);
        __m256i s = _mm256_hadd_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1));
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[b].d)), _mm256_cvtepi32_ps(s), acc);
    }
    _mm256_storeu_ps(y, acc);
}
#endif

int cflex_kernels_avx512(void) {
#if CFLEX_AVX2
    return use_avx512;
#else
    return 0;
#endif
}

void cflex_gemv8_q4_1(const void *group, const cflex_q16_block *x, int nb, float *y) {
    const uint8_t *p = (const uint8_t *)group;
#if CFLEX_AVX2
    if (use_avx512) { gemv8_q4_1_avx512(p, x, nb, y); return; }
    // Per block: 8 loads of four rows' four bytes, widened to i16; low and high nibbles times the
    // broadcast activation quads (vpmaddwd), summed per row, one vphaddd; then one conversion of
    // the 8 rows' d and of their m, one multiply and two FMAs for all 8 rows.
    const __m256i mask = _mm256_set1_epi16(0x0F);
    __m256 acc = _mm256_setzero_ps(), off = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, p += 160) {
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 128), _MM_HINT_T0);
        const int16_t *q = x[b].qs;
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256(), c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
        for (int t = 0; t < 4; t++) {
            __m256i xl = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 4 * t)));
            __m256i xh = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 16 + 4 * t)));
            __m256i v0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 32 + 32 * t)));
            __m256i v1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 48 + 32 * t)));
            __asm__("" : "+x"(v0), "+x"(v1));   // as in nibbles16
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_and_si256(v0, mask), xl));
            c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_srli_epi16(v0, 4), xh));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_and_si256(v1, mask), xl));
            c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(_mm256_srli_epi16(v1, 4), xh));
        }
        __m256i s = _mm256_hadd_epi32(_mm256_add_epi32(a0, c0), _mm256_add_epi32(a1, c1));
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[b].d)), _mm256_cvtepi32_ps(s), acc);
        off = _mm256_fmadd_ps(m, _mm256_set1_ps(x[b].s), off);
    }
    _mm256_storeu_ps(y, _mm256_add_ps(acc, off));
#else
    float acc[8] = {0}, off[8] = {0};
    for (int b = 0; b < nb; b++, p += 160) {
        for (int r = 0; r < 8; r++) {
            int slot = cflex_x8_slot(r), s = 0;
            for (int t = 0; t < 4; t++)
                for (int i = 0; i < 4; i++) {
                    uint8_t v = p[32 + 32 * t + slot + i];
                    s += (v & 0xF) * x[b].qs[4 * t + i] + (v >> 4) * x[b].qs[16 + 4 * t + i];
                }
            float f = f16_to_f32(load_u16(p + 2 * r)) * x[b].d;
            acc[r] = fmaf(f, (float)s, acc[r]);
            off[r] = fmaf(f16_to_f32(load_u16(p + 16 + 2 * r)), x[b].s, off[r]);
        }
    }
    for (int r = 0; r < 8; r++) y[r] = acc[r] + off[r];
#endif
}

void cflex_gemv4_q8_0(const void *const *rows, const cflex_q16_block *x, int nb, float *y) {
    const uint8_t *p0 = (const uint8_t *)rows[0], *p1 = (const uint8_t *)rows[1];
    const uint8_t *p2 = (const uint8_t *)rows[2], *p3 = (const uint8_t *)rows[3];
#if CFLEX_AVX2
    const size_t ahead = prefetch_rows4((size_t)nb * 34);
    __m128 acc = _mm_setzero_ps();
    for (int b = 0; b < nb; b++, p0 += 34, p1 += 34, p2 += 34, p3 += 34) {
        prefetch4(p0, p1, p2, p3, ahead);
        __m256i xa = _mm256_loadu_si256((const __m256i *)x[b].qs), xb = _mm256_loadu_si256((const __m256i *)(x[b].qs + 16));
        __m128i s = rowsums4(q8_0_partials(p0 + 2, xa, xb), q8_0_partials(p1 + 2, xa, xb),
                             q8_0_partials(p2 + 2, xa, xb), q8_0_partials(p3 + 2, xa, xb));
        __m128 d = _mm_cvtph_ps(_mm_setr_epi16((short)load_u16(p0), (short)load_u16(p1), (short)load_u16(p2), (short)load_u16(p3), 0, 0, 0, 0));
        acc = _mm_fmadd_ps(_mm_mul_ps(d, _mm_set1_ps(x[b].d)), _mm_cvtepi32_ps(s), acc);
    }
    _mm_storeu_ps(y, acc);
#else
    const uint8_t *p[4] = {p0, p1, p2, p3};
    for (int r = 0; r < 4; r++) {
        float acc = 0;
        for (int b = 0; b < nb; b++) {
            const uint8_t *q = p[r] + 34 * b;
            int s = 0;
            for (int j = 0; j < 32; j++) s += (int8_t)q[2 + j] * x[b].qs[j];
            acc = fmaf(f16_to_f32(load_u16(q)) * x[b].d, (float)s, acc);
        }
        y[r] = acc;
    }
#endif
}

void cflex_gemv8_q8_0(const void *group, const cflex_q16_block *x, int nb, float *y) {
    const uint8_t *p = (const uint8_t *)group;
#if CFLEX_AVX2
    if (use_avx512) { gemv8_q8_0_avx512(p, x, nb, y); return; }
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, p += 272) {
        for (int k = 0; k < 5; k++) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 64 * k), _MM_HINT_T0);
        const int16_t *q = x[b].qs;
        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256(), c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
        for (int t = 0; t < 8; t += 2) {
            __m256i xl = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 4 * t)));
            __m256i xh = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 4 * t + 4)));
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16 + 32 * t))), xl));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 32 + 32 * t))), xl));
            c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 48 + 32 * t))), xh));
            c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 64 + 32 * t))), xh));
        }
        __m256i s = _mm256_hadd_epi32(_mm256_add_epi32(a0, c0), _mm256_add_epi32(a1, c1));
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[b].d)), _mm256_cvtepi32_ps(s), acc);
    }
    _mm256_storeu_ps(y, acc);
#else
    float acc[8] = {0};
    for (int b = 0; b < nb; b++, p += 272) {
        for (int r = 0; r < 8; r++) {
            int slot = cflex_x8_slot(r), s = 0;
            for (int t = 0; t < 8; t++)
                for (int i = 0; i < 4; i++) s += (int8_t)p[16 + 32 * t + slot + i] * x[b].qs[4 * t + i];
            acc[r] = fmaf(f16_to_f32(load_u16(p + 2 * r)) * x[b].d, (float)s, acc[r]);
        }
    }
    for (int r = 0; r < 8; r++) y[r] = acc[r];
#endif
}

// ---------------------------------------------------------------------------------------------
// x8 groups against up to CFLEX_X8_BATCH activation rows at once (batched decode).
//
// Why: a session decoding 8 sequences ran each x8 group through the one-row kernel 8 times, each
// time widening and masking the same weight bytes again; widening is about a third of the
// one-row kernel's vector ops. Here a block's weights are widened once and multiplied with every
// activation row. The arithmetic per row and activation is exactly the one-row kernel's (integer
// block sums are exact in int32 whatever the order; then the same FMAs in the same order), so
// a sequence gets the same bits batched or alone (tested). Where the CPU has AVX-512 VNNI, the
// multiply-add and the accumulate are one vpdpwssd (also exact: no int32 overflow is possible,
// |sum| <= 32 * 255 * 32767).

#if CFLEX_AVX2
static int use_vnni = 0;
__attribute__((constructor)) static void cflex_pick_vnni(void) { use_vnni = cflex_cpu_vnni(); }

/// Per-activation float tail of one block, shared by every variant: the one-row kernels' steps.
#define X8_Q4_1_TAIL(s, j)                                                                              \
    do {                                                                                                \
        acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(xj[j][b].d)), _mm256_cvtepi32_ps(s), acc[j]); \
        off[j] = _mm256_fmadd_ps(m, _mm256_set1_ps(xj[j][b].s), off[j]);                                \
    } while (0)

static void gemv8n_q4_1_avx2(const uint8_t *p, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
    const __m256i mask = _mm256_set1_epi16(0x0F);
    const cflex_q16_block *xj[CFLEX_X8_BATCH];
    __m256 acc[CFLEX_X8_BATCH], off[CFLEX_X8_BATCH];
    for (int j = 0; j < n; j++) { xj[j] = x + (size_t)j * xstride; acc[j] = _mm256_setzero_ps(); off[j] = _mm256_setzero_ps(); }
    for (int b = 0; b < nb; b++, p += 160) {
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 128), _MM_HINT_T0);
        __m256i s0[CFLEX_X8_BATCH], s1[CFLEX_X8_BATCH];
        for (int j = 0; j < n; j++) { s0[j] = _mm256_setzero_si256(); s1[j] = _mm256_setzero_si256(); }
        for (int t = 0; t < 4; t++) {
            __m256i v0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 32 + 32 * t)));
            __m256i v1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 48 + 32 * t)));
            __asm__("" : "+x"(v0), "+x"(v1));   // as in nibbles16
            __m256i l0 = _mm256_and_si256(v0, mask), h0 = _mm256_srli_epi16(v0, 4);
            __m256i l1 = _mm256_and_si256(v1, mask), h1 = _mm256_srli_epi16(v1, 4);
            for (int j = 0; j < n; j++) {
                const int16_t *q = xj[j][b].qs;
                __m256i xl = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 4 * t)));
                __m256i xh = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 16 + 4 * t)));
                s0[j] = _mm256_add_epi32(s0[j], _mm256_add_epi32(_mm256_madd_epi16(l0, xl), _mm256_madd_epi16(h0, xh)));
                s1[j] = _mm256_add_epi32(s1[j], _mm256_add_epi32(_mm256_madd_epi16(l1, xl), _mm256_madd_epi16(h1, xh)));
            }
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)));
        for (int j = 0; j < n; j++) {
            __m256i s = _mm256_hadd_epi32(s0[j], s1[j]);
            X8_Q4_1_TAIL(s, j);
        }
    }
    for (int j = 0; j < n; j++) _mm256_storeu_ps(y + (size_t)j * ldy, _mm256_add_ps(acc[j], off[j]));
}

/// The AVX-512 bodies, generated twice: with vpdpwssd where the CPU has VNNI, and with
/// vpmaddwd + vpaddd for AVX-512 CPUs without it (a function compiled for VNNI may use it anywhere,
/// so the plain one must not be compiled for it).
#define DPW_VNNI(a, w, x) _mm512_dpwssd_epi32(a, w, x)
#define DPW_PLAIN(a, w, x) _mm512_add_epi32(a, _mm512_madd_epi16(w, x))
#define GEMV8N_Q4_1_AVX512(NAME, TARGET, DPW) \
__attribute__((target(TARGET))) \
static void NAME(const uint8_t *p, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) { \
    const __m512i mask = _mm512_set1_epi16(0x0F); \
    const cflex_q16_block *xj[CFLEX_X8_BATCH]; \
    __m256 acc[CFLEX_X8_BATCH], off[CFLEX_X8_BATCH]; \
    for (int j = 0; j < n; j++) { xj[j] = x + (size_t)j * xstride; acc[j] = _mm256_setzero_ps(); off[j] = _mm256_setzero_ps(); } \
    for (int b = 0; b < nb; b++, p += 160) { \
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH), _MM_HINT_T0); \
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 64), _MM_HINT_T0); \
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 128), _MM_HINT_T0); \
        __m512i lo[4], hi[4]; \
        for (int t = 0; t < 4; t++) { \
            __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + 32 + 32 * t))); \
            __asm__("" : "+v"(v)); \
            lo[t] = _mm512_and_si512(v, mask); \
            hi[t] = _mm512_srli_epi16(v, 4); \
        } \
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); \
        __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))); \
        for (int j = 0; j < n; j++) { \
            const int16_t *q = xj[j][b].qs; \
            __m512i a = _mm512_setzero_si512(), c = _mm512_setzero_si512(); \
            for (int t = 0; t < 4; t++) { \
                __m512i xl = _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 4 * t))); \
                __m512i xh = _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 16 + 4 * t))); \
                a = DPW(a, lo[t], xl); \
                c = DPW(c, hi[t], xh); \
            } \
            __m512i sum = _mm512_add_epi32(a, c); \
            __m256i s = _mm256_hadd_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1)); \
            X8_Q4_1_TAIL(s, j); \
        } \
    } \
    for (int j = 0; j < n; j++) _mm256_storeu_ps(y + (size_t)j * ldy, _mm256_add_ps(acc[j], off[j])); \
}
GEMV8N_Q4_1_AVX512(gemv8n_q4_1_vnni, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", DPW_VNNI)
GEMV8N_Q4_1_AVX512(gemv8n_q4_1_avx512, "avx512f,avx512bw,avx512vl,avx2,fma,f16c", DPW_PLAIN)

static void gemv8n_q8_0_avx2(const uint8_t *p, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
    const cflex_q16_block *xj[CFLEX_X8_BATCH];
    __m256 acc[CFLEX_X8_BATCH];
    for (int j = 0; j < n; j++) { xj[j] = x + (size_t)j * xstride; acc[j] = _mm256_setzero_ps(); }
    for (int b = 0; b < nb; b++, p += 272) {
        for (int k = 0; k < 5; k++) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 64 * k), _MM_HINT_T0);
        __m256i s0[CFLEX_X8_BATCH], s1[CFLEX_X8_BATCH];
        for (int j = 0; j < n; j++) { s0[j] = _mm256_setzero_si256(); s1[j] = _mm256_setzero_si256(); }
        for (int t = 0; t < 8; t += 2) {
            __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16 + 32 * t)));
            __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 32 + 32 * t)));
            __m256i w2 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 48 + 32 * t)));
            __m256i w3 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 64 + 32 * t)));
            for (int j = 0; j < n; j++) {
                const int16_t *q = xj[j][b].qs;
                __m256i xl = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 4 * t)));
                __m256i xh = _mm256_set1_epi64x((long long)load_u64((const uint8_t *)(q + 4 * t + 4)));
                s0[j] = _mm256_add_epi32(s0[j], _mm256_add_epi32(_mm256_madd_epi16(w0, xl), _mm256_madd_epi16(w2, xh)));
                s1[j] = _mm256_add_epi32(s1[j], _mm256_add_epi32(_mm256_madd_epi16(w1, xl), _mm256_madd_epi16(w3, xh)));
            }
        }
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        for (int j = 0; j < n; j++) {
            __m256i s = _mm256_hadd_epi32(s0[j], s1[j]);
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(xj[j][b].d)), _mm256_cvtepi32_ps(s), acc[j]);
        }
    }
    for (int j = 0; j < n; j++) _mm256_storeu_ps(y + (size_t)j * ldy, acc[j]);
}

#define GEMV8N_Q8_0_AVX512(NAME, TARGET, DPW) \
__attribute__((target(TARGET))) \
static void NAME(const uint8_t *p, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) { \
    const cflex_q16_block *xj[CFLEX_X8_BATCH]; \
    __m256 acc[CFLEX_X8_BATCH]; \
    for (int j = 0; j < n; j++) { xj[j] = x + (size_t)j * xstride; acc[j] = _mm256_setzero_ps(); } \
    for (int b = 0; b < nb; b++, p += 272) { \
        for (int k = 0; k < 5; k++) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 64 * k), _MM_HINT_T0); \
        __m512i w[8]; \
        for (int t = 0; t < 8; t++) w[t] = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p + 16 + 32 * t))); \
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); \
        for (int j = 0; j < n; j++) { \
            const int16_t *q = xj[j][b].qs; \
            __m512i a = _mm512_setzero_si512(), c = _mm512_setzero_si512(); \
            for (int t = 0; t < 8; t += 2) { \
                __m512i x0 = _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 4 * t))); \
                __m512i x1 = _mm512_set1_epi64((long long)load_u64((const uint8_t *)(q + 4 * t + 4))); \
                a = DPW(a, w[t], x0); \
                c = DPW(c, w[t + 1], x1); \
            } \
            __m512i sum = _mm512_add_epi32(a, c); \
            __m256i s = _mm256_hadd_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1)); \
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(xj[j][b].d)), _mm256_cvtepi32_ps(s), acc[j]); \
        } \
    } \
    for (int j = 0; j < n; j++) _mm256_storeu_ps(y + (size_t)j * ldy, acc[j]); \
}
GEMV8N_Q8_0_AVX512(gemv8n_q8_0_vnni, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", DPW_VNNI)
GEMV8N_Q8_0_AVX512(gemv8n_q8_0_avx512, "avx512f,avx512bw,avx512vl,avx2,fma,f16c", DPW_PLAIN)
#endif

void cflex_gemv8n_q4_1(const void *group, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    if (n > 1 && n <= CFLEX_X8_BATCH) {
        if (use_vnni) gemv8n_q4_1_vnni((const uint8_t *)group, x, xstride, n, nb, y, ldy);
        else if (use_avx512) gemv8n_q4_1_avx512((const uint8_t *)group, x, xstride, n, nb, y, ldy);
        else {
            // 16 ymm registers hold the widened weights and the sums of four rows at most.
            for (int j = 0; j < n; j += 4)
                gemv8n_q4_1_avx2((const uint8_t *)group, x + (size_t)j * xstride, xstride, n - j < 4 ? n - j : 4, nb, y + (size_t)j * ldy, ldy);
        }
        return;
    }
#endif
    for (int j = 0; j < n; j++) cflex_gemv8_q4_1(group, x + (size_t)j * xstride, nb, y + (size_t)j * ldy);
}

void cflex_gemv8n_q8_0(const void *group, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    if (n > 1 && n <= CFLEX_X8_BATCH) {
        if (use_vnni) gemv8n_q8_0_vnni((const uint8_t *)group, x, xstride, n, nb, y, ldy);
        else if (use_avx512) gemv8n_q8_0_avx512((const uint8_t *)group, x, xstride, n, nb, y, ldy);
        else {
            for (int j = 0; j < n; j += 4)
                gemv8n_q8_0_avx2((const uint8_t *)group, x + (size_t)j * xstride, xstride, n - j < 4 ? n - j : 4, nb, y + (size_t)j * ldy, ldy);
        }
        return;
    }
#endif
    for (int j = 0; j < n; j++) cflex_gemv8_q8_0(group, x + (size_t)j * xstride, nb, y + (size_t)j * ldy);
}

int cflex_kernels_vnni(void) {
#if CFLEX_AVX2
    return use_avx512 && use_vnni;
#else
    return 0;
#endif
}
