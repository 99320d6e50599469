/* Convolution and max pooling for one floating type (each_real.h). Same sums as
 * fastbp/backends/reference.py (im2col and a product), window by window. */

/* The windows of one sample x (C, H, W) as colT (C FH FW, OH OW): row (c, fy, fx), column
 * (oy, ox), zero where a window reaches into the padding. */
static void FN(im2col_t)(const REAL *x, int C, int H, int W, int FH, int FW, int stride, int pad, int OH, int OW,
                         REAL *col)
{
    for (int c = 0; c < C; ++c)
        for (int fy = 0; fy < FH; ++fy)
            for (int fx = 0; fx < FW; ++fx) {
                REAL *row = col + ((ptrdiff_t)(c * FH + fy) * FW + fx) * OH * OW;
                for (int oy = 0; oy < OH; ++oy) {
                    const int iy = oy * stride - pad + fy;
                    REAL *o = row + (ptrdiff_t)oy * OW;
                    if (iy < 0 || iy >= H) {
                        for (int ox = 0; ox < OW; ++ox) o[ox] = 0;
                        continue;
                    }
                    const REAL *in = x + ((ptrdiff_t)c * H + iy) * W;
                    for (int ox = 0; ox < OW; ++ox) {
                        const int ix = ox * stride - pad + fx;
                        o[ox] = ix >= 0 && ix < W ? in[ix] : 0;
                    }
                }
            }
}

/* The transpose of im2col_t: each colT entry added into the sample's dx (C, H, W), zeroed first. */
static void FN(col2im_t)(const REAL *col, int C, int H, int W, int FH, int FW, int stride, int pad, int OH, int OW,
                         REAL *dx)
{
    memset(dx, 0, sizeof(REAL) * (size_t)C * H * W);
    for (int c = 0; c < C; ++c)
        for (int fy = 0; fy < FH; ++fy)
            for (int fx = 0; fx < FW; ++fx) {
                const REAL *row = col + ((ptrdiff_t)(c * FH + fy) * FW + fx) * OH * OW;
                for (int oy = 0; oy < OH; ++oy) {
                    const int iy = oy * stride - pad + fy;
                    if (iy < 0 || iy >= H) continue;
                    REAL *out = dx + ((ptrdiff_t)c * H + iy) * W;
                    for (int ox = 0; ox < OW; ++ox) {
                        const int ix = ox * stride - pad + fx;
                        if (ix >= 0 && ix < W) out[ix] += row[(ptrdiff_t)oy * OW + ox];
                    }
                }
            }
}

/* out (N, F, OH, OW) = the filters W (F, C, FH, FW) over x (N, C, H, W), plus b. Returns -1 when
 * out of memory. */
int FN(conv_forward)(const REAL *x, const REAL *Wt, const REAL *b, REAL *out, int N, int C, int H, int W, int F,
                     int FH, int FW, int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW, area = (ptrdiff_t)OH * OW;
    int failed = 0;
#pragma omp parallel if ((ptrdiff_t)N * F * area * ck >= parallel_min)
    {
        REAL *col = malloc(sizeof(REAL) * (size_t)(ck * area));
        if (!col) failed = 1;
#pragma omp for schedule(static)
        for (int n = 0; n < N; ++n) {
            if (!col) continue;
            REAL *o = out + (ptrdiff_t)n * F * area;
            FN(im2col_t)(x + (ptrdiff_t)n * C * H * W, C, H, W, FH, FW, stride, pad, OH, OW, col);
            FN(dense_times)(Wt, F, (int)ck, col, NULL, o, (int)area); /* (F, ck) times (ck, area) */
            for (int f = 0; f < F; ++f)
                for (ptrdiff_t e = 0; e < area; ++e) o[f * area + e] += b[f];
        }
        free(col);
    }
    return failed ? -1 : 0;
}

/* dW = sum over samples of dout_n colT_n^T, db = sums of dout per filter, dx (when not NULL) =
 * col2im of W^T dout_n. Each thread sums its samples' dW and db, then the threads' sums are added
 * in thread order. Returns -1 when out of memory. */
int FN(conv_backward)(const REAL *dout, const REAL *x, const REAL *Wt, REAL *dx, REAL *dW, REAL *db, int N, int C,
                      int H, int W, int F, int FH, int FW, int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW, area = (ptrdiff_t)OH * OW;
    const int threads = (ptrdiff_t)N * F * area * ck >= parallel_min ? FASTBP_MAX_THREADS() : 1;
    REAL *sums = calloc((size_t)threads * (size_t)(F * ck + F), sizeof(REAL)); /* each thread's dW, then db */
    REAL *WT = malloc(sizeof(REAL) * (size_t)(ck * F));
    int failed = !sums || !WT;
    if (!failed)
        for (int f = 0; f < F; ++f)
            for (ptrdiff_t e = 0; e < ck; ++e) WT[e * F + f] = Wt[f * ck + e];
#pragma omp parallel num_threads(threads) if (!failed)
    {
        const int t = FASTBP_THREAD_NUM();
        REAL *col = malloc(sizeof(REAL) * (size_t)(ck * area)), *part = malloc(sizeof(REAL) * (size_t)(F * ck));
        REAL *my_dW = sums ? sums + (ptrdiff_t)t * (F * ck + F) : NULL, *my_db = my_dW ? my_dW + F * ck : NULL;
        if (!col || !part) failed = 1;
#pragma omp for schedule(static)
        for (int n = 0; n < N; ++n) {
            if (!col || !part || failed) continue;
            const REAL *d = dout + (ptrdiff_t)n * F * area;
            FN(im2col_t)(x + (ptrdiff_t)n * C * H * W, C, H, W, FH, FW, stride, pad, OH, OW, col);
            FN(times_transposed)(d, F, (int)area, col, (int)ck, part); /* (F, area) times (area, ck) */
            for (ptrdiff_t e = 0; e < F * ck; ++e) my_dW[e] += part[e];
            for (int f = 0; f < F; ++f)
                for (ptrdiff_t e = 0; e < area; ++e) my_db[f] += d[f * area + e];
            if (dx) {
                FN(dense_times)(WT, (int)ck, F, d, NULL, col, (int)area); /* (ck, F) times (F, area) */
                FN(col2im_t)(col, C, H, W, FH, FW, stride, pad, OH, OW, dx + (ptrdiff_t)n * C * H * W);
            }
        }
        free(col);
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
    free(WT);
    return failed ? -1 : 0;
}

/* Max pooling: out (N, C, OH, OW) the maximum of each window (padding counting as 0), and
 * arg_max the place of its first maximum within the window (row-major; NaN wins, the first one,
 * as np.argmax), in the book's order (n, oy, ox, c). */
void FN(pool_forward)(const REAL *x, REAL *out, int64_t *arg_max, int N, int C, int H, int W, int PH, int PW, int stride,
                      int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR((ptrdiff_t)N * C * OH * OW * PH * PW >= parallel_min)
    for (ptrdiff_t plane = 0; plane < (ptrdiff_t)N * C; ++plane) {
        const int n = (int)(plane / C), c = (int)(plane % C);
        const REAL *in = x + plane * H * W;
        for (int oy = 0; oy < OH; ++oy)
            for (int ox = 0; ox < OW; ++ox) {
                REAL best = 0;
                int64_t at = -1;
                for (int fy = 0; fy < PH; ++fy)
                    for (int fx = 0; fx < PW; ++fx) {
                        const int iy = oy * stride - pad + fy, ix = ox * stride - pad + fx;
                        const REAL v = iy >= 0 && iy < H && ix >= 0 && ix < W ? in[(ptrdiff_t)iy * W + ix] : 0;
                        if (at < 0 || (best == best && (v > best || v != v))) {
                            best = v;
                            at = (int64_t)fy * PW + fx;
                        }
                    }
                out[(plane * OH + oy) * OW + ox] = best;
                arg_max[(((ptrdiff_t)n * OH + oy) * OW + ox) * C + c] = at;
            }
    }
}

/* dx (N, C, H, W): each output's gradient added at its window's first maximum (none into padding). */
void FN(pool_backward)(const REAL *dout, const int64_t *arg_max, REAL *dx, int N, int C, int H, int W, int PH, int PW,
                       int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR((ptrdiff_t)N * C * H * W >= parallel_min)
    for (ptrdiff_t plane = 0; plane < (ptrdiff_t)N * C; ++plane) {
        const int n = (int)(plane / C), c = (int)(plane % C);
        REAL *d = dx + plane * H * W;
        memset(d, 0, sizeof(REAL) * (size_t)H * W);
        for (int oy = 0; oy < OH; ++oy)
            for (int ox = 0; ox < OW; ++ox) {
                const int64_t at = arg_max[(((ptrdiff_t)n * OH + oy) * OW + ox) * C + c];
                const int iy = oy * stride - pad + (int)(at / PW), ix = ox * stride - pad + (int)(at % PW);
                if (at >= 0 && at < (int64_t)PH * PW && iy >= 0 && iy < H && ix >= 0 && ix < W)
                    d[(ptrdiff_t)iy * W + ix] += dout[(plane * OH + oy) * OW + ox];
            }
    }
}
