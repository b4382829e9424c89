// The AVX2 variant of q5rows.c (avx2_variant.h).
#define CFLEX_VARIANT_SOURCE "q5rows.c"
#include "avx2_variant.h"
