/* Row-major products on a column-major (Fortran) BLAS. */
#include <stddef.h>

#include "blas.h"

static int ilp64; /* the BLAS takes int64_t sizes */
static int (*threads_local)(int); /* OpenBLAS's openblas_set_num_threads_local, or NULL */

#define FASTBP_TEMPLATE "blas_impl.h"
#include "each_real.h"

void fastbp_set_blas(void *sgemm, void *dgemm, int wide, void *local)
{
    ilp64 = wide;
    threads_local = (int (*)(int))local;
    fastbp_blas_gemm_f32 = sgemm;
    fastbp_blas_gemm_f64 = dgemm;
}

int fastbp_blas_threads_local(int threads) { return threads_local ? threads_local(threads) : -1; }
int fastbp_blas_keeps_to_thread(void) { return threads_local != NULL; }
