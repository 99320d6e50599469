/* The native kernels for one floating type, compiled twice by ops.c:
 *   REAL (float or double), SFX (f32 or f64), GEMM (fastbp_gemm_f32 / _f64), EXP, LOG, SQRT, FABS.
 * Arrays are C-contiguous; lengths were checked by module.c. Same math as fastbp/backends/reference.py.
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(fastbp_##name, SFX)

/* Small products as plain loops over contiguous rows (the compiler vectorizes the inner loop). */
FASTBP_SIMD static void FN(small_x_w)(const REAL *x, const REAL *W, REAL *out, int n, int k, int m) /* out = x W */
{
    for (int i = 0; i < n; ++i) {
        REAL *o = out + (ptrdiff_t)i * m;
        for (int j = 0; j < m; ++j) o[j] = 0;
        for (int c = 0; c < k; ++c) {
            const REAL v = x[(ptrdiff_t)i * k + c];
            const REAL *w = W + (ptrdiff_t)c * m;
            for (int j = 0; j < m; ++j) o[j] += v * w[j];
        }
    }
}

FASTBP_SIMD static void FN(small_xt_d)(const REAL *x, const REAL *d, REAL *dW, int n, int k, int m) /* dW = x^T d */
{
    for (ptrdiff_t e = 0; e < (ptrdiff_t)k * m; ++e) dW[e] = 0;
    for (int i = 0; i < n; ++i)
        for (int c = 0; c < k; ++c) {
            const REAL v = x[(ptrdiff_t)i * k + c];
            const REAL *di = d + (ptrdiff_t)i * m;
            REAL *g = dW + (ptrdiff_t)c * m;
            for (int j = 0; j < m; ++j) g[j] += v * di[j];
        }
}

/* A few rows (a single sample, say): BLAS's call overhead dominates. Measured: 1x784x50 float32
 * forward 30 us by BLAS, 7 us by the loop; but 100x50x10 is faster by BLAS (5 us vs 22 us). */
static int FN(is_small)(int n, int k, int m) { return n <= 8 && (double)n * k * m < FASTBP_SMALL_PRODUCT; }

FASTBP_SIMD void FN(affine_forward)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m)
{
    if (FN(is_small)(n, k, m)) FN(small_x_w)(x, W, out, n, k, m);
    else GEMM(0, 0, n, m, k, (REAL)1, x, W, (REAL)0, out);
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < m; ++j) out[(ptrdiff_t)i * m + j] += b[j];
}

FASTBP_SIMD static void FN(column_sums)(const REAL *a, REAL *sums, int n, int m)
{
    for (int j = 0; j < m; ++j) sums[j] = 0;
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < m; ++j) sums[j] += a[(ptrdiff_t)i * m + j];
}

/* dx = dout W^T (skipped when dx is NULL), dW = x^T dout, db = column sums of dout. */
void FN(affine_backward)(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW, REAL *db,
                         int n, int k, int m)
{
    if (FN(is_small)(n, k, m) && !dx) { /* dW alone: an outer product; with dx, BLAS measured as fast */
        FN(small_xt_d)(x, dout, dW, n, k, m);
    } else {
        if (dx) GEMM(0, 1, n, k, m, (REAL)1, dout, W, (REAL)0, dx);
        GEMM(1, 0, k, m, n, (REAL)1, x, dout, (REAL)0, dW);
    }
    FN(column_sums)(dout, db, n, m);
}

static inline REAL FN(sigmoid1)(REAL v)
{
    const REAL e = EXP(-FABS(v)); /* exp never overflows */
    return (v >= 0 ? (REAL)1 : e) / ((REAL)1 + e);
}

FASTBP_SIMD void FN(sigmoid_forward)(const REAL *x, REAL *out, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR(n >= parallel_min)
    for (ptrdiff_t i = 0; i < n; ++i) out[i] = FN(sigmoid1)(x[i]);
}

FASTBP_SIMD void FN(sigmoid_backward)(const REAL *dout, const REAL *out, REAL *dx, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR(n >= parallel_min)
    for (ptrdiff_t i = 0; i < n; ++i) dx[i] = dout[i] * ((REAL)1 - out[i]) * out[i];
}

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

FASTBP_SIMD void FN(momentum_update)(REAL *restrict param, const REAL *restrict grad, REAL *restrict v, REAL lr,
                         REAL momentum, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR(n >= parallel_min)
    for (ptrdiff_t i = 0; i < n; ++i) {
        v[i] = momentum * v[i] - lr * grad[i];
        param[i] += v[i];
    }
}

FASTBP_SIMD void FN(adam_update)(REAL *restrict param, const REAL *restrict grad, REAL *restrict m, REAL *restrict v,
                     REAL lr_t, REAL beta1, REAL beta2, REAL eps, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_PARALLEL_FOR(n >= parallel_min)
    for (ptrdiff_t i = 0; i < n; ++i) {
        m[i] += (1 - beta1) * (grad[i] - m[i]);
        v[i] += (1 - beta2) * (grad[i] * grad[i] - v[i]);
        param[i] -= lr_t * m[i] / (SQRT(v[i]) + eps);
    }
}

/* ---- whole network (layout: fastbp/backends/_network.py) -------------------------------- */

/* The optimizer's update of params[from, to) (every optimizer is elementwise, so a range of the
 * flat buffer updates on its own). */
static void FN(optimizer_range)(int optimizer, REAL *params, const REAL *grads, REAL *state, ptrdiff_t count,
                                ptrdiff_t from, ptrdiff_t to, const REAL *hyper, int64_t t)
{
    const ptrdiff_t n = to - from;
    if (optimizer == FASTBP_SGD) {
        CAT(fastbp_sgd_update, SFX)(params + from, grads + from, hyper[0], n, FASTBP_SERIAL);
    } else if (optimizer == FASTBP_MOMENTUM) {
        FN(momentum_update)(params + from, grads + from, state + from, hyper[0], hyper[1], n, FASTBP_SERIAL);
    } else {
        /* fastbp/backends/_network.py: adam_step_size */
        const double correction = sqrt(1.0 - pow((double)hyper[2], (double)t)) / (1.0 - pow((double)hyper[1], (double)t));
        FN(adam_update)(params + from, grads + from, state + from, state + count + from, (REAL)(hyper[0] * correction),
                        hyper[1], hyper[2], hyper[3], n, FASTBP_SERIAL);
    }
}

static void FN(hidden_forward)(int activation, REAL *z, unsigned char *mask, ptrdiff_t n)
{
    /* the whole-network kernels interleave products with these loops: never threaded (fastbp/threads.py) */
    if (activation == FASTBP_RELU) CAT(fastbp_relu_forward, SFX)(z, z, mask, n, FASTBP_SERIAL);
    else FN(sigmoid_forward)(z, z, n, FASTBP_SERIAL);
}

/* A layer after the first: small ones (784-50-10's second layer) by the row loops of rows.c on
 * the calling thread, larger ones by BLAS. */
static int FN(small_layer)(int k, int m) { return (ptrdiff_t)k * m <= FASTBP_OWN_PRODUCT; }

static void FN(layer_forward)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m)
{
    if (FN(small_layer)(k, m)) CAT(fastbp_dense_times, SFX)(x, n, k, W, b, out, m);
    else FN(affine_forward)(x, W, b, out, n, k, m);
}

static void FN(transpose)(const REAL *a, REAL *at, int rows, int cols)
{
    for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) at[(ptrdiff_t)j * rows + i] = a[(ptrdiff_t)i * cols + j];
}

/* dx = dout W^T, dW = x^T dout, db = column sums of dout. Small layers: both products as rows
 * times a matrix (sums held in registers), through transposed copies in `spare` (room for
 * k * max(m, n)). */
static void FN(layer_backward)(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW, REAL *db, int n,
                               int k, int m, REAL *spare)
{
    if (!FN(small_layer)(k, m)) {
        FN(affine_backward)(dout, x, W, dx, dW, db, n, k, m);
        return;
    }
    FN(transpose)(W, spare, k, m);
    CAT(fastbp_dense_times, SFX)(dout, n, m, spare, NULL, dx, k);
    FN(transpose)(x, spare, n, k);
    CAT(fastbp_dense_times, SFX)(spare, k, n, dout, NULL, dW, m);
    FN(column_sums)(dout, db, n, m);
}

/* One mini-batch's buffers, shared by the dense and the compact training steps. */
typedef struct {
    const int64_t *sizes;
    int n_layers, activation, batch;
    REAL *params, *grads;
    REAL *acts;           /* every layer's output, batch rows each (hidden ones activated in place) */
    unsigned char *masks; /* ReLU's, beside acts */
    REAL *grad_a, *grad_b; /* dout and dx of the backward pass, taking turns */
    REAL *y;               /* softmax output */
    REAL *spare;           /* transposed copies for layer_backward */
    int64_t *t_batch;      /* the batch's labels */
} FN(net);

static void FN(net_free)(FN(net) *net)
{
    free(net->acts); free(net->masks); free(net->grad_a); free(net->grad_b); free(net->y); free(net->spare); free(net->t_batch);
}

/* Allocates the buffers; returns -1 when out of memory. */
static int FN(net_init)(FN(net) *net, const int64_t *sizes, int n_layers, int activation, int batch, REAL *params,
                        REAL *grads)
{
    ptrdiff_t total = 0, widest = 0, spare = 0;
    for (int l = 0; l < n_layers; ++l) {
        total += sizes[l + 1];
        widest = sizes[l + 1] > widest ? sizes[l + 1] : widest;
        const ptrdiff_t room = sizes[l] * (sizes[l + 1] > batch ? sizes[l + 1] : batch);
        if (l > 0 && room > spare) spare = room;
    }
    *net = (FN(net)){.sizes = sizes, .n_layers = n_layers, .activation = activation, .batch = batch, .params = params,
                     .grads = grads};
    net->acts = malloc(sizeof(REAL) * (size_t)batch * total);
    net->masks = malloc((size_t)batch * total);
    net->grad_a = malloc(sizeof(REAL) * (size_t)batch * widest);
    net->grad_b = malloc(sizeof(REAL) * (size_t)batch * widest);
    net->y = malloc(sizeof(REAL) * (size_t)batch * sizes[n_layers]);
    net->spare = malloc(sizeof(REAL) * (size_t)(spare > 0 ? spare : 1));
    net->t_batch = malloc(sizeof(int64_t) * (size_t)batch);
    if (net->acts && net->masks && net->grad_a && net->grad_b && net->y && net->spare && net->t_batch) return 0;
    FN(net_free)(net);
    return -1;
}

/* The forward pass after the first layer's affine output (in acts), and the batch's loss. */
static double FN(forward_rest)(FN(net) *net)
{
    const int batch = net->batch, n_layers = net->n_layers;
    const int64_t *sizes = net->sizes;
    REAL *in = NULL;
    ptrdiff_t at = 0;
    for (int l = 0; l < n_layers; ++l) {
        REAL *z = net->acts + at;
        if (l > 0) {
            ptrdiff_t w_at, b_at;
            fastbp_layer_offsets(sizes, l, &w_at, &b_at);
            FN(layer_forward)(in, net->params + w_at, net->params + b_at, z, batch, (int)sizes[l], (int)sizes[l + 1]);
        }
        if (l < n_layers - 1) FN(hidden_forward)(net->activation, z, net->masks + at, (ptrdiff_t)batch * sizes[l + 1]);
        in = z;
        at += (ptrdiff_t)batch * sizes[l + 1];
    }
    return FN(softmax_xent_forward)(in, net->t_batch, net->y, batch, (int)sizes[n_layers], FASTBP_SERIAL);
}

/* The backward pass down to the first layer's affine output: fills the gradients of the layers
 * after the first and returns d loss / d (first layer's output), batch x sizes[1]. */
static REAL *FN(backward_rest)(FN(net) *net)
{
    const int batch = net->batch, n_layers = net->n_layers;
    const int64_t *sizes = net->sizes;
    REAL *dout = net->grad_a, *spare = net->grad_b;
    FN(softmax_xent_backward)(net->y, net->t_batch, (REAL)(1.0 / batch), dout, batch, (int)sizes[n_layers],
                              FASTBP_SERIAL);
    ptrdiff_t in_at = 0; /* offset in acts of layer l's input (layer l - 1's output) */
    for (int l = 1; l < n_layers - 1; ++l) in_at += (ptrdiff_t)batch * sizes[l];
    for (int l = n_layers - 1; l >= 1; --l) {
        ptrdiff_t w_at, b_at;
        fastbp_layer_offsets(sizes, l, &w_at, &b_at);
        const ptrdiff_t below = (ptrdiff_t)batch * sizes[l];
        FN(layer_backward)(dout, net->acts + in_at, net->params + w_at, spare, net->grads + w_at, net->grads + b_at, batch,
                           (int)sizes[l], (int)sizes[l + 1], net->spare);
        if (net->activation == FASTBP_RELU)
            CAT(fastbp_relu_backward, SFX)(spare, net->masks + in_at, spare, below, FASTBP_SERIAL);
        else FN(sigmoid_backward)(spare, net->acts + in_at, spare, below, FASTBP_SERIAL);
        REAL *swap = dout; dout = spare; spare = swap;
        if (l > 1) in_at -= (ptrdiff_t)batch * sizes[l - 1];
    }
    return dout;
}

/* Dense rows: each batch gathered, the first layer by BLAS (which threads it). */
static ptrdiff_t FN(train_dense)(const REAL *x, const int64_t *labels, const int64_t *batches, ptrdiff_t n_steps,
                                 FN(net) *net, int optimizer, const REAL *hyper, REAL *state, int64_t step0,
                                 double *losses)
{
    const int batch = net->batch, n_in = (int)net->sizes[0], m = (int)net->sizes[1];
    const ptrdiff_t count = fastbp_parameter_count(net->sizes, net->n_layers), b_at = (ptrdiff_t)n_in * m;
    REAL *x_batch = malloc(sizeof(REAL) * (size_t)batch * n_in);
    if (!x_batch) return -1;
    ptrdiff_t done = n_steps;
    for (ptrdiff_t s = 0; s < n_steps; ++s) {
        const int64_t *rows = batches + s * batch;
        for (int r = 0; r < batch; ++r) {
            memcpy(x_batch + (ptrdiff_t)r * n_in, x + rows[r] * n_in, sizeof(REAL) * n_in);
            net->t_batch[r] = labels[rows[r]];
        }
        FN(affine_forward)(x_batch, net->params, net->params + b_at, net->acts, batch, n_in, m);
        const double loss = FN(forward_rest)(net);
        if (!isfinite(loss)) { done = s; break; }
        losses[s] = loss;
        const REAL *d1 = FN(backward_rest)(net);
        FN(affine_backward)(d1, x_batch, net->params, NULL, net->grads, net->grads + b_at, batch, n_in, m);
        FN(optimizer_range)(optimizer, net->params, net->grads, state, count, 0, count, hyper, step0 + s + 1);
    }
    free(x_batch);
    return done;
}

/* One thread's entries of a batch, regrouped by column: column lo + j's entries are q in
 * [first[j], last[j]), value vv[q] in batch row rr[q]. Each column has a bucket of `bucket`
 * (= batch) places when that fits in FASTBP_BUCKET_ENTRIES, so one pass fills them; otherwise
 * (bucket 0: very wide inputs) the entries are counted first and packed. */
typedef struct {
    int lo, hi;           /* the thread's columns */
    int bucket;
    int64_t *begin, *end; /* each batch row's entries in [lo, hi) */
    int64_t *first, *last;
    int32_t *rr;
    REAL *vv;
} FN(columns);

static void FN(columns_free)(FN(columns) *g)
{
    free(g->begin); free(g->end); free(g->first); free(g->last); free(g->rr); free(g->vv);
}

static int FN(columns_init)(FN(columns) *g, int lo, int hi, int batch, int64_t longest_row)
{
    const size_t width = (size_t)(hi - lo);
    *g = (FN(columns)){.lo = lo, .hi = hi, .bucket = (double)width * batch <= FASTBP_BUCKET_ENTRIES ? batch : 0};
    /* packed: at most every batch row's longest possible run of entries */
    const size_t room = g->bucket ? width * (size_t)batch : (size_t)batch * (size_t)(longest_row > 0 ? longest_row : 1);
    g->begin = malloc(sizeof(int64_t) * (size_t)batch);
    g->end = malloc(sizeof(int64_t) * (size_t)batch);
    g->first = malloc(sizeof(int64_t) * (width + 1));
    g->last = malloc(sizeof(int64_t) * (width + 1));
    g->rr = malloc(sizeof(int32_t) * (room > 0 ? room : 1));
    g->vv = malloc(sizeof(REAL) * (room > 0 ? room : 1));
    if (!g->begin || !g->end || !g->first || !g->last || !g->rr || !g->vv) return -1;
    for (size_t j = 0; g->bucket && j < width; ++j) g->first[j] = (int64_t)j * g->bucket;
    return 0;
}

/* Groups the batch entries [begin[r], end[r]) by column. */
static void FN(group_by_column)(FN(columns) *g, const fastbp_rows *x, int n)
{
    const int32_t *indices = x->indices;
    const REAL *values = x->values;
    const int lo = g->lo, width = g->hi - g->lo;
    if (g->bucket) {
        memcpy(g->last, g->first, sizeof(int64_t) * (size_t)width);
    } else { /* a counting sort: counts in last, then first = their running sums, last = first */
        memset(g->last, 0, sizeof(int64_t) * (size_t)width);
        for (int r = 0; r < n; ++r)
            for (int64_t p = g->begin[r]; p < g->end[r]; ++p) ++g->last[indices[p] - lo];
        int64_t at = 0;
        for (int j = 0; j < width; ++j) {
            g->first[j] = at;
            at += g->last[j];
            g->last[j] = g->first[j];
        }
    }
    for (int r = 0; r < n; ++r)
        for (int64_t p = g->begin[r]; p < g->end[r]; ++p) {
            const int64_t q = g->last[indices[p] - lo]++;
            g->rr[q] = r;
            g->vv[q] = values[p];
        }
}

/* Compact rows: the first layer's columns (its weight rows) are split between the threads, in
 * ranges of about equal nonzero counts. Thread t owns rows [cuts[t], cuts[t+1]) of W and dW:
 * it adds their part of the forward product, then computes and applies their gradient. Each
 * thread's share of W stays in its own core's cache, and no two threads write the same rows.
 * For the gradient, each range's batch entries are grouped by column, so that each gradient
 * row is summed in registers and written once. Per step:
 *   1. all: partial first-layer products of own columns                       | barrier
 *   2. thread 0: sum of partials, later layers, loss, backward, their update;
 *      meanwhile the other threads group every range's entries by column     | barrier
 *   3. all: own rows of dW, their update (the next step's forward reads only those rows).
 * (One thread: it groups its entries itself, in step 3.) The column ranges depend only on the
 * data and the thread count, so results repeat exactly for the same number of threads. */
static ptrdiff_t FN(train_compact)(const fastbp_rows *x, const int64_t *labels, const int64_t *batches,
                                   ptrdiff_t n_steps, FN(net) *net, int optimizer, const REAL *hyper, REAL *state,
                                   int64_t step0, double *losses, int threads)
{
    const int batch = net->batch, n_in = (int)net->sizes[0], m = (int)net->sizes[1];
    const ptrdiff_t count = fastbp_parameter_count(net->sizes, net->n_layers), b_at = (ptrdiff_t)n_in * m;
    REAL *W = net->params, *dW = net->grads;
    int32_t *cuts = malloc(sizeof(int32_t) * (size_t)(threads + 1));
    REAL *parts = malloc(sizeof(REAL) * (size_t)batch * m * (threads > 1 ? threads - 1 : 1));
    FN(columns) *cols = calloc((size_t)threads, sizeof(FN(columns)));
    int ready = cuts && parts && cols;
    if (ready) {
        fastbp_split_columns(x->column_counts, n_in, threads, cuts);
        int widest = 0; /* of the column ranges */
        for (int t = 0; t < threads; ++t) widest = cuts[t + 1] - cuts[t] > widest ? cuts[t + 1] - cuts[t] : widest;
        int64_t longest = 0; /* row of this call, sizing packed groups (columns_init) */
        for (ptrdiff_t s = 0; (double)widest * batch > FASTBP_BUCKET_ENTRIES && s < n_steps * batch; ++s) {
            const int64_t length = x->indptr[batches[s] + 1] - x->indptr[batches[s]];
            longest = length > longest ? length : longest;
        }
        for (int t = 0; t < threads && ready; ++t) ready = FN(columns_init)(&cols[t], cuts[t], cuts[t + 1], batch, longest) == 0;
    }
    ptrdiff_t done = n_steps;
    REAL *d1 = NULL;
#pragma omp parallel num_threads(threads) if (ready)
    {
        const int t = FASTBP_THREAD_NUM();
        FN(columns) *own = &cols[t];
        REAL *out = t ? parts + (ptrdiff_t)(t - 1) * batch * m : net->acts;
        for (ptrdiff_t s = 0; ready && s < n_steps; ++s) {
            const int64_t *rows = batches + s * batch;
            fastbp_own_spans(x, rows, batch, own->lo, own->hi, n_in, own->begin, own->end);
            CAT(fastbp_spans_times, SFX)(own->begin, own->end, batch, x->indices, x->values, W, t ? NULL : W + b_at, out,
                                        m);
#pragma omp barrier
            for (int g = t - 1; t > 0 && g < threads; g += threads - 1) FN(group_by_column)(&cols[g], x, batch);
#pragma omp master
            {
                for (int r = 0; r < batch; ++r) net->t_batch[r] = labels[rows[r]];
                for (int u = 1; u < threads; ++u)
                    for (ptrdiff_t e = 0; e < (ptrdiff_t)batch * m; ++e) net->acts[e] += parts[(ptrdiff_t)(u - 1) * batch * m + e];
                const double loss = FN(forward_rest)(net);
                if (isfinite(loss)) {
                    losses[s] = loss;
                    d1 = FN(backward_rest)(net);
                    FN(column_sums)(d1, net->grads + b_at, batch, m);
                    FN(optimizer_range)(optimizer, net->params, net->grads, state, count, b_at, count, hyper,
                                        step0 + s + 1);
                } else {
                    done = s; /* that step's update is not applied */
                }
            }
#pragma omp barrier
            if (done == s) break;
            if (threads == 1) FN(group_by_column)(own, x, batch);
            /* dW row c = sum of v * d1[r] over column c's entries (zero without entries) */
            CAT(fastbp_spans_times, SFX)(own->first, own->last, own->hi - own->lo, own->rr, own->vv, d1, NULL,
                                        dW + (ptrdiff_t)own->lo * m, m);
            FN(optimizer_range)(optimizer, W, dW, state, count, (ptrdiff_t)own->lo * m, (ptrdiff_t)own->hi * m, hyper,
                                step0 + s + 1);
        }
    }
    for (int t = 0; cols && t < threads; ++t) FN(columns_free)(&cols[t]);
    free(cuts); free(parts); free(cols);
    return ready ? done : -1;
}

/* Threads for the compact paths: all of OpenMP's when every layer after the first is small
 * (a large one goes to BLAS, whose threads would fight ours), else one. */
static int FN(fused_threads)(const fastbp_rows *x, const int64_t *sizes, int n_layers)
{
    if (x->dense) return 1;
    for (int l = 1; l < n_layers; ++l)
        if (!FN(small_layer)((int)sizes[l], (int)sizes[l + 1])) return 1;
    return FASTBP_MAX_THREADS();
}

/* Runs n_steps of mini-batch training; returns the number done (fewer when a loss is not
 * finite: that step's update is not applied), or -1 when out of memory. x has sizes[0] columns;
 * batches is (n_steps, batch). The first layer's input gradient is never used, so it is not
 * computed. */
ptrdiff_t FN(train_steps)(const fastbp_rows *x, const int64_t *labels, const int64_t *batches, ptrdiff_t n_steps,
                          int batch, REAL *params, REAL *grads, const int64_t *sizes, int n_layers, int activation,
                          int optimizer, const REAL *hyper, REAL *state, int64_t step0, double *losses)
{
    if (n_steps == 0) return 0;
    FN(net) net;
    if (FN(net_init)(&net, sizes, n_layers, activation, batch, params, grads) < 0) return -1;
    const ptrdiff_t done =
        x->dense ? FN(train_dense)(x->dense, labels, batches, n_steps, &net, optimizer, hyper, state, step0, losses)
                 : FN(train_compact)(x, labels, batches, n_steps, &net, optimizer, hyper, state, step0, losses,
                                     FN(fused_threads)(x, sizes, n_layers));
    FN(net_free)(&net);
    return done;
}

/* labels[i] = argmax of the network's output for row i (first maximum wins, as np.argmax).
 * Compact rows: chunks of rows on all threads, as in train_compact; dense rows: BLAS's threads. */
int FN(predict_labels)(const fastbp_rows *x, ptrdiff_t n_rows, REAL *params, const int64_t *sizes, int n_layers,
                       int activation, int64_t *labels)
{
    const int chunk = x->dense ? 2048 : 256, threads = FN(fused_threads)(x, sizes, n_layers), c = (int)sizes[n_layers];
    const ptrdiff_t n_chunks = (n_rows + chunk - 1) / chunk;
    ptrdiff_t widest = 0;
    for (int i = 1; i <= n_layers; ++i) widest = sizes[i] > widest ? sizes[i] : widest;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        REAL *buffers = malloc(sizeof(REAL) * 2 * (size_t)chunk * widest);
        unsigned char *mask = malloc((size_t)chunk * widest);
        if (!buffers || !mask) failed = 1;
#pragma omp for schedule(dynamic)
        for (ptrdiff_t i = 0; i < n_chunks; ++i) {
            if (!buffers || !mask) continue;
            const ptrdiff_t start = i * chunk;
            const int rows = (int)(n_rows - start < chunk ? n_rows - start : chunk);
            const REAL *in = NULL;
            for (int l = 0; l < n_layers; ++l) {
                ptrdiff_t w_at, b_at;
                fastbp_layer_offsets(sizes, l, &w_at, &b_at);
                REAL *z = buffers + (ptrdiff_t)(l % 2) * chunk * widest;
                if (l > 0)
                    FN(layer_forward)(in, params + w_at, params + b_at, z, rows, (int)sizes[l], (int)sizes[l + 1]);
                else if (x->dense)
                    FN(affine_forward)((const REAL *)x->dense + start * sizes[0], params, params + b_at, z, rows,
                                       (int)sizes[0], (int)sizes[1]);
                else
                    CAT(fastbp_spans_times, SFX)(x->indptr + start, x->indptr + start + 1, rows, x->indices, x->values,
                                                params, params + b_at, z, (int)sizes[1]);
                if (l < n_layers - 1) FN(hidden_forward)(activation, z, mask, (ptrdiff_t)rows * sizes[l + 1]);
                in = z;
            }
            for (int r = 0; r < rows; ++r) {
                int best = 0;
                for (int j = 1; j < c; ++j)
                    if (in[(ptrdiff_t)r * c + j] > in[(ptrdiff_t)r * c + best]) best = j;
                labels[start + r] = best;
            }
        }
        free(buffers);
        free(mask);
    }
    return failed ? -1 : 0;
}

#undef FN
#undef CAT
#undef CAT_
