// The AVX2 variant of rows4n.c (avx2_variant.h).
#define CFLEX_VARIANT_SOURCE "rows4n.c"
#include "avx2_variant.h"
