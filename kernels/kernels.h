/* fastbp native kernels: plain C over contiguous buffers.
 *
 * Every kernel comes in a float32 (_f32) and a float64 (_f64) flavour with identical loops
 * (ops_impl.h is compiled once per type). Callers (module.c) have already checked lengths,
 * formats, contiguity and index ranges: kernels do no bounds checking of their own.
 */
#ifndef FASTBP_KERNELS_H
#define FASTBP_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Elementwise loops get an AVX2 version beside the baseline one, chosen when the module loads
 * (GCC/Clang function multiversioning): a wheel built here runs on any x86-64, fast on AVX2. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
/* feature-based: "arch=haswell" would dispatch on the CPU model and give AMD the baseline clone */
#define FASTBP_SIMD __attribute__((target_clones("avx2", "default")))
#else
#define FASTBP_SIMD
#endif

/* Elementwise loops run on OpenMP threads when the condition holds (callers pass the size
 * threshold of fastbp/threads.py, or PTRDIFF_MAX for "never"). */
#ifdef _OPENMP
#define FASTBP_PRAGMA(x) _Pragma(#x)
#define FASTBP_PARALLEL_FOR(cond) FASTBP_PRAGMA(omp parallel for if (cond) schedule(static))
#define FASTBP_PARALLEL_FOR_SUM(cond, total) FASTBP_PRAGMA(omp parallel for if (cond) schedule(static) reduction(+ : total))
#else
#define FASTBP_PARALLEL_FOR(cond)
#define FASTBP_PARALLEL_FOR_SUM(cond, total)
#endif
#define FASTBP_SERIAL PTRDIFF_MAX
#ifdef _OPENMP
#include <omp.h>
#define FASTBP_THREAD_NUM() omp_get_thread_num()
#define FASTBP_MAX_THREADS() omp_get_max_threads()
#else
#define FASTBP_THREAD_NUM() 0
#define FASTBP_MAX_THREADS() 1
#endif
/* a data set of this many items or more is compacted on the OpenMP threads */
#define FASTBP_PARALLEL_SCAN ((int64_t)1 << 20)


/* Products of a few rows and fewer multiply-adds than this skip BLAS (its call overhead dominates). */
#define FASTBP_SMALL_PRODUCT (1 << 16)
/* The whole-network kernels multiply layers (after the first) with at most this many weights by
 * their own row loops, on the calling thread; larger ones by BLAS. */
#define FASTBP_OWN_PRODUCT (1 << 15)
/* The fused compact step groups a batch's entries by column into buckets of one place per batch
 * row while all the buckets hold at most this many places (else it counts them first). */
#define FASTBP_BUCKET_ENTRIES (1 << 22)

/* must match fastbp/backends/_network.py */
enum { FASTBP_RELU = 0, FASTBP_SIGMOID = 1 };
enum { FASTBP_SGD = 0, FASTBP_MOMENTUM = 1, FASTBP_ADAM = 2 };

ptrdiff_t fastbp_parameter_count(const int64_t *sizes, int n_layers);

/* The input of the whole-network kernels: a dense row-major matrix, or compact rows (CSR: row
 * i's nonzeros are values[p] at columns indices[p], p in [indptr[i], indptr[i + 1])). */
typedef struct {
    const void *dense; /* NULL when the rows are compact */
    const int64_t *indptr;
    const int32_t *indices;
    const void *values;
    const int64_t *column_counts; /* entries per column, over all rows */
} fastbp_rows;
void fastbp_column_counts(const int32_t *indices, int64_t nnz, int64_t *counts, int64_t k);
void fastbp_split_columns(const int64_t *counts, int k, int threads, int32_t *cuts);
void fastbp_own_spans(const fastbp_rows *x, const int64_t *rows, int n, int32_t lo, int32_t hi, int k, int64_t *begin,
                      int64_t *end);
void fastbp_layer_offsets(const int64_t *sizes, int layer, ptrdiff_t *w_at, ptrdiff_t *b_at);

#define FASTBP_DECLARE(SFX, REAL)                                                                          \
    void fastbp_sgd_update_##SFX(REAL *param, const REAL *grad, REAL lr, ptrdiff_t n, ptrdiff_t parallel_min);                    \
    void fastbp_relu_forward_##SFX(const REAL *x, REAL *out, unsigned char *mask, ptrdiff_t n, ptrdiff_t parallel_min);           \
    void fastbp_relu_backward_##SFX(const REAL *dout, const unsigned char *mask, REAL *dx, ptrdiff_t n,             \
                                    ptrdiff_t parallel_min);  \
    void fastbp_affine_forward_##SFX(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, \
                                     int m);                                                               \
    void fastbp_affine_backward_##SFX(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW,  \
                                      REAL *db, int n, int k, int m);                                      \
    void fastbp_sigmoid_forward_##SFX(const REAL *x, REAL *out, ptrdiff_t n, ptrdiff_t parallel_min);                             \
    void fastbp_sigmoid_backward_##SFX(const REAL *dout, const REAL *out, REAL *dx, ptrdiff_t n, ptrdiff_t parallel_min);         \
    double fastbp_softmax_xent_forward_##SFX(const REAL *x, const int64_t *labels, REAL *y, int n, int c,             \
                                             ptrdiff_t parallel_min); \
    void fastbp_softmax_xent_backward_##SFX(const REAL *y, const int64_t *labels, REAL scale, REAL *dx,   \
                                            int n, int c, ptrdiff_t parallel_min);                                                 \
    double fastbp_half_squared_error_##SFX(const REAL *y, const REAL *t, ptrdiff_t n);                    \
    void fastbp_scaled_difference_##SFX(const REAL *y, const REAL *t, REAL scale, REAL *dx, ptrdiff_t n,             \
                                         ptrdiff_t parallel_min); \
    void fastbp_momentum_update_##SFX(REAL *param, const REAL *grad, REAL *v, REAL lr, REAL momentum,     \
                                      ptrdiff_t n, ptrdiff_t parallel_min);                                                        \
    void fastbp_adam_update_##SFX(REAL *param, const REAL *grad, REAL *m, REAL *v, REAL lr_t, REAL beta1, \
                                  REAL beta2, REAL eps, ptrdiff_t n, ptrdiff_t parallel_min);                                      \
    void fastbp_spans_times_##SFX(const int64_t *begin, const int64_t *end, int n, const int32_t *indices,      \
                                  const REAL *values, const REAL *M, const REAL *start, REAL *out, int m);      \
    void fastbp_dense_times_##SFX(const REAL *x, int n, int k, const REAL *M, const REAL *start, REAL *out,     \
                                  int m);                                                                       \
    void fastbp_count_nonzeros_##SFX(const REAL *x, int64_t n, int64_t k, int64_t *indptr);                     \
    void fastbp_compact_rows_##SFX(const REAL *x, int64_t n, int64_t k, const int64_t *indptr,                 \
                                   int32_t *indices, REAL *values);                                             \
    ptrdiff_t fastbp_train_steps_##SFX(const fastbp_rows *x, const int64_t *labels, const int64_t *batches,      \
                                       ptrdiff_t n_steps, int batch, REAL *params, REAL *grads,            \
                                       const int64_t *sizes, int n_layers, int activation, int optimizer,  \
                                       const REAL *hyper, REAL *state, int64_t step0, double *losses);     \
    int fastbp_predict_labels_##SFX(const fastbp_rows *x, ptrdiff_t n_rows, REAL *params, const int64_t *sizes,  \
                                    int n_layers, int activation, int64_t *labels);

FASTBP_DECLARE(f32, float)
FASTBP_DECLARE(f64, double)

#endif
