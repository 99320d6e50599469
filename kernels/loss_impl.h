/* Loss layers for one floating type (each_real.h). Same math as fastbp/backends/reference.py. */

/* The row's largest entry, a vector of partial maxima at a time (a ternary per element, in
 * scalar partials, did not vectorize: a tenth of the forward's time at 1000 x 100 float32). A
 * NaN may be left out: it makes its row's softmax NaN all the same. */
static inline REAL FN(row_max)(const REAL *x, int c)
{
    const int lanes = (int)(sizeof(FN(vec)) / sizeof(REAL));
    REAL top = x[0];
    int j = 0;
    if (c >= lanes) {
        FN(vec) part, v;
        memcpy(&part, x, sizeof part);
        for (j = lanes; j + lanes <= c; j += lanes) {
            memcpy(&v, x + j, sizeof v);
            const FN(mask) more = v > part;
            part = (FN(vec))(((FN(mask))v & more) | ((FN(mask))part & ~more));
        }
        for (int q = 0; q < lanes; ++q) top = part[q] > top ? part[q] : top;
    }
    for (; j < c; ++j) top = x[j] > top ? x[j] : top;
    return top;
}

/* The double sum of the row's entries, in FASTBP_LANES partial sums so that the loop vectorizes
 * (a single running sum is a chain the compiler must keep in order). */
static inline double FN(row_sum)(const REAL *x, int c)
{
    double part[FASTBP_LANES] = {0};
    int j = 0;
    for (; j + FASTBP_LANES <= c; j += FASTBP_LANES)
        for (int q = 0; q < FASTBP_LANES; ++q) part[q] += (double)x[j + q];
    for (; j < c; ++j) part[0] += (double)x[j];
    double total = 0;
    for (int q = 0; q < FASTBP_LANES; ++q) total += part[q];
    return total;
}

/* Rows [i0, i1) of softmax_xent_forward, at most SOFTMAX_BLOCK_ROWS of them: their maxima, the
 * shifted entries, then exp over the block's entries in one loop (row by row, a 10-class row was a
 * vector and a tail of exp's polynomial: 100 x 10 float32 3.4 us, 2.7 this way; 1000 x 100 84 ->
 * 61 us), then each row's sum and scale. The same operations as row by row, so the same results.
 * Returns the block's sum of -log y[label]. Always inlined: each clone of the caller then has its
 * own (called, it was compiled once, for the baseline: float64 5x slower). */
#define SOFTMAX_BLOCK_ROWS 64
static inline __attribute__((always_inline)) double FN(softmax_block)(const REAL *restrict x, const int64_t *labels, REAL *restrict y, int i0, int i1,
                                       int c)
{
    REAL top[SOFTMAX_BLOCK_ROWS];
    for (int i = i0; i < i1; ++i) {
        const REAL *xi = x + (ptrdiff_t)i * c;
        REAL *yi = y + (ptrdiff_t)i * c;
        top[i - i0] = FN(row_max)(xi, c);
        for (int j = 0; j < c; ++j) yi[j] = xi[j] - top[i - i0];
    }
    REAL *yb = y + (ptrdiff_t)i0 * c;
    for (ptrdiff_t e = 0; e < (ptrdiff_t)(i1 - i0) * c; ++e) yb[e] = EXP(yb[e]);
    double loss = 0;
    for (int i = i0; i < i1; ++i) {
        REAL *yi = y + (ptrdiff_t)i * c;
        const double total = FN(row_sum)(yi, c);
        const REAL scale = (REAL)(1.0 / total);
        for (int j = 0; j < c; ++j) yi[j] *= scale;
        loss += log(total) - (double)(x[(ptrdiff_t)i * c + labels[i]] - top[i - i0]);
    }
    return loss;
}

/* y = softmax(x) for rows [i0, i1) (shifted by the row maximum); returns their sum of -log
 * y[label]. Rows of fewer than SOFTMAX_BLOCK_BELOW classes in blocks of at most 4096 entries (in
 * the first-level cache); longer rows one at a time, exp straight from x (the blocks' extra pass
 * over the entries made 256 x 1024 float64 1.2x slower). Written once, compiled into each caller. */
#define SOFTMAX_BLOCK_BELOW 512
static inline __attribute__((always_inline)) double FN(softmax_rows)(const REAL *x, const int64_t *labels, REAL *y,
                                                                    int i0, int i1, int c)
{
    double loss = 0;
    if (c < SOFTMAX_BLOCK_BELOW) {
        const int rows = 4096 / c < SOFTMAX_BLOCK_ROWS ? 4096 / c : SOFTMAX_BLOCK_ROWS;
        for (int b = i0; b < i1; b += rows) loss += FN(softmax_block)(x, labels, y, b, b + rows < i1 ? b + rows : i1, c);
        return loss;
    }
    for (int i = i0; i < i1; ++i) {
        const REAL *restrict xi = x + (ptrdiff_t)i * c;
        REAL *restrict yi = y + (ptrdiff_t)i * c;
        const REAL top = FN(row_max)(xi, c);
        for (int j = 0; j < c; ++j) yi[j] = EXP(xi[j] - top);
        const double total = FN(row_sum)(yi, c);
        const REAL scale = (REAL)(1.0 / total);
        for (int j = 0; j < c; ++j) yi[j] *= scale;
        loss += log(total) - (double)(xi[labels[i]] - top);
    }
    return loss;
}

/* The rows' loop compiled for AVX2 + FMA beside the baseline, and, for large inputs, for
 * AVX-512: exp's polynomial on 16 floats (8 doubles) at a time (1000 x 100 float64 189 -> 118 us
 * on a Xeon, 212 -> 159 on the AMD machine); small ones stay in AVX2, where one AVX-512 call a
 * step (its clock and warm-up) made the book's batch-1 step 3 us (6%) slower on the Xeon. Each
 * thread calls one of them for its rows: a loop inside an OpenMP region is compiled apart from
 * its function, for the baseline (exp 5x slower threaded than on one thread). */
FASTBP_SIMD static double FN(softmax_rows_simd)(const REAL *x, const int64_t *labels, REAL *y, int i0, int i1, int c)
{
    return FN(softmax_rows)(x, labels, y, i0, i1, c);
}

#ifdef FASTBP_AVX512
FASTBP_AVX512 static double FN(softmax_rows_wide)(const REAL *x, const int64_t *labels, REAL *y, int i0, int i1, int c)
{
    return FN(softmax_rows)(x, labels, y, i0, i1, c);
}
#endif

static double FN(softmax_rows_best)(int wide, const REAL *x, const int64_t *labels, REAL *y, int i0, int i1, int c)
{
#ifdef FASTBP_AVX512
    if (wide) return FN(softmax_rows_wide)(x, labels, y, i0, i1, c);
#endif
    (void)wide;
    return FN(softmax_rows_simd)(x, labels, y, i0, i1, c);
}

/* y = softmax(x) row by row; returns the mean of -log y[label]. */
double FN(softmax_xent_forward)(const REAL *x, const int64_t *labels, REAL *y, int n, int c, ptrdiff_t parallel_min)
{
    const ptrdiff_t entries = (ptrdiff_t)n * c;
    const int wide = entries >= FASTBP_WIDE_MIN && fastbp_isa() >= FASTBP_ISA_AVX512;
    /* an entry costs an exp: threads pay at fewer entries than an elementwise loop's */
    const int threads = entries * FASTBP_SOFTMAX_WORK >= parallel_min && n > 1 ? FASTBP_MAX_THREADS() : 1;
    if (threads == 1) return FN(softmax_rows_best)(wide, x, labels, y, 0, n, c) / n;
    double loss = 0;
    FASTBP_FOR_SUM(1, loss, int, t, threads, {
        const int i0 = (int)((int64_t)n * t / threads), i1 = (int)((int64_t)n * (t + 1) / threads);
        loss += FN(softmax_rows_best)(wide, x, labels, y, i0, i1, c);
    });
    return loss / n;
}

/* dx = scale * (y - onehot(labels)), scale = dout / N. */
FASTBP_SIMD void FN(softmax_xent_backward)(const REAL *y, const int64_t *labels, REAL scale, REAL *dx, int n, int c,
                                            ptrdiff_t parallel_min)
{
    FASTBP_FOR((ptrdiff_t)n * c >= parallel_min, int, i, n, {
        for (int j = 0; j < c; ++j) dx[(ptrdiff_t)i * c + j] = y[(ptrdiff_t)i * c + j] * scale;
        dx[(ptrdiff_t)i * c + labels[i]] -= scale;
    });
}

/* labels[i] = the column of the 1 in one-hot row i of t (n, c); the first row that is not one
 * 0/1 entry of 1 among c - 1 zeros (NaN is neither) stops it: returns that row, else -1. A
 * layer's check of a few one-hot rows (the book's TwoLayerNet passes them) in one pass. */
double FN(one_hot_labels)(const REAL *t, int64_t *labels, int n, int c)
{
    for (int i = 0; i < n; ++i) {
        const REAL *row = t + (ptrdiff_t)i * c;
        int ones = 0, zeros = 0, at = 0;
        for (int j = 0; j < c; ++j) {
            ones += row[j] == 1;
            zeros += row[j] == 0;
            at = row[j] == 1 ? j : at;
        }
        if (ones != 1 || zeros != c - 1) return i;
        labels[i] = at;
    }
    return -1;
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
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, { dx[i] = (y[i] - t[i]) * scale; });
}
