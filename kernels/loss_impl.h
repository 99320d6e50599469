/* Loss layers for one floating type (each_real.h). Same math as fastbp/backends/reference.py. */

/* y = softmax(x) row by row (shifted by the row maximum); returns the mean of -log y[label]. */
FASTBP_SIMD double FN(softmax_xent_forward)(const REAL *x, const int64_t *labels, REAL *y, int n, int c,
                                             ptrdiff_t parallel_min)
{
    double loss = 0;
    FASTBP_PARALLEL_FOR_SUM((ptrdiff_t)n * c >= parallel_min, loss)
    for (int i = 0; i < n; ++i) {
        const REAL *xi = x + (ptrdiff_t)i * c;
        REAL *yi = y + (ptrdiff_t)i * c;
        REAL top = xi[0];
        for (int j = 1; j < c; ++j) top = xi[j] > top ? xi[j] : top;
        double total = 0;
        for (int j = 0; j < c; ++j) {
            yi[j] = EXP(xi[j] - top);
            total += yi[j];
        }
        const REAL scale = (REAL)(1.0 / total);
        for (int j = 0; j < c; ++j) yi[j] *= scale;
        loss += log(total) - (double)(xi[labels[i]] - top);
    }
    return loss / n;
}

/* dx = scale * (y - onehot(labels)), scale = dout / N. */
FASTBP_SIMD void FN(softmax_xent_backward)(const REAL *y, const int64_t *labels, REAL scale, REAL *dx, int n, int c,
                                            ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR((ptrdiff_t)n * c >= parallel_min)
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < c; ++j) dx[(ptrdiff_t)i * c + j] = y[(ptrdiff_t)i * c + j] * scale;
        dx[(ptrdiff_t)i * c + labels[i]] -= scale;
    }
}

FASTBP_SIMD double FN(half_squared_error)(const REAL *y, const REAL *t, ptrdiff_t n)
{
    double total = 0;
    for (ptrdiff_t i = 0; i < n; ++i) {
        const double d = (double)y[i] - (double)t[i];
        total += d * d;
    }
    return 0.5 * total;
}

FASTBP_SIMD void FN(scaled_difference)(const REAL *y, const REAL *t, REAL scale, REAL *dx, ptrdiff_t n,
                                        ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR(n >= parallel_min)
    for (ptrdiff_t i = 0; i < n; ++i) dx[i] = (y[i] - t[i]) * scale;
}
