/* Batch normalization for one floating type (each_real.h); the math of fastbp/backends/reference.py. */

/* Training: mean and (biased) variance of each column, xn = (x - mean) / std, out = gamma xn + beta,
 * std = sqrt(var + eps). The sums are taken of x minus its first row, so that a large mean does
 * not cancel the variance away. Returns -1 when out of memory. */
FASTBP_SIMD int FN(batchnorm_forward)(const REAL *x, const REAL *gamma, const REAL *beta, REAL *out, REAL *xn, REAL *mean,
                                      REAL *var, REAL *std, int N, int D, double eps)
{
    double *s1 = calloc((size_t)D * 2, sizeof(double)), *s2 = s1 + D;
    REAL *inv = malloc(sizeof(REAL) * (size_t)D);
    if (!s1 || !inv) { free(s1); free(inv); return -1; }
    for (int i = 0; i < N; ++i) {
        const REAL *xi = x + (ptrdiff_t)i * D;
        for (int j = 0; j < D; ++j) {
            const double d = (double)xi[j] - (double)x[j];
            s1[j] += d;
            s2[j] += d * d;
        }
    }
    for (int j = 0; j < D; ++j) {
        const double m = s1[j] / N, v = s2[j] / N - m * m, clamped = v > 0 ? v : 0;
        mean[j] = (REAL)((double)x[j] + m);
        var[j] = (REAL)clamped;
        std[j] = (REAL)sqrt(clamped + eps);
        inv[j] = (REAL)1 / std[j]; /* one division a column; the rows multiply */
    }
    for (int i = 0; i < N; ++i) {
        const REAL *xi = x + (ptrdiff_t)i * D;
        REAL *ni = xn + (ptrdiff_t)i * D, *oi = out + (ptrdiff_t)i * D;
        for (int j = 0; j < D; ++j) {
            ni[j] = (xi[j] - mean[j]) * inv[j];
            oi[j] = gamma[j] * ni[j] + beta[j];
        }
    }
    free(s1);
    free(inv);
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
FASTBP_SIMD int FN(batchnorm_backward)(const REAL *dout, const REAL *xn, const REAL *std, const REAL *gamma, REAL *dx,
                                       REAL *dgamma, REAL *dbeta, int N, int D)
{
    REAL *scale = malloc(sizeof(REAL) * (size_t)D * 3), *mean_db = scale + D, *mean_dg = scale + 2 * (ptrdiff_t)D;
    if (!scale) return -1;
    for (int j = 0; j < D; ++j) dgamma[j] = dbeta[j] = 0;
    for (int i = 0; i < N; ++i) {
        const REAL *di = dout + (ptrdiff_t)i * D, *ni = xn + (ptrdiff_t)i * D;
        for (int j = 0; j < D; ++j) {
            dbeta[j] += di[j];
            dgamma[j] += ni[j] * di[j];
        }
    }
    for (int j = 0; j < D; ++j) { /* the divisions once a column */
        scale[j] = gamma[j] / std[j];
        mean_db[j] = dbeta[j] / N;
        mean_dg[j] = dgamma[j] / N;
    }
    for (int i = 0; i < N; ++i) {
        const REAL *di = dout + (ptrdiff_t)i * D, *ni = xn + (ptrdiff_t)i * D;
        REAL *o = dx + (ptrdiff_t)i * D;
        for (int j = 0; j < D; ++j) o[j] = scale[j] * (di[j] - mean_db[j] - ni[j] * mean_dg[j]);
    }
    free(scale);
    return 0;
}
