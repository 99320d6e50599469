/* Batch normalization for one floating type (each_real.h); the math of fastbp/backends/reference.py. */

/* Training: mean and (biased) variance of each column, xn = (x - mean) / std, out = gamma xn + beta,
 * std = sqrt(var + eps). The sums are taken of x minus its first row, so that a large mean does
 * not cancel the variance away. Returns -1 when out of memory. */
FASTBP_SIMD int FN(batchnorm_forward)(const REAL *x, const REAL *gamma, const REAL *beta, REAL *out, REAL *xn, REAL *mean,
                                      REAL *var, REAL *std, int N, int D, double eps)
{
    double *s1 = calloc((size_t)D, sizeof(double)), *s2 = calloc((size_t)D, sizeof(double));
    if (!s1 || !s2) { free(s1); free(s2); return -1; }
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < D; ++j) {
            const double d = (double)x[(ptrdiff_t)i * D + j] - (double)x[j];
            s1[j] += d;
            s2[j] += d * d;
        }
    for (int j = 0; j < D; ++j) {
        const double m = s1[j] / N, v = s2[j] / N - m * m;
        mean[j] = (REAL)((double)x[j] + m);
        var[j] = (REAL)(v > 0 ? v : 0);
        std[j] = (REAL)sqrt((v > 0 ? v : 0) + eps);
    }
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < D; ++j) {
            const ptrdiff_t e = (ptrdiff_t)i * D + j;
            xn[e] = (x[e] - mean[j]) / std[j];
            out[e] = gamma[j] * xn[e] + beta[j];
        }
    free(s1);
    free(s2);
    return 0;
}

/* Inference: out = gamma (x - mean) / sqrt(var + eps) + beta, with the running statistics. */
FASTBP_SIMD void FN(batchnorm_infer)(const REAL *x, const REAL *gamma, const REAL *beta, const REAL *mean,
                                     const REAL *var, REAL *out, int N, int D, double eps)
{
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < D; ++j) {
            const ptrdiff_t e = (ptrdiff_t)i * D + j;
            out[e] = gamma[j] * ((x[e] - mean[j]) / SQRT(var[j] + (REAL)eps)) + beta[j];
        }
}

/* dbeta = column sums of dout, dgamma = column sums of xn dout, and
 * dx = gamma / std (dout - dbeta / N - xn dgamma / N): the book's chain of steps, simplified. */
FASTBP_SIMD void FN(batchnorm_backward)(const REAL *dout, const REAL *xn, const REAL *std, const REAL *gamma, REAL *dx,
                                        REAL *dgamma, REAL *dbeta, int N, int D)
{
    for (int j = 0; j < D; ++j) dgamma[j] = dbeta[j] = 0;
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < D; ++j) {
            const ptrdiff_t e = (ptrdiff_t)i * D + j;
            dbeta[j] += dout[e];
            dgamma[j] += xn[e] * dout[e];
        }
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < D; ++j) {
            const ptrdiff_t e = (ptrdiff_t)i * D + j;
            dx[e] = gamma[j] / std[j] * (dout[e] - dbeta[j] / N - xn[e] * dgamma[j] / N);
        }
}
