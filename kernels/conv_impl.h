/* Convolution and max pooling for one floating type (each_real.h). Same sums as
 * fastbp/backends/reference.py (im2col and a product, here its transpose), one sample at a time. */

/* The range [lo, hi) of outputs ox whose input column ox * stride - pad + f lies in [0, size). */
static void FN(inside)(int size, int f, int stride, int pad, int n_out, int *lo, int *hi)
{
    const int first = pad - f; /* ox * stride >= first */
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    const int top = size - 1 + pad - f; /* ox * stride <= top */
    *hi = top < 0 ? 0 : top / stride + 1;
    if (*lo > n_out) *lo = n_out;
    if (*hi > n_out) *hi = n_out;
    if (*hi < *lo) *hi = *lo;
}

/* The windows of one sample x (C, H, W) as the columns of rows (C FH FW, OH OW): row (c, fy, fx)
 * holds, for every output (oy, ox), the input its window reads at (c, fy, fx), zero in the
 * padding: the book's im2col, transposed, so that each row is made of runs of the input rows
 * (whole copies at stride 1) and the product filters x rows gives the output in its own layout. */
static void FN(im2row)(const REAL *x, int C, int H, int W, int FH, int FW, int stride, int pad, int OH, int OW, REAL *rows)
{
    const ptrdiff_t area = (ptrdiff_t)OH * OW;
    for (int c = 0; c < C; ++c)
        for (int fy = 0; fy < FH; ++fy)
            for (int fx = 0; fx < FW; ++fx) {
                REAL *row = rows + ((ptrdiff_t)(c * FH + fy) * FW + fx) * area;
                int lo, hi;
                FN(inside)(W, fx, stride, pad, OW, &lo, &hi);
                for (int oy = 0; oy < OH; ++oy) {
                    REAL *o = row + (ptrdiff_t)oy * OW;
                    const int iy = oy * stride - pad + fy;
                    if (iy < 0 || iy >= H) {
                        memset(o, 0, sizeof(REAL) * (size_t)OW);
                        continue;
                    }
                    const REAL *in = x + ((ptrdiff_t)c * H + iy) * W - pad + fx; /* in[ox * stride] */
                    for (int ox = 0; ox < lo; ++ox) o[ox] = 0;
                    if (stride == 1) memcpy(o + lo, in + lo, sizeof(REAL) * (size_t)(hi - lo));
                    else
                        for (int ox = lo; ox < hi; ++ox) o[ox] = in[(ptrdiff_t)ox * stride];
                    for (int ox = hi; ox < OW; ++ox) o[ox] = 0;
                }
            }
}

/* The transpose of im2row: each entry of rows added into the sample's dx (C, H, W), zeroed first. */
static void FN(row2im)(const REAL *rows, int C, int H, int W, int FH, int FW, int stride, int pad, int OH, int OW, REAL *dx)
{
    const ptrdiff_t area = (ptrdiff_t)OH * OW;
    memset(dx, 0, sizeof(REAL) * (size_t)C * H * W);
    for (int c = 0; c < C; ++c)
        for (int fy = 0; fy < FH; ++fy)
            for (int fx = 0; fx < FW; ++fx) {
                const REAL *row = rows + ((ptrdiff_t)(c * FH + fy) * FW + fx) * area;
                int lo, hi;
                FN(inside)(W, fx, stride, pad, OW, &lo, &hi);
                for (int oy = 0; oy < OH; ++oy) {
                    const int iy = oy * stride - pad + fy;
                    if (iy < 0 || iy >= H) continue;
                    REAL *out = dx + ((ptrdiff_t)c * H + iy) * W - pad + fx; /* out[ox * stride] */
                    const REAL *r = row + (ptrdiff_t)oy * OW;
                    for (int ox = lo; ox < hi; ++ox) out[(ptrdiff_t)ox * stride] += r[ox];
                }
            }
}

/* The sum of a[0, n) in 8 interleaved partial sums (one vector's lanes: no chain of dependent
 * additions), added at the end. */
FASTBP_SIMD static REAL FN(lane_sum)(const REAL *a, ptrdiff_t n)
{
    REAL part[8] = {0};
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int q = 0; q < 8; ++q) part[q] += a[i + q];
    REAL sum = 0;
    for (; i < n; ++i) sum += a[i];
    for (int q = 0; q < 8; ++q) sum += part[q];
    return sum;
}

/* b (rows, cols) = a^T for a (cols, rows) */
static void FN(transposed)(const REAL *a, int rows, int cols, REAL *b)
{
    for (int i = 0; i < cols; ++i)
        for (int j = 0; j < rows; ++j) b[(ptrdiff_t)j * cols + i] = a[(ptrdiff_t)i * rows + j];
}

/* out (N, F, OH, OW) = the filters W (F, C, FH, FW) over x (N, C, H, W), plus b: per sample,
 * out_n (F, OH OW) = W (F, C FH FW) rows_n, rows_n the sample's windows (im2row), in register
 * tiles (tiles_times). Returns -1 when out of memory. */
int FN(conv_forward)(const REAL *x, const REAL *Wt, const REAL *b, REAL *out, int N, int C, int H, int W, int F,
                     int FH, int FW, int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW, area = (ptrdiff_t)OH * OW;
    int failed = 0;
#pragma omp parallel if ((ptrdiff_t)N * F * area * ck >= parallel_min)
    {
        REAL *rows = malloc(sizeof(REAL) * (size_t)(ck * area));
        if (!rows) failed = 1;
#pragma omp for schedule(static)
        for (int n = 0; n < N; ++n) {
            if (!rows) continue;
            FN(im2row)(x + (ptrdiff_t)n * C * H * W, C, H, W, FH, FW, stride, pad, OH, OW, rows);
            FN(tiles_times)(Wt, F, (int)ck, rows, (int)area, b, out + (ptrdiff_t)n * F * area);
        }
        free(rows);
    }
    return failed ? -1 : 0;
}

/* dW = sum over samples of dout_n rows_n^T, db = sums of dout per filter, dx (when not NULL) =
 * row2im of W^T dout_n. Each thread sums its samples' dW and db, then the threads' sums are added
 * in thread order. Returns -1 when out of memory. */
int FN(conv_backward)(const REAL *dout, const REAL *x, const REAL *Wt, REAL *dx, REAL *dW, REAL *db, int N, int C,
                      int H, int W, int F, int FH, int FW, int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW, area = (ptrdiff_t)OH * OW;
    const int threads = (ptrdiff_t)N * F * area * ck >= parallel_min ? FASTBP_MAX_THREADS() : 1;
    REAL *sums = calloc((size_t)threads * (size_t)(F * ck + F), sizeof(REAL)); /* each thread's dW, then db */
    REAL *WT = dx ? malloc(sizeof(REAL) * (size_t)(ck * F)) : NULL; /* W^T (C FH FW, F) */
    int failed = !sums || (dx && !WT);
    if (WT) FN(transposed)(Wt, (int)ck, F, WT);
#pragma omp parallel num_threads(threads) if (!failed)
    {
        const int t = FASTBP_THREAD_NUM();
        REAL *rows = malloc(sizeof(REAL) * (size_t)(ck * area)), *part = malloc(sizeof(REAL) * (size_t)(F * ck));
        REAL *my_dW = sums ? sums + (ptrdiff_t)t * (F * ck + F) : NULL, *my_db = my_dW ? my_dW + F * ck : NULL;
        if (!rows || !part) failed = 1;
#pragma omp for schedule(static)
        for (int n = 0; n < N; ++n) {
            if (!rows || !part || failed) continue;
            const REAL *d = dout + (ptrdiff_t)n * F * area;
            FN(im2row)(x + (ptrdiff_t)n * C * H * W, C, H, W, FH, FW, stride, pad, OH, OW, rows);
            FN(times_transposed)(d, F, (int)area, rows, (int)ck, part); /* dout_n rows_n^T */
            for (ptrdiff_t e = 0; e < F * ck; ++e) my_dW[e] += part[e];
            for (int f = 0; f < F; ++f) my_db[f] += FN(lane_sum)(d + f * area, area);
            if (dx) {
                FN(tiles_times)(WT, (int)ck, F, d, (int)area, NULL, rows); /* W^T dout_n, in the rows' layout */
                FN(row2im)(rows, C, H, W, FH, FW, stride, pad, OH, OW, dx + (ptrdiff_t)n * C * H * W);
            }
        }
        free(rows);
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

/* The first maximum of a window of rows x cols read at p (rows W apart), NaN winning as in
 * np.argmax (the first NaN); *at its place, row-major. Inlined with constant sizes for 2 x 2. */
static inline __attribute__((always_inline)) REAL FN(window_max)(const REAL *p, int W, int rows, int cols, int64_t *at)
{
    REAL best = p[0];
    int64_t where = 0;
    for (int fy = 0; fy < rows; ++fy)
        for (int fx = fy == 0; fx < cols; ++fx) {
            const REAL v = p[(ptrdiff_t)fy * W + fx];
            if (v > best || (v != v && best == best)) {
                best = v;
                where = fy * cols + fx;
            }
        }
    *at = where;
    return best;
}

/* Max pooling: out (N, C, OH, OW) the maximum of each window (padding counting as 0), and
 * arg_max (N, C, OH, OW) the place of its first maximum within the window (row-major; NaN wins,
 * the first one, as np.argmax). Windows inside the input read it directly (2 x 2 ones with the
 * sizes known to the compiler); only those reaching into the padding check each place. */
void FN(pool_forward)(const REAL *x, REAL *out, int64_t *arg_max, int N, int C, int H, int W, int PH, int PW, int stride,
                      int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR((ptrdiff_t)N * C * OH * OW * PH * PW >= parallel_min / FASTBP_POOL_WORK)
    for (ptrdiff_t plane = 0; plane < (ptrdiff_t)N * C; ++plane) {
        const REAL *in = x + plane * H * W;
        REAL *o = out + plane * OH * OW;
        int64_t *arg = arg_max + plane * OH * OW;
        for (int oy = 0; oy < OH; ++oy)
            for (int ox = 0; ox < OW; ++ox) {
                const int y0 = oy * stride - pad, x0 = ox * stride - pad, q = oy * OW + ox;
                if (y0 >= 0 && x0 >= 0 && y0 + PH <= H && x0 + PW <= W) { /* no padding in reach */
                    const REAL *p = in + (ptrdiff_t)y0 * W + x0;
                    o[q] = PH == 2 && PW == 2 ? FN(window_max)(p, W, 2, 2, &arg[q]) : FN(window_max)(p, W, PH, PW, &arg[q]);
                    continue;
                }
                REAL best = 0;
                int64_t at = 0;
                for (int fy = 0; fy < PH; ++fy)
                    for (int fx = 0; fx < PW; ++fx) {
                        const int iy = y0 + fy, ix = x0 + fx;
                        const REAL v = iy >= 0 && iy < H && ix >= 0 && ix < W ? in[(ptrdiff_t)iy * W + ix] : 0;
                        const int place = fy * PW + fx;
                        if (place == 0 || v > best || (v != v && best == best)) {
                            best = v;
                            at = place;
                        }
                    }
                o[q] = best;
                arg[q] = at;
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
