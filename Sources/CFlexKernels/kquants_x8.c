// K-quant x8 groups (Q4_K, Q5_K, Q6_K): decode with 8 weight rows in the vector lanes.
//
// Why: the four-row kernels (kquants.c) keep a row's elements in the lanes, so each 32-element
// activation block ends in a horizontal sum and a float tail per row: about 20 shuffles and adds
// for 8 multiply-adds per row and super-block. On a 7B-wide Q4_K_M file perf put 91 % of decode
// there, at 13.7 GB/s per core, below the bus (docs/BENCHMARKS.md). Here a 512-bit vector holds
// 8 rows × 4 consecutive elements (lane 2r + h: row r, element pair h), the activations' four
// elements are one 64-bit broadcast, and vpdpwssd leaves each block's sums for 8 rows with one
// pair of permutes instead of a reduction; the float tail then runs for 8 rows (two blocks) in
// one vector. The arithmetic per row is the one at the top of kquants.c (the same exact int32
// block sums, products, fma, tree and order), so the results are the four-row kernels' bits and
// a matrix can mix x8 groups (resident rows) and row-major rows (streamed rows).
//
// Layout: rows 8g..8g+7 keep their bytes, rearranged per super-block into one group super-block
// (8 × 144 / 176 / 210 bytes). Each row field is split into units and the 8 rows' units follow
// one another (unit c of row r at field + 8·unit·c + unit·r):
//   Q4_K: d (2-byte unit), dmin (2), the 12 packed scale bytes (1: byte i of the 8 rows is one
//         8-byte word, so the 6-bit scales of 8 rows unpack with a few vector ops), qs (4);
//   Q5_K: as Q4_K with qh (4) before qs;
//   Q6_K: d (2), the 16 scales (1), ql (4), qh (4).
// A 4-byte unit of qs (or ql, qh) is 4 consecutive elements of one row, so 32 bytes of a field
// widen to one vector of 8 rows × 4 elements (two, for the low and high nibbles).
//
// Only where the CPU has AVX-512 BW, VL and VNNI (cflex_x8k_available); elsewhere a portable
// fallback gives the same bits, slowly (tests only). An AVX2 form (4 rows per 256-bit vector) was
// tried and ran no faster than the four-row kernels (docs/BENCHMARKS.md). The engine keeps Q6_K
// rows row-major (Interleave.rows says why). Prompt batches run the lane kernels on a group, one
// super-block back to rows at a time (cflex_x8k_superblock, kquants.c); small batches take the
// whole group back to rows (cflex_x8k_rows) for the batched row-major kernel.
#include "common.h"

/// A row field of a K-quant super-block: its offset in the row-major super-block, its length,
/// and the unit it is interleaved in.
typedef struct { int offset, length, unit; } x8k_field;

static const x8k_field x8k_fields_q4[] = {{0, 2, 2}, {2, 2, 2}, {4, 12, 1}, {16, 128, 4}};
static const x8k_field x8k_fields_q5[] = {{0, 2, 2}, {2, 2, 2}, {4, 12, 1}, {16, 32, 4}, {48, 128, 4}};
static const x8k_field x8k_fields_q6[] = {{208, 2, 2}, {192, 16, 1}, {0, 128, 4}, {128, 64, 4}};

/// The fields of a ggml type id (12 Q4_K, 13 Q5_K, 14 Q6_K) and its super-block bytes per row.
static int x8k_layout(int type, const x8k_field **fields, int *bytes) {
    switch (type) {
    case 12: *fields = x8k_fields_q4; *bytes = 144; return 4;
    case 13: *fields = x8k_fields_q5; *bytes = 176; return 5;
    case 14: *fields = x8k_fields_q6; *bytes = 210; return 4;
    default: return 0;
    }
}

/// Units of U bytes of one field, 8 rows, to the group or back (U a constant, so each copy is one move).
#define X8K_MOVE_UNITS(U)                                                                               \
    for (int c = 0; c < units; c++)                                                                     \
        for (int r = 0; r < 8; r++) {                                                                   \
            uint8_t *g = group + at + 8 * (U) * c + (U) * r, *w = rows[r] + f[i].offset + (U) * c;        \
            if (toGroup) memcpy(g, w, (U)); else memcpy(w, g, (U));                                      \
        }

#if CFLEX_AVX2
/// 8 × 8 4-byte units, transposed: in[i] (a vector of 8 units) → out[j] (unit i of out[j] = unit j
/// of in[i]). The x8 layout of a 4-byte field is that transpose of 8 rows' 8 consecutive units.
static inline void x8k_transpose8(const uint8_t *const *in, uint8_t *const *out) {
    __m256i v[8], t[8];
    for (int i = 0; i < 8; i++) v[i] = _mm256_loadu_si256((const __m256i *)in[i]);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);       // a0 b0 a1 b1 | a4 b4 a5 b5
        t[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);   // a2 b2 a3 b3 | a6 b6 a7 b7
    }
    for (int i = 0; i < 8; i += 4) {
        v[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);       // a0 b0 c0 d0 | a4 b4 c4 d4
        v[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);   // a1 b1 c1 d1 | a5 ...
        v[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);   // a2 ... | a6 ...
        v[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);   // a3 ... | a7 ...
    }
    for (int j = 0; j < 4; j++) {
        _mm256_storeu_si256((__m256i *)out[j], _mm256_permute2x128_si256(v[j], v[4 + j], 0x20));
        _mm256_storeu_si256((__m256i *)out[4 + j], _mm256_permute2x128_si256(v[j], v[4 + j], 0x31));
    }
}
#endif

/// One super-block column: 8 row-major super-blocks (`rows[r]`) → a group super-block, or back.
/// (Batches take groups back to rows before every matmul, so this is on the prompt path.)
static void x8k_move(const x8k_field *f, int nf, uint8_t *group, uint8_t *const *rows, int toGroup) {
    int at = 0;
    for (int i = 0; i < nf; i++) {
        const int units = f[i].length / f[i].unit;
#if CFLEX_AVX2
        if (f[i].unit == 4 && units % 8 == 0) {
            for (int c0 = 0; c0 < units; c0 += 8) {
                const uint8_t *in[8];
                uint8_t *out[8];
                for (int k = 0; k < 8; k++) {
                    uint8_t *g = group + at + 32 * (c0 + k), *w = rows[k] + f[i].offset + 4 * c0;
                    if (toGroup) { in[k] = w; out[k] = g; } else { in[k] = g; out[k] = w; }
                }
                x8k_transpose8(in, out);
            }
        } else
#endif
        if (f[i].unit == 4) { X8K_MOVE_UNITS(4) } else if (f[i].unit == 2) { X8K_MOVE_UNITS(2) } else { X8K_MOVE_UNITS(1) }
        at += 8 * f[i].length;
    }
}

/// Every super-block column of 8 contiguous row-major rows at `rows` and one group at `group`,
/// one way or the other.
static void x8k_move_all(int type, uint8_t *group, uint8_t *rowsBase, int nb, int toGroup) {
    const x8k_field *f;
    int bytes;
    const int nf = x8k_layout(type, &f, &bytes);
    if (!nf) return;
    const size_t rowBytes = (size_t)(nb / 8) * bytes;
    for (int i = 0; i < nb / 8; i++) {
        uint8_t *rows[8];
        for (int r = 0; r < 8; r++) rows[r] = rowsBase + r * rowBytes + (size_t)i * bytes;
        x8k_move(f, nf, group + (size_t)i * 8 * bytes, rows, toGroup);
    }
}

void cflex_x8k_interleave(int type, const void *src, int nb, void *dst) { x8k_move_all(type, (uint8_t *)dst, (uint8_t *)src, nb, 1); }

void cflex_x8k_rows(int type, const void *group, int nb, void *dst) { x8k_move_all(type, (uint8_t *)group, (uint8_t *)dst, nb, 0); }

void cflex_x8k_superblock(int type, const void *groupBlock, void *dst) {
    const x8k_field *f;
    int bytes;
    const int nf = x8k_layout(type, &f, &bytes);
    if (!nf) return;
    uint8_t *rows[8];
    for (int r = 0; r < 8; r++) rows[r] = (uint8_t *)dst + r * bytes;
    x8k_move(f, nf, (uint8_t *)groupBlock, rows, 0);
}

void cflex_x8k_block(int type, const void *groupBlock, int row, void *dst) {
    const x8k_field *f;
    int bytes;
    const int nf = x8k_layout(type, &f, &bytes);
    if (!nf || row < 0 || row > 7) return;
    int at = 0;
    for (int i = 0; i < nf; i++) {
        const int units = f[i].length / f[i].unit, u = f[i].unit;
        for (int c = 0; c < units; c++)
            memcpy((uint8_t *)dst + f[i].offset + u * c, (const uint8_t *)groupBlock + at + 8 * u * c + u * row, (size_t)u);
        at += 8 * f[i].length;
    }
}

#if CFLEX_AVX2
#define X8K_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define X8K_INLINE static inline __attribute__((always_inline, target(X8K_TARGET)))

/// AVX-512 VNNI, by the rule of every VNNI kernel (cflex_cpu_vnni).
static int use_x8k = 0;
__attribute__((constructor)) static void cflex_pick_x8k(void) { use_x8k = cflex_cpu_vnni(); }

/// 32 bytes → 32 u16 (8 rows × 4 elements). The empty asm as in nibbles16 (common.h).
X8K_INLINE __m512i x8k_widen(const uint8_t *p) {
    __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)p));
    __asm__("" : "+v"(v));
    return v;
}
/// Activation elements q[0..4) in every 64-bit lane: lane 2r + h meets elements 2h, 2h + 1.
X8K_INLINE __m512i x8k_act(const int16_t *q) { return _mm512_set1_epi64((long long)load_u64((const uint8_t *)q)); }

/// Two blocks' sums in lanes 2r + h → rows 0-7 of block a (lanes 0-7), then of block b (8-15).
X8K_INLINE __m512i x8k_rows(__m512i a, __m512i b) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_add_epi32(_mm512_permutex2var_epi32(a, ev, b), _mm512_permutex2var_epi32(a, od, b));
}
X8K_INLINE __m512 x8k_dup(__m256 v) {
    const __m512 w = _mm512_castps256_ps512(v);
    return _mm512_shuffle_f32x4(w, w, 0x44);
}
X8K_INLINE __m256 x8k_hi(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }
/// a in lanes 0-7, b in 8-15.
X8K_INLINE __m512 x8k_pair(const float *a, const float *b) {
    return _mm512_mask_broadcastss_ps(_mm512_set1_ps(*a), 0xFF00, _mm_load_ss(b));
}

/// Q4_K/Q5_K, blocks k and k + 4 of 8 rows: Q = fma(D, s, -O), D = fl(fl(d*sc)*x.d),
/// O = fl(fl(dmin*m)*x.s) (kquants.c), lanes as x8k_rows leaves them.
X8K_INLINE __m512 x8k_tail45(__m512i s, __m128i sc, __m128i mn, __m512 d, __m512 dmin, const cflex_q16_block *x, int k) {
    const __m512 D = _mm512_mul_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sc))), x8k_pair(&x[k].d, &x[k + 4].d));
    const __m512 O = _mm512_mul_ps(_mm512_mul_ps(dmin, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(mn))), x8k_pair(&x[k].s, &x[k + 4].s));
    return _mm512_fmsub_ps(D, _mm512_cvtepi32_ps(s), O);
}

/// t = ((Q0+Q1)+(Q4+Q5)) + ((Q2+Q3)+(Q6+Q7)) for 8 rows, from P_k = [Q_k | Q_k+4].
X8K_INLINE __m256 x8k_tree(__m512 p0, __m512 p1, __m512 p2, __m512 p3) {
    const __m512 u = _mm512_add_ps(p0, p1), v = _mm512_add_ps(p2, p3);   // [Q0+Q1 | Q4+Q5], [Q2+Q3 | Q6+Q7]
    const __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(u, v, 0x44), _mm512_shuffle_f32x4(u, v, 0xEE));
    return _mm256_add_ps(_mm512_castps512_ps256(s), x8k_hi(s));
}

/// Q4_K (q5 = 0) or Q5_K group super-blocks · x.
X8K_INLINE void x8k_q45(const uint8_t *p, const cflex_q16_block *x, int nb, float *y, const int q5) {
    const int bytes = q5 ? 1408 : 1152;
    const __m512i m4 = _mm512_set1_epi16(0x0F), bit4 = _mm512_set1_epi16(16);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb / 8; i++, p += bytes, x += 8) {
        for (int c = 0; c < bytes; c += 64) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + c), _MM_HINT_T0);
        const uint8_t *qs = p + (q5 ? 384 : 128);
        __m512i S[8];
        for (int k = 0; k < 8; k++) S[k] = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            __m512i h4 = _mm512_setzero_si512();
            if (q5) h4 = _mm512_slli_epi16(x8k_widen(p + 128 + 32 * j), 4);   // bit k of qh at bit 4 + k
            for (int g = 0; g < 4; g++) {
                const __m512i v = x8k_widen(qs + 32 * (8 * g + j));        // qs[32g + 4j ..] of 8 rows
                __m512i lo = _mm512_and_si512(v, m4), hi = _mm512_srli_epi16(v, 4);
                if (q5) {
                    lo = _mm512_or_si512(lo, _mm512_and_si512(_mm512_srli_epi16(h4, 2 * g), bit4));
                    hi = _mm512_or_si512(hi, _mm512_and_si512(_mm512_srli_epi16(h4, 2 * g + 1), bit4));
                }
                S[2 * g] = _mm512_dpwssd_epi32(S[2 * g], lo, x8k_act(x[2 * g].qs + 4 * j));
                S[2 * g + 1] = _mm512_dpwssd_epi32(S[2 * g + 1], hi, x8k_act(x[2 * g + 1].qs + 4 * j));
            }
        }
        // The 8 rows' 6-bit scales and mins (k4_scales in kquants.c, on byte i of 8 rows at once).
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)(p + 32)), v1 = _mm256_loadu_si256((const __m256i *)(p + 64));
        const __m256i v2 = _mm256_loadu_si256((const __m256i *)(p + 96));
        const __m256i m6 = _mm256_set1_epi8(0x3F), m4b = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
        const __m256i scLo = _mm256_and_si256(v0, m6), mnLo = _mm256_and_si256(v1, m6);
        const __m256i scHi = _mm256_or_si256(_mm256_and_si256(v2, m4b), _mm256_and_si256(_mm256_srli_epi16(v0, 2), m30));
        const __m256i mnHi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v2, 4), m4b), _mm256_and_si256(_mm256_srli_epi16(v1, 2), m30));
        // Blocks k and k + 4 side by side: 128-bit lane 0 of *l holds pair 0 (of *h pair 1), lane 1 pair 2 (3).
        const __m256i sl = _mm256_unpacklo_epi64(scLo, scHi), sh = _mm256_unpackhi_epi64(scLo, scHi);
        const __m256i ml = _mm256_unpacklo_epi64(mnLo, mnHi), mh = _mm256_unpackhi_epi64(mnLo, mnHi);
        const __m512 d = x8k_dup(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)));
        const __m512 dmin = x8k_dup(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))));
        const __m512 p0 = x8k_tail45(x8k_rows(S[0], S[4]), _mm256_castsi256_si128(sl), _mm256_castsi256_si128(ml), d, dmin, x, 0);
        const __m512 p1 = x8k_tail45(x8k_rows(S[1], S[5]), _mm256_castsi256_si128(sh), _mm256_castsi256_si128(mh), d, dmin, x, 1);
        const __m512 p2 = x8k_tail45(x8k_rows(S[2], S[6]), _mm256_extracti128_si256(sl, 1), _mm256_extracti128_si256(ml, 1), d, dmin, x, 2);
        const __m512 p3 = x8k_tail45(x8k_rows(S[3], S[7]), _mm256_extracti128_si256(sh, 1), _mm256_extracti128_si256(mh, 1), d, dmin, x, 3);
        acc = _mm256_add_ps(acc, x8k_tree(p0, p1, p2, p3));
    }
    _mm256_storeu_ps(y, acc);
}

/// Q6_K group super-blocks · x: per block k the sums of its first 16 elements (A) and last 16 (B),
/// of (q - 32) * x.q; Q_k = fma(Db, sb, fl(Da*sa)).
X8K_INLINE void x8k_q6(const uint8_t *p, const cflex_q16_block *x, int nb, float *y) {
    const __m512i m4 = _mm512_set1_epi16(0x0F), m30 = _mm512_set1_epi16(0x30), k32 = _mm512_set1_epi16(32);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb / 8; i++, p += 1680, x += 8) {
        for (int c = 0; c < 1680; c += 64) _mm_prefetch((const char *)(p + CFLEX_PREFETCH + c), _MM_HINT_T0);
        const uint8_t *ql = p + 144, *qh = p + 1168;
        __m512i A[8], B[8];
        for (int k = 0; k < 8; k++) A[k] = B[k] = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 8; c++) {
                const __m512i l0 = x8k_widen(ql + 32 * (16 * h + c));       // ql[64h + 4c ..]
                const __m512i l1 = x8k_widen(ql + 32 * (16 * h + 8 + c));   // ql[64h + 32 + 4c ..]
                const __m512i hb = x8k_widen(qh + 32 * (8 * h + c));        // qh[32h + 4c ..]
                for (int j = 0; j < 4; j++) {
                    const __m512i lo = j == 0 ? _mm512_and_si512(l0, m4) : j == 1 ? _mm512_and_si512(l1, m4)
                                     : j == 2 ? _mm512_srli_epi16(l0, 4) : _mm512_srli_epi16(l1, 4);
                    const __m512i hi = j == 0 ? _mm512_slli_epi16(hb, 4) : j == 1 ? _mm512_slli_epi16(hb, 2)
                                     : j == 2 ? hb : _mm512_srli_epi16(hb, 2);
                    const __m512i w = _mm512_sub_epi16(_mm512_or_si512(lo, _mm512_and_si512(hi, m30)), k32);
                    const int k = 4 * h + j;
                    const __m512i a = x8k_act(x[k].qs + 4 * c);
                    if (c < 4) A[k] = _mm512_dpwssd_epi32(A[k], w, a);
                    else B[k] = _mm512_dpwssd_epi32(B[k], w, a);
                }
            }
        const __m512 d = x8k_dup(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)));
        __m256 Q[8];
        for (int k = 0; k < 8; k++) {
            const __m512 sf = _mm512_cvtepi32_ps(x8k_rows(A[k], B[k]));   // [sa | sb] of 8 rows
            // Scale bytes 2k and 2k + 1 of the 8 rows: 16 bytes from 16 + 16k.
            const __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16 + 16 * k))));
            const __m512 D = _mm512_mul_ps(_mm512_mul_ps(d, sc), _mm512_set1_ps(x[k].d));
            const __m512 a = _mm512_mul_ps(D, sf);
            Q[k] = _mm256_fmadd_ps(x8k_hi(D), x8k_hi(sf), _mm512_castps512_ps256(a));
        }
        const __m256 t = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(Q[0], Q[1]), _mm256_add_ps(Q[4], Q[5])),
                                       _mm256_add_ps(_mm256_add_ps(Q[2], Q[3]), _mm256_add_ps(Q[6], Q[7])));
        acc = _mm256_add_ps(acc, t);
    }
    _mm256_storeu_ps(y, acc);
}

__attribute__((target(X8K_TARGET))) static void x8k_q4_vnni(const uint8_t *p, const cflex_q16_block *x, int nb, float *y) { x8k_q45(p, x, nb, y, 0); }
__attribute__((target(X8K_TARGET))) static void x8k_q5_vnni(const uint8_t *p, const cflex_q16_block *x, int nb, float *y) { x8k_q45(p, x, nb, y, 1); }
__attribute__((target(X8K_TARGET))) static void x8k_q6_vnni(const uint8_t *p, const cflex_q16_block *x, int nb, float *y) { x8k_q6(p, x, nb, y); }
#endif

int cflex_x8k_available(void) {
#if CFLEX_AVX2
    return use_x8k;
#else
    return 0;
#endif
}

/// Without the x8 kernels (a CPU without AVX-512 VNNI; only tests call this then): each super-block
/// column back to row-major, through the four-row kernel one super-block at a time. y += t per
/// super-block from 0, as the four-row kernels accumulate, so the bits are theirs.
static void x8k_fallback(int type, const uint8_t *p, const cflex_q16_block *x, int nb, float *y) {
    const x8k_field *f;
    int bytes;
    x8k_layout(type, &f, &bytes);
    uint8_t tmp[8 * 210];
    float acc[8] = {0};
    for (int i = 0; i < nb / 8; i++) {
        cflex_x8k_superblock(type, p + (size_t)i * 8 * bytes, tmp);
        for (int h = 0; h < 2; h++) {
            const uint8_t *b = tmp + 4 * h * bytes;
            const void *four[4] = {b, b + bytes, b + 2 * bytes, b + 3 * bytes};
            float t[4];
            switch (type) {
            case 12: cflex_gemv4_q4_K(four, x + 8 * i, 8, t); break;
            case 13: cflex_gemv4_q5_K(four, x + 8 * i, 8, t); break;
            default: cflex_gemv4_q6_K(four, x + 8 * i, 8, t); break;
            }
            for (int r = 0; r < 4; r++) acc[4 * h + r] += t[r];
        }
    }
    memcpy(y, acc, sizeof acc);
}

void cflex_gemv8_q4_K(const void *group, const cflex_q16_block *x, int nb, float *y) {
#if CFLEX_AVX2
    if (use_x8k) { x8k_q4_vnni((const uint8_t *)group, x, nb, y); return; }
#endif
    x8k_fallback(12, (const uint8_t *)group, x, nb, y);
}
void cflex_gemv8_q5_K(const void *group, const cflex_q16_block *x, int nb, float *y) {
#if CFLEX_AVX2
    if (use_x8k) { x8k_q5_vnni((const uint8_t *)group, x, nb, y); return; }
#endif
    x8k_fallback(13, (const uint8_t *)group, x, nb, y);
}
void cflex_gemv8_q6_K(const void *group, const cflex_q16_block *x, int nb, float *y) {
#if CFLEX_AVX2
    if (use_x8k) { x8k_q6_vnni((const uint8_t *)group, x, nb, y); return; }
#endif
    x8k_fallback(14, (const uint8_t *)group, x, nb, y);
}

int cflex_gemv8_kquant_isa(int type, int isa, const void *group, const cflex_q16_block *x, int nb, float *y) {
    if (type < 12 || type > 14) return 0;
    if (isa == CFLEX_ISA_SCALAR) { x8k_fallback(type, (const uint8_t *)group, x, nb, y); return 1; }
#if CFLEX_AVX2
    if (isa == CFLEX_ISA_AVX512 && use_x8k) {
        if (type == 12) x8k_q4_vnni((const uint8_t *)group, x, nb, y);
        else if (type == 13) x8k_q5_vnni((const uint8_t *)group, x, nb, y);
        else x8k_q6_vnni((const uint8_t *)group, x, nb, y);
        return 1;
    }
#endif
    return 0;
}
