/* Row-major products on a column-major (Fortran) BLAS. */
#include "blas.h"

#define FASTBP_TEMPLATE "blas_impl.h"
#include "each_real.h"

void fastbp_set_blas(void *sgemm, void *dgemm)
{
    fastbp_blas_gemm_f32 = (fastbp_fortran_gemm_f32)sgemm;
    fastbp_blas_gemm_f64 = (fastbp_fortran_gemm_f64)dgemm;
}
