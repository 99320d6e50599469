/* Matrix products through the BLAS that SciPy ships (the one numba's np.dot uses as well).
 *
 * module.c hands over the addresses of SciPy's sgemm/dgemm (from the capsules in
 * scipy.linalg.cython_blas) once, when the module loads; no BLAS is needed to build the extension.
 */
#ifndef FASTBP_BLAS_H
#define FASTBP_BLAS_H

/* sgemm and dgemm, as Fortran BLAS functions */
void fastbp_set_blas(void *sgemm, void *dgemm);

/* Row-major C (m x n) = alpha * op(A) op(B) + beta * C, op(X) = X or X^T; A, B, C C-contiguous. */
void fastbp_gemm_f32(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, const float *b,
                     float beta, float *c);
void fastbp_gemm_f64(int trans_a, int trans_b, int m, int n, int k, double alpha, const double *a, const double *b,
                     double beta, double *c);

#endif
