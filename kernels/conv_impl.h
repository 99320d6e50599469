/* Convolution and max pooling for one floating type (each_real.h). Same sums as
 * fastbp/backends/reference.py (im2col and a product), one sample at a time. */

/* The windows of one sample x (C, H, W) as the rows of col (OH OW, C FH FW): row (oy, ox), column
 * (c, fy, fx), zero where a window reaches into the padding (the book's im2col, one sample). */
static void FN(im2col)(const REAL *x, int C, int H, int W, int FH, int FW, int stride, int pad, int OH, int OW, REAL *col)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW;
    for (int oy = 0; oy < OH; ++oy)
        for (int ox = 0; ox < OW; ++ox) {
            REAL *row = col + ((ptrdiff_t)oy * OW + ox) * ck;
            for (int c = 0; c < C; ++c)
                for (int fy = 0; fy < FH; ++fy) {
                    const int iy = oy * stride - pad + fy;
                    REAL *o = row + ((ptrdiff_t)c * FH + fy) * FW;
                    if (iy < 0 || iy >= H) {
                        for (int fx = 0; fx < FW; ++fx) o[fx] = 0;
                        continue;
                    }
                    const REAL *in = x + ((ptrdiff_t)c * H + iy) * W;
                    for (int fx = 0; fx < FW; ++fx) {
                        const int ix = ox * stride - pad + fx;
                        o[fx] = ix >= 0 && ix < W ? in[ix] : 0;
                    }
                }
        }
}

/* The transpose of im2col: each col entry added into the sample's dx (C, H, W), zeroed first. */
static void FN(col2im)(const REAL *col, int C, int H, int W, int FH, int FW, int stride, int pad, int OH, int OW, REAL *dx)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW;
    memset(dx, 0, sizeof(REAL) * (size_t)C * H * W);
    for (int oy = 0; oy < OH; ++oy)
        for (int ox = 0; ox < OW; ++ox) {
            const REAL *row = col + ((ptrdiff_t)oy * OW + ox) * ck;
            for (int c = 0; c < C; ++c)
                for (int fy = 0; fy < FH; ++fy) {
                    const int iy = oy * stride - pad + fy;
                    if (iy < 0 || iy >= H) continue;
                    REAL *out = dx + ((ptrdiff_t)c * H + iy) * W;
                    const REAL *r = row + ((ptrdiff_t)c * FH + fy) * FW;
                    for (int fx = 0; fx < FW; ++fx) {
                        const int ix = ox * stride - pad + fx;
                        if (ix >= 0 && ix < W) out[ix] += r[fx];
                    }
                }
        }
}

/* b (rows, cols) = a^T for a (cols, rows) */
static void FN(transposed)(const REAL *a, int rows, int cols, REAL *b)
{
    for (int i = 0; i < cols; ++i)
        for (int j = 0; j < rows; ++j) b[(ptrdiff_t)j * cols + i] = a[(ptrdiff_t)i * rows + j];
}

/* out (N, F, OH, OW) = the filters W (F, C, FH, FW) over x (N, C, H, W), plus b: per sample,
 * out_n^T (OH OW, F) = col_n WT, WT = W^T (C FH FW, F) staying in the first-level cache while
 * the window rows stream past; then transposed into place. Returns -1 when out of memory. */
int FN(conv_forward)(const REAL *x, const REAL *Wt, const REAL *b, REAL *out, int N, int C, int H, int W, int F,
                     int FH, int FW, int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW, area = (ptrdiff_t)OH * OW;
    REAL *WT = malloc(sizeof(REAL) * (size_t)(ck * F));
    int failed = !WT;
    if (WT) FN(transposed)(Wt, (int)ck, F, WT);
#pragma omp parallel if ((ptrdiff_t)N * F * area * ck >= parallel_min && !failed)
    {
        REAL *col = malloc(sizeof(REAL) * (size_t)(ck * area)), *o_t = malloc(sizeof(REAL) * (size_t)(area * F));
        if (!col || !o_t) failed = 1;
#pragma omp for schedule(static)
        for (int n = 0; n < N; ++n) {
            if (!col || !o_t || !WT) continue;
            FN(im2col)(x + (ptrdiff_t)n * C * H * W, C, H, W, FH, FW, stride, pad, OH, OW, col);
            FN(dense_times)(col, (int)area, (int)ck, WT, b, o_t, F); /* bias added in the registers */
            FN(transposed)(o_t, F, (int)area, out + (ptrdiff_t)n * F * area);
        }
        free(col);
        free(o_t);
    }
    free(WT);
    return failed ? -1 : 0;
}

/* dW = sum over samples of dout_n col_n, db = sums of dout per filter, dx (when not NULL) =
 * col2im of dout_n^T W. Each thread sums its samples' dW and db, then the threads' sums are added
 * in thread order. Returns -1 when out of memory. */
int FN(conv_backward)(const REAL *dout, const REAL *x, const REAL *Wt, REAL *dx, REAL *dW, REAL *db, int N, int C,
                      int H, int W, int F, int FH, int FW, int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW, area = (ptrdiff_t)OH * OW;
    const int threads = (ptrdiff_t)N * F * area * ck >= parallel_min ? FASTBP_MAX_THREADS() : 1;
    REAL *sums = calloc((size_t)threads * (size_t)(F * ck + F), sizeof(REAL)); /* each thread's dW, then db */
    int failed = !sums;
#pragma omp parallel num_threads(threads) if (!failed)
    {
        const int t = FASTBP_THREAD_NUM();
        REAL *col = malloc(sizeof(REAL) * (size_t)(ck * area)), *d_t = malloc(sizeof(REAL) * (size_t)(area * F));
        REAL *part = malloc(sizeof(REAL) * (size_t)(F * ck));
        REAL *my_dW = sums ? sums + (ptrdiff_t)t * (F * ck + F) : NULL, *my_db = my_dW ? my_dW + F * ck : NULL;
        if (!col || !d_t || !part) failed = 1;
#pragma omp for schedule(static)
        for (int n = 0; n < N; ++n) {
            if (!col || !d_t || !part || failed) continue;
            const REAL *d = dout + (ptrdiff_t)n * F * area;
            FN(im2col)(x + (ptrdiff_t)n * C * H * W, C, H, W, FH, FW, stride, pad, OH, OW, col);
            FN(dense_times)(d, F, (int)area, col, NULL, part, (int)ck); /* dout_n col_n */
            for (ptrdiff_t e = 0; e < F * ck; ++e) my_dW[e] += part[e];
            for (int f = 0; f < F; ++f)
                for (ptrdiff_t e = 0; e < area; ++e) my_db[f] += d[f * area + e];
            if (dx) {
                FN(transposed)(d, (int)area, F, d_t);
                FN(dense_times)(d_t, (int)area, F, Wt, NULL, col, (int)ck); /* dcol = dout_n^T W */
                FN(col2im)(col, C, H, W, FH, FW, stride, pad, OH, OW, dx + (ptrdiff_t)n * C * H * W);
            }
        }
        free(col);
        free(d_t);
        free(part);
    }
    if (!failed) {
        memset(dW, 0, sizeof(REAL) * (size_t)(F * ck));
        memset(db, 0, sizeof(REAL) * (size_t)F);
        for (int t = 0; t < threads; ++t) {
            const REAL *s = sums + (ptrdiff_t)t * (F * ck + F);
            for (ptrdiff_t e = 0; e < F * ck; ++e) dW[e] += s[e];
            for (int f = 0; f < F; ++f) db[f] += s[F * ck + f];
        }
    }
    free(sums);
    return failed ? -1 : 0;
}

/* Max pooling: out (N, C, OH, OW) the maximum of each window (padding counting as 0), and
 * arg_max (N, C, OH, OW) the place of its first maximum within the window (row-major; NaN wins,
 * the first one, as np.argmax). */
void FN(pool_forward)(const REAL *x, REAL *out, int64_t *arg_max, int N, int C, int H, int W, int PH, int PW, int stride,
                      int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR((ptrdiff_t)N * C * OH * OW * PH * PW >= parallel_min / FASTBP_POOL_WORK)
    for (ptrdiff_t plane = 0; plane < (ptrdiff_t)N * C; ++plane) {
        const REAL *in = x + plane * H * W;
        for (int oy = 0; oy < OH; ++oy)
            for (int ox = 0; ox < OW; ++ox) {
                const int y0 = oy * stride - pad, x0 = ox * stride - pad;
                const int inside = y0 >= 0 && x0 >= 0 && y0 + PH <= H && x0 + PW <= W; /* no padding in reach */
                REAL best = 0;
                int64_t at = 0;
                for (int fy = 0; fy < PH; ++fy)
                    for (int fx = 0; fx < PW; ++fx) {
                        const int iy = y0 + fy, ix = x0 + fx;
                        const REAL v = inside || (iy >= 0 && iy < H && ix >= 0 && ix < W) ? in[(ptrdiff_t)iy * W + ix] : 0;
                        const int q = fy * PW + fx;
                        /* the first maximum, or the first NaN (np.argmax's rule), without a branch */
                        const int take = q == 0 || v > best || (v != v && best == best);
                        best = take ? v : best;
                        at = take ? q : at;
                    }
                out[(plane * OH + oy) * OW + ox] = best;
                arg_max[(plane * OH + oy) * OW + ox] = at;
            }
    }
}

/* dx (N, C, H, W): each output's gradient added at its window's first maximum (none into padding). */
void FN(pool_backward)(const REAL *dout, const int64_t *arg_max, REAL *dx, int N, int C, int H, int W, int PH, int PW,
                       int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR((ptrdiff_t)N * C * H * W >= parallel_min / FASTBP_POOL_WORK)
    for (ptrdiff_t plane = 0; plane < (ptrdiff_t)N * C; ++plane) {
        REAL *d = dx + plane * H * W;
        memset(d, 0, sizeof(REAL) * (size_t)H * W);
        for (int oy = 0; oy < OH; ++oy)
            for (int ox = 0; ox < OW; ++ox) {
                const int64_t at = arg_max[(plane * OH + oy) * OW + ox];
                const int iy = oy * stride - pad + (int)(at / PW), ix = ox * stride - pad + (int)(at % PW);
                if (at >= 0 && at < (int64_t)PH * PW && iy >= 0 && iy < H && ix >= 0 && ix < W)
                    d[(ptrdiff_t)iy * W + ix] += dout[(plane * OH + oy) * OW + ox];
            }
    }
}
