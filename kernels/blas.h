/* Matrix products through the BLAS that SciPy ships (the one numba's np.dot uses as well).
 *
 * fastbp/backends/native.py hands over the addresses of SciPy's sgemm/dgemm (from the capsules
 * in scipy.linalg.cython_blas) once, at import; no BLAS is needed to build the extension.
 */
#ifndef FASTBP_BLAS_H
#define FASTBP_BLAS_H

typedef void (*fastbp_sgemm_t)(const char *transa, const char *transb, const int *m, const int *n,
                               const int *k, const float *alpha, const float *a, const int *lda,
                               const float *b, const int *ldb, const float *beta, float *c, const int *ldc);
typedef void (*fastbp_dgemm_t)(const char *transa, const char *transb, const int *m, const int *n,
                               const int *k, const double *alpha, const double *a, const int *lda,
                               const double *b, const int *ldb, const double *beta, double *c, const int *ldc);

extern fastbp_sgemm_t fastbp_sgemm;
extern fastbp_dgemm_t fastbp_dgemm;

/* Row-major C (m x n) = alpha * op(A) op(B) + beta * C, op(X) = X or X^T; A, B, C C-contiguous. */
void fastbp_gemm_f32(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                     const float *b, float beta, float *c);
void fastbp_gemm_f64(int trans_a, int trans_b, int m, int n, int k, double alpha, const double *a,
                     const double *b, double beta, double *c);

#endif
