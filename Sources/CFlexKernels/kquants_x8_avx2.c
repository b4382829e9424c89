// The AVX2 variant of kquants_x8.c (avx2_variant.h).
#define CFLEX_VARIANT_SOURCE "kquants_x8.c"
#include "avx2_variant.h"
