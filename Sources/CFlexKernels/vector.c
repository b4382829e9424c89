// The float loops of the forward pass that are not matrix products: attention over the paged f16
// KV cache and the SwiGLU/GeGLU gates. Ports of Attention.pagedGroup and Vector.swiglu/geglu
// (FlexKernels), which were Swift SIMD code.
//
// Why C: Swift takes its CPU features from compiler flags only (`-Xcc -mavx2`, an unsafeFlag), and
// without them `SIMD8<Float>.addProduct` becomes eight calls to fmaf and every vector two SSE
// halves. C compiles this file twice like the others (common.h), so the AVX2 variant gets vfmadd
// on ymm registers and the baseline variant stays correct on any x86-64.
//
// The arithmetic is the Swift code's, operation for operation, written with clang's vector
// extensions (eight lanes as in SIMD8<Float>): the same fused multiply-adds, separate multiplies
// and adds elsewhere (contraction is off below, as Swift never contracts), and lane sums in lane
// order as SIMD.sum() does. The baseline variant computes the same bits with fmaf.
#include "common.h"

#pragma clang fp contract(off)
// The baseline variant passes 8-float vectors between static inline helpers, all inlined; the
// warning that their ABI would differ without AVX does not apply.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef uint32_t v8u __attribute__((vector_size(32), aligned(4)));
typedef float v4f __attribute__((vector_size(16), aligned(4)));

static inline v8f splat8(float s) { return (v8f){s, s, s, s, s, s, s, s}; }
static inline v8f fma8(v8f a, v8f b, v8f c) { return __builtin_elementwise_fma(a, b, c); }
static inline v8f load8(const float *p) { v8f v; memcpy(&v, p, 32); return v; }
static inline void store8(v8f v, float *p) { memcpy(p, &v, 32); }
/// Lanes 0 to 7 added in order, as Swift's SIMD.sum().
static inline float sum8(v8f v) {
    float s = v[0];
    for (int i = 1; i < 8; i++) s += v[i];
    return s;
}
/// Eight f16 values widened to f32 (exact either way).
static inline v8f load8h(const uint16_t *p) {
#if CFLEX_AVX2
    return (v8f)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#else
    v8f v;
    for (int i = 0; i < 8; i++) v[i] = f16_to_f32(load_u16((const uint8_t *)(p + i)));
    return v;
#endif
}

/// Vector.softmax: max, then e^(x - max) with libm's expf and their sum in order, then x *= 1/sum.
static void softmax(float *x, int n) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++) m = x[i] >= m ? x[i] : m;
    float sum = 0;
    for (int i = 0; i < n; i++) { float e = expf(x[i] - m); x[i] = e; sum += e; }
    float inv = 1 / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/// q · rows[j] for the 8 rows (each n floats, contiguous), folded by pairs, quads and eights.
static inline v8f dot8(const float *q, const float *rows, ptrdiff_t n) {
    v8f a[8] = {0};
    for (ptrdiff_t i = 0; i < n; i += 8) {
        v8f x = load8(q + i);
        for (int j = 0; j < 8; j++) a[j] = fma8(x, load8(rows + j * n + i), a[j]);
    }
#define FOLD(a, b) __builtin_shufflevector(__builtin_shufflevector(a, a, 0, 2, 4, 6) + __builtin_shufflevector(a, a, 1, 3, 5, 7), \
                                           __builtin_shufflevector(b, b, 0, 2, 4, 6) + __builtin_shufflevector(b, b, 1, 3, 5, 7), \
                                           0, 1, 2, 3, 4, 5, 6, 7)
    v8f f01 = FOLD(a[0], a[1]), f23 = FOLD(a[2], a[3]), f45 = FOLD(a[4], a[5]), f67 = FOLD(a[6], a[7]);
    v8f f03 = FOLD(f01, f23), f47 = FOLD(f45, f67);
    return FOLD(f03, f47);
#undef FOLD
}

#define PAGE_BASE(t) ((ptrdiff_t)pages[ring > 0 ? ((t) / pageTokens) % ring : (t) / pageTokens] * pageStride)

/// out = sum over t of p[t - first] * value row t, in position order, 64 dims in registers at a time.
static void weighted_values(const float *p, const uint16_t *values, const int32_t *pages, ptrdiff_t pageTokens, ptrdiff_t pageStride,
                            ptrdiff_t stride, ptrdiff_t first, ptrdiff_t count, ptrdiff_t ring, ptrdiff_t headDim, float *out) {
    ptrdiff_t c = 0;
    while (c < headDim) {
        int lanes = headDim - c >= 64 ? 8 : 1;
        v8f o[8] = {0};
        for (ptrdiff_t t = first; t < count;) {
            ptrdiff_t r0 = t % pageTokens, base = PAGE_BASE(t);
            ptrdiff_t n = pageTokens - r0 < count - t ? pageTokens - r0 : count - t;
            const float *pt = p + (t - first) - r0;
            for (ptrdiff_t r = r0; r < r0 + n; r++) {
                const uint16_t *v = values + base + r * stride + c;
                v8f w = splat8(pt[r]);
                if (lanes == 8) {
                    for (int k = 0; k < 8; k++) o[k] = fma8(w, load8h(v + 8 * k), o[k]);
                } else {
                    o[0] = fma8(w, load8h(v), o[0]);
                }
            }
            t += n;
        }
        for (int k = 0; k < lanes; k++) store8(o[k], out + c + 8 * k);
        c += 8 * lanes;
    }
}

void cflex_attention_group(const float *queries, ptrdiff_t group, const uint16_t *keys, const uint16_t *values, const int32_t *pages,
                           ptrdiff_t pageTokens, ptrdiff_t pageStride, ptrdiff_t stride, ptrdiff_t first, ptrdiff_t count, ptrdiff_t ring,
                           ptrdiff_t headDim, float scale, float *scores, ptrdiff_t scoresStride, float *rows, float *out) {
    for (ptrdiff_t t = first; t < count;) {
        ptrdiff_t r0 = t % pageTokens, base = PAGE_BASE(t);
        ptrdiff_t end = r0 + (pageTokens - r0 < count - t ? pageTokens - r0 : count - t);
        for (ptrdiff_t r = r0; r < end;) {
            ptrdiff_t kb = end - r < 8 ? end - r : 8;
            for (ptrdiff_t j = 0; j < kb; j++) {
                const uint16_t *k = keys + base + (r + j) * stride;
                for (ptrdiff_t i = 0; i < headDim; i += 8) store8(load8h(k + i), rows + j * headDim + i);
            }
            for (ptrdiff_t h = 0; h < group; h++) {
                const float *q = queries + h * headDim;
                float *dst = scores + h * scoresStride + (t - first) + (r - r0);
                if (kb == 8) {
                    store8(dot8(q, rows, headDim) * splat8(scale), dst);
                } else {
                    for (ptrdiff_t j = 0; j < kb; j++) {
                        v8f acc = {0};
                        for (ptrdiff_t i = 0; i < headDim; i += 8) acc = fma8(load8(q + i), load8(rows + j * headDim + i), acc);
                        dst[j] = sum8(acc) * scale;
                    }
                }
            }
            r += kb;
        }
        t += end - r0;
    }
    for (ptrdiff_t h = 0; h < group; h++) {
        float *p = scores + h * scoresStride;
        softmax(p, (int)(count - first));
        weighted_values(p, values, pages, pageTokens, pageStride, stride, first, count, ring, headDim, out + h * headDim);
    }
}

/// Vector.exp8: Cephes' expf in eight lanes (Vector.swift has the why and the error bound).
static inline v8f exp8(v8f v) {
    v8f lo = splat8(-87.3f), hi = splat8(88.0f);
    v8f x = __builtin_elementwise_min(__builtin_elementwise_max(v, lo), hi);   // v.clamped(lowerBound: lo, upperBound: hi)
    v8f shifter = splat8(12582912.0f);   // 1.5 * 2^23
    v8f t = x * 1.44269504088896341f + shifter;
    v8f n = t - shifter;
    v8f r = fma8(n, splat8(-0.693359375f), x);
    r = fma8(n, splat8(2.12194440e-4f), r);
    v8f p = splat8(1.9875691500e-4f);
    p = (p * r) + 1.3981999507e-3f;
    p = (p * r) + 8.3334519073e-3f;
    p = (p * r) + 4.1665795894e-2f;
    p = (p * r) + 1.6666665459e-1f;
    p = (p * r) + 5.0000001201e-1f;
    v8f e = (p * (r * r)) + r + 1.0f;
    v8u bits = (((v8u)t - 0x4B400000u) + 127u) << 23;
    return e * (v8f)bits;
}

static inline v8f silu8(v8f g) { return g / (1.0f + exp8(-g)); }
static inline v8f gelu8(v8f g) {
    v8f u = 0.7978845608028654f * (g + 0.044715f * g * g * g);
    return g / (1.0f + exp8(-2.0f * u));
}

/// Vector.gated: a[i] = gate(a[i]) * b[i], eight lanes at a time; the last partial vector goes
/// through the same lanes (zeros in the rest), so an element's value never depends on where it falls.
#define GATED(NAME, GATE) \
    void NAME(float *a, const float *b, ptrdiff_t n) { \
        ptrdiff_t i = 0; \
        for (; i + 8 <= n; i += 8) store8(GATE(load8(a + i)) * load8(b + i), a + i); \
        if (i < n) { \
            v8f g = {0}, h = {0}; \
            for (ptrdiff_t k = 0; k < n - i; k++) { g[k] = a[i + k]; h[k] = b[i + k]; } \
            v8f r = GATE(g) * h; \
            for (ptrdiff_t k = 0; k < n - i; k++) a[i + k] = r[k]; \
        } \
    }
GATED(cflex_swiglu, silu8)
GATED(cflex_geglu, gelu8)
