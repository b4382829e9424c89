// The body of every *_avx2.c wrapper: the source named by CFLEX_VARIANT_SOURCE compiled again
// with AVX2, FMA and F16C enabled on every function (common.h says how the variants and the
// dispatch fit together). One file, so the attribute push and its pop stay together.
#if defined(__x86_64__)
#define CFLEX_VARIANT_AVX2 1
// System headers first, so that the pragma below reaches only this project's functions.
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#include CFLEX_VARIANT_SOURCE
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
