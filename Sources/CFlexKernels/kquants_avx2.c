// The AVX2 variant of kquants.c (avx2_variant.h).
#define CFLEX_VARIANT_SOURCE "kquants.c"
#include "avx2_variant.h"
