/* ReLU forward (value and mask in one pass) and backward (from the mask). */
#include "kernels.h"

#define DEFINE_RELU(suffix, real)                                                         \
    FASTBP_SIMD void fastbp_relu_forward_##suffix(const real *restrict x, real *restrict out,         \
                                      unsigned char *restrict mask, ptrdiff_t n,          \
                                      ptrdiff_t parallel_min)                             \
    {                                                                                     \
        FASTBP_PARALLEL_FOR(n >= parallel_min)                                            \
        for (ptrdiff_t i = 0; i < n; ++i) {                                               \
            const int off = x[i] <= (real)0;                                              \
            mask[i] = (unsigned char)off;                                                 \
            out[i] = off ? (real)0 : x[i];                                                \
        }                                                                                 \
    }                                                                                     \
    FASTBP_SIMD void fastbp_relu_backward_##suffix(const real *restrict dout,                         \
                                       const unsigned char *restrict mask,                \
                                       real *restrict dx, ptrdiff_t n,                    \
                                       ptrdiff_t parallel_min)                            \
    {                                                                                     \
        FASTBP_PARALLEL_FOR(n >= parallel_min)                                            \
        for (ptrdiff_t i = 0; i < n; ++i)                                                 \
            dx[i] = mask[i] ? (real)0 : dout[i];                                          \
    }

DEFINE_RELU(f32, float)
DEFINE_RELU(f64, double)
