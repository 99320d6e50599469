/* Products row by row (compact or dense rows, rows_impl.h), and compact rows themselves: the
 * nonzeros of a mostly-zero matrix, row by row.
 *
 * rows_impl.h is compiled for float and double, each twice: for AVX2 + FMA and for the
 * baseline x86-64 (or whatever the target is), chosen once at run time from the CPU's features.
 * GCC's vector extensions keep the code one source for every width.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* 16-byte vectors for the baseline (SSE2 on x86-64), 32-byte ones for AVX2 */
typedef float vec16_f32 __attribute__((vector_size(16)));
typedef double vec16_f64 __attribute__((vector_size(16)));
typedef float vec32_f32 __attribute__((vector_size(32)));
typedef double vec32_f64 __attribute__((vector_size(32)));

#define TARGET
#define ISA base
#define REAL float
#define SFX f32
#define VEC vec16_f32
#include "rows_impl.h"
#undef REAL
#undef SFX
#undef VEC
#define REAL double
#define SFX f64
#define VEC vec16_f64
#include "rows_impl.h"
#undef REAL
#undef SFX
#undef VEC
#undef TARGET
#undef ISA

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_BUILD 1
#define TARGET __attribute__((target("avx2,fma")))
#define ISA avx2
#define REAL float
#define SFX f32
#define VEC vec32_f32
#include "rows_impl.h"
#undef REAL
#undef SFX
#undef VEC
#define REAL double
#define SFX f64
#define VEC vec32_f64
#include "rows_impl.h"
#undef REAL
#undef SFX
#undef VEC
#undef TARGET
#undef ISA
#endif

static int use_avx2(void)
{
#ifdef HAVE_AVX2_BUILD
    static int answer = -1;
    if (answer < 0) {
        __builtin_cpu_init();
        answer = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return answer;
#else
    return 0;
#endif
}

#ifdef HAVE_AVX2_BUILD
#define DISPATCH(name, SFX, args) \
    if (use_avx2()) fastbp_rows_##name##_##SFX##_avx2 args; else fastbp_rows_##name##_##SFX##_base args
#else
#define DISPATCH(name, SFX, args) fastbp_rows_##name##_##SFX##_base args
#endif

#define DEFINE_ROWS(SFX, REAL)                                                                                  \
    void fastbp_spans_times_##SFX(const int64_t *begin, const int64_t *end, int n, const int32_t *indices,      \
                                  const REAL *values, const REAL *M, const REAL *start, REAL *out, int m)       \
    {                                                                                                           \
        DISPATCH(spans_times, SFX, (begin, end, n, indices, values, M, start, out, m));                         \
    }                                                                                                           \
    void fastbp_dense_times_##SFX(const REAL *x, int n, int k, const REAL *M, const REAL *start, REAL *out,     \
                                  int m)                                                                        \
    {                                                                                                           \
        DISPATCH(dense_times, SFX, (x, n, k, M, start, out, m));                                                \
    }                                                                                                           \
    /* indptr[i + 1] - indptr[i] = the number of nonzeros of row i (NaN counts as nonzero), row by row  \
     * on the OpenMP threads, then summed up. */                                                              \
    void fastbp_count_nonzeros_##SFX(const REAL *x, int64_t n, int64_t k, int64_t *indptr)                      \
    {                                                                                                           \
        indptr[0] = 0;                                                                                          \
        FASTBP_PARALLEL_FOR(n * k >= FASTBP_PARALLEL_SCAN)                                                      \
        for (int64_t i = 0; i < n; ++i) {                                                                       \
            int64_t count = 0;                                                                                  \
            for (int64_t j = 0; j < k; ++j) count += x[i * k + j] != 0;                                         \
            indptr[i + 1] = count;                                                                              \
        }                                                                                                       \
        for (int64_t i = 0; i < n; ++i) indptr[i + 1] += indptr[i];                                             \
    }                                                                                                           \
    /* The nonzeros of each row, in column order, at [indptr[i], indptr[i + 1]). */                           \
    void fastbp_compact_rows_##SFX(const REAL *x, int64_t n, int64_t k, const int64_t *indptr,                  \
                                   int32_t *indices, REAL *values)                                              \
    {                                                                                                           \
        FASTBP_PARALLEL_FOR(n * k >= FASTBP_PARALLEL_SCAN)                                                      \
        for (int64_t i = 0; i < n; ++i) {                                                                       \
            int64_t at = indptr[i];                                                                             \
            for (int64_t j0 = 0; j0 < k; j0 += 64) {                                                            \
                /* without branches (zero or not is a coin toss at a digit's edges): every entry is     \
                 * written, and the write position moves on past the nonzero ones only */               \
                int32_t column[65];                                                                             \
                REAL value[65];                                                                                 \
                int count = 0;                                                                                  \
                for (int64_t j = j0; j < (k < j0 + 64 ? k : j0 + 64); ++j) {                                    \
                    column[count] = (int32_t)j;                                                                 \
                    value[count] = x[i * k + j];                                                                \
                    count += value[count] != 0;                                                                 \
                }                                                                                               \
                memcpy(indices + at, column, sizeof(int32_t) * (size_t)count);                                  \
                memcpy(values + at, value, sizeof(REAL) * (size_t)count);                                       \
                at += count;                                                                                    \
            }                                                                                                   \
        }                                                                                                       \
    }

DEFINE_ROWS(f32, float)
DEFINE_ROWS(f64, double)

/* counts[j] = the number of entries in column j, over all rows: each thread counts a slice into
 * its own slab (serially when there is no memory for the slabs), then the slabs are summed. */
void fastbp_column_counts(const int32_t *indices, int64_t nnz, int64_t *counts, int64_t k)
{
    const int threads = nnz >= FASTBP_PARALLEL_SCAN ? FASTBP_MAX_THREADS() : 1;
    int64_t *slabs = threads > 1 ? calloc((size_t)threads * (size_t)k, sizeof(int64_t)) : NULL;
    memset(counts, 0, sizeof(int64_t) * (size_t)k);
    if (!slabs) {
        for (int64_t p = 0; p < nnz; ++p) ++counts[indices[p]];
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        const int t = FASTBP_THREAD_NUM();
        int64_t *mine = slabs + (ptrdiff_t)t * k;
        for (int64_t p = nnz * t / threads; p < nnz * (t + 1) / threads; ++p) ++mine[indices[p]];
    }
    for (int t = 0; t < threads; ++t)
        for (int64_t j = 0; j < k; ++j) counts[j] += slabs[(ptrdiff_t)t * k + j];
    free(slabs);
}
