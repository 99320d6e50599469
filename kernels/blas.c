/* Row-major products on a column-major (Fortran) BLAS. */
#include "blas.h"

static int ilp64; /* the BLAS takes int64_t sizes */

#define FASTBP_TEMPLATE "blas_impl.h"
#include "each_real.h"

void fastbp_set_blas(void *sgemm, void *dgemm, int wide)
{
    ilp64 = wide;
    fastbp_blas_gemm_f32 = sgemm;
    fastbp_blas_gemm_f64 = dgemm;
}
