/* Every templated kernel, declared once per floating type (kernels.h includes this through
 * each_real.h). Grouped by family, in the order of kernels.h's list. */

/* elementwise.c */
void FN(relu_forward)(const REAL *x, REAL *out, unsigned char *mask, ptrdiff_t n, ptrdiff_t parallel_min);
void FN(relu_backward)(const REAL *dout, const unsigned char *mask, REAL *dx, ptrdiff_t n, ptrdiff_t parallel_min);
void FN(exp)(const REAL *x, REAL *out, ptrdiff_t n, ptrdiff_t parallel_min); /* vexp.h's, the one softmax uses */
void FN(sigmoid_forward)(const REAL *x, REAL *out, ptrdiff_t n, ptrdiff_t parallel_min);
void FN(sigmoid_backward)(const REAL *dout, const REAL *out, REAL *dx, ptrdiff_t n, ptrdiff_t parallel_min);

void FN(dropout_forward)(const REAL *x, const double *draw, double ratio, REAL *out, unsigned char *keep, ptrdiff_t n,
                        ptrdiff_t parallel_min);
void FN(dropout_backward)(const REAL *dout, const unsigned char *keep, REAL *dx, ptrdiff_t n, ptrdiff_t parallel_min);
void FN(dropout_forward_mt)(const REAL *x, uint32_t *state, double ratio, REAL *out, unsigned char *keep, ptrdiff_t n,
                            ptrdiff_t parallel_min);

/* affine.c: out = x W + b; dx = dout W^T (dx NULL: skipped), dW = x^T dout, db = column sums.
 * `stay`: keep small products on the calling thread (kernels.h's rule). affine_backward's scratch
 * holds affine_scratch items, or is NULL (then the kernel allocates it; -1 when it cannot). */
void FN(affine_forward)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m, int stay);
int FN(affine_backward)(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW, REAL *db, int n, int k,
                        int m, REAL *scratch, int stay);
int FN(affine_on_calling_thread)(int n, int k, int m);
/* the same products split between the OpenMP threads, BLAS kept to each (fastbp_team_products) */
void FN(affine_forward_team)(const REAL *x, const REAL *W, const REAL *b, REAL *out, int n, int k, int m);
void FN(affine_backward_team)(const REAL *dout, const REAL *x, const REAL *W, REAL *dx, REAL *dW, REAL *db, int n, int k,
                              int m);
ptrdiff_t FN(affine_scratch)(int n, int k, int m);
/* the layers' (module.c): x is REAL, or float32 into double weights (x_f32); its zeros skipped
 * when its rows are mostly zero; else on the OpenMP team where BLAS would thread them, else as
 * affine_forward / affine_backward. -1: out of memory. */
int FN(affine_forward_layer)(const void *x, int x_f32, const REAL *W, const REAL *b, REAL *out, int n, int k, int m);
int FN(affine_backward_layer)(const REAL *dout, const void *x, int x_f32, const REAL *W, REAL *dx, REAL *dW, REAL *db,
                              int n, int k, int m);
void FN(column_sums)(const REAL *a, REAL *sums, int n, int m);

/* loss.c */
double FN(softmax_xent_forward)(const REAL *x, const int64_t *labels, REAL *y, int n, int c, ptrdiff_t parallel_min);
void FN(softmax_xent_backward)(const REAL *y, const int64_t *labels, REAL scale, REAL *dx, int n, int c,
                               ptrdiff_t parallel_min);
double FN(one_hot_labels)(const REAL *t, int64_t *labels, int n, int c);
double FN(half_squared_error)(const REAL *y, const REAL *t, ptrdiff_t n);
void FN(scaled_difference)(const REAL *y, const REAL *t, REAL scale, REAL *dx, ptrdiff_t n, ptrdiff_t parallel_min);

/* conv.c: Wt is W (F, C, FH, FW); the int -1 returns mean out of memory */
int FN(conv_forward)(const REAL *x, const REAL *Wt, const REAL *b, REAL *out, unsigned char *relu_mask, int N, int C, int H,
                     int W, int F, int FH, int FW, int stride, int pad, int OH, int OW, ptrdiff_t parallel_min);
int FN(conv_backward)(const REAL *dout, const REAL *x, const REAL *Wt, REAL *dx, REAL *dW, REAL *db, int N, int C, int H,
                      int W, int F, int FH, int FW, int stride, int pad, int OH, int OW, ptrdiff_t parallel_min);
void FN(pool_forward)(const REAL *x, REAL *out, int64_t *arg_max, int N, int C, int H, int W, int PH, int PW, int stride,
                      int pad, int OH, int OW, ptrdiff_t parallel_min);
void FN(pool_backward)(const REAL *dout, const int64_t *arg_max, REAL *dx, int N, int C, int H, int W, int PH, int PW,
                       int stride, int pad, int OH, int OW, ptrdiff_t parallel_min);

/* conv - relu - max pooling fused (the engine's): conv and pool are the ops' shape fields
 * (kernels.h); out and arg_max the pooling's, pooled_out its forward output */
int FN(conv_relu_pool_forward)(const REAL *x, const REAL *Wt, const REAL *b, REAL *out, int64_t *arg_max, int N,
                               const int64_t *conv, const int64_t *pool, ptrdiff_t parallel_min);
int FN(conv_relu_pool_backward)(const REAL *dout, const REAL *pooled_out, const int64_t *arg_max, const REAL *x,
                                const REAL *Wt, REAL *dx, REAL *dW, REAL *db, int N, const int64_t *conv,
                                const int64_t *pool, ptrdiff_t parallel_min);

/* batchnorm.c: the columns of x (N, D) */
int FN(batchnorm_forward)(const REAL *x, const REAL *gamma, const REAL *beta, REAL *out, REAL *xn, REAL *mean,
                          REAL *var, REAL *std, int N, int D, double eps);
void FN(batchnorm_infer)(const REAL *x, const REAL *gamma, const REAL *beta, const REAL *mean, const REAL *var,
                         REAL *out, int N, int D, double eps);
int FN(batchnorm_backward)(const REAL *dout, const REAL *xn, const REAL *std, const REAL *gamma, REAL *dx,
                           REAL *dgamma, REAL *dbeta, int N, int D);

/* optimizers.c: step t (1-based) of update rule `code` on n parameters, with their state m and v
 * (Momentum's velocity is m; Adam's moments are m and v) */
void FN(optimizer_step)(int code, REAL *param, const REAL *grad, REAL *m, REAL *v, ptrdiff_t n, const REAL *hyper,
                        int64_t t, ptrdiff_t parallel_min);

/* rows.c: out[r, :] = start + x_r M for compact rows (entries [begin[r], end[r])) or dense rows */
void FN(spans_times)(const int64_t *begin, const int64_t *end, int n, const int32_t *indices, const REAL *values,
                     const REAL *M, const REAL *start, REAL *out, int m);
void FN(dense_times)(const REAL *x, int n, int k, const REAL *M, const REAL *start, REAL *out, int m);
void FN(transposed_dense_times)(const REAL *x, int n, int k, const REAL *M, REAL *out, int m); /* out = x^T M */
/* out (n, m) = a (n, k) B (k, m) plus row_start[i] on row i (NULL: none), register-tiled; out's
 * rows ldo apart, B's row p at B + offsets[p] (NULL: p m) */
void FN(tiles_times)(const REAL *a, int n, int k, const REAL *B, const ptrdiff_t *offsets, int m,
                     const REAL *row_start, REAL *out, ptrdiff_t ldo);
/* the columns one tile of tiles_times covers on this CPU (3 vectors) */
int FN(tile_columns)(void);
/* out = a B^T (a (n, m), B (k, m)), each row made of `segments` runs of m: a's row i at a + i lda,
 * run s at s m; B's row c at B + offsets[c] (NULL: c m, one run), run s at s step */
void FN(times_transposed)(const REAL *a, int n, int m, ptrdiff_t lda, int segments, const REAL *B,
                          const ptrdiff_t *offsets, ptrdiff_t step, int k, REAL *out);
/* out = a^T B (a (n, k), B (n, m)), for at most FASTBP_FEW_ROWS rows */
void FN(transposed_times)(const REAL *a, int n, int k, const REAL *B, int m, REAL *out);
void FN(count_nonzeros)(const REAL *x, int64_t n, int64_t k, int64_t *indptr);
void FN(compact_rows)(const REAL *x, int64_t n, int64_t k, const int64_t *indptr, int32_t *indices, REAL *values);
/* one row's nonzeros into indices and values (k entries each): their count */
int64_t FN(compact_row)(const REAL *row, int64_t k, int32_t *indices, REAL *values);
/* x (n, k), float32 when x_f32 (a double engine's or layer's float32 input), else REAL: whether it
 * looks mostly zero (its first row's density), row i compacted (spare: k floats) */
int FN(looks_compact)(const void *x, int x_f32, int n, int k);
int64_t FN(compact_input_row)(const void *x, int x_f32, ptrdiff_t i, int k, int32_t *indices, REAL *values, float *spare);
int FN(all_finite)(const REAL *a, ptrdiff_t count); /* no inf or NaN */

/* engine.c: `program` is n_ops records of FASTBP_OP_FIELDS; `stats` the batch normalizations'
 * running statistics (n_stats entries); returns steps done (fewer when a loss is not finite: that
 * step not applied) or -1 when out of memory */
ptrdiff_t FN(train_steps)(const fastbp_rows *x, const int64_t *labels, const int64_t *batches, ptrdiff_t n_steps,
                          int batch, REAL *params, REAL *grads, ptrdiff_t n_params, const int64_t *program, int n_ops,
                          int optimizer, const REAL *hyper, REAL *state, int64_t step0, double *losses, double *stats,
                          ptrdiff_t parallel_min);
int FN(predict_labels)(const fastbp_rows *x, ptrdiff_t n_rows, const REAL *params, const int64_t *program, int n_ops,
                       const double *stats, ptrdiff_t n_stats, int chunk, int64_t *labels, ptrdiff_t parallel_min);
