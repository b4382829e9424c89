// K-quant x8 groups (kquants_x8.c) against the four-row kernels, the two measurements behind
// Interleave.rows's choice (docs/BENCHMARKS.md, "K-quant x8 groups"):
//   bus TYPE          2 threads over a 160 MiB matrix far past L3, each pass paired with a plain
//                     read of the same buffer just before it: medians of 15 of kernel/read;
//   prompt TYPE COLS  one core, 1,024 rows against 64 activation rows on the lane kernels:
//                     row-major rows, x8 groups taken back to rows in scratch first, and the lane
//                     kernels' x8 form (and whether the bits agree).
// TYPE is the ggml id (12 Q4_K, 13 Q5_K, 14 Q6_K). Build as Tools/kernel-bench.c (its first lines),
// with this file in place of kernel-bench.c and -lpthread.
#include "cflex_kernels.h"
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
enum { COLS = 4096, NB = COLS / 32 };
static int type, bytes, rows; static size_t rb; static unsigned char *w, *g; static cflex_q16_block x[NB]; static float *y; static int mode;
static void *readall(void *arg) {
    long t = (long)arg; size_t n = rb * rows / 2; const unsigned char *p = w + t * n;
    __m256i acc = _mm256_setzero_si256();
    for (size_t i = 0; i + 32 <= n; i += 32) acc = _mm256_xor_si256(acc, _mm256_loadu_si256((const __m256i *)(p + i)));
    return (void *)(long)_mm256_extract_epi32(acc, 0);
}
static void *work(void *arg) {
    long t = (long)arg; int r0 = t * rows / 2, r1 = (t + 1) * rows / 2;
    for (int r = r0; r < r1; r += 8) {
        if (mode) { if (type == 12) cflex_gemv8_q4_K(g + rb * r, x, NB, y + r); else if (type == 13) cflex_gemv8_q5_K(g + rb * r, x, NB, y + r); else cflex_gemv8_q6_K(g + rb * r, x, NB, y + r); }
        else for (int h = 0; h < 8; h += 4) {
            const void *p[4] = {w + rb * (r + h), w + rb * (r + h + 1), w + rb * (r + h + 2), w + rb * (r + h + 3)};
            if (type == 12) cflex_gemv4_q4_K(p, x, NB, y + r + h); else if (type == 13) cflex_gemv4_q5_K(p, x, NB, y + r + h); else cflex_gemv4_q6_K(p, x, NB, y + r + h);
        }
    }
    return 0;
}
static int cmp(const void *a, const void *b) { double d = *(double *)a - *(double *)b; return d < 0 ? -1 : d > 0; }
static int bus_main(char **argv) {
    type = atoi(argv[2]); bytes = type == 12 ? 144 : type == 13 ? 176 : 210;
    rb = (size_t)NB / 8 * bytes; rows = (int)((160u << 20) / rb) / 16 * 16;
    w = malloc(rb * rows); g = malloc(rb * rows); y = malloc(4 * rows);
    srand(1); for (size_t i = 0; i < rb * rows; i++) w[i] = rand();
    for (size_t b = 0; b < rb * rows / bytes; b++) { unsigned short h = 0x0400; memcpy(w + b * bytes + (type == 14 ? 208 : 0), &h, 2); if (type != 14) memcpy(w + b * bytes + 2, &h, 2); }
    for (int r = 0; r < rows; r += 8) cflex_x8k_interleave(type, w + rb * r, NB, g + rb * r);
    float xf[COLS]; for (int i = 0; i < COLS; i++) xf[i] = (float)((i * 7919) % 2001) / 1000.0f - 1;
    cflex_quantize_q16(xf, x, COLS);
    double res[2][15], rd[15];
    for (int k = 0; k < 15; k++) for (mode = -1; mode < 2; mode++) {
        pthread_t th[2]; double t0 = now();
        for (long i = 0; i < 2; i++) pthread_create(&th[i], 0, mode < 0 ? readall : work, (void *)i);
        for (int i = 0; i < 2; i++) pthread_join(th[i], 0);
        double gbs = rb * rows / (now() - t0) / 1e9;
        if (mode < 0) rd[k] = gbs; else res[mode][k] = gbs / rd[k];
    }
    qsort(res[0], 15, sizeof(double), cmp); qsort(res[1], 15, sizeof(double), cmp); qsort(rd, 15, sizeof(double), cmp);
    printf("type %d, %d MiB, 2 threads, read %.1f GB/s (median): four-row %.0f %%, x8 %.0f %% of the read before it (medians of 15)\n", type, (int)(rb * rows >> 20), rd[7], 100 * res[0][7], 100 * res[1][7]);
    return 0;
}

static int prompt_main(char **argv) {
    int type = atoi(argv[2]), cols = atoi(argv[3]), rows = 1024, n = 64, nb = cols / 32;
    int bytes = type == 12 ? 144 : type == 13 ? 176 : 210; size_t rb = (size_t)nb / 8 * bytes;
    unsigned char *w = malloc(rb * rows), *g = malloc(rb * rows), *s = malloc(rb * 8);
    srand(1); for (size_t i = 0; i < rb * rows; i++) w[i] = rand();
    for (size_t b = 0; b < rb * rows / bytes; b++) { unsigned short h = 0x0400; memcpy(w + b * bytes + (type == 14 ? 208 : 0), &h, 2); if (type != 14) memcpy(w + b * bytes + 2, &h, 2); }
    for (int r = 0; r < rows; r += 8) cflex_x8k_interleave(type, w + rb * r, nb, g + rb * r);
    cflex_q16_block *x = malloc(sizeof(cflex_q16_block) * nb * n);
    float *xf = malloc(4 * cols);
    for (int j = 0; j < n; j++) { for (int i = 0; i < cols; i++) xf[i] = (float)(((i + 31 * j) * 7919) % 2001) / 1000.0f - 1; cflex_quantize_q16(xf, x + (size_t)j * nb, cols); }
    void *xt = aligned_alloc(64, (size_t)((n + 15) / 16) * nb * CFLEX_KQ_LANES_BLOCK);
    cflex_kq_lanes_pack(x, nb, n, nb, xt);
    float *y = malloc(4 * rows * n);
    void (*lanes)(const void *const *, const void *, int, int, float *, int) = type == 12 ? cflex_gemm4_q4_K_lanes : type == 13 ? cflex_gemm4_q5_K_lanes : cflex_gemm4_q6_K_lanes;
    double best[3] = {1e9, 1e9, 1e9};
    float *y2 = malloc(4 * rows * n);
    for (int k = 0; k < 20; k++) for (int m = 0; m < 3; m++) {
        if (m == 2) { double t0 = now(); for (int r = 0; r < rows; r += 8) cflex_gemm8_kquant_lanes(type, g + rb * r, xt, n, nb, y2 + r, rows); double t = now() - t0; if (t < best[2]) best[2] = t; continue; }
        double t0 = now();
        for (int r = 0; r < rows; r += 8) {
            const unsigned char *base = w + rb * r;
            if (m) { cflex_x8k_rows(type, g + rb * r, nb, s); base = s; }
            for (int h = 0; h < 8; h += 4) {
                const void *p[4] = {base + rb * h, base + rb * (h + 1), base + rb * (h + 2), base + rb * (h + 3)};
                lanes(p, xt, n, nb, y + r + h, rows);
            }
        }
        double t = now() - t0; if (t < best[m]) best[m] = t;
    }
    printf("type %d, %d x %d, 64 activation rows: row-major %.2f ms, x8 back to rows %.2f ms (%.3fx), x8 lanes %.2f ms (%.3fx, same bits %s)\n", type, rows, cols, best[0] * 1e3, best[1] * 1e3, best[1] / best[0], best[2] * 1e3, best[2] / best[0], memcmp(y, y2, 4 * rows * n) ? "NO" : "yes");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "bus") == 0) return bus_main(argv);
    if (argc == 4 && strcmp(argv[1], "prompt") == 0) return prompt_main(argv);
    fprintf(stderr, "usage: %s bus TYPE | prompt TYPE COLS   (TYPE 12 Q4_K, 13 Q5_K, 14 Q6_K)\n", argv[0]);
    return 2;
}
