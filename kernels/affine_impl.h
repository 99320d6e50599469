/* The affine layer for one floating type (each_real.h): out = x W + b, x (n, k), W (k, m). */

/* kernels.h's rule: weights small enough for the row loops */
static int FN(own_weights)(int k, int m) { return (ptrdiff_t)k * m <= FASTBP_OWN_PRODUCT; }

/* Whether forward and backward, asked to stay, stay off BLAS (and so on the calling thread). */
int FN(affine_on_calling_thread)(int n, int k, int m)
{
    (void)n; /* a few rows still use BLAS for dx */
    return FN(own_weights)(k, m);
}

/* Items of scratch affine_backward uses (0: none): W's transposed copy. */
ptrdiff_t FN(affine_scratch)(int n, int k, int m)
{
    (void)n;
    return FN(own_weights)(k, m) ? (ptrdiff_t)k * m : 0;
}

void FN(affine_forward)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m, int stay)
{
    if ((stay && FN(own_weights)(k, m)) || (n <= FASTBP_FEW_ROWS && !(n >= FASTBP_FEW_ROWS_TILED && sizeof(REAL) == 8))) {
        FN(dense_times)(x, n, k, W, b, out, m); /* bias added in the registers */
        return;
    }
    if (n <= FASTBP_FEW_ROWS) FN(tiles_times)(x, n, k, W, NULL, m, NULL, out, m); /* each W row read once for all the rows */
    else GEMM(0, 0, n, m, k, (REAL)1, x, W, (REAL)0, out);
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < m; ++j) out[(ptrdiff_t)i * m + j] += b[j];
}

FASTBP_SIMD void FN(column_sums)(const REAL *a, REAL *sums, int n, int m)
{
    for (int j = 0; j < m; ++j) sums[j] = 0;
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < m; ++j) sums[j] += a[(ptrdiff_t)i * m + j];
}

static void FN(transpose)(const REAL *a, REAL *at, int rows, int cols)
{
    for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) at[(ptrdiff_t)j * rows + i] = a[(ptrdiff_t)i * cols + j];
}

int FN(affine_backward)(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW, REAL *db, int n, int k,
                        int m, REAL *scratch, int stay)
{
    if (stay && FN(own_weights)(k, m)) { /* both products as rows times a matrix: dx through W's transposed copy */
        if (dx) {
            REAL *mine = scratch ? NULL : malloc(sizeof(REAL) * (size_t)FN(affine_scratch)(n, k, m));
            REAL *spare = scratch ? scratch : mine;
            if (!spare) return -1;
            FN(transpose)(W, spare, k, m);
            FN(dense_times)(dout, n, m, spare, NULL, dx, k);
            free(mine);
        }
        FN(transposed_dense_times)(x, n, k, dout, dW, m);
    } else {
        if (dx && n <= FASTBP_FEW_ROWS_DX) FN(times_transposed)(dout, n, m, m, 1, W, NULL, 0, k, dx); /* each W row read once */
        else if (dx) GEMM(0, 1, n, k, m, (REAL)1, dout, W, (REAL)0, dx);
        if (n <= FASTBP_FEW_ROWS) FN(transposed_times)(x, n, k, dout, m, dW);
        else GEMM(1, 0, k, m, n, (REAL)1, x, dout, (REAL)0, dW);
    }
    FN(column_sums)(dout, db, n, m);
    return 0;
}


/* The same products split between the OpenMP threads, each part on a BLAS kept to the thread
 * that calls it (fastbp_blas_threads_local: set to 1 by the calling thread before the team starts
 * and put back by it after the team ends, and set in each team thread too; NumPy's OpenBLAS keeps
 * that setting for the whole process, not per thread, so when each team thread put back what it had
 * found, the last to finish could leave NumPy's own products on one thread for the rest of the
 * process: 2x slower, tests/test_native.py). One pool of threads for the engine of a network
 * whose convolutions keep OpenMP's threads busy, where BLAS's own would fight them (measured on
 * the 2-core machine, a SimpleConvNet step: 33-36 ms with both pools, 20-21 ms with one). Every
 * part is split along W's rows (k), so that each thread's BLAS packs only its share of W, not all
 * of it (a split by batch rows packs the whole W in every thread: SimpleConvNet's 4320 x 100,
 * 1.7 MB, for a 50 x 100 share of the output): the forward sums the threads' partial products,
 * dx and dW are cut into column and row blocks. Callers check fastbp_team_products() first. */
#ifdef _OPENMP
static void FN(team_part)(int count, int *lo, int *hi)
{
    const int t = omp_get_thread_num(), threads = omp_get_num_threads();
    *lo = (int)((int64_t)count * t / threads);
    *hi = (int)((int64_t)count * (t + 1) / threads);
}

void FN(affine_forward_team)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m)
{
    const int most = omp_get_max_threads();
    REAL *parts = most > 1 ? malloc(sizeof(REAL) * (size_t)(most - 1) * n * m) : NULL; /* threads 1.. */
    if (!parts) {
        FN(affine_forward)(x, W, b, out, n, k, m, 0);
        return;
    }
    const int before = fastbp_blas_threads_local(1);
#pragma omp parallel num_threads(most)
    {
        const int t = omp_get_thread_num(), threads = omp_get_num_threads();
        int lo, hi;
        fastbp_blas_threads_local(1);
        FN(team_part)(k, &lo, &hi);
        REAL *mine = t ? parts + (ptrdiff_t)(t - 1) * n * m : out;
        FN(gemm_ld)(0, 0, n, m, hi - lo, (REAL)1, x + lo, k, W + (ptrdiff_t)lo * m, m, (REAL)0, mine, m);
#pragma omp barrier
        FN(team_part)(n, &lo, &hi);
        for (int i = lo; i < hi; ++i)
            for (int j = 0; j < m; ++j) {
                REAL sum = out[(ptrdiff_t)i * m + j] + b[j];
                for (int u = 1; u < threads; ++u) sum += parts[((ptrdiff_t)(u - 1) * n + i) * m + j];
                out[(ptrdiff_t)i * m + j] = sum;
            }
    }
    if (before > 0) fastbp_blas_threads_local(before);
    free(parts);
}

void FN(affine_backward_team)(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW, REAL *db, int n, int k,
                              int m)
{
    const int before = fastbp_blas_threads_local(1);
#pragma omp parallel
    {
        int lo, hi;
        fastbp_blas_threads_local(1);
        FN(team_part)(k, &lo, &hi);
        if (dx) /* dx[:, lo:hi] = dout W[lo:hi]^T */
            FN(gemm_ld)(0, 1, n, hi - lo, m, (REAL)1, dout, m, W + (ptrdiff_t)lo * m, m, (REAL)0, dx + lo, k);
        /* dW[lo:hi] = x[:, lo:hi]^T dout (dW NULL: made elsewhere) */
        if (dW) FN(gemm_ld)(1, 0, hi - lo, m, n, (REAL)1, x + lo, k, dout, m, (REAL)0, dW + (ptrdiff_t)lo * m, m);
    }
    if (before > 0) fastbp_blas_threads_local(before);
    FN(column_sums)(dout, db, n, m);
}

/* The layers' products on small weights (FASTBP_OWN_PRODUCT: 256 KB of float64 at most) split by
 * batch rows instead: each thread's BLAS packs all of W, and no partial outputs are summed but
 * dW's, k x m each. Measured on the 2-core machine, forward + backward, float64 (us): 1000 x 100 x
 * 100: 1264 split along k, 792 by rows (NumPy's threaded BLAS alone: 792); 128 x 100 x 100: 148,
 * 113 (113). -1: out of memory. */
static void FN(affine_forward_rows_team)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m)
{
    const int before = fastbp_blas_threads_local(1);
#pragma omp parallel
    {
        int lo, hi;
        fastbp_blas_threads_local(1);
        FN(team_part)(n, &lo, &hi);
        if (hi > lo) FN(affine_forward)(x + (ptrdiff_t)lo * k, W, b, out + (ptrdiff_t)lo * m, hi - lo, k, m, 0);
    }
    if (before > 0) fastbp_blas_threads_local(before);
}

static int FN(affine_backward_rows_team)(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW, REAL *db,
                                         int n, int k, int m)
{
    const int most = omp_get_max_threads();
    REAL *parts = malloc(sizeof(REAL) * (size_t)(most > 1 ? most - 1 : 1) * k * m); /* threads 1..'s dW */
    if (!parts) return -1;
    const int before = fastbp_blas_threads_local(1);
#pragma omp parallel num_threads(most)
    {
        const int t = omp_get_thread_num(), threads = omp_get_num_threads();
        int lo, hi;
        fastbp_blas_threads_local(1);
        FN(team_part)(n, &lo, &hi);
        REAL *mine = t ? parts + (ptrdiff_t)(t - 1) * k * m : dW;
        if (dx && hi > lo) /* dx[lo:hi] = dout[lo:hi] W^T */
            FN(gemm_ld)(0, 1, hi - lo, k, m, (REAL)1, dout + (ptrdiff_t)lo * m, m, W, m, (REAL)0, dx + (ptrdiff_t)lo * k, k);
        if (hi > lo) /* this thread's rows' share of dW = x^T dout */
            FN(gemm_ld)(1, 0, k, m, hi - lo, (REAL)1, x + (ptrdiff_t)lo * k, k, dout + (ptrdiff_t)lo * m, m, (REAL)0, mine, m);
        else
            memset(mine, 0, sizeof(REAL) * (size_t)k * m);
#pragma omp barrier
        FN(team_part)(k * m, &lo, &hi);
        for (int e = lo; e < hi; ++e)
            for (int u = 1; u < threads; ++u) dW[e] += parts[(ptrdiff_t)(u - 1) * k * m + e];
    }
    if (before > 0) fastbp_blas_threads_local(before);
    FN(column_sums)(dout, db, n, m);
    return 0;
}
#else
void FN(affine_forward_team)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m)
{
    FN(affine_forward)(x, W, b, out, n, k, m, 0);
}

void FN(affine_backward_team)(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW, REAL *db, int n, int k,
                              int m)
{
    FN(affine_backward)(dout, x, W, dx, dW, db, n, k, m, NULL, 0); /* no scratch needed off the row loops */
}

static void FN(affine_forward_rows_team)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m)
{
    FN(affine_forward)(x, W, b, out, n, k, m, 0);
}

static int FN(affine_backward_rows_team)(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW, REAL *db,
                                         int n, int k, int m)
{
    return FN(affine_backward)(dout, x, W, dx, dW, db, n, k, m, NULL, 0);
}
#endif

/* ---- the layers' inputs: float32 into REAL weights, and mostly-zero rows ------------------
 * The layers take x as REAL, or as float32 into float64 weights (x_f32: the book's images and
 * weights), converted here a row or a block at a time instead of a float64 copy of the batch.
 * When x's rows are mostly zero (MNIST's images: 19% of their pixels are not), the products skip
 * the zeros: x W reads one W row per nonzero of an x row, and x^T dout sums each dW row over the
 * nonzeros of x's column. Same sums as the dense product without the terms that are exactly
 * zero; so that a non-finite W (or dout) still spreads NaN as the dense product does (0 inf is
 * NaN), such operands take the dense path. */

/* out = x W + b, each row compacted while in cache and multiplied at once; rows split between
 * the OpenMP threads. -1: out of memory. */
static int FN(affine_forward_compact)(const void *x, int x_f32, const REAL *W, const REAL *b, REAL *out, int n, int k,
                                      int m)
{
    const int threads = n >= FASTBP_COMPACT_TEAM_ROWS ? FASTBP_MAX_THREADS() : 1;
    int32_t *indices = malloc(sizeof(int32_t) * (size_t)k * (size_t)threads);
    REAL *values = malloc(sizeof(REAL) * (size_t)k * (size_t)threads);
    float *spares = malloc(sizeof(float) * (size_t)k * (size_t)threads);
    const int status = indices && values && spares ? 0 : -1;
    if (status == 0)
        FASTBP_FOR(threads > 1, int, i, n, {
            const ptrdiff_t t = FASTBP_THREAD_NUM();
            int32_t *mine = indices + t * k;
            REAL *my_values = values + t * k;
            const int64_t begin = 0, end = FN(compact_input_row)(x, x_f32, i, k, mine, my_values, spares + t * k);
            FN(spans_times)(&begin, &end, 1, mine, my_values, W, b, out + (ptrdiff_t)i * m, m);
        });
    free(indices);
    free(values);
    free(spares);
    return status;
}

/* dW = x^T dout: x's rows compacted (split by rows between the threads), then each thread takes
 * a range of x's columns (dW's rows): it puts the entries of each column into that column's
 * bucket (n places: one per batch row), in the order of the rows, and sums each dW row from
 * dout's rows in registers, written once (spans_times: the products on compact rows, x^T's rows
 * here), in the dense sum's order. Its scratch is 24 bytes an entry of x: for more than
 * FASTBP_COMPACT_DW_ENTRIES entries (a training batch of 5000 images) it declines (-1, as out of
 * memory) and the caller takes the dense path. */
static int FN(weights_gradient_compact)(const void *x, int x_f32, const REAL *dout, REAL *dW, int n, int k, int m)
{
    if ((int64_t)n * k > FASTBP_COMPACT_DW_ENTRIES) return -1;
    const int threads = n >= FASTBP_COMPACT_TEAM_ROWS ? FASTBP_MAX_THREADS() : 1;
    int32_t *columns = malloc(sizeof(int32_t) * (size_t)n * k), *rows = malloc(sizeof(int32_t) * (size_t)n * k);
    REAL *values = malloc(sizeof(REAL) * (size_t)n * k), *by_column = malloc(sizeof(REAL) * (size_t)n * k);
    float *spares = malloc(sizeof(float) * (size_t)k * (size_t)threads);
    int64_t *counts = malloc(sizeof(int64_t) * (size_t)n), *starts = malloc(sizeof(int64_t) * (size_t)k);
    int64_t *ends = malloc(sizeof(int64_t) * (size_t)k);
    int status = -1;
    if (!columns || !rows || !values || !by_column || !spares || !counts || !starts || !ends) goto done;
    FASTBP_FOR(threads > 1, int, i, n, { /* each row into its own slot of k entries */
        counts[i] = FN(compact_input_row)(x, x_f32, i, k, columns + (ptrdiff_t)i * k, values + (ptrdiff_t)i * k,
                                          spares + (ptrdiff_t)FASTBP_THREAD_NUM() * k);
    });
    FASTBP_FOR(threads > 1, int, t, threads, {
        const int lo = (int)((int64_t)k * t / threads), hi = (int)((int64_t)k * (t + 1) / threads);
        for (int c = lo; c < hi; ++c) starts[c] = ends[c] = (int64_t)c * n;
        for (int i = 0; i < n; ++i) {
            const int32_t *row = columns + (ptrdiff_t)i * k;
            const REAL *row_values = values + (ptrdiff_t)i * k;
            int64_t p = 0;
            while (p < counts[i] && row[p] < lo) ++p;
            for (; p < counts[i] && row[p] < hi; ++p) {
                const int64_t at = ends[row[p]]++;
                rows[at] = i;
                by_column[at] = row_values[p];
            }
        }
        FN(spans_times)(starts + lo, ends + lo, hi - lo, rows, by_column, dout, NULL, dW + (ptrdiff_t)lo * m, m);
    });
    status = 0;
done:
    free(columns);
    free(rows);
    free(values);
    free(by_column);
    free(spares);
    free(counts);
    free(starts);
    free(ends);
    return status;
}

/* Rows [first, first + count) of a float32 x as REAL, or NULL when out of memory. */
static REAL *FN(converted_rows)(const void *x, ptrdiff_t first, ptrdiff_t count, int k)
{
    REAL *rows = malloc(sizeof(REAL) * (size_t)count * (size_t)k);
    if (rows)
        for (ptrdiff_t e = 0; e < count * k; ++e) rows[e] = ((const float *)x)[first * k + e];
    return rows;
}

/* The layers' products (the engine decides per network, team_products): on the OpenMP team
 * whenever they would go to a threaded BLAS, so that BLAS's own pool of threads never runs beside
 * OpenMP's: after a call, each pool's idle threads keep spinning on the cores the other needs
 * (OpenBLAS's for about 2^28 cycles, out of our reach once NumPy has loaded it). */
static int FN(layer_on_team)(int n, int k, int m)
{
    return n > FASTBP_FEW_ROWS && !FN(own_weights)(k, m) && FASTBP_MAX_THREADS() > 1 && fastbp_blas_keeps_to_thread();
}

/* ... and small weights with enough rows that BLAS would thread them: on the team, split by rows */
static int FN(layer_on_team_by_rows)(int n, int k, int m)
{
    return n > FASTBP_FEW_ROWS && FN(own_weights)(k, m) && (int64_t)n * k * m > FASTBP_BLAS_THREADED_WORK &&
           FASTBP_MAX_THREADS() > 1 && fastbp_blas_keeps_to_thread();
}

/* The layers never wake BLAS's own threads: once woken by a product, they spin for about 2^28
 * cycles on the core that OpenMP's team needs next. The book's ch06 weight_init_compare
 * (784-100x4-10, batch 128, 300 iterations) on the 2-core machine: 10.0 s with both pools, 2.5-3.0
 * s with one (the book's NumPy: 4.7 s). The products BLAS would thread go to the team
 * (layer_on_team, layer_on_team_by_rows); the few left (dx of a few rows, dx beside x^T dout
 * skipping zeros) run on BLAS kept to the calling thread: set here, put back by blas_back.
 * Where fastbp has one thread, BLAS keeps its own. */
static int FN(blas_alone)(int n, int k, int m)
{
    /* (smaller products BLAS runs on the calling thread anyway: the setting costs 1-2 us a layer call) */
    return (int64_t)n * k * m > FASTBP_BLAS_THREADED_WORK && FASTBP_MAX_THREADS() > 1 ? fastbp_blas_threads_local(1) : -1;
}
static void FN(blas_back)(int before)
{
    if (before > 0) fastbp_blas_threads_local(before);
}

static void FN(affine_forward_dense)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m)
{
    if (FN(layer_on_team)(n, k, m)) FN(affine_forward_team)(x, W, b, out, n, k, m);
    else if (FN(layer_on_team_by_rows)(n, k, m)) FN(affine_forward_rows_team)(x, W, b, out, n, k, m);
    else FN(affine_forward)(x, W, b, out, n, k, m, 0);
}

static int FN(affine_forward_any)(const void *x, int x_f32, const REAL *W, const REAL *b, REAL *out, int n, int k,
                                  int m)
{
    if (FN(looks_compact)(x, x_f32, n, k) && FN(all_finite)(W, (ptrdiff_t)k * m) &&
        FN(affine_forward_compact)(x, x_f32, W, b, out, n, k, m) == 0)
        return 0;
    if (!x_f32) {
        FN(affine_forward_dense)(x, W, b, out, n, k, m);
        return 0;
    }
    for (int first = 0; first < n; first += FASTBP_CONVERT_ROWS) { /* a block at a time, multiplied while in cache */
        const int count = n - first < FASTBP_CONVERT_ROWS ? n - first : FASTBP_CONVERT_ROWS;
        REAL *rows = FN(converted_rows)(x, first, count, k);
        if (!rows) return -1;
        FN(affine_forward_dense)(rows, W, b, out + (ptrdiff_t)first * m, count, k, m);
        free(rows);
    }
    return 0;
}

static int FN(affine_backward_any)(const REAL *dout, const void *x, int x_f32, const REAL *W, REAL *dx, REAL *dW,
                                   REAL *db, int n, int k, int m)
{
    /* x^T dout skipping zeros pays in double only (MNIST at batch 100, 784 x 50, 2-core AMD
     * machine: float32 images into float64 weights 77 us against 199 converted and dense; float64
     * 85-101 against 97; float32 67-80 against BLAS's 46) */
    if (sizeof(REAL) == sizeof(double) && FN(looks_compact)(x, x_f32, n, k) && FN(all_finite)(dout, (ptrdiff_t)n * m) &&
        FN(weights_gradient_compact)(x, x_f32, dout, dW, n, k, m) == 0) {
        if (dx && FN(layer_on_team)(n, k, m)) {
            FN(affine_backward_team)(dout, NULL, W, dx, NULL, db, n, k, m); /* dx and db */
            return 0;
        }
        if (dx) GEMM(0, 1, n, k, m, (REAL)1, dout, W, (REAL)0, dx);
        FN(column_sums)(dout, db, n, m);
        return 0;
    }
    REAL *converted = x_f32 ? FN(converted_rows)(x, 0, n, k) : NULL;
    if (x_f32 && !converted) return -1;
    const REAL *rows = x_f32 ? converted : (const REAL *)x;
    int status = 0;
    if (FN(layer_on_team)(n, k, m)) FN(affine_backward_team)(dout, rows, W, dx, dW, db, n, k, m);
    else if (FN(layer_on_team_by_rows)(n, k, m)) status = FN(affine_backward_rows_team)(dout, rows, W, dx, dW, db, n, k, m);
    else status = FN(affine_backward)(dout, rows, W, dx, dW, db, n, k, m, NULL, 0);
    free(converted);
    return status;
}

int FN(affine_forward_layer)(const void *x, int x_f32, const REAL *W, const REAL *b, REAL *out, int n, int k, int m)
{
    const int before = FN(blas_alone)(n, k, m);
    const int status = FN(affine_forward_any)(x, x_f32 && sizeof(REAL) != sizeof(float), W, b, out, n, k, m);
    FN(blas_back)(before);
    return status;
}

int FN(affine_backward_layer)(const REAL *dout, const void *x, int x_f32, const REAL *W, REAL *dx, REAL *dW, REAL *db,
                              int n, int k, int m)
{
    const int before = FN(blas_alone)(n, k, m);
    const int status = FN(affine_backward_any)(dout, x, x_f32 && sizeof(REAL) != sizeof(float), W, dx, dW, db, n, k, m);
    FN(blas_back)(before);
    return status;
}
