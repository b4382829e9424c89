#ifndef CFLEX_COMMON_H
#define CFLEX_COMMON_H
// Helpers the kernel files share (kernels.c: the 32-element formats; kquants.c: the K-quants).
// Private to CFlexKernels: static inline, so each file gets its own copy.
//
// Variants. On x86-64 each kernel file is compiled twice, with no compiler flags (SwiftPM takes no
// unsafeFlags from a package used as a dependency, and flags would put AVX2 in every function):
//   - as itself, the baseline variant: CFLEX_AVX2 is 0, the portable scalar paths, public names
//     suffixed _base; runs on any x86-64;
//   - through its *_avx2.c wrapper, which defines CFLEX_VARIANT_AVX2 and puts
//     target("avx2,fma,f16c") on every function of the file (a clang attribute pragma): CFLEX_AVX2
//     is 1, names suffixed _avx2. The AVX-512 functions carry their own wider target attribute and
//     are chosen inside this variant at load, as before.
// dispatch.c defines the public names; each calls the variant chosen once at load from the CPU's
// features (FLEXRUN_KERNELS=baseline forces the baseline). On other architectures there is one
// variant, the file itself under the public names.
#if defined(__x86_64__)
#define CFLEX_PASTE2(a, b) a##b
#define CFLEX_PASTE(a, b) CFLEX_PASTE2(a, b)
#ifdef CFLEX_VARIANT_AVX2
#define CFLEX_AVX2 1
#define CFLEX_VARIANT_NAME(name) CFLEX_PASTE(name, _avx2)
#else
#define CFLEX_AVX2 0
#define CFLEX_VARIANT_NAME(name) CFLEX_PASTE(name, _base)
#endif
#include "variants.h"
#else
#define CFLEX_AVX2 0
#endif
#include "cflex_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if CFLEX_AVX2
#include <immintrin.h>
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
static inline uint64_t load_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

#if CFLEX_AVX2
/// Whether the AVX-512 (BW + VL) kernels may run: the CPU has them and FLEXRUN_KERNELS is not
/// "avx2" (set to measure, or to run the AVX2 kernels on an AVX-512 machine). Each file asks once, at load.
static inline int cflex_cpu_avx512(void) {
    const char *env = getenv("FLEXRUN_KERNELS");
    return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && !(env && strcmp(env, "avx2") == 0);
}
/// Whether the AVX-512 VNNI kernels (vpdpwssd) may run: the AVX-512 ones may, the CPU has VNNI,
/// and FLEXRUN_KERNELS is not "avx512" (AVX-512 without VNNI, to measure the difference). The one
/// rule for every file's VNNI choice (batched x8, the K-quant lanes and x8 groups).
static inline int cflex_cpu_vnni(void) {
    const char *env = getenv("FLEXRUN_KERNELS");
    return cflex_cpu_avx512() && __builtin_cpu_supports("avx512vnni") && !(env && strcmp(env, "avx512") == 0);
}
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
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
/// Prefetch distance of the four-row kernels: whole passes of four rows ahead (the same block of
/// a later pass), at least CFLEX_PREFETCH bytes. Row-major rows arrive four at a time from
/// consecutive rows, so each of the four streams is fetched ahead. On 256 MiB matrices, 2 threads,
/// one run: prefetching 16 KiB past two of the row pointers reached 53 % (Q4_1) and 50 % (Q8_0) of
/// read bandwidth; this way 63-69 % and 93 %. (Q4_1 row-major stays compute-bound at ~21 GB/s per
/// core: it is the streamed rows' kernel, and the disk is slower still.)
static inline size_t prefetch_rows4(size_t rowBytes) {
    size_t pass = 4 * rowBytes;
    return (CFLEX_PREFETCH + pass - 1) / pass * pass;
}
static inline void prefetch4(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3, size_t ahead) {
    _mm_prefetch((const char *)(p0 + ahead), _MM_HINT_T0);
    _mm_prefetch((const char *)(p1 + ahead), _MM_HINT_T0);
    _mm_prefetch((const char *)(p2 + ahead), _MM_HINT_T0);
    _mm_prefetch((const char *)(p3 + ahead), _MM_HINT_T0);
}
/// Q5's 32 high bits as 16 in each i16 lane whose bit is set, for elements 0-15 and 16-31.
static inline void high16(uint32_t qh, __m256i *lo, __m256i *hi) {
    const __m256i bits = _mm256_set_epi16((short)0x8000, 1 << 14, 1 << 13, 1 << 12, 1 << 11, 1 << 10, 1 << 9, 1 << 8,
                                          1 << 7, 1 << 6, 1 << 5, 1 << 4, 1 << 3, 1 << 2, 1 << 1, 1);
    __m256i l = _mm256_and_si256(_mm256_set1_epi16((short)(qh & 0xFFFF)), bits);
    __m256i h = _mm256_and_si256(_mm256_set1_epi16((short)(qh >> 16)), bits);
    *lo = _mm256_and_si256(_mm256_cmpeq_epi16(l, bits), _mm256_set1_epi16(16));
    *hi = _mm256_and_si256(_mm256_cmpeq_epi16(h, bits), _mm256_set1_epi16(16));
}
/// Per-row int32 block sums of four rows' 8-lane partials, in row order.
static inline __m128i rowsums4(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}
#endif

#endif
