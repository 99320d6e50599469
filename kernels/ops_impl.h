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

static void FN(optimizer_step)(int optimizer, REAL *params, const REAL *grads, REAL *state, ptrdiff_t count,
                               const REAL *hyper, int64_t t)
{
    if (optimizer == FASTBP_SGD) {
        CAT(fastbp_sgd_update, SFX)(params, grads, hyper[0], count, FASTBP_SERIAL);
    } else if (optimizer == FASTBP_MOMENTUM) {
        FN(momentum_update)(params, grads, state, hyper[0], hyper[1], count, FASTBP_SERIAL);
    } else {
        /* fastbp/backends/_network.py: adam_step_size */
        const double correction = sqrt(1.0 - pow((double)hyper[2], (double)t)) / (1.0 - pow((double)hyper[1], (double)t));
        FN(adam_update)(params, grads, state, state + count, (REAL)(hyper[0] * correction), hyper[1], hyper[2],
                        hyper[3], count, FASTBP_SERIAL);
    }
}

static void FN(hidden_forward)(int activation, REAL *z, unsigned char *mask, ptrdiff_t n)
{
    /* the whole-network kernels interleave BLAS with these loops: never threaded (fastbp/threads.py) */
    if (activation == FASTBP_RELU) CAT(fastbp_relu_forward, SFX)(z, z, mask, n, FASTBP_SERIAL);
    else FN(sigmoid_forward)(z, z, n, FASTBP_SERIAL);
}

/* Asks the memory system early for the compact rows rows[0, n): the next step's images. */
static void FN(prefetch_rows)(const fastbp_rows *x, const int64_t *rows, int n)
{
    const REAL *values = x->values;
    for (int r = 0; r < n; ++r) {
        const int64_t lo = x->indptr[rows[r]], hi = x->indptr[rows[r] + 1];
        for (int64_t p = lo; p < hi; p += 64 / sizeof(REAL)) __builtin_prefetch(values + p);
        for (int64_t p = lo; p < hi; p += 16) __builtin_prefetch(x->indices + p);
    }
}

/* The first layer, whose input is the data set's rows `rows` (dense: already gathered in x_batch). */
static void FN(first_forward)(const fastbp_rows *x, const REAL *x_batch, const int64_t *rows, int n, const REAL *W,
                              const REAL *b, REAL *out, int k, int m)
{
    if (x->dense) FN(affine_forward)(x_batch, W, b, out, n, k, m);
    else CAT(fastbp_compact_affine_forward, SFX)(x->indptr, x->indices, x->values, rows, 0, n, W, b, out, m);
}

static void FN(first_weight_grad)(const fastbp_rows *x, const REAL *x_batch, const int64_t *rows, const REAL *dout,
                                  const REAL *W, REAL *dW, REAL *db, int n, int k, int m)
{
    if (x->dense) {
        FN(affine_backward)(dout, x_batch, W, NULL, dW, db, n, k, m);
    } else {
        CAT(fastbp_compact_weight_grad, SFX)(x->indptr, x->indices, x->values, rows, n, dout, dW, k, m);
        FN(column_sums)(dout, db, n, m);
    }
}

/* Runs n_steps of mini-batch training; returns the number done (fewer when a loss is not
 * finite: that step's update is not applied). x has sizes[0] columns; batches is (n_steps, batch).
 * The first layer's input gradient is never used, so it is not computed. */
ptrdiff_t FN(train_steps)(const fastbp_rows *x, const int64_t *labels, const int64_t *batches, ptrdiff_t n_steps,
                          int batch, REAL *params, REAL *grads, const int64_t *sizes, int n_layers, int activation,
                          int optimizer, const REAL *hyper, REAL *state, int64_t step0, double *losses)
{
    const int n_in = (int)sizes[0], n_classes = (int)sizes[n_layers];
    const REAL *dense = x->dense;
    ptrdiff_t total = 0, widest = 0, count = fastbp_parameter_count(sizes, n_layers);
    for (int i = 1; i <= n_layers; ++i) {
        total += sizes[i];
        widest = sizes[i] > widest ? sizes[i] : widest;
    }
    REAL *x_batch = dense ? malloc(sizeof(REAL) * (size_t)batch * n_in) : NULL;
    REAL *acts = malloc(sizeof(REAL) * (size_t)batch * total);
    unsigned char *masks = malloc((size_t)batch * total);
    REAL *grad_a = malloc(sizeof(REAL) * (size_t)batch * widest), *grad_b = malloc(sizeof(REAL) * (size_t)batch * widest);
    REAL *y = malloc(sizeof(REAL) * (size_t)batch * n_classes);
    int64_t *t_batch = malloc(sizeof(int64_t) * (size_t)batch);
    ptrdiff_t done = n_steps;
    if ((dense && !x_batch) || !acts || !masks || !grad_a || !grad_b || !y || !t_batch) { done = -1; goto out; }

    for (ptrdiff_t s = 0; s < n_steps; ++s) {
        const int64_t *rows = batches + s * batch;
        if (dense)
            for (int r = 0; r < batch; ++r) memcpy(x_batch + (ptrdiff_t)r * n_in, dense + rows[r] * n_in, sizeof(REAL) * n_in);
        else if (s + 1 < n_steps)
            FN(prefetch_rows)(x, rows + batch, batch);
        for (int r = 0; r < batch; ++r) t_batch[r] = labels[rows[r]];
        /* forward */
        const REAL *in = NULL;
        ptrdiff_t at = 0;
        for (int l = 0; l < n_layers; ++l) {
            ptrdiff_t w_at, b_at;
            fastbp_layer_offsets(sizes, l, &w_at, &b_at);
            REAL *z = acts + at;
            if (l == 0) FN(first_forward)(x, x_batch, rows, batch, params + w_at, params + b_at, z, n_in, (int)sizes[1]);
            else FN(affine_forward)(in, params + w_at, params + b_at, z, batch, (int)sizes[l], (int)sizes[l + 1]);
            if (l < n_layers - 1) FN(hidden_forward)(activation, z, masks + at, (ptrdiff_t)batch * sizes[l + 1]);
            in = z;
            at += (ptrdiff_t)batch * sizes[l + 1];
        }
        const double loss = FN(softmax_xent_forward)(in, t_batch, y, batch, n_classes, FASTBP_SERIAL);
        if (!isfinite(loss)) { done = s; break; }
        losses[s] = loss;

        /* backward: dout and dx take turns in grad_a / grad_b */
        REAL *dout = grad_a, *spare = grad_b;
        FN(softmax_xent_backward)(y, t_batch, (REAL)(1.0 / batch), dout, batch, n_classes, FASTBP_SERIAL);
        for (int l = n_layers - 1; l >= 0; --l) {
            at -= (ptrdiff_t)batch * sizes[l + 1]; /* offset of layer l's output */
            ptrdiff_t w_at, b_at;
            fastbp_layer_offsets(sizes, l, &w_at, &b_at);
            if (l == 0) {
                FN(first_weight_grad)(x, x_batch, rows, dout, params + w_at, grads + w_at, grads + b_at, batch, n_in,
                                      (int)sizes[1]);
                break;
            }
            const ptrdiff_t below = (ptrdiff_t)batch * sizes[l];
            FN(affine_backward)(dout, acts + at - below, params + w_at, spare, grads + w_at, grads + b_at, batch,
                                (int)sizes[l], (int)sizes[l + 1]);
            if (activation == FASTBP_RELU)
                CAT(fastbp_relu_backward, SFX)(spare, masks + at - below, spare, below, FASTBP_SERIAL);
            else FN(sigmoid_backward)(spare, acts + at - below, spare, below, FASTBP_SERIAL);
            REAL *swap = dout; dout = spare; spare = swap;
        }
        FN(optimizer_step)(optimizer, params, grads, state, count, hyper, step0 + s + 1);
    }
out:
    free(x_batch); free(acts); free(masks); free(grad_a); free(grad_b); free(y); free(t_batch);
    return done;
}

/* labels[i] = argmax of the network's output for row i (first maximum wins, as np.argmax). */
int FN(predict_labels)(const fastbp_rows *x, ptrdiff_t n_rows, REAL *params, const int64_t *sizes, int n_layers,
                       int activation, int64_t *labels)
{
    const int chunk = 2048;
    ptrdiff_t widest = 0;
    for (int i = 1; i <= n_layers; ++i) widest = sizes[i] > widest ? sizes[i] : widest;
    REAL *buffers = malloc(sizeof(REAL) * 2 * (size_t)chunk * widest);
    unsigned char *mask = malloc((size_t)chunk * widest);
    if (!buffers || !mask) { free(buffers); free(mask); return -1; }
    for (ptrdiff_t start = 0; start < n_rows; start += chunk) {
        const int rows = (int)(n_rows - start < chunk ? n_rows - start : chunk);
        const REAL *in = NULL;
        for (int l = 0; l < n_layers; ++l) {
            ptrdiff_t w_at, b_at;
            fastbp_layer_offsets(sizes, l, &w_at, &b_at);
            REAL *z = buffers + (ptrdiff_t)(l % 2) * chunk * widest;
            if (l == 0 && !x->dense)
                CAT(fastbp_compact_affine_forward, SFX)(x->indptr, x->indices, x->values, NULL, start, rows,
                                                        params + w_at, params + b_at, z, (int)sizes[1]);
            else
                FN(affine_forward)(l == 0 ? (const REAL *)x->dense + start * sizes[0] : in, params + w_at,
                                   params + b_at, z, rows, (int)sizes[l], (int)sizes[l + 1]);
            if (l < n_layers - 1) FN(hidden_forward)(activation, z, mask, (ptrdiff_t)rows * sizes[l + 1]);
            in = z;
        }
        const int c = (int)sizes[n_layers];
        for (int r = 0; r < rows; ++r) {
            int best = 0;
            for (int j = 1; j < c; ++j)
                if (in[(ptrdiff_t)r * c + j] > in[(ptrdiff_t)r * c + best]) best = j;
            labels[start + r] = best;
        }
    }
    free(buffers);
    free(mask);
    return 0;
}

#undef FN
#undef CAT
#undef CAT_
