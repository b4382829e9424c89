// One core, weights from L2: the best pass of many over a small matrix, per kernel and instruction
// set. The Kernels benchmark measures two threads against memory; this isolates the compute side
// (is a kernel fast enough to keep up with the bus?) and is robust to a shared machine, since the
// best of thousands of short passes is one that nobody interrupted. Build and run (docs/BENCHMARKS.md):
//   clang -O2 -mavx2 -mfma -mf16c -ISources/CFlexKernels/include -c Tools/kernel-bench.c -o /tmp/kernel-bench.o
//   for f in Sources/CFlexKernels/*.c; do clang -O2 -ISources/CFlexKernels/include -c $f -o /tmp/kb-$(basename $f .c).o; done
//   clang /tmp/kernel-bench.o /tmp/kb-*.o -lm -o /tmp/kernel-bench && /tmp/kernel-bench
// (The kernels take no flags, as in the package: -O2 is SwiftPM's release level for C.)
// FLEXRUN_KERNELS=avx2 runs the kernels that pick their instruction set at load with AVX2.
#include "cflex_kernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>

enum { ROWS = 128, COLS = 4096, NB = COLS / 32, PASSES = 3000 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/// ROWS random rows of `bytes`-byte blocks (`per` elements each) with the f16 scales at `scales` set to 2^-14.
static unsigned char *matrix(int bytes, int per, const int *scales, int nscales) {
    size_t n = (size_t)ROWS * COLS / per * bytes;
    unsigned char *w = malloc(n);
    srand(1);
    for (size_t i = 0; i < n; i++) w[i] = (unsigned char)rand();
    for (size_t b = 0; b < n / bytes; b++)
        for (int k = 0; k < nscales; k++) { unsigned short h = 0x0400; memcpy(w + b * bytes + scales[k], &h, 2); }
    return w;
}

typedef void (*four_fn)(const void *const *, const cflex_q16_block *, int, float *);

static double best_four(four_fn f, int type, int isa, const unsigned char *w, size_t rb, const cflex_q16_block *x, float *y) {
    double best = 1e9;
    for (int pass = 0; pass < PASSES; pass++) {
        double t0 = now();
        for (int r = 0; r < ROWS; r += 4) {
            const void *p[4] = {w + rb * r, w + rb * (r + 1), w + rb * (r + 2), w + rb * (r + 3)};
            if (f) f(p, x, NB, y + r); else cflex_gemv4_kquant_isa(type, isa, p, x, NB, y + r);
        }
        double t = now() - t0;
        if (t < best) best = t;
    }
    return (double)rb * ROWS / best / 1e9;
}

/// The engine's float prefill path (MatMul.computeFloat), for comparison: Q8_0 rows dequantized to
/// floats, then two rows against four activation rows with eight 8-lane FMA accumulators.
static void float_path_q8_0(const unsigned char *w, size_t rb, int rows, const float *x, int n, int cols, float *y, float *buf) {
    for (int r = 0; r + 2 <= rows; r += 2) {
        for (int k = 0; k < 2; k++)
            for (int b = 0; b < cols / 32; b++) {
                const unsigned char *q = w + rb * (r + k) + 34 * b;
                float d = _cvtsh_ss(*(const unsigned short *)q);
                for (int i = 0; i < 32; i++) buf[k * cols + 32 * b + i] = d * (signed char)q[2 + i];
            }
        for (int j = 0; j + 4 <= n; j += 4) {
            __m256 s[8];
            for (int i = 0; i < 8; i++) s[i] = _mm256_setzero_ps();
            for (int i = 0; i < cols; i += 8) {
                __m256 v0 = _mm256_loadu_ps(buf + i), v1 = _mm256_loadu_ps(buf + cols + i);
                for (int a = 0; a < 4; a++) {
                    __m256 xa = _mm256_loadu_ps(x + (size_t)(j + a) * cols + i);
                    s[a] = _mm256_fmadd_ps(v0, xa, s[a]);
                    s[4 + a] = _mm256_fmadd_ps(v1, xa, s[4 + a]);
                }
            }
            for (int a = 0; a < 4; a++) {
                y[(size_t)(j + a) * rows + r] = s[a][0] + s[a][1] + s[a][2] + s[a][3] + s[a][4] + s[a][5] + s[a][6] + s[a][7];
                y[(size_t)(j + a) * rows + r + 1] = s[4 + a][0] + s[4 + a][1] + s[4 + a][2] + s[4 + a][3] + s[4 + a][4] + s[4 + a][5] + s[4 + a][6] + s[4 + a][7];
            }
        }
    }
}

int main(void) {
    float xf[COLS];
    for (int i = 0; i < COLS; i++) xf[i] = (float)((i * 7919) % 2001) / 1000.0f - 1;
    cflex_q16_block x[NB];
    cflex_quantize_q16(xf, x, COLS);
    float y[ROWS], y8[ROWS];
    printf("one core, %d x %d rows from L2, best of %d passes, GB/s of weights (AVX-512 picked at load: %d)\n",
           ROWS, COLS, PASSES, cflex_kernels_avx512());

    const int q41[] = {0, 2};
    unsigned char *w = matrix(20, 32, q41, 2);
    printf("Q4_1 four-row          %5.1f\n", best_four(cflex_gemv4_q4_1, 0, 0, w, (size_t)NB * 20, x, y));
    free(w);

    const struct { const char *name; int type, bytes, nscales, scales[2]; } kq[] = {
        {"Q4_K", 12, 144, 2, {0, 2}}, {"Q5_K", 13, 176, 2, {0, 2}}, {"Q6_K", 14, 210, 1, {208}}};
    const char *isa_name[] = {"scalar", "AVX2", "AVX-512"};
    for (int k = 0; k < 3; k++) {
        w = matrix(kq[k].bytes, 256, kq[k].scales, kq[k].nscales);
        for (int isa = CFLEX_ISA_AVX2; isa <= CFLEX_ISA_AVX512; isa++)
            if (cflex_isa_available(isa))
                printf("%s four-row %-8s %5.1f\n", kq[k].name, isa_name[isa],
                       best_four(NULL, kq[k].type, isa, w, (size_t)NB / 8 * kq[k].bytes, x, y));
        // x8 groups (kquants_x8.c): the default four-row kernel's bits, 8 rows per call.
        size_t rb = (size_t)NB / 8 * kq[k].bytes;
        best_four(k == 0 ? cflex_gemv4_q4_K : k == 1 ? cflex_gemv4_q5_K : cflex_gemv4_q6_K, 0, 0, w, rb, x, y);
        unsigned char *g = malloc(rb * ROWS), *back = malloc(rb * ROWS);
        for (int r = 0; r < ROWS; r += 8) cflex_x8k_interleave(kq[k].type, w + rb * r, NB, g + rb * r);
        for (int r = 0; r < ROWS; r += 8) cflex_x8k_rows(kq[k].type, g + rb * r, NB, back + rb * r);
        void (*group)(const void *, const cflex_q16_block *, int, float *) = k == 0 ? cflex_gemv8_q4_K : k == 1 ? cflex_gemv8_q5_K : cflex_gemv8_q6_K;
        double best = 1e9;
        for (int pass = 0; pass < PASSES; pass++) {
            double t0 = now();
            for (int r = 0; r < ROWS; r += 8) group(g + rb * r, x, NB, y8 + r);
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("%s x8 (x8 kernels here: %d) %5.1f  (same bits as four-row: %s; rows back: %s)\n", kq[k].name, cflex_x8k_available(),
               (double)rb * ROWS / best / 1e9, memcmp(y, y8, sizeof y) ? "NO" : "yes", memcmp(w, back, rb * ROWS) ? "NO" : "yes");
        free(g);
        free(back);
        free(w);
    }

    const struct { const char *name; int bytes, nscales, scales[2]; four_fn four;
                   void (*interleave)(const void *, int, void *); void (*group)(const void *, const cflex_q16_block *, int, float *); } q5[] = {
        {"Q5_0", 22, 1, {0, 0}, cflex_gemv4_q5_0, cflex_interleave8_q5_0, cflex_gemv8_q5_0},
        {"Q5_1", 24, 2, {0, 2}, cflex_gemv4_q5_1, cflex_interleave8_q5_1, cflex_gemv8_q5_1}};
    for (int k = 0; k < 2; k++) {
        size_t rb = (size_t)NB * q5[k].bytes;
        w = matrix(q5[k].bytes, 32, q5[k].scales, q5[k].nscales);
        unsigned char *g = malloc(rb * ROWS);
        for (int r = 0; r < ROWS; r += 8) q5[k].interleave(w + rb * r, NB, g + rb * r);
        printf("%s four-row          %5.1f\n", q5[k].name, best_four(q5[k].four, 0, 0, w, rb, x, y));
        double best = 1e9;
        for (int pass = 0; pass < PASSES; pass++) {
            double t0 = now();
            for (int r = 0; r < ROWS; r += 8) q5[k].group(g + rb * r, x, NB, y8 + r);
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("%s x8                %5.1f  (same bits as four-row: %s)\n", q5[k].name, (double)rb * ROWS / best / 1e9,
               memcmp(y, y8, sizeof y) ? "NO" : "yes");
        free(w);
        free(g);
    }

    // Prefill: four row-major rows against BATCH activation rows, the batched kernel (weights
    // widened once per block for 8 activation rows) against the four-row kernel once per row.
    // GMAC/s (multiply-adds of weights by activations), and whether both give the same bits.
    enum { BATCH = 128, BPASSES = 60, BCOLS = 1536, BNB = BCOLS / 32 };
    cflex_q16_block *xs = malloc(sizeof(cflex_q16_block) * BNB * BATCH);
    for (int j = 0; j < BATCH; j++) {
        for (int i = 0; i < BCOLS; i++) xf[i] = (float)(((i + 31 * j) * 7919) % 2001) / 1000.0f - 1;
        cflex_quantize_q16(xf, xs + (size_t)j * BNB, BCOLS);
    }
    float *yb = malloc(sizeof(float) * ROWS * BATCH), *yn = malloc(sizeof(float) * ROWS * BATCH);
    typedef void (*group_n_fn)(const void *, const cflex_q16_block *, int, int, int, float *, int);
    const struct { const char *name; int bytes, nscales, scales[2]; four_fn four;
                   void (*batched)(const void *const *, const cflex_q16_block *, int, int, int, float *, int);
                   void (*interleave)(const void *, int, void *); group_n_fn groupn; } rb4[] = {
        {"Q4_1", 20, 2, {0, 2}, cflex_gemv4_q4_1, cflex_gemv4n_q4_1, cflex_interleave8_q4_1, cflex_gemv8n_q4_1},
        {"Q5_0", 22, 1, {0, 0}, cflex_gemv4_q5_0, cflex_gemv4n_q5_0, cflex_interleave8_q5_0, cflex_gemv8n_q5_0},
        {"Q5_1", 24, 2, {0, 2}, cflex_gemv4_q5_1, cflex_gemv4n_q5_1, cflex_interleave8_q5_1, cflex_gemv8n_q5_1},
        {"Q8_0", 34, 1, {0, 0}, cflex_gemv4_q8_0, cflex_gemv4n_q8_0, cflex_interleave8_q8_0, cflex_gemv8n_q8_0}};
    printf("%d x %d, batch %d, GMAC/s:  row-major four-row per activation row | row-major batched | x8 groups, %d activation rows per call (same bits)\n",
           ROWS, BCOLS, BATCH, CFLEX_X8_BATCH);
    float *yx = malloc(sizeof(float) * ROWS * BATCH);
    for (int k = 0; k < 4; k++) {
        size_t rbytes = (size_t)BNB * rb4[k].bytes;
        w = matrix(rb4[k].bytes, 32, rb4[k].scales, rb4[k].nscales);
        double best1 = 1e9, bestn = 1e9;
        for (int pass = 0; pass < BPASSES; pass++) {
            double t0 = now();
            for (int r = 0; r < ROWS; r += 4) {
                const void *p[4] = {w + rbytes * r, w + rbytes * (r + 1), w + rbytes * (r + 2), w + rbytes * (r + 3)};
                for (int j = 0; j < BATCH; j++) rb4[k].four(p, xs + (size_t)j * BNB, BNB, yb + (size_t)j * ROWS + r);
            }
            double t1 = now();
            for (int r = 0; r < ROWS; r += 4) {
                const void *p[4] = {w + rbytes * r, w + rbytes * (r + 1), w + rbytes * (r + 2), w + rbytes * (r + 3)};
                rb4[k].batched(p, xs, BNB, BATCH, BNB, yn + r, ROWS);
            }
            double t2 = now();
            if (t1 - t0 < best1) best1 = t1 - t0;
            if (t2 - t1 < bestn) bestn = t2 - t1;
        }
        unsigned char *g = malloc(rbytes * ROWS);
        for (int r = 0; r < ROWS; r += 8) rb4[k].interleave(w + rbytes * r, BNB, g + rbytes * r);
        double bestx = 1e9;
        for (int pass = 0; pass < BPASSES; pass++) {
            double t0 = now();
            for (int r = 0; r < ROWS; r += 8)
                for (int j = 0; j < BATCH; j += CFLEX_X8_BATCH)
                    rb4[k].groupn(g + rbytes * r, xs + (size_t)j * BNB, BNB, CFLEX_X8_BATCH, BNB, yx + (size_t)j * ROWS + r, ROWS);
            double t = now() - t0;
            if (t < bestx) bestx = t;
        }
        double macs = (double)ROWS * BCOLS * BATCH;
        printf("%s                          %5.1f | %5.1f | %5.1f  (%s, %s)\n", rb4[k].name, macs / best1 / 1e9, macs / bestn / 1e9,
               macs / bestx / 1e9, memcmp(yb, yn, sizeof(float) * ROWS * BATCH) ? "NO" : "yes",
               memcmp(yb, yx, sizeof(float) * ROWS * BATCH) ? "NO" : "yes");
        free(w);
        free(g);
    }
    {
        float *xfb = malloc(sizeof(float) * BCOLS * BATCH), *buf = malloc(sizeof(float) * 2 * BCOLS);
        for (int i = 0; i < BCOLS * BATCH; i++) xfb[i] = (float)((i * 7919) % 2001) / 1000.0f - 1;
        w = matrix(34, 32, rb4[3].scales, 1);
        double best = 1e9;
        for (int pass = 0; pass < BPASSES; pass++) {
            double t0 = now();
            float_path_q8_0(w, (size_t)BNB * 34, ROWS, xfb, BATCH, BCOLS, yb, buf);
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("Q8_0 float path (dequantize, 2x4 FMA)  %5.1f\n", (double)ROWS * BCOLS * BATCH / best / 1e9);
        free(w); free(xfb); free(buf);
    }
    free(xs); free(yb); free(yn); free(yx);
    return 0;
}
