/* The update rules for one floating type (each_real.h). Same math as fastbp/backends/reference.py. */

FASTBP_SIMD static void FN(sgd)(REAL *restrict param, const REAL *restrict grad, REAL lr, ptrdiff_t n,
                                ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR(n >= parallel_min)
    for (ptrdiff_t i = 0; i < n; ++i) param[i] -= lr * grad[i];
}

/* v = momentum v - lr grad; param += v */
FASTBP_SIMD static void FN(momentum)(REAL *restrict param, const REAL *restrict grad, REAL *restrict v, REAL lr,
                                     REAL momentum, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR(n >= parallel_min)
    for (ptrdiff_t i = 0; i < n; ++i) {
        v[i] = momentum * v[i] - lr * grad[i];
        param[i] += v[i];
    }
}

/* m += (1 - beta1)(grad - m); v += (1 - beta2)(grad^2 - v); param -= lr_t m / (sqrt(v) + eps) */
FASTBP_SIMD static void FN(adam)(REAL *restrict param, const REAL *restrict grad, REAL *restrict m, REAL *restrict v,
                                 REAL lr_t, REAL beta1, REAL beta2, REAL eps, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR(n >= parallel_min)
    for (ptrdiff_t i = 0; i < n; ++i) {
        m[i] += (1 - beta1) * (grad[i] - m[i]);
        v[i] += (1 - beta2) * (grad[i] * grad[i] - v[i]);
        param[i] -= lr_t * m[i] / (SQRT(v[i]) + eps);
    }
}

void FN(optimizer_step)(int code, REAL *param, const REAL *grad, REAL *m, REAL *v, ptrdiff_t n, const REAL *hyper,
                        int64_t t, ptrdiff_t parallel_min)
{
    const REAL lr = hyper[FASTBP_HYPER_LR], beta1 = hyper[FASTBP_HYPER_BETA1];
    switch (code) {
    case FASTBP_SGD:
        FN(sgd)(param, grad, lr, n, parallel_min);
        break;
    case FASTBP_MOMENTUM:
        FN(momentum)(param, grad, m, lr, beta1, n, parallel_min);
        break;
    case FASTBP_ADAM: {
        const REAL beta2 = hyper[FASTBP_HYPER_BETA2];
        const REAL lr_t = (REAL)fastbp_adam_step_size(lr, beta1, beta2, t);
        FN(adam)(param, grad, m, v, lr_t, beta1, beta2, hyper[FASTBP_HYPER_EPS], n, parallel_min);
        break;
    }
    }
}
