#include "cflex_kernels.h"
#include <math.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define CFLEX_AVX2 1
#else
#define CFLEX_AVX2 0
#endif

/// How far ahead of the current block the kernels prefetch weights, in bytes. Measured on
/// matrices of 256 MiB (far past the 32 MiB L3), 2 threads, against a plain read of the same
/// buffer: at 2 KiB the kernels reached 52-55 % (Q4_1) and 66-70 % (Q8_0) of read bandwidth,
/// i.e. compute and memory time added up instead of overlapping; at 8 KiB Q8_0 reached ~80 %
/// but Q4_1 not; at 16 KiB 80-95 % (Q4_1) and 85-88 % (Q8_0); 32 KiB was no better. The
/// earlier 2 KiB choice was tuned on 40 MiB matrices, where Zen's victim L3 kept part of the
/// matrix between runs and hid the latency (docs/BENCHMARKS.md).
#ifndef CFLEX_PREFETCH
#define CFLEX_PREFETCH 16384
#endif

int cflex_kernels_simd(void) { return CFLEX_AVX2; }

static inline float f16_to_f32(uint16_t h) {
#if CFLEX_AVX2
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        if (man == 0) { bits = sign; }
        else { exp = 127 - 15 + 1; while (!(man & 0x400)) { man <<= 1; exp--; } man &= 0x3FF; bits = sign | (exp << 23) | (man << 13); }
    } else if (exp == 31) { bits = sign | 0x7F800000 | (man << 13); }
    else { bits = sign | ((exp + 127 - 15) << 23) | (man << 13); }
    float f; memcpy(&f, &bits, 4); return f;
#endif
}

static inline uint16_t load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t load_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

void cflex_quantize_q16(const float *x, cflex_q16_block *y, int n) {
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
}

#if CFLEX_AVX2
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/// 32 weight values as two vectors of 16 i16 (elements 0-15, 16-31) · the block's 32 i16
/// activations → 8 float lanes of partial sums.
static inline __m256 dot16(__m256i w_lo, __m256i w_hi, const int16_t *q) {
    __m256i a = _mm256_madd_epi16(w_lo, _mm256_loadu_si256((const __m256i *)q));
    __m256i b = _mm256_madd_epi16(w_hi, _mm256_loadu_si256((const __m256i *)(q + 16)));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(a, b));
}
/// 16 nibble bytes → low nibbles (elements 0-15) and high nibbles (16-31) as i16 vectors.
/// One zero-extension of all 16 bytes, then mask and shift within the 16-bit lanes: three ops,
/// of which one on the shuffle port (the byte-level mask/shift/two-extensions form took five).
/// The empty asm keeps it that way: clang (SwiftPM's C compiler) otherwise folds the shift back
/// through the extension into the five-op form. Measured on one core from L2, Q4_1 16384x4096:
/// 15-18 GB/s folded, 19-21.5 GB/s with the barrier (gcc never folded: 21).
static inline void nibbles16(const uint8_t *p, __m256i *lo, __m256i *hi) {
    __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
    __asm__("" : "+x"(v));
    *lo = _mm256_and_si256(v, _mm256_set1_epi16(0x0F));
    *hi = _mm256_srli_epi16(v, 4);
}
/// The f16 scale at p as (d, d, 0, 0), to multiply by (x.d, x.s) in one go.
static inline __m128 dd16(const uint8_t *p) {
    __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)load_u16(p)));
    return _mm_unpacklo_ps(d, d);
}
/// An f16 weight scale at p times an activation scale, broadcast (one vcvtph2ps, no GPR trip).
static inline __m256 scale16(const uint8_t *p, float xd) {
    __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128((int)load_u16(p)));
    return _mm256_broadcastss_ps(_mm_mul_ss(d, _mm_set_ss(xd)));
}
/// Q5's 32 high bits as 16 in each i16 lane whose bit is set, for elements 0-15 and 16-31.
static inline void high16(uint32_t qh, __m256i *lo, __m256i *hi) {
    const __m256i bits = _mm256_set_epi16(1 << 15, 1 << 14, 1 << 13, 1 << 12, 1 << 11, 1 << 10, 1 << 9, 1 << 8,
                                          1 << 7, 1 << 6, 1 << 5, 1 << 4, 1 << 3, 1 << 2, 1 << 1, 1);
    __m256i l = _mm256_and_si256(_mm256_set1_epi16((short)(qh & 0xFFFF)), bits);
    __m256i h = _mm256_and_si256(_mm256_set1_epi16((short)(qh >> 16)), bits);
    *lo = _mm256_and_si256(_mm256_cmpeq_epi16(l, bits), _mm256_set1_epi16(16));
    *hi = _mm256_and_si256(_mm256_cmpeq_epi16(h, bits), _mm256_set1_epi16(16));
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

float cflex_dot_q4_1(const void *w, const cflex_q16_block *x, int nb) {
    const uint8_t *p = (const uint8_t *)w;
    float offset = 0;
#if CFLEX_AVX2
    // Per block, one vcvtph2ps turns (d, m) into floats and one multiply by the adjacent
    // (x.d, x.s) gives both the scale and the offset term; offsets accumulate in lane 1.
    // Two blocks per iteration into independent accumulators: a single 5-cycle FMA chain made
    // the kernel latency-bound on 18-block rows (SmolLM2).
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m128 off = _mm_setzero_ps();
    int b = 0;
    for (; b + 1 < nb; b += 2, p += 40) {
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH), _MM_HINT_T0);
        __m256i lo0, hi0, lo1, hi1;
        nibbles16(p + 4, &lo0, &hi0);
        nibbles16(p + 24, &lo1, &hi1);
        // (d0, m0, d1, m1) in one conversion, times (x0.d, x0.s, x1.d, x1.s) in one multiply.
        __m128 dm = _mm_cvtph_ps(_mm_unpacklo_epi32(_mm_cvtsi32_si128((int)load_u32(p)), _mm_cvtsi32_si128((int)load_u32(p + 20))));
        __m128 xs = _mm_castpd_ps(_mm_loadh_pd(_mm_load_sd((const double *)&x[b].d), (const double *)&x[b + 1].d));
        __m128 f = _mm_mul_ps(dm, xs);
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f), dot16(lo0, hi0, x[b].qs), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehl_ps(f, f)), dot16(lo1, hi1, x[b + 1].qs), acc1);
        off = _mm_add_ps(off, f);
    }
    for (; b < nb; b++, p += 20) {
        __m256i lo, hi;
        nibbles16(p + 4, &lo, &hi);
        __m128 f = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)load_u32(p))), _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)&x[b].d)));
        acc0 = _mm256_fmadd_ps(_mm256_broadcastss_ps(f), dot16(lo, hi, x[b].qs), acc0);
        off = _mm_add_ps(off, f);
    }
    offset = _mm_cvtss_f32(_mm_shuffle_ps(off, off, 1)) + _mm_cvtss_f32(_mm_shuffle_ps(off, off, 3));
    return hsum(_mm256_add_ps(acc0, acc1)) + offset;
#else
    float sum = 0;
    int v[32];
    for (int b = 0; b < nb; b++, p += 20) {
        unpack_nibbles(p + 4, 0, 0, 0, v);
        sum += f16_to_f32(load_u16(p)) * x[b].d * (float)scalar_dot(v, x[b].qs);
        offset += f16_to_f32(load_u16(p + 2)) * x[b].s;
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

float cflex_dot_q8_0(const void *w, const cflex_q16_block *x, int nb) {
    const uint8_t *p = (const uint8_t *)w;
#if CFLEX_AVX2
    // Two independent accumulators, as in cflex_dot_q4_1.
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int b = 0;
    for (; b + 1 < nb; b += 2, p += 68) {
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 64), _MM_HINT_T0);
        __m256i lo0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 2)));
        __m256i hi0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 18)));
        __m256i lo1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 36)));
        __m256i hi1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 52)));
        acc0 = _mm256_fmadd_ps(scale16(p, x[b].d), dot16(lo0, hi0, x[b].qs), acc0);
        acc1 = _mm256_fmadd_ps(scale16(p + 34, x[b + 1].d), dot16(lo1, hi1, x[b + 1].qs), acc1);
    }
    for (; b < nb; b++, p += 34) {
        __m256i lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 2)));
        __m256i hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 18)));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(load_u16(p)) * x[b].d), dot16(lo, hi, x[b].qs), acc0);
    }
    return hsum(_mm256_add_ps(acc0, acc1));
#else
    float sum = 0;
    int v[32];
    for (int b = 0; b < nb; b++, p += 34) {
        for (int j = 0; j < 32; j++) v[j] = (int8_t)p[2 + j];
        sum += f16_to_f32(load_u16(p)) * x[b].d * (float)scalar_dot(v, x[b].qs);
    }
    return sum;
#endif
}
