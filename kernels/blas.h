/* Matrix products through a BLAS that is already in the process, found when the module loads:
 * NumPy's own OpenBLAS (the scipy-openblas64 library NumPy's wheels carry, 64-bit integers),
 * so that fastbp's products and the book's np.dot share one BLAS and one pool of threads, and
 * run on NumPy's newer build (measured faster at the layers' shapes); else SciPy's, from
 * scipy.linalg.cython_blas. No BLAS is needed to build the extension.
 */
#ifndef FASTBP_BLAS_H
#define FASTBP_BLAS_H

#include <stdint.h>

/* sgemm and dgemm as Fortran BLAS functions taking int (LP64) or int64_t (ILP64) sizes;
 * threads_local: OpenBLAS's openblas_set_num_threads_local, or NULL */
void fastbp_set_blas(void *sgemm, void *dgemm, int ilp64, void *threads_local);

/* Sets the BLAS threads of the calling thread's own calls (OpenBLAS 0.3.27+) and returns the
 * setting before, or -1 where the BLAS has no such setting (then nothing changed). */
int fastbp_blas_threads_local(int threads);
int fastbp_blas_keeps_to_thread(void); /* whether it has that setting */

/* Row-major C (m x n) = alpha * op(A) op(B) + beta * C, op(X) = X or X^T; A, B, C C-contiguous. */
void fastbp_gemm_f32(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, const float *b,
                     float beta, float *c);
void fastbp_gemm_f64(int trans_a, int trans_b, int m, int n, int k, double alpha, const double *a, const double *b,
                     double beta, double *c);
/* The same on blocks of larger matrices: lda, ldb, ldc are the row lengths of A, B, C as stored. */
void fastbp_gemm_ld_f32(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc);
void fastbp_gemm_ld_f64(int trans_a, int trans_b, int m, int n, int k, double alpha, const double *a, int lda,
                        const double *b, int ldb, double beta, double *c, int ldc);

#endif
