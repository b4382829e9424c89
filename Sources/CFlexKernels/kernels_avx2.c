// The AVX2 variant of kernels.c (avx2_variant.h).
#define CFLEX_VARIANT_SOURCE "kernels.c"
#include "avx2_variant.h"
