/* Products row by row (on compact or dense rows), and compact rows themselves: the nonzeros of
 * a mostly-zero matrix, row by row.
 *
 * rows_isa_impl.h is compiled for float and double (each_real.h), each three times: for AVX-512,
 * for AVX2 + FMA and for the baseline x86-64 (or whatever the target is); rows_impl.h chooses
 * from the CPU's features (fastbp_isa): the AVX-512 build for the products on compact rows at
 * least a vector wide (a training step of the seed's network 71.5 -> 69.1 us against AVX2, on a
 * Xeon with AVX-512), AVX2 for the rest; and compacts rows (with AVX-512's compress where the CPU
 * has it). GCC's vector extensions keep the products one source for every width.
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
/* ... and for AVX-512: 64-byte vectors, for the products on compact rows (spans_times) */
#define ISA avx512
#define TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
#define VECTOR_BYTES 64
#define FASTBP_TEMPLATE "rows_isa_impl.h"
#include "each_real.h"
#undef ISA
#undef TARGET
#undef VECTOR_BYTES
#endif

#ifdef HAVE_AVX2_BUILD
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512vl")))
/* compact_row_avx512's (rows_impl.h) operations for each type, named A512(op) there: a vector of
 * values and its lane mask, the vector of their column numbers, and what loads, compares,
 * compresses and stores them */
#define A512_(op, sfx) A512_##op##_##sfx
#define A512_SFX_(op, sfx) A512_(op, sfx)
#define A512(op) A512_SFX_(op, SFX)
#define A512_LANES_f32 16
#define A512_MASK_f32 __mmask16
#define A512_VEC_f32 __m512
#define A512_COLUMNS_f32 __m512i
#define A512_FIRST_COLUMNS_f32() _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define A512_NEXT_COLUMNS_f32(c) _mm512_add_epi32(c, _mm512_set1_epi32(16))
#define A512_LOAD_f32(mask, p) _mm512_maskz_loadu_ps(mask, p)
#define A512_NONZERO_f32(mask, v) _mm512_mask_cmp_ps_mask(mask, v, _mm512_setzero_ps(), _CMP_NEQ_UQ)
#define A512_STORE_f32(p, mask, keep, v) _mm512_mask_storeu_ps(p, mask, _mm512_maskz_compress_ps(keep, v))
#define A512_STORE_COLUMNS_f32(p, mask, keep, c) _mm512_mask_storeu_epi32(p, mask, _mm512_maskz_compress_epi32(keep, c))
#define A512_LANES_f64 8
#define A512_MASK_f64 __mmask8
#define A512_VEC_f64 __m512d
#define A512_COLUMNS_f64 __m256i
#define A512_FIRST_COLUMNS_f64() _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define A512_NEXT_COLUMNS_f64(c) _mm256_add_epi32(c, _mm256_set1_epi32(8))
#define A512_LOAD_f64(mask, p) _mm512_maskz_loadu_pd(mask, p)
#define A512_NONZERO_f64(mask, v) _mm512_mask_cmp_pd_mask(mask, v, _mm512_setzero_pd(), _CMP_NEQ_UQ)
#define A512_STORE_f64(p, mask, keep, v) _mm512_mask_storeu_pd(p, mask, _mm512_maskz_compress_pd(keep, v))
#define A512_STORE_COLUMNS_f64(p, mask, keep, c) _mm256_mask_storeu_epi32(p, mask, _mm256_maskz_compress_epi32(keep, c))
#endif

/* The instruction set the row kernels use: the CPU's best, or a lower one that set_isa chose
 * (so that the tests run every version on one machine). */
static int isa_chosen = -1;

int fastbp_cpu_isa(void)
{
#ifdef HAVE_AVX2_BUILD
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return FASTBP_ISA_BASE;
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") ? FASTBP_ISA_AVX512 : FASTBP_ISA_AVX2;
#else
    return FASTBP_ISA_BASE;
#endif
}

int fastbp_isa(void)
{
    if (isa_chosen < 0) isa_chosen = fastbp_cpu_isa();
    return isa_chosen;
}

int fastbp_set_isa(int isa)
{
    if (isa < FASTBP_ISA_BASE || isa > fastbp_cpu_isa()) return -1;
    isa_chosen = isa;
    return 0;
}

static int use_avx2(void) { return fastbp_isa() >= FASTBP_ISA_AVX2; }
#ifdef HAVE_AVX2_BUILD
static int use_avx512(void) { return fastbp_isa() >= FASTBP_ISA_AVX512; }
#endif

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
