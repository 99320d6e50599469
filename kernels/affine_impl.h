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
        /* dW[lo:hi] = x[:, lo:hi]^T dout */
        FN(gemm_ld)(1, 0, hi - lo, m, n, (REAL)1, x + lo, k, dout, m, (REAL)0, dW + (ptrdiff_t)lo * m, m);
    }
    if (before > 0) fastbp_blas_threads_local(before);
    FN(column_sums)(dout, db, n, m);
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
#endif

/* The layers' products (the engine decides per network, team_products): on the OpenMP team
 * whenever they would go to a threaded BLAS, so that BLAS's own pool of threads never runs beside
 * OpenMP's: after a call, each pool's idle threads keep spinning on the cores the other needs
 * (OpenBLAS's for about 2^28 cycles, out of our reach once NumPy has loaded it). */
static int FN(layer_on_team)(int n, int k, int m)
{
    return n > FASTBP_FEW_ROWS && !FN(own_weights)(k, m) && FASTBP_MAX_THREADS() > 1 && fastbp_blas_keeps_to_thread();
}

void FN(affine_forward_layer)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m)
{
    if (FN(layer_on_team)(n, k, m)) FN(affine_forward_team)(x, W, b, out, n, k, m);
    else FN(affine_forward)(x, W, b, out, n, k, m, 0);
}

int FN(affine_backward_layer)(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW, REAL *db, int n, int k,
                              int m)
{
    if (!FN(layer_on_team)(n, k, m)) return FN(affine_backward)(dout, x, W, dx, dW, db, n, k, m, NULL, 0);
    FN(affine_backward_team)(dout, x, W, dx, dW, db, n, k, m);
    return 0;
}
