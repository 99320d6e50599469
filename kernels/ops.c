/* Instantiates ops_impl.h for float and double. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "kernels.h"

ptrdiff_t fastbp_parameter_count(const int64_t *sizes, int n_layers)
{
    ptrdiff_t count = 0;
    for (int l = 0; l < n_layers; ++l) count += sizes[l] * sizes[l + 1] + sizes[l + 1];
    return count;
}

void fastbp_layer_offsets(const int64_t *sizes, int layer, ptrdiff_t *w_at, ptrdiff_t *b_at)
{
    ptrdiff_t offset = 0;
    for (int l = 0; l < layer; ++l) offset += sizes[l] * sizes[l + 1] + sizes[l + 1];
    *w_at = offset;
    *b_at = offset + sizes[layer] * sizes[layer + 1];
}

/* cuts[0] = 0 <= cuts[1] <= ... <= cuts[threads] = k: column ranges holding about equal
 * numbers of entries (counts[j]: the entries of column j). */
void fastbp_split_columns(const int64_t *counts, int k, int threads, int32_t *cuts)
{
    double total = 0, seen = 0;
    for (int j = 0; j < k; ++j) total += (double)counts[j];
    int j = 0;
    cuts[0] = 0;
    for (int t = 1; t < threads; ++t) {
        while (j < k && seen < total * t / threads) seen += (double)counts[j++];
        cuts[t] = j;
    }
    cuts[threads] = k;
}

/* The first entry in [lo, hi) whose column is at least col, else hi (a row's columns are
 * sorted): lo plus the count of columns below col, one vectorized pass over the row, whose
 * loads are independent (a binary search's each wait for the one before). */
FASTBP_SIMD static int64_t first_column_at_least(const int32_t *indices, int64_t lo, int64_t hi, int32_t col)
{
    int32_t below = 0;
    for (int64_t p = lo; p < hi; ++p) below += indices[p] < col;
    return lo + below;
}

/* [begin[r], end[r]): the entries of compact row rows[r] whose columns are in [lo, hi). */
void fastbp_own_spans(const fastbp_rows *x, const int64_t *rows, int n, int32_t lo, int32_t hi, int k, int64_t *begin,
                      int64_t *end)
{
    for (int r = 0; r < n; ++r) {
        const int64_t first = x->indptr[rows[r]], last = x->indptr[rows[r] + 1];
        begin[r] = lo > 0 ? first_column_at_least(x->indices, first, last, lo) : first;
        end[r] = hi < k ? first_column_at_least(x->indices, begin[r], last, hi) : last;
    }
}

#define REAL float
#define SFX f32
#define GEMM fastbp_gemm_f32
#define EXP expf
#define LOG logf
#define SQRT sqrtf
#define FABS fabsf
#include "ops_impl.h"
#undef REAL
#undef SFX
#undef GEMM
#undef EXP
#undef LOG
#undef SQRT
#undef FABS

#define REAL double
#define SFX f64
#define GEMM fastbp_gemm_f64
#define EXP exp
#define LOG log
#define SQRT sqrt
#define FABS fabs
#include "ops_impl.h"
