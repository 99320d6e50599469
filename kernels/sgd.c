/* Plain SGD step: the update of every parameter after backprop. */
#include "kernels.h"

#define DEFINE_SGD_UPDATE(suffix, real)                                                   \
    FASTBP_SIMD void fastbp_sgd_update_##suffix(real *restrict param, const real *restrict grad,      \
                                    real lr, ptrdiff_t n, ptrdiff_t parallel_min)         \
    {                                                                                     \
        FASTBP_PARALLEL_FOR(n >= parallel_min)                                            \
        for (ptrdiff_t i = 0; i < n; ++i)                                                 \
            param[i] -= lr * grad[i];                                                     \
    }

DEFINE_SGD_UPDATE(f32, float)
DEFINE_SGD_UPDATE(f64, double)
