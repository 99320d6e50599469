/* Instantiates ops_impl.h for float and double. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "kernels.h"

ptrdiff_t fastbp_parameter_count(const int64_t *sizes, int n_layers)
{
    ptrdiff_t count = 0;
    for (int l = 0; l < n_layers; ++l) count += sizes[l] * sizes[l + 1] + sizes[l + 1];
    return count;
}

void fastbp_layer_offsets(const int64_t *sizes, int layer, ptrdiff_t *w_at, ptrdiff_t *b_at)
{
    ptrdiff_t offset = 0;
    for (int l = 0; l < layer; ++l) offset += sizes[l] * sizes[l + 1] + sizes[l + 1];
    *w_at = offset;
    *b_at = offset + sizes[layer] * sizes[layer + 1];
}

#define REAL float
#define SFX f32
#define GEMM fastbp_gemm_f32
#define EXP expf
#define LOG logf
#define SQRT sqrtf
#define FABS fabsf
#include "ops_impl.h"
#undef REAL
#undef SFX
#undef GEMM
#undef EXP
#undef LOG
#undef SQRT
#undef FABS

#define REAL double
#define SFX f64
#define GEMM fastbp_gemm_f64
#define EXP exp
#define LOG log
#define SQRT sqrt
#define FABS fabs
#include "ops_impl.h"
