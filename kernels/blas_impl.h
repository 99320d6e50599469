/* A row-major product on the Fortran gemm of one floating type (each_real.h). */

typedef void (*FN(gemm32))(const char *transa, const char *transb, const int *m, const int *n, const int *k,
                           const REAL *alpha, const REAL *a, const int *lda, const REAL *b, const int *ldb,
                           const REAL *beta, REAL *c, const int *ldc);
typedef void (*FN(gemm64))(const char *transa, const char *transb, const int64_t *m, const int64_t *n, const int64_t *k,
                           const REAL *alpha, const REAL *a, const int64_t *lda, const REAL *b, const int64_t *ldb,
                           const REAL *beta, REAL *c, const int64_t *ldc);
static void *FN(blas_gemm);

/* A row-major C = A B is, read column-major, C^T = B^T A^T: the operands swap places and the
 * leading dimensions are the row lengths. */
void FN(gemm_ld)(int trans_a, int trans_b, int m, int n, int k, REAL alpha, const REAL *a, int lda, const REAL *b,
                 int ldb, REAL beta, REAL *c, int ldc)
{
    if (m == 0 || n == 0) return;
    const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    if (ilp64) {
        const int64_t M = m, N = n, K = k, LDA = lda, LDB = ldb, LDC = ldc;
        ((FN(gemm64))FN(blas_gemm))(&tb, &ta, &N, &M, &K, &alpha, b, &LDB, a, &LDA, &beta, c, &LDC);
    } else {
        ((FN(gemm32))FN(blas_gemm))(&tb, &ta, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
    }
}

void FN(gemm)(int trans_a, int trans_b, int m, int n, int k, REAL alpha, const REAL *a, const REAL *b, REAL beta,
              REAL *c)
{
    FN(gemm_ld)(trans_a, trans_b, m, n, k, alpha, a, trans_a ? m : k, b, trans_b ? k : n, beta, c, n);
}
