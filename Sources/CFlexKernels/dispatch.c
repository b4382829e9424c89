// The public kernel names on x86-64: each calls the baseline or the AVX2 variant (common.h),
// chosen once at load. The AVX2 variant needs AVX2, FMA and F16C (Haswell, Zen and later); it
// picks AVX-512 inside itself where the CPU has it, as before. FLEXRUN_KERNELS=baseline forces the
// baseline variant (to measure it, or to test it on a machine that has AVX2).
// A branch on one global per call: the kernels work on whole rows, so it costs nothing measurable.
#if defined(__x86_64__)
#include "cflex_kernels.h"
#include <stdlib.h>
#include <string.h>

static int use_avx2 = 0;

__attribute__((constructor)) static void cflex_pick_variant(void) {
    __builtin_cpu_init();
    const char *env = getenv("FLEXRUN_KERNELS");
    if (env && strcmp(env, "baseline") == 0) return;
    use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

#define CFLEX_FN(R, NAME, PARAMS, ARGS) \
    R NAME##_base PARAMS; R NAME##_avx2 PARAMS; \
    R NAME PARAMS { return use_avx2 ? NAME##_avx2 ARGS : NAME##_base ARGS; }
#define CFLEX_VOID_FN(R, NAME, PARAMS, ARGS) \
    void NAME##_base PARAMS; void NAME##_avx2 PARAMS; \
    void NAME PARAMS { if (use_avx2) NAME##_avx2 ARGS; else NAME##_base ARGS; }
// The `_isa` entry points: the scalar set runs the baseline variant's code (so the tests compare
// the code a CPU without AVX2 runs against the AVX2 and AVX-512 kernels), the others the AVX2 one.
#define CFLEX_ISA_FN(R, NAME, PARAMS, ARGS) \
    R NAME##_base PARAMS; R NAME##_avx2 PARAMS; \
    R NAME PARAMS { return use_avx2 && isa != CFLEX_ISA_SCALAR ? NAME##_avx2 ARGS : NAME##_base ARGS; }
#include "variants.h"
#endif
