/* The engine for one floating type (each_real.h). A network is `n_ops` op records (kernels.h);
 * the last one is the loss. Every op's forward and backward is the kernel its layer calls. */

#define FIELD(program, i, field) ((program)[(ptrdiff_t)(i) * FASTBP_OP_FIELDS + (field)])
#define OUT_OF_MEMORY (-1.0) /* forward_loss's answer when a kernel had no memory: no loss is negative */

/* A window op's shape fields, for the conv and pool kernels. */
#define WINDOW_ARGS(f, rows) rows, (int)(f)[FASTBP_C], (int)(f)[FASTBP_H], (int)(f)[FASTBP_W]
#define WINDOW_REST(f) (int)(f)[FASTBP_KH], (int)(f)[FASTBP_KW], (int)(f)[FASTBP_STRIDE], (int)(f)[FASTBP_PAD], \
                       (int)(f)[FASTBP_OH], (int)(f)[FASTBP_OW]

/* Whether ops i, i + 1, i + 2 (all before `last`) are conv - relu - max pooling, which the engine
 * runs as one pass per sample (conv_relu_pool_forward): only the pooling's output and places are
 * written, and the three ops' backward is one pass too. (A conv - relu without pooling runs its
 * forward as one pass, conv_forward's relu_mask; their backward stays two ops.) */
static int FN(fused_at)(const int64_t *program, int i, int last)
{
    return i >= 0 && i + 2 < last && FIELD(program, i, FASTBP_FIELD_CODE) == FASTBP_OP_CONV &&
           FIELD(program, i + 1, FASTBP_FIELD_CODE) == FASTBP_OP_RELU &&
           FIELD(program, i + 2, FASTBP_FIELD_CODE) == FASTBP_OP_POOL;
}

/* The entries of op i's weights W (affine, convolution; not b), what the kernels and weight decay read; b follows them. */
static ptrdiff_t FN(op_weights)(const int64_t *program, int i)
{
    const int64_t *op = &FIELD(program, i, 0), *f = op + FASTBP_FIELD_SHAPE;
    if (op[FASTBP_FIELD_CODE] == FASTBP_OP_AFFINE) return (ptrdiff_t)op[FASTBP_FIELD_IN] * op[FASTBP_FIELD_OUT];
    if (op[FASTBP_FIELD_CODE] == FASTBP_OP_CONV) return (ptrdiff_t)(f[FASTBP_F] * f[FASTBP_C] * f[FASTBP_KH] * f[FASTBP_KW]);
    return 0;
}

/* Dropout op i of `rows` rows: in training step `step` (1-based) the book's x * (draw > ratio), the
 * draws from the engine's generator and the kept units in keep; in prediction (step 0) x * (1 - ratio).
 * -1 when out of memory. */
static int FN(dropout_op)(const int64_t *program, int i, int64_t step, const REAL *in, REAL *out, unsigned char *keep,
                          ptrdiff_t size, ptrdiff_t elementwise_min)
{
    const double ratio = (double)FIELD(program, i, FASTBP_FIELD_RATIO) / FASTBP_RATIO_SCALE;
    if (!step) {
        const REAL scale = (REAL)(1.0 - ratio); /* rounded first, as the layer's x * dtype(1 - ratio) */
        for (ptrdiff_t e = 0; e < size; ++e) out[e] = in[e] * scale;
        return 0;
    }
    double *draw = malloc(sizeof(double) * (size_t)size);
    if (!draw) return -1;
    fastbp_dropout_draws(fastbp_dropout_key(FIELD(program, i, FASTBP_FIELD_SEED), step, i), size, draw);
    FN(dropout_forward)(in, draw, ratio, out, keep, size, elementwise_min);
    free(draw);
    return 0;
}

/* Batch normalization's state in a pass. Training: the running statistics it updates (float64,
 * the layout of fastbp.engine's stats buffer) and where op i keeps its xn (rows x D), std, mean
 * and var for backward (saved + saved_at[i]). Prediction: the running statistics in REAL. */
typedef struct {
    double *running;
    const REAL *infer;
    REAL *saved;
    const ptrdiff_t *saved_at;
} FN(norm_state);

static double FN(field_double)(const int64_t *op, int field)
{
    double value;
    memcpy(&value, &op[field], sizeof value);
    return value;
}

/* Batch normalization op i on `rows` rows: in training step `step` the batch's statistics, the
 * running ones updated as the layer does (in double); in prediction (step 0) the running ones.
 * -1 when out of memory. */
static int FN(batchnorm_op)(const int64_t *program, int i, int64_t step, const REAL *params, const REAL *in, REAL *out,
                            int rows, const FN(norm_state) *bn)
{
    const int64_t *op = &FIELD(program, i, 0);
    const int d = (int)op[FASTBP_FIELD_IN];
    const REAL *gamma = params + op[FASTBP_FIELD_PARAM_AT], *beta = gamma + d;
    const double momentum = FN(field_double)(op, FASTBP_FIELD_MOMENTUM), eps = FN(field_double)(op, FASTBP_FIELD_EPS);
    const ptrdiff_t at = op[FASTBP_FIELD_STATS_AT];
    if (!step) {
        FN(batchnorm_infer)(in, gamma, beta, bn->infer + at, bn->infer + at + d, out, rows, d, eps);
        return 0;
    }
    REAL *xn = bn->saved + bn->saved_at[i], *std = xn + (ptrdiff_t)rows * d, *mean = std + d, *var = mean + d;
    if (FN(batchnorm_forward)(in, gamma, beta, out, xn, mean, var, std, rows, d, eps) < 0) return -1;
    double *running = bn->running + at;
    for (int j = 0; j < d; ++j) {
        running[j] = momentum * running[j] + (1 - momentum) * (double)mean[j];
        running[d + j] = momentum * running[d + j] + (1 - momentum) * (double)var[j];
    }
    return 0;
}

/* Runs ops [first, last) on `rows` rows starting from `in`; op i writes outs + out_at[i] (a
 * ReLU's or dropout's mask at masks + out_at[i], a pooling's argmax at args + out_at[i]); `step`:
 * the training step whose dropout masks to draw, 0 to predict. Convolution and pooling thread
 * over the rows when the work is at least parallel_min. Returns the last op's output, or NULL
 * when out of memory. */
static const REAL *FN(forward_ops)(const int64_t *program, int first, int last, const REAL *params, const REAL *in,
                                   int rows, REAL *outs, unsigned char *masks, int64_t *args, const ptrdiff_t *out_at,
                                   ptrdiff_t parallel_min, int team, int64_t step, const FN(norm_state) *bn)
{
    const ptrdiff_t elementwise_min = team == FASTBP_PRODUCTS_TEAM ? parallel_min : FASTBP_SERIAL;
    for (int i = first; i < last; ++i) {
        const int64_t *op = &FIELD(program, i, 0);
        const int k = (int)op[FASTBP_FIELD_IN], m = (int)op[FASTBP_FIELD_OUT];
        const double started = fastbp_clock();
        REAL *out = outs + out_at[i];
        const ptrdiff_t size = (ptrdiff_t)rows * m;
        switch (op[FASTBP_FIELD_CODE]) {
        case FASTBP_OP_AFFINE: {
            const REAL *W = params + op[FASTBP_FIELD_PARAM_AT];
            if (team == FASTBP_PRODUCTS_TEAM && !FN(affine_on_calling_thread)(rows, k, m))
                FN(affine_forward_team)(in, W, W + (ptrdiff_t)k * m, out, rows, k, m);
            else
                FN(affine_forward)(in, W, W + (ptrdiff_t)k * m, out, rows, k, m, team != FASTBP_PRODUCTS_BLAS);
            break;
        }
        case FASTBP_OP_RELU: /* threaded only with a team: else BLAS's threads may be spinning (fastbp/threads.py) */
            FN(relu_forward)(in, out, masks + out_at[i], size, elementwise_min);
            break;
        case FASTBP_OP_SIGMOID:
            FN(sigmoid_forward)(in, out, size, elementwise_min);
            break;
        case FASTBP_OP_DROPOUT:
            if (FN(dropout_op)(program, i, step, in, out, masks + out_at[i], size, elementwise_min) < 0) return NULL;
            break;
        case FASTBP_OP_BATCHNORM:
            if (FN(batchnorm_op)(program, i, step, params, in, out, rows, bn) < 0) return NULL;
            break;
        case FASTBP_OP_CONV: {
            const int64_t *f = op + FASTBP_FIELD_SHAPE;
            const REAL *W = params + op[FASTBP_FIELD_PARAM_AT];
            const ptrdiff_t weights = FN(op_weights)(program, i);
            /* (fusing writes a later op's place: never the input's, which prediction's two buffers
             * taking turns would make it for conv - relu) */
            if (FN(fused_at)(program, i, last) && outs + out_at[i + 2] != in) { /* conv - relu - pool: the pooling's output only */
                i += 2;
                out = outs + out_at[i];
                if (FN(conv_relu_pool_forward)(in, W, W + weights, out, args + out_at[i], rows, f,
                                               &FIELD(program, i, FASTBP_FIELD_SHAPE), parallel_min) < 0)
                    return NULL;
            } else {
                unsigned char *relu_mask = NULL; /* conv - relu: the ReLU's output and mask only */
                if (i + 1 < last && FIELD(program, i + 1, FASTBP_FIELD_CODE) == FASTBP_OP_RELU && outs + out_at[i + 1] != in) {
                    out = outs + out_at[++i];
                    relu_mask = masks + out_at[i];
                }
                if (FN(conv_forward)(in, W, W + weights, out, relu_mask, WINDOW_ARGS(f, rows), (int)f[FASTBP_F],
                                     WINDOW_REST(f), parallel_min) < 0)
                    return NULL;
            }
            break;
        }
        case FASTBP_OP_POOL: {
            const int64_t *f = op + FASTBP_FIELD_SHAPE;
            FN(pool_forward)(in, out, args + out_at[i], WINDOW_ARGS(f, rows), WINDOW_REST(f), parallel_min);
            break;
        }
        }
        fastbp_engine_time(0, (int)op[FASTBP_FIELD_CODE], started);
        in = out;
    }
    return in;
}

/* One mini-batch's buffers, shared by the dense and the compact training steps. */
typedef struct {
    const int64_t *program;
    int n_ops, batch, classes;
    int loss_rows;          /* the rows the loss averages over: batch, or the whole batch of a part (parts_init) */
    REAL *params, *grads;
    ptrdiff_t n_params;
    const REAL *input;      /* op 0's input (the gathered batch; NULL for compact rows) */
    REAL *outs;             /* every op's output, batch rows each, at out_at[op] */
    unsigned char *masks;   /* ReLU's and dropout's, beside outs */
    int64_t *args;          /* pooling's argmax, beside outs (NULL without pooling) */
    ptrdiff_t *out_at;
    ptrdiff_t parallel_min; /* convolution and pooling thread from this much work */
    int team;               /* products split on the OpenMP team (team_products) */
    int64_t step;           /* the training step running (1-based): dropout's masks */
    REAL decay;             /* weight decay lambda (0: none) */
    REAL *grad_a, *grad_b;  /* dout and dx of the backward pass, taking turns */
    REAL *y;                /* softmax output */
    REAL *scratch;          /* affine_backward's */
    int64_t *t_batch;       /* the batch's labels */
    FN(norm_state) bn;      /* batch normalization's (its saved and saved_at allocated here) */
} FN(net);

static void FN(net_free)(FN(net) *net)
{
    free(net->outs); free(net->masks); free(net->args); free(net->out_at); free(net->grad_a); free(net->grad_b); free(net->y);
    free(net->scratch); free(net->t_batch); free(net->bn.saved); free((ptrdiff_t *)net->bn.saved_at);
}

/* Whether a network's products run on the engine's own OpenMP team (affine_forward_team) and its
 * elementwise ops and update threaded too: when it has convolution or pooling, which keep that
 * team busy, and the BLAS can be kept to a thread. (An MLP's dense products keep BLAS's threads.) */
static int FN(team_products)(const int64_t *program, int n_ops)
{
    int windows = 0;
    for (int i = 0; i < n_ops; ++i)
        windows |= FIELD(program, i, FASTBP_FIELD_CODE) == FASTBP_OP_CONV || FIELD(program, i, FASTBP_FIELD_CODE) == FASTBP_OP_POOL;
    return windows && FASTBP_MAX_THREADS() > 1 && fastbp_blas_keeps_to_thread();
}

/* Allocates the buffers; returns -1 when out of memory. */
static int FN(net_init)(FN(net) *net, const int64_t *program, int n_ops, int batch, REAL *params, REAL *grads,
                        ptrdiff_t n_params, double *stats, ptrdiff_t parallel_min)
{
    *net = (FN(net)){.program = program, .n_ops = n_ops, .batch = batch, .params = params, .grads = grads,
                     .n_params = n_params, .classes = (int)FIELD(program, n_ops - 1, FASTBP_FIELD_OUT), .loss_rows = batch,
                     .parallel_min = parallel_min, .team = FN(team_products)(program, n_ops), .bn = {.running = stats}};
    net->out_at = malloc(sizeof(ptrdiff_t) * (size_t)n_ops);
    ptrdiff_t *saved_at = malloc(sizeof(ptrdiff_t) * (size_t)n_ops);
    net->bn.saved_at = saved_at;
    if (!net->out_at || !saved_at) {
        FN(net_free)(net);
        return -1;
    }
    ptrdiff_t total = 0, widest = 0, scratch = 1, saved = 0;
    for (int i = 0; i < n_ops; ++i) {
        const int k = (int)FIELD(program, i, FASTBP_FIELD_IN), m = (int)FIELD(program, i, FASTBP_FIELD_OUT);
        net->out_at[i] = total;
        total += (ptrdiff_t)batch * m;
        saved_at[i] = saved; /* a batch normalization's xn, std, mean, var */
        saved += FIELD(program, i, FASTBP_FIELD_CODE) == FASTBP_OP_BATCHNORM ? ((ptrdiff_t)batch + 3) * k : 0;
        widest = k > widest ? k : widest;
        widest = m > widest ? m : widest;
        if (FIELD(program, i, FASTBP_FIELD_CODE) == FASTBP_OP_AFFINE && FN(affine_scratch)(batch, k, m) > scratch)
            scratch = FN(affine_scratch)(batch, k, m);
    }
    net->outs = malloc(sizeof(REAL) * (size_t)total);
    net->masks = malloc((size_t)total);
    int pooling = 0;
    for (int i = 0; i < n_ops; ++i) pooling |= FIELD(program, i, FASTBP_FIELD_CODE) == FASTBP_OP_POOL;
    if (pooling && !(net->args = malloc(sizeof(int64_t) * (size_t)total))) {
        FN(net_free)(net);
        return -1;
    }
    net->grad_a = malloc(sizeof(REAL) * (size_t)batch * widest);
    net->grad_b = malloc(sizeof(REAL) * (size_t)batch * widest);
    net->y = malloc(sizeof(REAL) * (size_t)batch * net->classes);
    net->scratch = malloc(sizeof(REAL) * (size_t)scratch);
    net->t_batch = malloc(sizeof(int64_t) * (size_t)batch);
    net->bn.saved = malloc(sizeof(REAL) * (size_t)(saved > 0 ? saved : 1));
    if (net->outs && net->masks && net->grad_a && net->grad_b && net->y && net->scratch && net->t_batch && net->bn.saved)
        return 0;
    FN(net_free)(net);
    return -1;
}

/* Weight decay's loss term, the book's lambda/2 sum W^2 over every W (in double). */
static double FN(decay_loss)(const FN(net) *net)
{
    double squares = 0;
    for (int i = 0; i < net->n_ops; ++i) {
        const REAL *W = net->params + FIELD(net->program, i, FASTBP_FIELD_PARAM_AT);
        for (ptrdiff_t e = 0, n = FN(op_weights)(net->program, i); e < n; ++e) squares += (double)W[e] * W[e];
    }
    return 0.5 * (double)net->decay * squares;
}

/* Weight decay's gradient: dW[e] += lambda W[e] for `count` weights from w_at. */
static void FN(decay_gradient)(FN(net) *net, ptrdiff_t w_at, ptrdiff_t count)
{
    if (net->decay == 0) return;
    for (ptrdiff_t e = w_at; e < w_at + count; ++e) net->grads[e] += net->decay * net->params[e];
}

/* The forward pass from op `first` (op first - 1's output already in place when first > 0),
 * and the batch's loss. */
static double FN(forward_loss)(FN(net) *net, int first)
{
    const REAL *in = first > 0 ? net->outs + net->out_at[first - 1] : net->input;
    const REAL *logits = FN(forward_ops)(net->program, first, net->n_ops - 1, net->params, in, net->batch, net->outs,
                                         net->masks, net->args, net->out_at, net->parallel_min, net->team, net->step,
                                         &net->bn);
    if (!logits) return OUT_OF_MEMORY;
    const double started = fastbp_clock();
    double loss = FN(softmax_xent_forward)(logits, net->t_batch, net->y, net->batch, net->classes, FASTBP_SERIAL);
    if (net->decay != 0) loss += FN(decay_loss)(net);
    fastbp_engine_time(0, FASTBP_OP_SOFTMAX_LOSS, started);
    return loss;
}

/* Backward through op i, given d loss / d (its output): fills its parameters' gradients and,
 * when need_dx, writes d loss / d (its input) into dx. -1 when out of memory. */
static int FN(backward_op)(FN(net) *net, int i, const REAL *dout, REAL *dx, int need_dx)
{
    const int64_t *op = &FIELD(net->program, i, 0);
    const int k = (int)op[FASTBP_FIELD_IN], m = (int)op[FASTBP_FIELD_OUT], batch = net->batch;
    const REAL *in = i > 0 ? net->outs + net->out_at[i - 1] : net->input;
    switch (op[FASTBP_FIELD_CODE]) {
    case FASTBP_OP_AFFINE: {
        const ptrdiff_t w_at = op[FASTBP_FIELD_PARAM_AT], b_at = w_at + (ptrdiff_t)k * m;
        if (net->team == FASTBP_PRODUCTS_TEAM && !FN(affine_on_calling_thread)(batch, k, m))
            FN(affine_backward_team)(dout, in, net->params + w_at, need_dx ? dx : NULL, net->grads + w_at,
                                     net->grads + b_at, batch, k, m);
        else
            FN(affine_backward)(dout, in, net->params + w_at, need_dx ? dx : NULL, net->grads + w_at, net->grads + b_at,
                                batch, k, m, net->scratch, net->team != FASTBP_PRODUCTS_BLAS); /* the scratch is there: cannot fail */
        FN(decay_gradient)(net, w_at, (ptrdiff_t)k * m);
        break;
    }
    case FASTBP_OP_RELU:
        FN(relu_backward)(dout, net->masks + net->out_at[i], dx, (ptrdiff_t)batch * m,
                          net->team == FASTBP_PRODUCTS_TEAM ? net->parallel_min : FASTBP_SERIAL);
        break;
    case FASTBP_OP_SIGMOID:
        FN(sigmoid_backward)(dout, net->outs + net->out_at[i], dx, (ptrdiff_t)batch * m,
                             net->team == FASTBP_PRODUCTS_TEAM ? net->parallel_min : FASTBP_SERIAL);
        break;
    case FASTBP_OP_DROPOUT:
        FN(dropout_backward)(dout, net->masks + net->out_at[i], dx, (ptrdiff_t)batch * m,
                             net->team == FASTBP_PRODUCTS_TEAM ? net->parallel_min : FASTBP_SERIAL);
        break;
    case FASTBP_OP_BATCHNORM: { /* (dx even for op 0: the buffer is there, and it costs one pass) */
        const ptrdiff_t at = op[FASTBP_FIELD_PARAM_AT];
        const REAL *xn = net->bn.saved + net->bn.saved_at[i];
        if (FN(batchnorm_backward)(dout, xn, xn + (ptrdiff_t)batch * k, net->params + at, dx, net->grads + at,
                                   net->grads + at + k, batch, k) < 0)
            return -1;
        break;
    }
    case FASTBP_OP_CONV: {
        const int64_t *f = op + FASTBP_FIELD_SHAPE;
        const ptrdiff_t w_at = op[FASTBP_FIELD_PARAM_AT], weights = FN(op_weights)(net->program, i);
        if (FN(conv_backward)(dout, in, net->params + w_at, need_dx ? dx : NULL, net->grads + w_at,
                              net->grads + w_at + weights, WINDOW_ARGS(f, batch), (int)f[FASTBP_F], WINDOW_REST(f),
                              net->parallel_min) < 0)
            return -1;
        FN(decay_gradient)(net, w_at, weights);
        break;
    }
    case FASTBP_OP_POOL: {
        const int64_t *f = op + FASTBP_FIELD_SHAPE;
        FN(pool_backward)(dout, net->args + net->out_at[i], dx, WINDOW_ARGS(f, batch), WINDOW_REST(f), net->parallel_min);
        break;
    }
    }
    return 0;
}

/* Backward through the fused conv - relu - pool at ops i, i + 1, i + 2 (fused_at), from d loss /
 * d (the pooling's output): the convolution's gradients and, when need_dx, d loss / d (its input). */
static int FN(fused_backward)(FN(net) *net, int i, const REAL *dout, REAL *dx, int need_dx)
{
    const int64_t *f = &FIELD(net->program, i, FASTBP_FIELD_SHAPE);
    const ptrdiff_t w_at = FIELD(net->program, i, FASTBP_FIELD_PARAM_AT);
    const ptrdiff_t weights = FN(op_weights)(net->program, i);
    const REAL *in = i > 0 ? net->outs + net->out_at[i - 1] : net->input;
    if (FN(conv_relu_pool_backward)(dout, net->outs + net->out_at[i + 2], net->args + net->out_at[i + 2], in,
                                    net->params + w_at, need_dx ? dx : NULL, net->grads + w_at,
                                    net->grads + w_at + weights, net->batch, f,
                                    &FIELD(net->program, i + 2, FASTBP_FIELD_SHAPE), net->parallel_min) < 0)
        return -1;
    FN(decay_gradient)(net, w_at, weights);
    return 0;
}

/* The backward pass from the loss down to op `lowest`; op 0's input (the data) gets no gradient.
 * Returns d loss / d (op lowest's input) (for lowest 1: op 0's output), or NULL when out of memory. */
static REAL *FN(backward_ops)(FN(net) *net, int lowest)
{
    REAL *dout = net->grad_a, *dx = net->grad_b;
    FN(softmax_xent_backward)(net->y, net->t_batch, (REAL)(1.0 / net->loss_rows), dout, net->batch, net->classes,
                              FASTBP_SERIAL);
    for (int i = net->n_ops - 2; i >= lowest; --i) {
        const double started = fastbp_clock();
        const int fused = i - 2 >= lowest && FN(fused_at)(net->program, i - 2, net->n_ops - 1), op = fused ? i - 2 : i;
        if ((fused ? FN(fused_backward)(net, op, dout, dx, op > 0) : FN(backward_op)(net, i, dout, dx, i > 0)) < 0)
            return NULL;
        fastbp_engine_time(1, (int)FIELD(net->program, op, FASTBP_FIELD_CODE), started);
        REAL *swap = dout; dout = dx; dx = swap;
        i = op;
    }
    return dout;
}

static void FN(update)(FN(net) *net, int optimizer, const REAL *hyper, REAL *state, ptrdiff_t from, ptrdiff_t to,
                       int64_t t)
{
    const double started = fastbp_clock();
    FN(optimizer_step)(optimizer, net->params + from, net->grads + from, state + from, state + net->n_params + from,
                       to - from, hyper, t, net->team == FASTBP_PRODUCTS_TEAM ? net->parallel_min : FASTBP_SERIAL);
    fastbp_engine_time(1, FASTBP_OP_COUNT, started);
}

/* Dense rows: each batch gathered, the first op by its kernel (BLAS threads the big product). */
static ptrdiff_t FN(train_dense)(const REAL *x, const int64_t *labels, const int64_t *batches, ptrdiff_t n_steps,
                                 FN(net) *net, int optimizer, const REAL *hyper, REAL *state, int64_t step0,
                                 double *losses)
{
    const int batch = net->batch, n_in = (int)FIELD(net->program, 0, FASTBP_FIELD_IN);
    REAL *x_batch = malloc(sizeof(REAL) * (size_t)batch * n_in);
    if (!x_batch) return -1;
    net->input = x_batch;
    ptrdiff_t done = n_steps;
    for (ptrdiff_t s = 0; s < n_steps; ++s) {
        if (fastbp_stop_requested) { done = s; break; }
        const int64_t *rows = batches + s * batch;
        for (int r = 0; r < batch; ++r) {
            memcpy(x_batch + (ptrdiff_t)r * n_in, x + rows[r] * n_in, sizeof(REAL) * n_in);
            net->t_batch[r] = labels[rows[r]];
        }
        net->step = step0 + s + 1;
        const double loss = FN(forward_loss)(net, 0);
        if (loss == OUT_OF_MEMORY) { done = -1; break; }
        if (!isfinite(loss)) { done = s; break; }
        losses[s] = loss;
        if (!FN(backward_ops)(net, 0)) { done = -1; break; }
        FN(update)(net, optimizer, hyper, state, 0, net->n_params, step0 + s + 1);
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

/* Whether the ops between the first and the loss treat each batch row alone (affine, ReLU,
 * Sigmoid), so that a compact step can run them on parts of the batch, a part a thread (batch
 * normalization's statistics and dropout's draws span the batch: then thread 0 runs them all). */
static int FN(rows_apart)(const int64_t *program, int n_ops)
{
    for (int i = 1; i < n_ops - 1; ++i) {
        const int64_t code = FIELD(program, i, FASTBP_FIELD_CODE);
        if (code != FASTBP_OP_AFFINE && code != FASTBP_OP_RELU && code != FASTBP_OP_SIGMOID) return 0;
    }
    return 1;
}

/* One thread's part of a batch split by rows: a net over rows [r0, r0 + net.batch) of the whole
 * net's outputs (out_at moved to them), with the whole batch's loss scale, its own backward
 * buffers and scratch, and its own gradients (thread 0: the whole net's), no weight decay (added
 * once to the summed gradients). */
typedef struct {
    FN(net) net;
    int r0;
    double loss_sum;   /* the part's loss times its rows */
} FN(part);

static void FN(parts_free)(FN(part) *parts, int threads)
{
    for (int t = 0; parts && t < threads; ++t) {
        FN(net) *p = &parts[t].net;
        free(p->out_at); free(p->grad_a); free(p->grad_b); free(p->scratch);
        if (t) free(p->grads);
    }
    free(parts);
}

static FN(part) *FN(parts_init)(const FN(net) *net, int threads)
{
    FN(part) *parts = calloc((size_t)threads, sizeof(FN(part)));
    if (!parts) return NULL;
    const int n_ops = net->n_ops, batch = net->batch;
    int failed = 0;
    for (int t = 0; t < threads; ++t) {
        const int r0 = (int)((int64_t)batch * t / threads), rows = (int)((int64_t)batch * (t + 1) / threads) - r0;
        FN(net) *p = &parts[t].net;
        *p = *net;
        parts[t].r0 = r0;
        p->batch = rows;
        p->decay = 0;
        p->y = net->y + (ptrdiff_t)r0 * net->classes;
        p->t_batch = net->t_batch + r0;
        p->out_at = malloc(sizeof(ptrdiff_t) * (size_t)n_ops);
        ptrdiff_t widest = 1, scratch = 1;
        for (int i = 0; p->out_at && i < n_ops; ++i) {
            const int k = (int)FIELD(net->program, i, FASTBP_FIELD_IN), m = (int)FIELD(net->program, i, FASTBP_FIELD_OUT);
            p->out_at[i] = net->out_at[i] + (ptrdiff_t)r0 * m;
            widest = k > widest ? k : widest;
            widest = m > widest ? m : widest;
            if (FIELD(net->program, i, FASTBP_FIELD_CODE) == FASTBP_OP_AFFINE && FN(affine_scratch)(rows, k, m) > scratch)
                scratch = FN(affine_scratch)(rows, k, m);
        }
        const size_t size = sizeof(REAL) * (size_t)(rows > 0 ? rows : 1) * (size_t)widest;
        p->grad_a = malloc(size);
        p->grad_b = malloc(size);
        p->scratch = malloc(sizeof(REAL) * (size_t)scratch);
        p->grads = t ? malloc(sizeof(REAL) * (size_t)net->n_params) : net->grads;
        failed |= !p->out_at || !p->grad_a || !p->grad_b || !p->scratch || !p->grads;
    }
    if (!failed) return parts;
    FN(parts_free)(parts, threads);
    return NULL;
}

/* Compact rows into a first affine op: its columns (its weight rows) are split between the
 * threads, in ranges of about equal nonzero counts. Thread t owns rows [cuts[t], cuts[t+1]) of
 * W and dW: it adds their part of the forward product, then computes and applies their
 * gradient. Each thread's share of W stays in its own core's cache, and no two threads write
 * the same rows. For the gradient, each range's batch entries are grouped by column, so that
 * each gradient row is summed in registers and written once. Per step:
 *   1. all: the batch entries of own columns, grouped by column; a prefetch of the
 *      next step's rows (random rows of a set larger than the caches); partial
 *      first-op products of own columns                                       | barrier
 *   2. the later ops, loss and backward: when they treat each row alone (rows_apart), every
 *      thread on its part of the batch rows (sum of partials, forward, backward, d loss / d
 *      op 0's output for its rows, its own gradients); else thread 0 on them all  | barrier
 *      (split: thread 0 sums the parts' gradients, adds weight decay once, updates the
 *      later ops; a step of the seed's network: 14 -> 8 us of the step's 80 on this phase)
 *   3. all: own rows of dW, their update (the next step's forward reads only those rows).
 * Each thread groups its own range, just after finding its entries, which are then in its cache:
 * when thread 1 grouped every range during step 2 (thread 0 being busy), grouping took it twice as
 * long a range, thread 0 read the groups from the other core, and a step took 1.17x as long.
 * The column ranges and the row parts depend only on the data and the thread count, so results
 * repeat exactly for the same number of threads. */
static ptrdiff_t FN(train_compact)(const fastbp_rows *x, const int64_t *labels, const int64_t *batches,
                                   ptrdiff_t n_steps, FN(net) *net, int optimizer, const REAL *hyper, REAL *state,
                                   int64_t step0, double *losses, int threads)
{
    const int batch = net->batch, n_in = (int)FIELD(net->program, 0, FASTBP_FIELD_IN);
    const int m = (int)FIELD(net->program, 0, FASTBP_FIELD_OUT);
    const ptrdiff_t w_at = FIELD(net->program, 0, FASTBP_FIELD_PARAM_AT), b_at = w_at + (ptrdiff_t)n_in * m;
    REAL *W = net->params + w_at, *dW = net->grads + w_at, *out0 = net->outs + net->out_at[0];
    int32_t *cuts = malloc(sizeof(int32_t) * (size_t)(threads + 1));
    REAL *partials = malloc(sizeof(REAL) * (size_t)batch * m * (threads > 1 ? threads - 1 : 1));
    FN(columns) *cols = calloc((size_t)threads, sizeof(FN(columns)));
    /* the later ops on every thread, each on its part of the batch rows, when they allow it */
    FN(part) *pieces = threads > 1 && FN(rows_apart)(net->program, net->n_ops) ? FN(parts_init)(net, threads) : NULL;
    REAL *d1_all = pieces ? malloc(sizeof(REAL) * (size_t)batch * m) : NULL; /* d loss / d op 0's output, every part's rows */
    int ready = cuts && partials && cols && (!pieces || d1_all);
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
    int stop = 0;
    double decay_loss = 0;
    fastbp_barrier barrier = {.count = 0, .sense = 0, .threads = threads};
#pragma omp parallel num_threads(threads) if (ready)
    {
        const int t = FASTBP_THREAD_NUM();
        int sense = 0;
        FN(columns) *own = &cols[t];
        REAL *out = t ? partials + (ptrdiff_t)(t - 1) * batch * m : out0;
        for (ptrdiff_t s = 0; ready && s < n_steps; ++s) {
            const int64_t *rows = batches + s * batch;
            fastbp_own_spans(x, rows, batch, t, threads, own->lo, own->hi, n_in, own->begin, own->end);
            FN(group_by_column)(own, x, batch);
            if (s + 1 < n_steps) fastbp_prefetch_rows(x, rows + batch, batch, sizeof(REAL), t, threads);
            FN(spans_times)(own->begin, own->end, batch, x->indices, x->values, W, t ? NULL : W + (ptrdiff_t)n_in * m, out,
                            m);
            if (t == 0) stop = fastbp_stop_requested; /* read once: every thread acts on the same answer */
            fastbp_barrier_wait(&barrier, &sense);
            const int stopping = stop; /* (read here: thread 0 writes the next step's after the next barrier) */
            if (pieces) {
                FN(part) *mine = &pieces[t];
                FN(net) *part = &mine->net;
                const int r0 = mine->r0, n = part->batch;
                for (int r = r0; r < r0 + n; ++r) net->t_batch[r] = labels[rows[r]];
                for (int u = 1; u < threads; ++u)
                    for (ptrdiff_t e = (ptrdiff_t)r0 * m; e < (ptrdiff_t)(r0 + n) * m; ++e)
                        out0[e] += partials[(ptrdiff_t)(u - 1) * batch * m + e];
                mine->loss_sum = 0;
                if (!stopping && n > 0) {
                    mine->loss_sum = FN(forward_loss)(part, 1) * n;
                    const REAL *d = FN(backward_ops)(part, 1);
                    memcpy(d1_all + (ptrdiff_t)r0 * m, d, sizeof(REAL) * (size_t)n * m);
                    FN(column_sums)(d, part->grads + b_at, n, m);
                } else { /* a part of no rows (a batch smaller than the team) adds nothing */
                    memset(part->grads + b_at, 0, sizeof(REAL) * (size_t)(net->n_params - b_at));
                }
                if (t == 0) decay_loss = net->decay != 0 ? FN(decay_loss)(net) : 0;
                fastbp_barrier_wait(&barrier, &sense);
                double loss = 0; /* summed in the same order on every thread: the same answer */
                for (int u = 0; u < threads; ++u) loss += pieces[u].loss_sum;
                loss = loss / batch + decay_loss;
                if (stopping || !isfinite(loss)) { /* that step's update is not applied (a loss not finite, or a stop) */
                    if (t == 0) done = s;
                    break;
                }
                d1 = d1_all;
                if (t == 0) {
                    losses[s] = loss;
                    net->step = step0 + s + 1;
                    for (int u = 1; u < threads; ++u) /* the later ops' gradients and b's, summed over the parts */
                        for (ptrdiff_t e = b_at; e < net->n_params; ++e) net->grads[e] += pieces[u].net.grads[e];
                    for (int i = 1; i < net->n_ops; ++i)
                        FN(decay_gradient)(net, FIELD(net->program, i, FASTBP_FIELD_PARAM_AT), FN(op_weights)(net->program, i));
                    FN(update)(net, optimizer, hyper, state, 0, w_at, step0 + s + 1);
                    FN(update)(net, optimizer, hyper, state, b_at, net->n_params, step0 + s + 1);
                }
            } else {
#pragma omp master
                {
                    for (int r = 0; r < batch; ++r) net->t_batch[r] = labels[rows[r]];
                    net->step = step0 + s + 1;
                    for (int u = 1; u < threads; ++u)
                        for (ptrdiff_t e = 0; e < (ptrdiff_t)batch * m; ++e) out0[e] += partials[(ptrdiff_t)(u - 1) * batch * m + e];
                    const double loss = stopping ? NAN : FN(forward_loss)(net, 1); /* stopped: not applied */
                    if (isfinite(loss)) {
                        losses[s] = loss;
                        d1 = FN(backward_ops)(net, 1);
                        FN(column_sums)(d1, net->grads + b_at, batch, m);
                        FN(update)(net, optimizer, hyper, state, 0, w_at, step0 + s + 1);
                        FN(update)(net, optimizer, hyper, state, b_at, net->n_params, step0 + s + 1);
                    } else {
                        done = s; /* that step's update is not applied (a loss not finite, or a stop) */
                    }
                }
                fastbp_barrier_wait(&barrier, &sense);
                if (done == s) break;
            }
            /* dW row c = sum of v * d1[r] over column c's entries (zero without entries) */
            FN(spans_times)(own->first, own->last, own->hi - own->lo, own->rr, own->vv, d1, NULL, dW + (ptrdiff_t)own->lo * m,
                            m);
            FN(decay_gradient)(net, w_at + (ptrdiff_t)own->lo * m, (ptrdiff_t)(own->hi - own->lo) * m);
            FN(update)(net, optimizer, hyper, state, w_at + (ptrdiff_t)own->lo * m, w_at + (ptrdiff_t)own->hi * m,
                       step0 + s + 1);
        }
    }
    for (int t = 0; cols && t < threads; ++t) FN(columns_free)(&cols[t]);
    FN(parts_free)(pieces, threads);
    free(cuts); free(partials); free(cols); free(d1_all);
    return ready ? done : -1;
}

/* The weights of the affine ops after the first: how much product work a compact step leaves
 * to its calling thread. */
static ptrdiff_t FN(later_products)(const int64_t *program, int n_ops)
{
    ptrdiff_t weights = 0;
    for (int i = 1; i < n_ops; ++i)
        if (FIELD(program, i, FASTBP_FIELD_CODE) == FASTBP_OP_AFFINE)
            weights += (ptrdiff_t)FIELD(program, i, FASTBP_FIELD_IN) * FIELD(program, i, FASTBP_FIELD_OUT);
    return weights;
}

/* Threads for the compact paths (compact: the first op reads compact rows, or rows compacted as
 * read): all of OpenMP's when every op after the first stays on the calling thread (a large
 * affine op goes to BLAS, whose threads would fight ours), else one. */
static int FN(engine_threads)(int compact, const int64_t *program, int n_ops, int rows)
{
    if (!compact) return 1;
    for (int i = 1; i < n_ops; ++i)
        if (FIELD(program, i, FASTBP_FIELD_CODE) == FASTBP_OP_AFFINE &&
            !FN(affine_on_calling_thread)(rows, (int)FIELD(program, i, FASTBP_FIELD_IN), (int)FIELD(program, i, FASTBP_FIELD_OUT)))
            return 1;
    return FASTBP_MAX_THREADS();
}

ptrdiff_t FN(train_steps)(const fastbp_rows *x, const int64_t *labels, const int64_t *batches, ptrdiff_t n_steps,
                          int batch, REAL *params, REAL *grads, ptrdiff_t n_params, const int64_t *program, int n_ops,
                          int optimizer, const REAL *hyper, REAL *state, int64_t step0, double *losses, double *stats,
                          ptrdiff_t parallel_min)
{
    if (n_steps == 0) return 0;
    FN(net) net;
    if (FN(net_init)(&net, program, n_ops, batch, params, grads, n_params, stats, parallel_min) < 0) return -1;
    net.decay = hyper[FASTBP_HYPER_DECAY];
    int threads = FN(engine_threads)(!x->dense, program, n_ops, batch);
    if (net.team == FASTBP_PRODUCTS_HERE && FN(later_products)(program, n_ops) >= FASTBP_LATER_ON_BLAS) {
        threads = 1; /* a deep MLP: its later products on BLAS's threads, not on one of ours */
        net.team = FASTBP_PRODUCTS_BLAS;
    }
    const ptrdiff_t done =
        x->dense ? FN(train_dense)(x->dense, labels, batches, n_steps, &net, optimizer, hyper, state, step0, losses)
                 : FN(train_compact)(x, labels, batches, n_steps, &net, optimizer, hyper, state, step0, losses, threads);
    FN(net_free)(&net);
    return done;
}

/* labels[i] = argmax of the network's output for row i (first maximum wins, as np.argmax), the
 * ops before the loss run on `chunk` rows at a time. Compact rows: chunks on all threads (the
 * first op as in train_compact, from the rows' own entries). Dense rows that look mostly zero
 * into a first affine op (looks_compact; finite weights, so that no 0 * inf is skipped): the
 * same, each row compacted as it is read (MNIST's 60000 float32 images into a float64 net: 102 ms
 * converted to float64 in Python and multiplied densely a chunk at a time, 37 ms this way). Other
 * dense rows: BLAS's threads, float32 rows into a float64 network converted a chunk at a time. */
int FN(predict_labels)(const fastbp_rows *x, ptrdiff_t n_rows, const REAL *params, const int64_t *program, int n_ops,
                       const double *stats, ptrdiff_t n_stats, int chunk, int64_t *labels, ptrdiff_t parallel_min)
{
    const int64_t *first = &FIELD(program, 0, 0);
    const int k0 = (int)first[FASTBP_FIELD_IN], m0 = (int)first[FASTBP_FIELD_OUT];
    const REAL *W0 = params + first[FASTBP_FIELD_PARAM_AT];
    const int compacting = x->dense && first[FASTBP_FIELD_CODE] == FASTBP_OP_AFFINE &&
                           FN(looks_compact)(x->dense, x->dense_f32, n_rows < chunk ? (int)n_rows : chunk, k0) &&
                           FN(all_finite)(W0, (ptrdiff_t)k0 * m0);
    const int threads = FN(engine_threads)(!x->dense || compacting, program, n_ops, chunk);
    const int c = (int)FIELD(program, n_ops - 1, FASTBP_FIELD_OUT), team = threads == 1 && FN(team_products)(program, n_ops);
    const ptrdiff_t n_chunks = (n_rows + chunk - 1) / chunk;
    ptrdiff_t widest = 0;
    for (int i = 0; i < n_ops; ++i)
        widest = FIELD(program, i, FASTBP_FIELD_OUT) > widest ? FIELD(program, i, FASTBP_FIELD_OUT) : widest;
    ptrdiff_t *out_at = malloc(sizeof(ptrdiff_t) * (size_t)n_ops); /* two buffers, taking turns */
    for (int i = 0; out_at && i < n_ops; ++i) out_at[i] = (ptrdiff_t)(i % 2) * chunk * widest;
    REAL *infer = malloc(sizeof(REAL) * (size_t)(n_stats > 0 ? n_stats : 1)); /* rounded once, as the layer rounds them */
    for (ptrdiff_t e = 0; infer && e < n_stats; ++e) infer[e] = (REAL)stats[e];
    const FN(norm_state) bn = {.infer = infer};
    int failed = !out_at || !infer;
    /* per thread: a compacted row (k0 entries, and k0 floats of a float32 row before widening), or
     * a converted chunk of float32 rows */
    const int converting = x->dense && x->dense_f32 && !compacting;
    const size_t row_entries = compacting ? (size_t)k0 : 1, converted = converting ? (size_t)chunk * k0 : 1;
#pragma omp parallel num_threads(threads) if (!failed)
    {
        REAL *buffers = malloc(sizeof(REAL) * 2 * (size_t)chunk * widest);
        unsigned char *mask = malloc(2 * (size_t)chunk * widest);
        int64_t *args = malloc(sizeof(int64_t) * 2 * (size_t)chunk * widest); /* pooling's argmax */
        int32_t *row_indices = malloc(sizeof(int32_t) * row_entries);
        REAL *row_values = malloc(sizeof(REAL) * row_entries), *rows_in = malloc(sizeof(REAL) * converted);
        float *spare = malloc(sizeof(float) * row_entries);
        const int ok = buffers && mask && args && row_indices && row_values && rows_in && spare;
        if (!ok) failed = 1;
#pragma omp for schedule(dynamic)
        for (ptrdiff_t i = 0; i < n_chunks; ++i) {
            if (!ok || failed) continue;
            const ptrdiff_t start = i * chunk;
            const int rows = (int)(n_rows - start < chunk ? n_rows - start : chunk);
            const REAL *logits;
            if (x->dense && !compacting) { /* every op in one pass: a first conv - relu - pool fused as in training */
                const REAL *in = (const REAL *)x->dense + start * k0;
                if (converting) {
                    const float *from = (const float *)x->dense + start * k0;
                    for (ptrdiff_t e = 0; e < (ptrdiff_t)rows * k0; ++e) rows_in[e] = from[e];
                    in = rows_in;
                }
                logits = FN(forward_ops)(program, 0, n_ops - 1, params, in, rows, buffers, mask, args, out_at, parallel_min,
                                         team, 0, &bn);
            } else { /* op 0 from each row's nonzeros (compact rows, or dense rows compacted as read), then the others */
                if (compacting)
                    for (int r = 0; r < rows; ++r) {
                        const int64_t begin = 0, end = FN(compact_input_row)(x->dense, x->dense_f32, start + r, k0,
                                                                              row_indices, row_values, spare);
                        FN(spans_times)(&begin, &end, 1, row_indices, row_values, W0, W0 + (ptrdiff_t)k0 * m0,
                                        buffers + out_at[0] + (ptrdiff_t)r * m0, m0);
                    }
                else
                    FN(spans_times)(x->indptr + start, x->indptr + start + 1, rows, x->indices, x->values, W0,
                                    W0 + (ptrdiff_t)k0 * m0, buffers + out_at[0], m0);
                logits = FN(forward_ops)(program, 1, n_ops - 1, params, buffers + out_at[0], rows, buffers, mask, args,
                                         out_at, parallel_min, team, 0, &bn);
            }
            if (!logits) {
                failed = 1;
                continue;
            }
            for (int r = 0; r < rows; ++r) {
                int best = 0;
                for (int j = 1; j < c; ++j)
                    if (logits[(ptrdiff_t)r * c + j] > logits[(ptrdiff_t)r * c + best]) best = j;
                labels[start + r] = best;
            }
        }
        free(buffers);
        free(mask);
        free(args);
        free(row_indices);
        free(row_values);
        free(rows_in);
        free(spare);
    }
    free(out_at);
    free(infer);
    return failed ? -1 : 0;
}

#undef FIELD
#undef OUT_OF_MEMORY
#undef WINDOW_ARGS
#undef WINDOW_REST
