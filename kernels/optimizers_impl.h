/* The update rules for one floating type (each_real.h). Same math as fastbp/backends/reference.py. */

FASTBP_SIMD static void FN(sgd)(REAL *restrict param, const REAL *restrict grad, REAL lr, ptrdiff_t n,
                                ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, { param[i] -= lr * grad[i]; });
}

/* v = momentum v - lr grad; param += v */
FASTBP_SIMD static void FN(momentum)(REAL *restrict param, const REAL *restrict grad, REAL *restrict v, REAL lr,
                                     REAL momentum, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, {
        v[i] = momentum * v[i] - lr * grad[i];
        param[i] += v[i];
    });
}

/* m += (1 - beta1)(grad - m); v += (1 - beta2)(grad^2 - v); param -= lr_t m / (sqrt(v) + eps) */
FASTBP_SIMD static void FN(adam)(REAL *restrict param, const REAL *restrict grad, REAL *restrict m, REAL *restrict v,
                                 REAL lr_t, REAL beta1, REAL beta2, REAL eps, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, {
        m[i] += (1 - beta1) * (grad[i] - m[i]);
        v[i] += (1 - beta2) * (grad[i] * grad[i] - v[i]);
        param[i] -= lr_t * m[i] / (SQRT(v[i]) + eps);
    });
}

/* the book's Nesterov: param += mu^2 v - (1 + mu) lr grad; v = mu v - lr grad */
FASTBP_SIMD static void FN(nesterov)(REAL *restrict param, const REAL *restrict grad, REAL *restrict v, REAL lr,
                                     REAL mu, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, {
        param[i] += mu * mu * v[i];
        param[i] -= (1 + mu) * lr * grad[i];
        v[i] = mu * v[i] - lr * grad[i];
    });
}

/* AdaGrad (decay 0: h += grad^2) and RMSprop (h = decay h + (1 - decay) grad^2), then
 * param -= lr grad / (sqrt(h) + eps), as the book writes them */
FASTBP_SIMD static void FN(scaled_by_history)(REAL *restrict param, const REAL *restrict grad, REAL *restrict h,
                                              REAL lr, REAL decay, int rms, REAL eps, ptrdiff_t n,
                                              ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, {
        if (rms) {
            h[i] *= decay;
            h[i] += (1 - decay) * grad[i] * grad[i];
        } else {
            h[i] += grad[i] * grad[i];
        }
        param[i] -= lr * grad[i] / (SQRT(h[i]) + eps);
    });
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
    case FASTBP_NESTEROV:
        FN(nesterov)(param, grad, m, lr, beta1, n, parallel_min);
        break;
    case FASTBP_ADAGRAD:
    case FASTBP_RMSPROP:
        FN(scaled_by_history)(param, grad, m, lr, beta1, code == FASTBP_RMSPROP, hyper[FASTBP_HYPER_EPS], n, parallel_min);
        break;
    case FASTBP_ADAM: {
        const REAL beta2 = hyper[FASTBP_HYPER_BETA2];
        const REAL lr_t = (REAL)fastbp_adam_step_size(lr, beta1, beta2, t);
        FN(adam)(param, grad, m, v, lr_t, beta1, beta2, hyper[FASTBP_HYPER_EPS], n, parallel_min);
        break;
    }
    }
}
