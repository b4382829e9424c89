// The AVX2 variant of vector.c (avx2_variant.h).
#define CFLEX_VARIANT_SOURCE "vector.c"
#include "avx2_variant.h"
