/* Compact rows (the nonzeros of a mostly-zero matrix, row by row) and the products on them.
 *
 * compact_impl.h is compiled for float and double, each twice: for AVX2 + FMA and for the
 * baseline x86-64 (or whatever the target is), chosen once at run time from the CPU's features.
 * GCC's vector extensions keep the code one source for every width.
 */
#include <stdint.h>
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
#include "compact_impl.h"
#undef REAL
#undef SFX
#undef VEC
#define REAL double
#define SFX f64
#define VEC vec16_f64
#include "compact_impl.h"
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
#include "compact_impl.h"
#undef REAL
#undef SFX
#undef VEC
#define REAL double
#define SFX f64
#define VEC vec32_f64
#include "compact_impl.h"
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
    if (use_avx2()) fastbp_compact_##name##_##SFX##_avx2 args; else fastbp_compact_##name##_##SFX##_base args
#else
#define DISPATCH(name, SFX, args) fastbp_compact_##name##_##SFX##_base args
#endif

#define DEFINE_COMPACT(SFX, REAL)                                                                              \
    void fastbp_compact_affine_forward_##SFX(const int64_t *indptr, const int32_t *indices, const REAL *values, \
                                             const int64_t *rows, int64_t row0, int n, const REAL *W,           \
                                             const REAL *b, REAL *out, int m)                                   \
    {                                                                                                           \
        DISPATCH(affine_forward, SFX, (indptr, indices, values, rows, row0, n, W, b, out, m));            \
    }                                                                                                           \
    void fastbp_compact_weight_grad_##SFX(const int64_t *indptr, const int32_t *indices, const REAL *values,    \
                                          const int64_t *rows, int n, const REAL *dout, REAL *dW, int k, int m) \
    {                                                                                                           \
        DISPATCH(weight_grad, SFX, (indptr, indices, values, rows, n, dout, dW, k, m));                   \
    }                                                                                                           \
    /* indptr[i + 1] = indptr[i] + the number of nonzeros of row i (NaN counts as nonzero). */                 \
    void fastbp_count_nonzeros_##SFX(const REAL *x, int64_t n, int64_t k, int64_t *indptr)                      \
    {                                                                                                           \
        indptr[0] = 0;                                                                                          \
        for (int64_t i = 0; i < n; ++i) {                                                                       \
            int64_t count = 0;                                                                                  \
            for (int64_t j = 0; j < k; ++j) count += x[i * k + j] != 0;                                         \
            indptr[i + 1] = indptr[i] + count;                                                                  \
        }                                                                                                       \
    }                                                                                                           \
    /* The nonzeros of each row, in column order, at [indptr[i], indptr[i + 1]). */                           \
    void fastbp_compact_rows_##SFX(const REAL *x, int64_t n, int64_t k, const int64_t *indptr,                  \
                                   int32_t *indices, REAL *values)                                              \
    {                                                                                                           \
        for (int64_t i = 0; i < n; ++i) {                                                                       \
            int64_t at = indptr[i];                                                                             \
            for (int64_t j = 0; j < k; ++j) {                                                                   \
                const REAL v = x[i * k + j];                                                                    \
                if (v != 0) {                                                                                   \
                    indices[at] = (int32_t)j;                                                                   \
                    values[at++] = v;                                                                           \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
    }

DEFINE_COMPACT(f32, float)
DEFINE_COMPACT(f64, double)
