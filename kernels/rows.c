/* Products row by row (on compact or dense rows), and compact rows themselves: the nonzeros of
 * a mostly-zero matrix, row by row.
 *
 * rows_isa_impl.h is compiled for float and double (each_real.h), each twice: for AVX2 + FMA
 * and for the baseline x86-64 (or whatever the target is); rows_impl.h chooses between the two
 * once, from the CPU's features, and compacts rows. GCC's vector extensions keep the products
 * one source for every width.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

/* the vectorized products for the baseline: 16-byte vectors (SSE2 on x86-64) */
#define ISA base
#define TARGET
#define VECTOR_BYTES 16
#define FASTBP_TEMPLATE "rows_isa_impl.h"
#include "each_real.h"
#undef ISA
#undef TARGET
#undef VECTOR_BYTES

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_BUILD 1
/* ... and for AVX2 + FMA: 32-byte vectors */
#define ISA avx2
#define TARGET __attribute__((target("avx2,fma")))
#define VECTOR_BYTES 32
#define FASTBP_TEMPLATE "rows_isa_impl.h"
#include "each_real.h"
#undef ISA
#undef TARGET
#undef VECTOR_BYTES
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

#define FASTBP_TEMPLATE "rows_impl.h"
#include "each_real.h"

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
