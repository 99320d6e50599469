/* Row-major products on a column-major (Fortran) BLAS: a row-major C = A B is, read column-major,
 * C^T = B^T A^T, so the operands swap places and the leading dimensions are the row lengths. */
#include "blas.h"

fastbp_sgemm_t fastbp_sgemm = 0;
fastbp_dgemm_t fastbp_dgemm = 0;

#define DEFINE_GEMM(suffix, real, fn)                                                        \
    void fastbp_gemm_##suffix(int trans_a, int trans_b, int m, int n, int k, real alpha,     \
                              const real *a, const real *b, real beta, real *c)              \
    {                                                                                        \
        if (m == 0 || n == 0) return;                                                        \
        const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';                       \
        const int lda = trans_a ? m : k; /* row length of A as stored */                     \
        const int ldb = trans_b ? k : n;                                                     \
        const int ldc = n;                                                                   \
        fn(&tb, &ta, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);                  \
    }

DEFINE_GEMM(f32, float, fastbp_sgemm)
DEFINE_GEMM(f64, double, fastbp_dgemm)
