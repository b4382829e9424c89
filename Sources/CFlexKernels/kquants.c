// Integer decode kernels for the K-quants (Q4_K, Q5_K, Q6_K) against 16-bit activations.
//
// Why C: as for the other formats (cflex_kernels.h), the hot loop is AVX2's i16 pair
// multiply-add (vpmaddwd) over widened weight bytes, which Swift's SIMD types cannot ask for.
// Before these kernels the K-quants decoded through the float path (dequantize a row, then FMA):
// Q6_K matvec ran at ~1.6 GB/s against Q4_1's ~36 GB/s.
//
// A 256-element super-block meets 8 activation blocks of 32 (cflex_q16_block). Per row and
// super-block, the arithmetic every variant (scalar, AVX2, AVX-512; one row or four) performs,
// so that they all give the same bits:
//   Q4_K, Q5_K: for each activation block k (0-7): s_k = sum of q*x.q over its 32 elements,
//     q the unsigned 4/5-bit quant, exact in int32 (|s_k| <= 32*31*32767 < 2^25);
//     D_k = fl(fl(d*sc_k)*x.d_k) (d*sc_k is exact: an f16 times a 6-bit integer),
//     O_k = fl(fl(dmin*m_k)*x.s_k), Q_k = fma(D_k, (float)s_k, -O_k);
//   Q6_K: the scale changes every 16 elements, so block k has two sums, s_2k over its first 16
//     elements and s_2k+1 over the last 16, of (q - 32)*x.q, exact in int32 and in float
//     (|s| <= 16*32*32767 < 2^24); D_g = fl(fl(d*sc_g)*x.d_k) (exact product: f16 times int8);
//     Q_k = fma(D_2k+1, (float)s_2k+1, fl(D_2k*(float)s_2k)).
//   Then t = ((Q0+Q1)+(Q4+Q5)) + ((Q2+Q3)+(Q6+Q7)), and y += t over the super-blocks in order,
//   from y = 0. (That tree is hsum over the lane order 0 2 4 6 1 3 5 7, the order in which the
//   AVX-512 reduction leaves the blocks' sums; the AVX2 path permutes its Q vector into it.)
// Why the sums are per activation block and not per super-block, as ggml's 8-bit kernels keep
// them: with 16-bit activations a super-block's scaled sum, sum_k sc_k*s_k, can pass 2^31
// (Q5_K: 8*63*31*32*32767), and so can even one Q6_K block's two scaled halves
// (2*128*32*16*32767). Float per block, as Q4_1 does, cannot overflow; the min term folds into
// the activation block's sum x.s (Q4_1's trick), so it costs one multiply per block.
#include "common.h"

/// Sub-block scales and mins of Q4_K/Q5_K: 12 bytes at `s` → 8 6-bit scales in `sc` and 8 mins in
/// `mn`, one per byte (ggml's get_scale_min_k4, four at a time: the kmask form of its dot kernels).
static inline void k4_scales(const uint8_t *s, uint64_t *sc, uint64_t *mn) {
    const uint32_t low6 = 0x3F3F3F3F, low4 = 0x0F0F0F0F, low2 = 0x03030303;
    uint32_t u0 = load_u32(s), u1 = load_u32(s + 4), u2 = load_u32(s + 8);
    uint32_t sc_lo = u0 & low6, mn_lo = u1 & low6;
    uint32_t sc_hi = (u2 & low4) | (((u0 >> 6) & low2) << 4);
    uint32_t mn_hi = ((u2 >> 4) & low4) | (((u1 >> 6) & low2) << 4);
    *sc = sc_lo | (uint64_t)sc_hi << 32;
    *mn = mn_lo | (uint64_t)mn_hi << 32;
}

// ---------------------------------------------------------------------------------------------
// Portable scalar path. Always compiled: it is the fallback of builds without AVX2, and the tests
// run it on every machine (cflex_gemv4_kquant_isa) against the SIMD paths, bit for bit.

/// ((a0+a1)+(a4+a5)) + ((a2+a3)+(a6+a7)): hsum of the lanes in the order 0 2 4 6 1 3 5 7.
static inline float tree8(const float *a) {
    float t0 = a[0] + a[1], t1 = a[2] + a[3], t2 = a[4] + a[5], t3 = a[6] + a[7];
    float u0 = t0 + t2, u1 = t1 + t3;
    return u0 + u1;
}

/// One Q4_K (high = 0) or Q5_K (high = 1) super-block of one row · 8 activation blocks: t above.
static float kq45_scalar(const uint8_t *p, const cflex_q16_block *x, int high) {
    uint64_t sc, mn;
    k4_scales(p + 4, &sc, &mn);
    float d = f16_to_f32(load_u16(p)), dmin = f16_to_f32(load_u16(p + 2)), q[8];
    const uint8_t *qh = p + 16, *qs = p + (high ? 48 : 16);
    for (int k = 0; k < 8; k++) {
        const uint8_t *b = qs + 32 * (k / 2);
        int shift = 4 * (k & 1);
        int32_t s = 0;
        for (int l = 0; l < 32; l++) {
            int v = (b[l] >> shift) & 0xF;
            if (high) v |= ((qh[l] >> k) & 1) << 4;
            s += v * x[k].qs[l];
        }
        // Separate statements: C contracts a*b+c into an FMA only within one expression.
        float dk = d * (float)(uint8_t)(sc >> (8 * k));
        dk = dk * x[k].d;
        float ok = dmin * (float)(uint8_t)(mn >> (8 * k));
        ok = ok * x[k].s;
        q[k] = fmaf(dk, (float)s, -ok);
    }
    return tree8(q);
}

static float q6k_scalar(const uint8_t *p, const cflex_q16_block *x) {
    float d = f16_to_f32(load_u16(p + 208)), q[8];
    const int8_t *sc = (const int8_t *)(p + 192);
    for (int k = 0; k < 8; k++) {
        int h = k / 4, j = k % 4;
        const uint8_t *ql = p + 64 * h + 32 * (j & 1), *qh = p + 128 + 32 * h;
        int shift = 4 * (j >> 1);
        int32_t s[2] = {0, 0};
        for (int l = 0; l < 32; l++) {
            int v = (((ql[l] >> shift) & 0xF) | (((qh[l] >> (2 * j)) & 3) << 4)) - 32;
            s[l / 16] += v * x[k].qs[l];
        }
        float da = d * (float)sc[2 * k], db = d * (float)sc[2 * k + 1];
        da = da * x[k].d;
        db = db * x[k].d;
        float a = da * (float)s[0];
        q[k] = fmaf(db, (float)s[1], a);
    }
    return tree8(q);
}

typedef float (*kq_row_scalar)(const uint8_t *, const cflex_q16_block *);
static float q4k_row_scalar(const uint8_t *p, const cflex_q16_block *x) { return kq45_scalar(p, x, 0); }
static float q5k_row_scalar(const uint8_t *p, const cflex_q16_block *x) { return kq45_scalar(p, x, 1); }

static void gemv4_scalar(kq_row_scalar f, size_t bytes, const void *const *rows, const cflex_q16_block *x, int nb, float *y) {
    for (int r = 0; r < 4; r++) {
        const uint8_t *p = (const uint8_t *)rows[r];
        float acc = 0;
        for (int i = 0; i < nb / 8; i++) acc += f(p + bytes * i, x + 8 * i);
        y[r] = acc;
    }
}

#if CFLEX_AVX2
// ---------------------------------------------------------------------------------------------
// AVX2. A row's super-block gives an 8-lane vector Q (lane k = Q_k above); four rows' vectors
// reduce together (tree8x4). The super-block's activation scales and sums are gathered once into
// two vectors and serve all four rows.

/// The 8 activation blocks' d and s as vectors (lane k = block k): one 8-byte load per block.
static inline void xds8(const cflex_q16_block *x, __m256 *xd, __m256 *xs) {
    __m128 a = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)&x[0].d), (const __m64 *)&x[1].d);
    __m128 b = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)&x[2].d), (const __m64 *)&x[3].d);
    __m128 c = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)&x[4].d), (const __m64 *)&x[5].d);
    __m128 e = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)&x[6].d), (const __m64 *)&x[7].d);
    __m256 lo = _mm256_set_m128(c, a), hi = _mm256_set_m128(e, b);   // d0 s0 d1 s1 d4 s4 d5 s5, d2 s2 d3 s3 d6 ...
    *xd = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    *xs = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
}

/// Eight vectors of 8 int32 partial sums → one vector whose lane k is the total of P[k].
static inline __m256i sums8(const __m256i *P) {
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(P[0], P[1]), _mm256_hadd_epi32(P[2], P[3]));
    __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(P[4], P[5]), _mm256_hadd_epi32(P[6], P[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

/// Q (lane k = block k) in the lane order of the reduction tree (tree8): 0 2 4 6 1 3 5 7.
static inline __m256 tree_order(__m256 q) { return _mm256_permutevar8x32_ps(q, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)); }

/// tree8 of four rows' Q vectors (in tree order) at once: lane r = row r. hsum's additions, transposed.
static inline __m128 tree8x4(__m256 q0, __m256 q1, __m256 q2, __m256 q3) {
    __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(q0), _mm256_extractf128_ps(q0, 1));
    __m128 t1 = _mm_add_ps(_mm256_castps256_ps128(q1), _mm256_extractf128_ps(q1, 1));
    __m128 t2 = _mm_add_ps(_mm256_castps256_ps128(q2), _mm256_extractf128_ps(q2, 1));
    __m128 t3 = _mm_add_ps(_mm256_castps256_ps128(q3), _mm256_extractf128_ps(q3, 1));
    // u0 = t[0]+t[2], u1 = t[1]+t[3] per row: rows 0, 1 in a; rows 2, 3 in b.
    __m128 a = _mm_add_ps(_mm_unpacklo_ps(t0, t1), _mm_unpackhi_ps(t0, t1));   // u0 r0, u0 r1, u1 r0, u1 r1
    __m128 b = _mm_add_ps(_mm_unpacklo_ps(t2, t3), _mm_unpackhi_ps(t2, t3));
    return _mm_add_ps(_mm_movelh_ps(a, b), _mm_movehl_ps(b, a));
}

/// The Q4_K/Q5_K float tail: Q = fma(D, s, -O) with D = fl(fl(d*sc)*xd), O = fl(fl(dmin*m)*xs).
static inline __m256 kq45_tail(const uint8_t *p, __m256i s, __m256 xd, __m256 xs) {
    uint64_t sc, mn;
    k4_scales(p + 4, &sc, &mn);
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)load_u32(p)));   // d, dmin
    __m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc)));
    __m256 mnf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn)));
    __m256 D = _mm256_mul_ps(_mm256_mul_ps(_mm256_broadcastss_ps(dm), scf), xd);
    __m256 O = _mm256_mul_ps(_mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dm)), mnf), xs);
    return _mm256_fmsub_ps(D, _mm256_cvtepi32_ps(s), O);
}

/// One row's Q4_K super-block: block 2g is the low nibbles of qs[32g..32g+31], block 2g+1 the high.
static inline __m256 q4k_row_avx2(const uint8_t *p, const cflex_q16_block *x, __m256 xd, __m256 xs) {
    __m256i P[8];
    for (int g = 0; g < 4; g++) {
        __m256i l0, h0, l1, h1;
        nibbles16(p + 16 + 32 * g, &l0, &h0);        // elements 0-15 of blocks 2g, 2g+1
        nibbles16(p + 16 + 32 * g + 16, &l1, &h1);   // elements 16-31
        const int16_t *a = x[2 * g].qs, *b = x[2 * g + 1].qs;
        P[2 * g] = _mm256_add_epi32(_mm256_madd_epi16(l0, _mm256_loadu_si256((const __m256i *)a)),
                                    _mm256_madd_epi16(l1, _mm256_loadu_si256((const __m256i *)(a + 16))));
        P[2 * g + 1] = _mm256_add_epi32(_mm256_madd_epi16(h0, _mm256_loadu_si256((const __m256i *)b)),
                                        _mm256_madd_epi16(h1, _mm256_loadu_si256((const __m256i *)(b + 16))));
    }
    return tree_order(kq45_tail(p, sums8(P), xd, xs));
}

/// Q5_K: as Q4_K, plus bit k of qh[l] as 16 for element l of block k.
static inline __m256 q5k_row_avx2(const uint8_t *p, const cflex_q16_block *x, __m256 xd, __m256 xs) {
    // qh widened once, shifted so that bit k sits at bit 4 after a right shift by k.
    __m256i h0 = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 16))), 4);
    __m256i h1 = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 32))), 4);
    const __m256i bit4 = _mm256_set1_epi16(16);
    __m256i P[8];
    for (int g = 0; g < 4; g++) {
        __m256i l0, u0, l1, u1;
        nibbles16(p + 48 + 32 * g, &l0, &u0);
        nibbles16(p + 48 + 32 * g + 16, &l1, &u1);
        int k = 2 * g;
        l0 = _mm256_or_si256(l0, _mm256_and_si256(_mm256_srli_epi16(h0, k), bit4));
        l1 = _mm256_or_si256(l1, _mm256_and_si256(_mm256_srli_epi16(h1, k), bit4));
        u0 = _mm256_or_si256(u0, _mm256_and_si256(_mm256_srli_epi16(h0, k + 1), bit4));
        u1 = _mm256_or_si256(u1, _mm256_and_si256(_mm256_srli_epi16(h1, k + 1), bit4));
        const int16_t *a = x[k].qs, *b = x[k + 1].qs;
        P[k] = _mm256_add_epi32(_mm256_madd_epi16(l0, _mm256_loadu_si256((const __m256i *)a)),
                                _mm256_madd_epi16(l1, _mm256_loadu_si256((const __m256i *)(a + 16))));
        P[k + 1] = _mm256_add_epi32(_mm256_madd_epi16(u0, _mm256_loadu_si256((const __m256i *)b)),
                                    _mm256_madd_epi16(u1, _mm256_loadu_si256((const __m256i *)(b + 16))));
    }
    return tree_order(kq45_tail(p, sums8(P), xd, xs));
}

/// Q6_K's 32 quants of block j (0-3) of half h, from that half's ql (two 32-byte vectors) and qh,
/// as signed bytes q - 32: block j takes the low (j < 2) or high nibbles of ql[32(j&1)..] and
/// bits 2j, 2j+1 of qh.
static inline __m256i q6k_bytes(__m256i ql0, __m256i ql1, __m256i qh, int j) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    __m256i lo, hi;
    switch (j) {
    case 0: lo = _mm256_and_si256(ql0, m4); hi = _mm256_slli_epi16(qh, 4); break;
    case 1: lo = _mm256_and_si256(ql1, m4); hi = _mm256_slli_epi16(qh, 2); break;
    case 2: lo = _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4); hi = qh; break;
    default: lo = _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4); hi = _mm256_srli_epi16(qh, 2); break;
    }
    return _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_and_si256(hi, m30)), _mm256_set1_epi8(32));
}

/// The Q6_K float tail: block k's scales are sc[2k] (first 16 elements, sums sa) and sc[2k+1] (sb).
/// `order` picks the scales of sa's lanes (bytes 0-7) and sb's (8-15): the blocks' lane order.
static const uint8_t q6k_natural[16] = {0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15};
static const uint8_t q6k_tree[16] = {0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15};
static inline __m256 q6k_tail(const uint8_t *p, __m256i sa, __m256i sb, __m256 xd, const uint8_t *order) {
    __m128i sc = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 192)), _mm_loadu_si128((const __m128i *)order));
    __m256 d = _mm256_set1_ps(f16_to_f32(load_u16(p + 208)));
    __m256 da = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))), xd);
    __m256 db = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))), xd);
    return _mm256_fmadd_ps(db, _mm256_cvtepi32_ps(sb), _mm256_mul_ps(da, _mm256_cvtepi32_ps(sa)));
}

static inline __m256 q6k_row_avx2(const uint8_t *p, const cflex_q16_block *x, __m256 xd, __m256 xs) {
    (void)xs;
    __m256i PA[8], PB[8];
    for (int h = 0; h < 2; h++) {
        __m256i ql0 = _mm256_loadu_si256((const __m256i *)(p + 64 * h));
        __m256i ql1 = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
        for (int j = 0; j < 4; j++) {
            int k = 4 * h + j;
            __m256i q = q6k_bytes(ql0, ql1, qh, j);
            __m256i lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q)), hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1));
            PA[k] = _mm256_madd_epi16(lo, _mm256_loadu_si256((const __m256i *)x[k].qs));
            PB[k] = _mm256_madd_epi16(hi, _mm256_loadu_si256((const __m256i *)(x[k].qs + 16)));
        }
    }
    return tree_order(q6k_tail(p, sums8(PA), sums8(PB), xd, q6k_natural));
}

// ---------------------------------------------------------------------------------------------
// AVX-512 (BW + VL): one 512-bit widening takes 32 quants, so a block needs one vpmaddwd instead
// of two and one widening instead of two. The blocks' 16-lane sums reduce in 512-bit vectors
// (sums8_512), which leaves them in the lane order 0 2 4 6 1 3 5 7; the activation scales and
// sums are gathered in that order too (xds8_tree). Integer sums are exact, so the results are
// the AVX2 path's bits.
#define AVX512_TARGET "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define AVX512_INLINE static inline __attribute__((always_inline, target(AVX512_TARGET)))

/// xds8 in the lane order 0 2 4 6 1 3 5 7.
static inline void xds8_tree(const cflex_q16_block *x, __m256 *xd, __m256 *xs) {
    __m128 a = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)&x[0].d), (const __m64 *)&x[2].d);
    __m128 b = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)&x[4].d), (const __m64 *)&x[6].d);
    __m128 c = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)&x[1].d), (const __m64 *)&x[3].d);
    __m128 e = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)&x[5].d), (const __m64 *)&x[7].d);
    __m256 lo = _mm256_set_m128(c, a), hi = _mm256_set_m128(e, b);
    *xd = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    *xs = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
}

/// Eight blocks' 16-lane int32 partial sums → their totals in the lane order 0 2 4 6 1 3 5 7, by
/// halving steps of one shuffle pair and one add each (vphaddd has no 512-bit form).
AVX512_INLINE __m256i sums8_512(const __m512i *P) {
    // Pairs of blocks: [P0 lanes 0-7 + 8-15 | P1 likewise], ...; as 128-bit lanes [P0a P0b P1a P1b].
    __m512i z01 = _mm512_add_epi32(_mm512_shuffle_i64x2(P[0], P[1], 0x44), _mm512_shuffle_i64x2(P[0], P[1], 0xEE));
    __m512i z23 = _mm512_add_epi32(_mm512_shuffle_i64x2(P[2], P[3], 0x44), _mm512_shuffle_i64x2(P[2], P[3], 0xEE));
    __m512i z45 = _mm512_add_epi32(_mm512_shuffle_i64x2(P[4], P[5], 0x44), _mm512_shuffle_i64x2(P[4], P[5], 0xEE));
    __m512i z67 = _mm512_add_epi32(_mm512_shuffle_i64x2(P[6], P[7], 0x44), _mm512_shuffle_i64x2(P[6], P[7], 0xEE));
    // Within 128-bit lanes: pairs of elements, then pairs of pairs; lane 0 ends as [P0a P2a P4a P6a],
    // lane 1 [P0b P2b P4b P6b], lane 2 [P1a P3a P5a P7a], lane 3 [P1b ...].
    __m512i v0 = _mm512_add_epi32(_mm512_unpacklo_epi32(z01, z23), _mm512_unpackhi_epi32(z01, z23));
    __m512i v1 = _mm512_add_epi32(_mm512_unpacklo_epi32(z45, z67), _mm512_unpackhi_epi32(z45, z67));
    __m512i w = _mm512_add_epi32(_mm512_unpacklo_epi64(v0, v1), _mm512_unpackhi_epi64(v0, v1));
    // Lanes 0 + 1 and 2 + 3.
    __m512i t = _mm512_add_epi32(_mm512_shuffle_i64x2(w, w, 0x88), _mm512_shuffle_i64x2(w, w, 0xDD));
    return _mm512_castsi512_si256(t);
}

/// The Q4_K/Q5_K float tail in 512-bit vectors: scales and mins as one vector of 16, times
/// (d x8, dmin x8), times (xd, xs); the same products as kq45_tail, in tree order.
AVX512_INLINE __m256 kq45_tail512(const uint8_t *p, __m256i s, __m256 xd, __m256 xs) {
    const __m128i order = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
    uint64_t sc, mn;
    k4_scales(p + 4, &sc, &mn);
    __m128i b = _mm_shuffle_epi8(_mm_insert_epi64(_mm_cvtsi64_si128((long long)sc), (long long)mn, 1), order);
    __m512 scmn = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)load_u32(p)));   // d, dmin
    __m512 dd = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1), _mm512_castps128_ps512(dm));
    // (64-bit lane forms of the insert and extract: the 32-bit ones need AVX-512 DQ.)
    __m512 xds = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(xd)), _mm256_castps_pd(xs), 1));
    __m512 DO = _mm512_mul_ps(_mm512_mul_ps(dd, scmn), xds);
    __m256 O = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(DO), 1));
    return _mm256_fmsub_ps(_mm512_castps512_ps256(DO), _mm256_cvtepi32_ps(s), O);
}

AVX512_INLINE __m256 q4k_row_avx512(const uint8_t *p, const cflex_q16_block *x, __m256 xd, __m256 xs) {
    const __m512i m4 = _mm512_set1_epi16(0x0F);
    __m512i P[8];
    for (int g = 0; g < 4; g++) {
        __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + 16 + 32 * g)));
        __asm__("" : "+v"(v));   // as in nibbles16
        P[2 * g] = _mm512_madd_epi16(_mm512_and_si512(v, m4), _mm512_loadu_si512(x[2 * g].qs));
        P[2 * g + 1] = _mm512_madd_epi16(_mm512_srli_epi16(v, 4), _mm512_loadu_si512(x[2 * g + 1].qs));
    }
    return kq45_tail512(p, sums8_512(P), xd, xs);
}

AVX512_INLINE __m256 q5k_row_avx512(const uint8_t *p, const cflex_q16_block *x, __m256 xd, __m256 xs) {
    const __m512i m4 = _mm512_set1_epi16(0x0F), bit4 = _mm512_set1_epi16(16);
    __m512i h = _mm512_slli_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + 16))), 4);
    __m512i P[8];
    for (int g = 0; g < 4; g++) {
        __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + 48 + 32 * g)));
        __asm__("" : "+v"(v));
        int k = 2 * g;
        __m512i lo = _mm512_or_si512(_mm512_and_si512(v, m4), _mm512_and_si512(_mm512_srli_epi16(h, k), bit4));
        __m512i hi = _mm512_or_si512(_mm512_srli_epi16(v, 4), _mm512_and_si512(_mm512_srli_epi16(h, k + 1), bit4));
        P[k] = _mm512_madd_epi16(lo, _mm512_loadu_si512(x[k].qs));
        P[k + 1] = _mm512_madd_epi16(hi, _mm512_loadu_si512(x[k + 1].qs));
    }
    return kq45_tail512(p, sums8_512(P), xd, xs);
}

/// Q6_K's eight blocks' 16-lane sums, lanes 0-7 over each block's first 16 elements and 8-15 over
/// the rest, → the totals of the first halves (sa) and of the second (sb), in the blocks' order in P.
AVX512_INLINE void sums16_512(const __m512i *P, __m256i *sa, __m256i *sb) {
    // Pairs of elements, then pairs of pairs, within 128-bit lanes: w0's lane j holds the sums of
    // lane j of P0..P3, w1's of P4..P7 (lanes 0, 1 are first halves, 2, 3 second halves).
    __m512i v01 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[0], P[1]), _mm512_unpackhi_epi32(P[0], P[1]));
    __m512i v23 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[2], P[3]), _mm512_unpackhi_epi32(P[2], P[3]));
    __m512i v45 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[4], P[5]), _mm512_unpackhi_epi32(P[4], P[5]));
    __m512i v67 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[6], P[7]), _mm512_unpackhi_epi32(P[6], P[7]));
    __m512i w0 = _mm512_add_epi32(_mm512_unpacklo_epi64(v01, v23), _mm512_unpackhi_epi64(v01, v23));
    __m512i w1 = _mm512_add_epi32(_mm512_unpacklo_epi64(v45, v67), _mm512_unpackhi_epi64(v45, v67));
    // [first halves of P0-3, second halves of P0-3, first of P4-7, second of P4-7] → halves together.
    __m512i t = _mm512_add_epi32(_mm512_shuffle_i64x2(w0, w1, 0x88), _mm512_shuffle_i64x2(w0, w1, 0xDD));
    __m512i r = _mm512_shuffle_i64x2(t, t, 0xD8);
    *sa = _mm512_castsi512_si256(r);
    *sb = _mm512_extracti64x4_epi64(r, 1);
}

AVX512_INLINE __m256 q6k_row_avx512(const uint8_t *p, const cflex_q16_block *x, __m256 xd, __m256 xs) {
    (void)xs;
    __m512i P[8];   // in tree order: block k at index k/2 + 4(k%2)
    for (int h = 0; h < 2; h++) {
        __m256i ql0 = _mm256_loadu_si256((const __m256i *)(p + 64 * h));
        __m256i ql1 = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
        for (int j = 0; j < 4; j++) {
            int k = 4 * h + j;
            P[k / 2 + 4 * (k % 2)] = _mm512_madd_epi16(_mm512_cvtepi8_epi16(q6k_bytes(ql0, ql1, qh, j)), _mm512_loadu_si512(x[k].qs));
        }
    }
    __m256i sa, sb;
    sums16_512(P, &sa, &sb);
    return q6k_tail(p, sa, sb, xd, q6k_tree);
}

/// Four row-major rows (ROW: one of the row functions above) and one row, for one instruction
/// set. Prefetching as the Q4_1 four-row kernel: a whole pass of four rows ahead, every cache
/// line of the super-block.
#define KQ_KERNELS(NAME, ATTR, ROW, XDS, BYTES)                                                                  \
ATTR static void gemv4_##NAME(const void *const *rows, const cflex_q16_block *x, int nb, float *y) {      \
    const uint8_t *p0 = (const uint8_t *)rows[0], *p1 = (const uint8_t *)rows[1];                          \
    const uint8_t *p2 = (const uint8_t *)rows[2], *p3 = (const uint8_t *)rows[3];                          \
    const size_t ahead = prefetch_rows4((size_t)(nb / 8) * BYTES);                                         \
    __m128 acc = _mm_setzero_ps();                                                                          \
    for (int i = 0; i < nb / 8; i++, x += 8, p0 += BYTES, p1 += BYTES, p2 += BYTES, p3 += BYTES) {          \
        for (int c = 0; c < BYTES; c += 64) prefetch4(p0 + c, p1 + c, p2 + c, p3 + c, ahead);              \
        __m256 xd, xs;                                                                                      \
        XDS(x, &xd, &xs);                                                                                   \
        acc = _mm_add_ps(acc, tree8x4(ROW(p0, x, xd, xs), ROW(p1, x, xd, xs), ROW(p2, x, xd, xs), ROW(p3, x, xd, xs))); \
    }                                                                                                       \
    _mm_storeu_ps(y, acc);                                                                                  \
}                                                                                                           \
ATTR static float dot_##NAME(const uint8_t *p, const cflex_q16_block *x, int nb) {                          \
    float acc = 0;                                                                                          \
    for (int i = 0; i < nb / 8; i++, x += 8, p += BYTES) {                                                  \
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH), _MM_HINT_T0);                                      \
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 64), _MM_HINT_T0);                                 \
        _mm_prefetch((const char *)(p + CFLEX_PREFETCH + 128), _MM_HINT_T0);                                \
        __m256 xd, xs;                                                                                      \
        XDS(x, &xd, &xs);                                                                                   \
        acc += hsum(ROW(p, x, xd, xs));                                                                     \
    }                                                                                                       \
    return acc;                                                                                             \
}

KQ_KERNELS(q4_K_avx2, , q4k_row_avx2, xds8, 144)
KQ_KERNELS(q5_K_avx2, , q5k_row_avx2, xds8, 176)
KQ_KERNELS(q6_K_avx2, , q6k_row_avx2, xds8, 210)
KQ_KERNELS(q4_K_avx512, __attribute__((target(AVX512_TARGET))), q4k_row_avx512, xds8_tree, 144)
KQ_KERNELS(q5_K_avx512, __attribute__((target(AVX512_TARGET))), q5k_row_avx512, xds8_tree, 176)
KQ_KERNELS(q6_K_avx512, __attribute__((target(AVX512_TARGET))), q6k_row_avx512, xds8_tree, 210)

// ---------------------------------------------------------------------------------------------
// Several activation rows (prefill, batched decode). Per super-block, each of the four rows'
// weights is unpacked once (nibbles widened, high bits set, Q6_K's offset applied) into a stack
// buffer, and its scales times d (and mins times dmin) once into float vectors; then every
// activation row of the chunk takes the four-row kernel's steps against them: the same exact
// int32 block sums, the same float products in the same order (fl(d*sc) is the very product the
// one-row tail forms before multiplying by x.d), the same tree8x4 and the same accumulation over
// super-blocks. So each (row, activation) result is the bits of the four-row kernel's.
// Before, a 128-token prompt ran the float path (dequantize a row, then FMA): on a 7B-width
// Q4_K_M file prefill was 0.27x llama.cpp's (Q6_K 0.16x).

/// Q4_K/Q5_K: the scales' float factors as kq45_tail512 forms them, fl(d*sc) (lanes 0-7) and
/// fl(dmin*m) (8-15), in tree order (AVX-512).
AVX512_INLINE __m512 kq45_factors512(const uint8_t *p) {
    const __m128i order = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
    uint64_t sc, mn;
    k4_scales(p + 4, &sc, &mn);
    __m128i b = _mm_shuffle_epi8(_mm_insert_epi64(_mm_cvtsi64_si128((long long)sc), (long long)mn, 1), order);
    __m512 scmn = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)load_u32(p)));
    __m512 dd = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1), _mm512_castps128_ps512(dm));
    return _mm512_mul_ps(dd, scmn);
}
/// Unpacked weights of one row's super-block: block k's 32 quants as i16 at W[k] (AVX-512).
AVX512_INLINE void q4k_unpack512(const uint8_t *p, __m512i *W, __m512 *F) {
    const __m512i m4 = _mm512_set1_epi16(0x0F);
    for (int g = 0; g < 4; g++) {
        __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + 16 + 32 * g)));
        W[2 * g] = _mm512_and_si512(v, m4);
        W[2 * g + 1] = _mm512_srli_epi16(v, 4);
    }
    *F = kq45_factors512(p);
}
AVX512_INLINE void q5k_unpack512(const uint8_t *p, __m512i *W, __m512 *F) {
    const __m512i m4 = _mm512_set1_epi16(0x0F), bit4 = _mm512_set1_epi16(16);
    __m512i h = _mm512_slli_epi16(_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + 16))), 4);
    for (int g = 0; g < 4; g++) {
        __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(p + 48 + 32 * g)));
        int k = 2 * g;
        W[k] = _mm512_or_si512(_mm512_and_si512(v, m4), _mm512_and_si512(_mm512_srli_epi16(h, k), bit4));
        W[k + 1] = _mm512_or_si512(_mm512_srli_epi16(v, 4), _mm512_and_si512(_mm512_srli_epi16(h, k + 1), bit4));
    }
    *F = kq45_factors512(p);
}
/// Q6_K: q - 32 as i16 at W[k]; F = fl(d*sc) for the first halves (lanes 0-7) and the second
/// (8-15), in tree order, as q6k_tail forms them before multiplying by xd.
AVX512_INLINE void q6k_unpack512(const uint8_t *p, __m512i *W, __m512 *F) {
    for (int h = 0; h < 2; h++) {
        __m256i ql0 = _mm256_loadu_si256((const __m256i *)(p + 64 * h));
        __m256i ql1 = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
        for (int j = 0; j < 4; j++) W[4 * h + j] = _mm512_cvtepi8_epi16(q6k_bytes(ql0, ql1, qh, j));
    }
    __m128i sc = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 192)), _mm_loadu_si128((const __m128i *)q6k_tree));
    *F = _mm512_mul_ps(_mm512_set1_ps(f16_to_f32(load_u16(p + 208))), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)));
}
/// sums16_512 before its last shuffle: 128-bit lanes [sa of blocks 0-3 | sb 0-3 | sa 4-7 | sb 4-7]
/// (blocks in P's order).
AVX512_INLINE __m512i q6k_sums_t512(const __m512i *P) {
    __m512i v01 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[0], P[1]), _mm512_unpackhi_epi32(P[0], P[1]));
    __m512i v23 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[2], P[3]), _mm512_unpackhi_epi32(P[2], P[3]));
    __m512i v45 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[4], P[5]), _mm512_unpackhi_epi32(P[4], P[5]));
    __m512i v67 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[6], P[7]), _mm512_unpackhi_epi32(P[6], P[7]));
    __m512i w0 = _mm512_add_epi32(_mm512_unpacklo_epi64(v01, v23), _mm512_unpackhi_epi64(v01, v23));
    __m512i w1 = _mm512_add_epi32(_mm512_unpacklo_epi64(v45, v67), _mm512_unpackhi_epi64(v45, v67));
    return _mm512_add_epi32(_mm512_shuffle_i64x2(w0, w1, 0x88), _mm512_shuffle_i64x2(w0, w1, 0xDD));
}
AVX512_INLINE __m512i q6k_t_row512(const __m512i *W, const __m512i *A) {
    __m512i P[8];   // in tree order: block k at index k/2 + 4(k%2)
    for (int k = 0; k < 8; k++) P[k / 2 + 4 * (k % 2)] = _mm512_madd_epi16(W[k], A[k]);
    return q6k_sums_t512(P);
}
/// Rows r0 and r0+1: both rows' first-half sums in one vector and second-half sums in another,
/// so q6k_tail's products run for two rows at once (FA, FB: the rows' factors paired likewise).
AVX512_INLINE __m512 q6k_two_rows512(const __m512i *W0, const __m512i *W1, __m512 FA, __m512 FB, const __m512i *A, __m512 xd2) {
    __m512i t0 = q6k_t_row512(W0, A), t1 = q6k_t_row512(W1, A);
    __m512i sa = _mm512_shuffle_i64x2(t0, t1, 0x88), sb = _mm512_shuffle_i64x2(t0, t1, 0xDD);
    __m512 da = _mm512_mul_ps(FA, xd2), db = _mm512_mul_ps(FB, xd2);
    return _mm512_fmadd_ps(db, _mm512_cvtepi32_ps(sb), _mm512_mul_ps(da, _mm512_cvtepi32_ps(sa)));
}

/// Most activation rows a multi-row kernel holds accumulators for; more are done in chunks.
#define KQ_BATCH 8

/// Q4_K/Q5_K, AVX-512, two rows at a time. The blocks are paired (2g, 2g+1) in the lanes: V1[g]
/// holds elements 0-15 of block 2g then of block 2g+1, V2[g] elements 16-31, and the activations
/// likewise, so two vpmaddwd and one add leave block 2g's 8 partial sums in lanes 0-7 and block
/// 2g+1's in lanes 8-15: sums8_512's first step without its shuffles. Its last step then takes
/// two rows at once (their totals in the two halves of one vector), and so does the float tail
/// (F pairs the rows' factors the same way). The integer sums are exact and every float lane is
/// the same product, fma and order as kq45_tail512's, so the bits are the four-row kernel's.
AVX512_INLINE void kq45_pair512(const __m512i *W, __m512i *V) {
    for (int g = 0; g < 4; g++) {
        V[g] = _mm512_shuffle_i64x2(W[2 * g], W[2 * g + 1], 0x44);
        V[4 + g] = _mm512_shuffle_i64x2(W[2 * g], W[2 * g + 1], 0xEE);
    }
}
/// sums8_512 from the paired vectors Z (block 2g in lanes 0-7, 2g+1 in 8-15), before its last step.
AVX512_INLINE __m512i kq45_sums_w512(const __m512i *Z) {
    __m512i v0 = _mm512_add_epi32(_mm512_unpacklo_epi32(Z[0], Z[1]), _mm512_unpackhi_epi32(Z[0], Z[1]));
    __m512i v1 = _mm512_add_epi32(_mm512_unpacklo_epi32(Z[2], Z[3]), _mm512_unpackhi_epi32(Z[2], Z[3]));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(v0, v1), _mm512_unpackhi_epi64(v0, v1));
}
AVX512_INLINE __m512i kq45_z_row512(const __m512i *V, const __m512i *A, int g) {
    return _mm512_add_epi32(_mm512_madd_epi16(V[g], A[g]), _mm512_madd_epi16(V[4 + g], A[4 + g]));
}
/// Rows r0 and r0+1 against one activation super-block: their Q vectors in the two halves.
AVX512_INLINE __m512 kq45_two_rows512(const __m512i *V0, const __m512i *V1, __m512 FD, __m512 FM, const __m512i *A,
                                      __m512 xd2, __m512 xs2) {
    __m512i Z0[4], Z1[4];
    for (int g = 0; g < 4; g++) { Z0[g] = kq45_z_row512(V0, A, g); Z1[g] = kq45_z_row512(V1, A, g); }
    __m512i w0 = kq45_sums_w512(Z0), w1 = kq45_sums_w512(Z1);
    __m512i t = _mm512_add_epi32(_mm512_shuffle_i64x2(w0, w1, 0x88), _mm512_shuffle_i64x2(w0, w1, 0xDD));
    return _mm512_fmsub_ps(_mm512_mul_ps(FD, xd2), _mm512_cvtepi32_ps(t), _mm512_mul_ps(FM, xs2));
}

#define KQN_KERNEL_512_PAIRED(NAME, UNPACK, BYTES)                                                           \
__attribute__((target(AVX512_TARGET))) static void gemv4n_##NAME(const void *const *rows, const cflex_q16_block *x, \
                                                              int xstride, int n, int nb, float *y, int ldy) { \
    const uint8_t *p[4] = {(const uint8_t *)rows[0], (const uint8_t *)rows[1], (const uint8_t *)rows[2], (const uint8_t *)rows[3]}; \
    const size_t ahead = prefetch_rows4((size_t)(nb / 8) * BYTES);                                         \
    for (int j0 = 0; j0 < n; j0 += KQ_BATCH) {                                                              \
        const int m = n - j0 < KQ_BATCH ? n - j0 : KQ_BATCH;                                                \
        __m128 acc[KQ_BATCH];                                                                               \
        for (int j = 0; j < m; j++) acc[j] = _mm_setzero_ps();                                              \
        for (int i = 0; i < nb / 8; i++) {                                                                  \
            const size_t o = (size_t)i * BYTES;                                                             \
            for (int c = 0; c < BYTES; c += 64) prefetch4(p[0] + o + c, p[1] + o + c, p[2] + o + c, p[3] + o + c, ahead); \
            __m512i V[4][8];                                                                                \
            __m512 F[4], FD[2], FM[2];                                                                      \
            for (int r = 0; r < 4; r++) {                                                                   \
                __m512i W[8];                                                                               \
                UNPACK(p[r] + o, W, &F[r]);                                                                 \
                kq45_pair512(W, V[r]);                                                                      \
            }                                                                                               \
            for (int h = 0; h < 2; h++) {                                                                   \
                FD[h] = _mm512_shuffle_f32x4(F[2 * h], F[2 * h + 1], 0x44);                                 \
                FM[h] = _mm512_shuffle_f32x4(F[2 * h], F[2 * h + 1], 0xEE);                                 \
            }                                                                                               \
            for (int j = 0; j < m; j++) {                                                                   \
                const cflex_q16_block *xj = x + (size_t)(j0 + j) * xstride + 8 * i;                         \
                __m256 xd, xs;                                                                              \
                xds8_tree(xj, &xd, &xs);                                                                    \
                __m512 xd2 = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(xd)), _mm256_castps_pd(xd), 1)); \
                __m512 xs2 = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(xs)), _mm256_castps_pd(xs), 1)); \
                __m512i A[8];                                                                               \
                for (int g = 0; g < 4; g++) {                                                               \
                    const int16_t *a = xj[2 * g].qs, *b = xj[2 * g + 1].qs;                                 \
                    A[g] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)), \
                                              _mm256_loadu_si256((const __m256i *)b), 1);                   \
                    A[4 + g] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(a + 16))), \
                                                  _mm256_loadu_si256((const __m256i *)(b + 16)), 1);        \
                }                                                                                           \
                __m512 q01 = kq45_two_rows512(V[0], V[1], FD[0], FM[0], A, xd2, xs2);                       \
                __m512 q23 = kq45_two_rows512(V[2], V[3], FD[1], FM[1], A, xd2, xs2);                       \
                acc[j] = _mm_add_ps(acc[j], tree8x4(_mm512_castps512_ps256(q01),                            \
                                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(q01), 1)), \
                                                    _mm512_castps512_ps256(q23),                            \
                                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(q23), 1)))); \
            }                                                                                               \
        }                                                                                                   \
        for (int j = 0; j < m; j++) _mm_storeu_ps(y + (size_t)(j0 + j) * ldy, acc[j]);                      \
    }                                                                                                       \
}

KQN_KERNEL_512_PAIRED(q4_K_avx512, q4k_unpack512, 144)
KQN_KERNEL_512_PAIRED(q5_K_avx512, q5k_unpack512, 176)
__attribute__((target(AVX512_TARGET))) static void gemv4n_q6_K_avx512(const void *const *rows, const cflex_q16_block *x,
                                                                   int xstride, int n, int nb, float *y, int ldy) {
    const uint8_t *p[4] = {(const uint8_t *)rows[0], (const uint8_t *)rows[1], (const uint8_t *)rows[2], (const uint8_t *)rows[3]};
    const size_t ahead = prefetch_rows4((size_t)(nb / 8) * 210);
    for (int j0 = 0; j0 < n; j0 += KQ_BATCH) {
        const int m = n - j0 < KQ_BATCH ? n - j0 : KQ_BATCH;
        __m128 acc[KQ_BATCH];
        for (int j = 0; j < m; j++) acc[j] = _mm_setzero_ps();
        for (int i = 0; i < nb / 8; i++) {
            const size_t o = (size_t)i * 210;
            for (int c = 0; c < 210; c += 64) prefetch4(p[0] + o + c, p[1] + o + c, p[2] + o + c, p[3] + o + c, ahead);
            __m512i W[4][8];
            __m512 F[4], FA[2], FB[2];
            for (int r = 0; r < 4; r++) q6k_unpack512(p[r] + o, W[r], &F[r]);
            for (int h = 0; h < 2; h++) {
                FA[h] = _mm512_shuffle_f32x4(F[2 * h], F[2 * h + 1], 0x44);
                FB[h] = _mm512_shuffle_f32x4(F[2 * h], F[2 * h + 1], 0xEE);
            }
            for (int j = 0; j < m; j++) {
                const cflex_q16_block *xj = x + (size_t)(j0 + j) * xstride + 8 * i;
                __m256 xd, xs;
                xds8_tree(xj, &xd, &xs);
                __m512 xd2 = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(xd)), _mm256_castps_pd(xd), 1));
                __m512i A[8];
                for (int k = 0; k < 8; k++) A[k] = _mm512_loadu_si512(xj[k].qs);
                __m512 q01 = q6k_two_rows512(W[0], W[1], FA[0], FB[0], A, xd2);
                __m512 q23 = q6k_two_rows512(W[2], W[3], FA[1], FB[1], A, xd2);
                acc[j] = _mm_add_ps(acc[j], tree8x4(_mm512_castps512_ps256(q01), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(q01), 1)),
                                                    _mm512_castps512_ps256(q23), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(q23), 1))));
            }
        }
        for (int j = 0; j < m; j++) _mm_storeu_ps(y + (size_t)(j0 + j) * ldy, acc[j]);
    }
}

/// AVX2: block k's quants as i16 at W[2k] (elements 0-15) and W[2k+1] (16-31); F[0], F[1] the
/// float factors in the blocks' natural order (tree_order comes after the tail, as in the rows).
/// Q4_K/Q5_K: F[0] = fl(d*sc), F[1] = fl(dmin*m), kq45_tail's first products.
static inline void kq45_factors256(const uint8_t *p, __m256 *F) {
    uint64_t sc, mn;
    k4_scales(p + 4, &sc, &mn);
    __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)load_u32(p)));
    __m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc)));
    __m256 mnf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn)));
    F[0] = _mm256_mul_ps(_mm256_broadcastss_ps(dm), scf);
    F[1] = _mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dm)), mnf);
}
static inline void q4k_unpack256(const uint8_t *p, __m256i *W, __m256 *F) {
    for (int g = 0; g < 4; g++) {
        nibbles16(p + 16 + 32 * g, &W[4 * g], &W[4 * g + 2]);
        nibbles16(p + 16 + 32 * g + 16, &W[4 * g + 1], &W[4 * g + 3]);
    }
    kq45_factors256(p, F);
}
static inline void q5k_unpack256(const uint8_t *p, __m256i *W, __m256 *F) {
    __m256i h0 = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 16))), 4);
    __m256i h1 = _mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + 32))), 4);
    const __m256i bit4 = _mm256_set1_epi16(16);
    for (int g = 0; g < 4; g++) {
        __m256i l0, u0, l1, u1;
        nibbles16(p + 48 + 32 * g, &l0, &u0);
        nibbles16(p + 48 + 32 * g + 16, &l1, &u1);
        int k = 2 * g;
        W[2 * k] = _mm256_or_si256(l0, _mm256_and_si256(_mm256_srli_epi16(h0, k), bit4));
        W[2 * k + 1] = _mm256_or_si256(l1, _mm256_and_si256(_mm256_srli_epi16(h1, k), bit4));
        W[2 * k + 2] = _mm256_or_si256(u0, _mm256_and_si256(_mm256_srli_epi16(h0, k + 1), bit4));
        W[2 * k + 3] = _mm256_or_si256(u1, _mm256_and_si256(_mm256_srli_epi16(h1, k + 1), bit4));
    }
    kq45_factors256(p, F);
}
/// Q4_K/Q5_K against one activation super-block (A: its 16 half-blocks of quants).
static inline __m256 kq45_apply_row256(const __m256i *W, const __m256 *F, const __m256i *A, __m256 xd, __m256 xs) {
    __m256i P[8];
    for (int k = 0; k < 8; k++) P[k] = _mm256_add_epi32(_mm256_madd_epi16(W[2 * k], A[2 * k]), _mm256_madd_epi16(W[2 * k + 1], A[2 * k + 1]));
    __m256 D = _mm256_mul_ps(F[0], xd), O = _mm256_mul_ps(F[1], xs);
    return tree_order(_mm256_fmsub_ps(D, _mm256_cvtepi32_ps(sums8(P)), O));
}
/// Q6_K: q - 32; F[0] = fl(d*sc) of the first halves, F[1] of the second, as q6k_tail forms them.
static inline void q6k_unpack256(const uint8_t *p, __m256i *W, __m256 *F) {
    for (int h = 0; h < 2; h++) {
        __m256i ql0 = _mm256_loadu_si256((const __m256i *)(p + 64 * h));
        __m256i ql1 = _mm256_loadu_si256((const __m256i *)(p + 64 * h + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(p + 128 + 32 * h));
        for (int j = 0; j < 4; j++) {
            int k = 4 * h + j;
            __m256i q = q6k_bytes(ql0, ql1, qh, j);
            W[2 * k] = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q));
            W[2 * k + 1] = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1));
        }
    }
    __m128i sc = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 192)), _mm_loadu_si128((const __m128i *)q6k_natural));
    __m256 d = _mm256_set1_ps(f16_to_f32(load_u16(p + 208)));
    F[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)));
    F[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))));
}
static inline __m256 q6k_apply_row256(const __m256i *W, const __m256 *F, const __m256i *A, __m256 xd, __m256 xs) {
    (void)xs;
    __m256i PA[8], PB[8];
    for (int k = 0; k < 8; k++) {
        PA[k] = _mm256_madd_epi16(W[2 * k], A[2 * k]);
        PB[k] = _mm256_madd_epi16(W[2 * k + 1], A[2 * k + 1]);
    }
    __m256 da = _mm256_mul_ps(F[0], xd), db = _mm256_mul_ps(F[1], xd);
    return tree_order(_mm256_fmadd_ps(db, _mm256_cvtepi32_ps(sums8(PB)), _mm256_mul_ps(da, _mm256_cvtepi32_ps(sums8(PA)))));
}

#define KQN_KERNEL_256(NAME, UNPACK, APPLY, BYTES)                                                           \
static void gemv4n_##NAME(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) { \
    const uint8_t *p[4] = {(const uint8_t *)rows[0], (const uint8_t *)rows[1], (const uint8_t *)rows[2], (const uint8_t *)rows[3]}; \
    const size_t ahead = prefetch_rows4((size_t)(nb / 8) * BYTES);                                         \
    for (int j0 = 0; j0 < n; j0 += KQ_BATCH) {                                                              \
        const int m = n - j0 < KQ_BATCH ? n - j0 : KQ_BATCH;                                                \
        __m128 acc[KQ_BATCH];                                                                               \
        for (int j = 0; j < m; j++) acc[j] = _mm_setzero_ps();                                              \
        for (int i = 0; i < nb / 8; i++) {                                                                  \
            const size_t o = (size_t)i * BYTES;                                                             \
            for (int c = 0; c < BYTES; c += 64) prefetch4(p[0] + o + c, p[1] + o + c, p[2] + o + c, p[3] + o + c, ahead); \
            __m256i W[4][16];                                                                               \
            __m256 F[4][2];                                                                                 \
            for (int r = 0; r < 4; r++) UNPACK(p[r] + o, W[r], F[r]);                                       \
            for (int j = 0; j < m; j++) {                                                                   \
                const cflex_q16_block *xj = x + (size_t)(j0 + j) * xstride + 8 * i;                         \
                __m256 xd, xs;                                                                              \
                xds8(xj, &xd, &xs);                                                                         \
                __m256i A[16];                                                                              \
                for (int k = 0; k < 8; k++) {                                                               \
                    A[2 * k] = _mm256_loadu_si256((const __m256i *)xj[k].qs);                               \
                    A[2 * k + 1] = _mm256_loadu_si256((const __m256i *)(xj[k].qs + 16));                    \
                }                                                                                           \
                acc[j] = _mm_add_ps(acc[j], tree8x4(APPLY(W[0], F[0], A, xd, xs), APPLY(W[1], F[1], A, xd, xs), \
                                                    APPLY(W[2], F[2], A, xd, xs), APPLY(W[3], F[3], A, xd, xs))); \
            }                                                                                               \
        }                                                                                                   \
        for (int j = 0; j < m; j++) _mm_storeu_ps(y + (size_t)(j0 + j) * ldy, acc[j]);                      \
    }                                                                                                       \
}

KQN_KERNEL_256(q4_K_avx2, q4k_unpack256, kq45_apply_row256, 144)
KQN_KERNEL_256(q5_K_avx2, q5k_unpack256, kq45_apply_row256, 176)
KQN_KERNEL_256(q6_K_avx2, q6k_unpack256, q6k_apply_row256, 210)

static int use_avx512 = 0;
__attribute__((constructor)) static void cflex_pick_kquant_isa(void) { use_avx512 = cflex_cpu_avx512(); }
#endif

// ---------------------------------------------------------------------------------------------
// Entry points: the instruction set chosen at load (AVX-512 where the CPU has it and
// FLEXRUN_KERNELS is not "avx2", else AVX2, else scalar).

typedef void (*gemv4_fn)(const void *const *, const cflex_q16_block *, int, float *);

__attribute__((unused)) static float dot_scalar(kq_row_scalar f, size_t bytes, const uint8_t *p, const cflex_q16_block *x, int nb) {
    float acc = 0;
    for (int i = 0; i < nb / 8; i++) acc += f(p + bytes * i, x + 8 * i);
    return acc;
}

float cflex_dot_q4_K(const void *w, const cflex_q16_block *x, int nb) {
#if CFLEX_AVX2
    return use_avx512 ? dot_q4_K_avx512((const uint8_t *)w, x, nb) : dot_q4_K_avx2((const uint8_t *)w, x, nb);
#else
    return dot_scalar(q4k_row_scalar, 144, (const uint8_t *)w, x, nb);
#endif
}
float cflex_dot_q5_K(const void *w, const cflex_q16_block *x, int nb) {
#if CFLEX_AVX2
    return use_avx512 ? dot_q5_K_avx512((const uint8_t *)w, x, nb) : dot_q5_K_avx2((const uint8_t *)w, x, nb);
#else
    return dot_scalar(q5k_row_scalar, 176, (const uint8_t *)w, x, nb);
#endif
}
float cflex_dot_q6_K(const void *w, const cflex_q16_block *x, int nb) {
#if CFLEX_AVX2
    return use_avx512 ? dot_q6_K_avx512((const uint8_t *)w, x, nb) : dot_q6_K_avx2((const uint8_t *)w, x, nb);
#else
    return dot_scalar(q6k_scalar, 210, (const uint8_t *)w, x, nb);
#endif
}

void cflex_gemv4_q4_K(const void *const *rows, const cflex_q16_block *x, int nb, float *y) {
#if CFLEX_AVX2
    (use_avx512 ? gemv4_q4_K_avx512 : gemv4_q4_K_avx2)(rows, x, nb, y);
#else
    gemv4_scalar(q4k_row_scalar, 144, rows, x, nb, y);
#endif
}
void cflex_gemv4_q5_K(const void *const *rows, const cflex_q16_block *x, int nb, float *y) {
#if CFLEX_AVX2
    (use_avx512 ? gemv4_q5_K_avx512 : gemv4_q5_K_avx2)(rows, x, nb, y);
#else
    gemv4_scalar(q5k_row_scalar, 176, rows, x, nb, y);
#endif
}
void cflex_gemv4_q6_K(const void *const *rows, const cflex_q16_block *x, int nb, float *y) {
#if CFLEX_AVX2
    (use_avx512 ? gemv4_q6_K_avx512 : gemv4_q6_K_avx2)(rows, x, nb, y);
#else
    gemv4_scalar(q6k_scalar, 210, rows, x, nb, y);
#endif
}

/// Without AVX2: the four-row kernel once per activation row (the same bits by construction).
__attribute__((unused)) static void gemv4n_scalar(kq_row_scalar f, size_t bytes, const void *const *rows, const cflex_q16_block *x,
                                                  int xstride, int n, int nb, float *y, int ldy) {
    for (int j = 0; j < n; j++) gemv4_scalar(f, bytes, rows, x + (size_t)j * xstride, nb, y + (size_t)j * ldy);
}

void cflex_gemv4n_q4_K(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    (use_avx512 ? gemv4n_q4_K_avx512 : gemv4n_q4_K_avx2)(rows, x, xstride, n, nb, y, ldy);
#else
    gemv4n_scalar(q4k_row_scalar, 144, rows, x, xstride, n, nb, y, ldy);
#endif
}
void cflex_gemv4n_q5_K(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    (use_avx512 ? gemv4n_q5_K_avx512 : gemv4n_q5_K_avx2)(rows, x, xstride, n, nb, y, ldy);
#else
    gemv4n_scalar(q5k_row_scalar, 176, rows, x, xstride, n, nb, y, ldy);
#endif
}
void cflex_gemv4n_q6_K(const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    (use_avx512 ? gemv4n_q6_K_avx512 : gemv4n_q6_K_avx2)(rows, x, xstride, n, nb, y, ldy);
#else
    gemv4n_scalar(q6k_scalar, 210, rows, x, xstride, n, nb, y, ldy);
#endif
}

int cflex_isa_available(int isa) {
    switch (isa) {
    case CFLEX_ISA_SCALAR: return 1;
#if CFLEX_AVX2
    case CFLEX_ISA_AVX2: return 1;
    case CFLEX_ISA_AVX512: return __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#endif
    default: return 0;
    }
}

int cflex_gemv4_kquant_isa(int type, int isa, const void *const *rows, const cflex_q16_block *x, int nb, float *y) {
    if (!cflex_isa_available(isa)) return 0;
    kq_row_scalar scalar = type == 12 ? q4k_row_scalar : type == 13 ? q5k_row_scalar : type == 14 ? q6k_scalar : 0;
    if (!scalar) return 0;
    size_t bytes = type == 12 ? 144 : type == 13 ? 176 : 210;
    if (isa == CFLEX_ISA_SCALAR) { gemv4_scalar(scalar, bytes, rows, x, nb, y); return 1; }
#if CFLEX_AVX2
    static const gemv4_fn avx2[3] = {gemv4_q4_K_avx2, gemv4_q5_K_avx2, gemv4_q6_K_avx2};
    static const gemv4_fn avx512[3] = {gemv4_q4_K_avx512, gemv4_q5_K_avx512, gemv4_q6_K_avx512};
    (isa == CFLEX_ISA_AVX2 ? avx2 : avx512)[type - 12](rows, x, nb, y);
    return 1;
#else
    return 0;
#endif
}

typedef void (*gemv4n_fn)(const void *const *, const cflex_q16_block *, int, int, int, float *, int);

int cflex_gemv4n_kquant_isa(int type, int isa, const void *const *rows, const cflex_q16_block *x, int xstride, int n, int nb,
                            float *y, int ldy) {
    if (!cflex_isa_available(isa)) return 0;
    kq_row_scalar scalar = type == 12 ? q4k_row_scalar : type == 13 ? q5k_row_scalar : type == 14 ? q6k_scalar : 0;
    if (!scalar) return 0;
    size_t bytes = type == 12 ? 144 : type == 13 ? 176 : 210;
    if (isa == CFLEX_ISA_SCALAR) { gemv4n_scalar(scalar, bytes, rows, x, xstride, n, nb, y, ldy); return 1; }
#if CFLEX_AVX2
    static const gemv4n_fn avx2[3] = {gemv4n_q4_K_avx2, gemv4n_q5_K_avx2, gemv4n_q6_K_avx2};
    static const gemv4n_fn avx512[3] = {gemv4n_q4_K_avx512, gemv4n_q5_K_avx512, gemv4n_q6_K_avx512};
    (isa == CFLEX_ISA_AVX2 ? avx2 : avx512)[type - 12](rows, x, xstride, n, nb, y, ldy);
    return 1;
#else
    return 0;
#endif
}

// ---------------------------------------------------------------------------------------------
// Prompt rows with the activation rows in the lanes (AVX-512 VNNI, and AVX2). The batched kernels above
// keep a row's elements in the lanes, so every 32-element block ends in a horizontal sum and a
// float tail per (row, activation row): about 20 shuffles and adds for 8 multiply-adds. Here the
// lanes hold 16 activation rows instead: the activations are rearranged once per matmul
// (cflex_kq_lanes_pack: per block, 16 vectors whose lane j is activation row j's element pair),
// each weight row's element pair is broadcast, and vpdpwssd leaves block k's int32 sums for 16
// activation rows in one vector, with no reduction at all. The float tail is then lane-wise: the
// same products, fma, tree and accumulation as the top of this file prescribes per (row,
// activation row), so the results are the four-row kernels' bits (tested against them).

#define KQL_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"

void cflex_kq_lanes_pack(const cflex_q16_block *x, int xstride, int n, int nb, void *out) {
    uint8_t *o = (uint8_t *)out;
    const int groups = (n + 15) / 16;
    for (int g = 0; g < groups; g++) {
        for (int b = 0; b < nb; b++) {
            int32_t *pairs = (int32_t *)(o + ((size_t)g * nb + b) * CFLEX_KQ_LANES_BLOCK);
            float *d = (float *)(pairs + 256), *s = d + 16;
            for (int j = 0; j < 16; j++) {
                const int row = 16 * g + j;
                if (row < n) {
                    const cflex_q16_block *blk = x + (size_t)row * xstride + b;
                    for (int p = 0; p < 16; p++) memcpy(pairs + 16 * p + j, blk->qs + 2 * p, 4);
                    d[j] = blk->d;
                    s[j] = blk->s;
                } else {
                    for (int p = 0; p < 16; p++) pairs[16 * p + j] = 0;
                    d[j] = 0;
                    s[j] = 0;
                }
            }
        }
    }
}

#if CFLEX_AVX2
/// Which lane kernels run: the VNNI ones where the CPU has AVX-512 VNNI and FLEXRUN_KERNELS is
/// neither "avx2" nor "avx512" (as for the x8 kernels' VNNI), else the AVX2 ones.
static int use_lanes_vnni = 0;
__attribute__((constructor)) static void cflex_pick_lanes(void) { use_lanes_vnni = cflex_cpu_vnni(); }

/// How many activation groups (of 16 rows) one pass keeps accumulators for: 64 rows, the engine's batch.
#define KQL_GROUPS 4

/// Scatters lanes of four rows' accumulators to y[(16g + j) * ldy + r] for the real rows j.
static void kql_store(const float *acc, int g, int n, float *y, int ldy) {
    const int m = n - 16 * g < 16 ? n - 16 * g : 16;
    for (int j = 0; j < m; j++)
        for (int r = 0; r < 4; r++) y[(size_t)(16 * g + j) * ldy + r] = acc[16 * r + j];
}

/// A row's super-block for the lane kernels: its quants as i16 in natural order (`wq`, 128 pairs),
/// and the float factors of its blocks, formed as the top of this file prescribes: Q4_K/Q5_K
/// f1 = fl(d*sc_k), f2 = fl(dmin*m_k); Q6_K f1 = fl(d*sc_2k), f2 = fl(d*sc_2k+1).
static inline void kql_factors45(const uint8_t *p, float *f1, float *f2) {
    uint64_t sc, mn;
    k4_scales(p + 4, &sc, &mn);
    const float d = f16_to_f32(load_u16(p)), dmin = f16_to_f32(load_u16(p + 2));
    for (int k = 0; k < 8; k++) {
        f1[k] = d * (float)(uint8_t)(sc >> (8 * k));
        f2[k] = dmin * (float)(uint8_t)(mn >> (8 * k));
    }
}
static inline void kql_factors6(const uint8_t *p, float *f1, float *f2) {
    const int8_t *sc = (const int8_t *)(p + 192);
    const float d = f16_to_f32(load_u16(p + 208));
    for (int k = 0; k < 8; k++) {
        f1[k] = d * (float)sc[2 * k];
        f2[k] = d * (float)sc[2 * k + 1];
    }
}
AVX512_INLINE void kql_unpack_q4_512(const uint8_t *p, int32_t *wq, float *f1, float *f2) {
    __m512i W[8]; __m512 F;
    q4k_unpack512(p, W, &F);
    for (int k = 0; k < 8; k++) _mm512_store_si512((__m512i *)(wq + 16 * k), W[k]);
    kql_factors45(p, f1, f2);
}
AVX512_INLINE void kql_unpack_q5_512(const uint8_t *p, int32_t *wq, float *f1, float *f2) {
    __m512i W[8]; __m512 F;
    q5k_unpack512(p, W, &F);
    for (int k = 0; k < 8; k++) _mm512_store_si512((__m512i *)(wq + 16 * k), W[k]);
    kql_factors45(p, f1, f2);
}
AVX512_INLINE void kql_unpack_q6_512(const uint8_t *p, int32_t *wq, float *f1, float *f2) {
    __m512i W[8]; __m512 F;
    q6k_unpack512(p, W, &F);
    for (int k = 0; k < 8; k++) _mm512_store_si512((__m512i *)(wq + 16 * k), W[k]);
    kql_factors6(p, f1, f2);
}
static inline void kql_unpack_q4_256(const uint8_t *p, int32_t *wq, float *f1, float *f2) {
    __m256i W[16]; __m256 F[2];
    q4k_unpack256(p, W, F);
    for (int h = 0; h < 16; h++) _mm256_store_si256((__m256i *)(wq + 8 * h), W[h]);
    kql_factors45(p, f1, f2);
}
static inline void kql_unpack_q5_256(const uint8_t *p, int32_t *wq, float *f1, float *f2) {
    __m256i W[16]; __m256 F[2];
    q5k_unpack256(p, W, F);
    for (int h = 0; h < 16; h++) _mm256_store_si256((__m256i *)(wq + 8 * h), W[h]);
    kql_factors45(p, f1, f2);
}
static inline void kql_unpack_q6_256(const uint8_t *p, int32_t *wq, float *f1, float *f2) {
    __m256i W[16]; __m256 F[2];
    q6k_unpack256(p, W, F);
    for (int h = 0; h < 16; h++) _mm256_store_si256((__m256i *)(wq + 8 * h), W[h]);
    kql_factors6(p, f1, f2);
}

/// Block sums of four rows against the lanes of one block's rearranged activations, pairs
/// [q0, q1): vpdpwssd on the broadcast weight pair (AVX-512 VNNI).
static inline __attribute__((always_inline, target(KQL_TARGET))) void kql_sums512(const int32_t (*wq)[128], int k, const int32_t *xp, int q0, int q1, __m512i *S) {
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (int q = q0; q < q1; q++) {
        const __m512i a = _mm512_load_si512((const __m512i *)(xp + 16 * q));
        s0 = _mm512_dpwssd_epi32(s0, a, _mm512_set1_epi32(wq[0][16 * k + q]));
        s1 = _mm512_dpwssd_epi32(s1, a, _mm512_set1_epi32(wq[1][16 * k + q]));
        s2 = _mm512_dpwssd_epi32(s2, a, _mm512_set1_epi32(wq[2][16 * k + q]));
        s3 = _mm512_dpwssd_epi32(s3, a, _mm512_set1_epi32(wq[3][16 * k + q]));
    }
    S[0] = s0; S[1] = s1; S[2] = s2; S[3] = s3;
}
/// The same with vpmaddwd and vpaddd over 8 lanes (AVX2).
static inline void kql_sums256(const int32_t (*wq)[128], int k, const int32_t *xp, int q0, int q1, __m256i *S) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int q = q0; q < q1; q++) {
        const __m256i a = _mm256_load_si256((const __m256i *)(xp + 16 * q));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(a, _mm256_set1_epi32(wq[0][16 * k + q])));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(a, _mm256_set1_epi32(wq[1][16 * k + q])));
        s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(a, _mm256_set1_epi32(wq[2][16 * k + q])));
        s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(a, _mm256_set1_epi32(wq[3][16 * k + q])));
    }
    S[0] = s0; S[1] = s1; S[2] = s2; S[3] = s3;
}

/// One super-block of four rows against one group of 16 activation rows (`xg`: its first block),
/// added lane-wise to `acc` (row r at acc + 16r). V: the vector type and its ops (512: all 16
/// lanes at once; 256: two halves of 8). Q6 selects Q6_K's two half-block sums and tail.
#define KQL_GROUP(NAME, ATTR, V, VI, WIDTH, SUMS, SET1, LOAD, MUL, FMADD, FMSUB, CVT, ADD, STORE)         \
ATTR static inline __attribute__((always_inline)) void NAME(const int32_t (*wq)[128], const float (*f1)[8],  \
                                                            const float (*f2)[8], const uint8_t *xg, float *acc, int q6) { \
    for (int half = 0; half < 16 / WIDTH; half++) {                                                        \
        V P[4], A[4], B[4];                                                                                  \
        for (int k = 0; k < 8; k++) {                                                                        \
            const int32_t *xp = (const int32_t *)(xg + (size_t)k * CFLEX_KQ_LANES_BLOCK) + WIDTH * half;     \
            const V xd = LOAD((const float *)(xp + 256));                                                    \
            VI S[4], T[4];                                                                                   \
            if (q6) { SUMS(wq, k, xp, 0, 8, S); SUMS(wq, k, xp, 8, 16, T); } else SUMS(wq, k, xp, 0, 16, S);  \
            const V xs = q6 ? xd : LOAD((const float *)(xp + 272));                                          \
            for (int r = 0; r < 4; r++) {                                                                    \
                const V D = MUL(SET1(f1[r][k]), xd), E = MUL(SET1(f2[r][k]), q6 ? xd : xs);                  \
                /* Q4_K/Q5_K: fma(D, s, -O); Q6_K: fma(db, sb, da * sa). */                                  \
                const V Q = q6 ? FMADD(E, CVT(T[r]), MUL(D, CVT(S[r]))) : FMSUB(D, CVT(S[r]), E);             \
                if ((k & 1) == 0) P[r] = Q;                                                                  \
                else if (k == 1) A[r] = ADD(P[r], Q);                                                        \
                else if (k == 3) B[r] = ADD(P[r], Q);                                                        \
                else if (k == 5) A[r] = ADD(A[r], ADD(P[r], Q));                                             \
                else B[r] = ADD(B[r], ADD(P[r], Q));                                                         \
            }                                                                                                \
        }                                                                                                    \
        for (int r = 0; r < 4; r++) {                                                                        \
            float *a = acc + 16 * r + WIDTH * half;                                                          \
            STORE(a, ADD(LOAD(a), ADD(A[r], B[r])));                                                         \
        }                                                                                                    \
    }                                                                                                        \
}
KQL_GROUP(kql_group512, __attribute__((target(KQL_TARGET))), __m512, __m512i, 16, kql_sums512, _mm512_set1_ps, _mm512_load_ps,
          _mm512_mul_ps, _mm512_fmadd_ps, _mm512_fmsub_ps, _mm512_cvtepi32_ps, _mm512_add_ps, _mm512_store_ps)
KQL_GROUP(kql_group256, , __m256, __m256i, 8, kql_sums256, _mm256_set1_ps, _mm256_load_ps,
          _mm256_mul_ps, _mm256_fmadd_ps, _mm256_fmsub_ps, _mm256_cvtepi32_ps, _mm256_add_ps, _mm256_store_ps)

/// The lane kernel's driver: per pass over up to KQL_GROUPS groups of 16 activation rows, each
/// super-block of the four rows unpacked once (UNPACK) and met by every group (GROUP).
#define KQL_KERNEL(NAME, ATTR, UNPACK, GROUP, BYTES, Q6)                                                     \
ATTR static void NAME(const void *const *rows, const uint8_t *xt, int n, int nb, float *y, int ldy) {        \
    const uint8_t *p[4] = {(const uint8_t *)rows[0], (const uint8_t *)rows[1], (const uint8_t *)rows[2], (const uint8_t *)rows[3]}; \
    const size_t ahead = prefetch_rows4((size_t)(nb / 8) * BYTES);                                          \
    const size_t gstride = (size_t)nb * CFLEX_KQ_LANES_BLOCK;                                                \
    const int groups = (n + 15) / 16;                                                                        \
    int32_t wq[4][128] __attribute__((aligned(64)));                                                         \
    float f1[4][8], f2[4][8];                                                                                \
    float acc[KQL_GROUPS][64] __attribute__((aligned(64)));                                                  \
    for (int g0 = 0; g0 < groups; g0 += KQL_GROUPS) {                                                        \
        const int G = groups - g0 < KQL_GROUPS ? groups - g0 : KQL_GROUPS;                                   \
        for (int g = 0; g < G; g++) for (int l = 0; l < 64; l++) acc[g][l] = 0;                              \
        for (int i = 0; i < nb / 8; i++) {                                                                   \
            const size_t o = (size_t)i * BYTES;                                                              \
            if (g0 == 0) for (int c = 0; c < BYTES; c += 64) prefetch4(p[0] + o + c, p[1] + o + c, p[2] + o + c, p[3] + o + c, ahead); \
            for (int r = 0; r < 4; r++) UNPACK(p[r] + o, wq[r], f1[r], f2[r]);                               \
            for (int g = 0; g < G; g++)                                                                      \
                GROUP((const int32_t (*)[128])wq, (const float (*)[8])f1, (const float (*)[8])f2,            \
                      xt + (size_t)(g0 + g) * gstride + (size_t)8 * i * CFLEX_KQ_LANES_BLOCK, acc[g], Q6);   \
        }                                                                                                    \
        for (int g = 0; g < G; g++) kql_store(acc[g], g0 + g, n, y, ldy);                                    \
    }                                                                                                        \
}
/// The lane kernel on one K-quant x8 group (kquants_x8.c): per super-block the group's 8 rows go
/// back to ggml's bytes in a stack buffer (cflex_x8k_superblock, in L1), then the row-major
/// kernel's steps for rows 0-3 and 4-7, so the bits are the same. (Taking a whole group back to
/// rows in scratch first, then the row-major kernel, cost 8-13 % of a 64-row prompt matmul; this
/// way -1 to 7 %, one core, 1024 rows of 4,096 and 11,008 columns.)
#define KQL_KERNEL_X8(NAME, ATTR, UNPACK, GROUP, BYTES, Q6, TYPE)                                             \
ATTR static void NAME(const uint8_t *group, const uint8_t *xt, int n, int nb, float *y, int ldy) {              \
    const size_t gstride = (size_t)nb * CFLEX_KQ_LANES_BLOCK;                                                \
    const int groups = (n + 15) / 16;                                                                        \
    uint8_t sb[8 * BYTES];                                                                                   \
    int32_t wq[8][128] __attribute__((aligned(64)));                                                         \
    float f1[8][8], f2[8][8];                                                                                \
    float acc[KQL_GROUPS][2][64] __attribute__((aligned(64)));                                               \
    for (int g0 = 0; g0 < groups; g0 += KQL_GROUPS) {                                                        \
        const int G = groups - g0 < KQL_GROUPS ? groups - g0 : KQL_GROUPS;                                   \
        for (int g = 0; g < G; g++) for (int l = 0; l < 64; l++) acc[g][0][l] = acc[g][1][l] = 0;            \
        for (int i = 0; i < nb / 8; i++) {                                                                   \
            const uint8_t *p = group + (size_t)i * 8 * BYTES;                                                \
            if (g0 == 0) for (int c = 0; c < 8 * BYTES; c += 64) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + c), _MM_HINT_T0); \
            cflex_x8k_superblock(TYPE, p, sb);                                                               \
            for (int r = 0; r < 8; r++) UNPACK(sb + r * BYTES, wq[r], f1[r], f2[r]);                          \
            for (int g = 0; g < G; g++)                                                                      \
                for (int h = 0; h < 2; h++)                                                                  \
                    GROUP((const int32_t (*)[128])wq[4 * h], (const float (*)[8])f1[4 * h], (const float (*)[8])f2[4 * h], \
                          xt + (size_t)(g0 + g) * gstride + (size_t)8 * i * CFLEX_KQ_LANES_BLOCK, acc[g][h], Q6); \
        }                                                                                                    \
        for (int g = 0; g < G; g++) {                                                                        \
            kql_store(acc[g][0], g0 + g, n, y, ldy);                                                         \
            kql_store(acc[g][1], g0 + g, n, y + 4, ldy);                                                     \
        }                                                                                                    \
    }                                                                                                        \
}
KQL_KERNEL_X8(kql8_q4_vnni, __attribute__((target(KQL_TARGET))), kql_unpack_q4_512, kql_group512, 144, 0, 12)
KQL_KERNEL_X8(kql8_q5_vnni, __attribute__((target(KQL_TARGET))), kql_unpack_q5_512, kql_group512, 176, 0, 13)
KQL_KERNEL_X8(kql8_q6_vnni, __attribute__((target(KQL_TARGET))), kql_unpack_q6_512, kql_group512, 210, 1, 14)
KQL_KERNEL_X8(kql8_q4_avx2, , kql_unpack_q4_256, kql_group256, 144, 0, 12)
KQL_KERNEL_X8(kql8_q5_avx2, , kql_unpack_q5_256, kql_group256, 176, 0, 13)
KQL_KERNEL_X8(kql8_q6_avx2, , kql_unpack_q6_256, kql_group256, 210, 1, 14)

KQL_KERNEL(kql_q4_vnni, __attribute__((target(KQL_TARGET))), kql_unpack_q4_512, kql_group512, 144, 0)
KQL_KERNEL(kql_q5_vnni, __attribute__((target(KQL_TARGET))), kql_unpack_q5_512, kql_group512, 176, 0)
KQL_KERNEL(kql_q6_vnni, __attribute__((target(KQL_TARGET))), kql_unpack_q6_512, kql_group512, 210, 1)
KQL_KERNEL(kql_q4_avx2, , kql_unpack_q4_256, kql_group256, 144, 0)
KQL_KERNEL(kql_q5_avx2, , kql_unpack_q5_256, kql_group256, 176, 0)
KQL_KERNEL(kql_q6_avx2, , kql_unpack_q6_256, kql_group256, 210, 1)
#endif

int cflex_gemm4_kquant_lanes_256(int type, const void *const *rows, const void *xt, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    switch (type) {
    case 12: kql_q4_avx2(rows, (const uint8_t *)xt, n, nb, y, ldy); return 1;
    case 13: kql_q5_avx2(rows, (const uint8_t *)xt, n, nb, y, ldy); return 1;
    case 14: kql_q6_avx2(rows, (const uint8_t *)xt, n, nb, y, ldy); return 1;
    default: return 0;
    }
#else
    (void)type; (void)rows; (void)xt; (void)n; (void)nb; (void)y; (void)ldy;
    return 0;
#endif
}

int cflex_kq_lanes_available(void) { return CFLEX_AVX2; }

int cflex_kq_lanes_cpu(void) {
#if CFLEX_AVX2
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

int cflex_gemm4_kquant_lanes(int type, const void *const *rows, const void *xt, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    if (!cflex_kq_lanes_cpu()) return 0;
    switch (type) {
    case 12: kql_q4_vnni(rows, (const uint8_t *)xt, n, nb, y, ldy); return 1;
    case 13: kql_q5_vnni(rows, (const uint8_t *)xt, n, nb, y, ldy); return 1;
    case 14: kql_q6_vnni(rows, (const uint8_t *)xt, n, nb, y, ldy); return 1;
    default: return 0;
    }
#else
    (void)type; (void)rows; (void)xt; (void)n; (void)nb; (void)y; (void)ldy;
    return 0;
#endif
}
static void lanes_by_isa(int type, const void *const *rows, const void *xt, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    if (use_lanes_vnni) cflex_gemm4_kquant_lanes(type, rows, xt, n, nb, y, ldy);
    else cflex_gemm4_kquant_lanes_256(type, rows, xt, n, nb, y, ldy);
#else
    (void)type; (void)rows; (void)xt; (void)n; (void)nb; (void)y; (void)ldy;
#endif
}
void cflex_gemm8_kquant_lanes(int type, const void *group, const void *xt, int n, int nb, float *y, int ldy) {
#if CFLEX_AVX2
    const uint8_t *g = (const uint8_t *)group, *t = (const uint8_t *)xt;
    switch (type) {
    case 12: if (use_lanes_vnni) kql8_q4_vnni(g, t, n, nb, y, ldy); else kql8_q4_avx2(g, t, n, nb, y, ldy); break;
    case 13: if (use_lanes_vnni) kql8_q5_vnni(g, t, n, nb, y, ldy); else kql8_q5_avx2(g, t, n, nb, y, ldy); break;
    case 14: if (use_lanes_vnni) kql8_q6_vnni(g, t, n, nb, y, ldy); else kql8_q6_avx2(g, t, n, nb, y, ldy); break;
    default: break;
    }
#else
    (void)type; (void)group; (void)xt; (void)n; (void)nb; (void)y; (void)ldy;
#endif
}
void cflex_gemm4_q4_K_lanes(const void *const *rows, const void *xt, int n, int nb, float *y, int ldy) { lanes_by_isa(12, rows, xt, n, nb, y, ldy); }
void cflex_gemm4_q5_K_lanes(const void *const *rows, const void *xt, int n, int nb, float *y, int ldy) { lanes_by_isa(13, rows, xt, n, nb, y, ldy); }
void cflex_gemm4_q6_K_lanes(const void *const *rows, const void *xt, int n, int nb, float *y, int ldy) { lanes_by_isa(14, rows, xt, n, nb, y, ldy); }
