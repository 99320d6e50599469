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

/* The windows of one sample x (C, H, W) (its channels `plane` apart, its rows `row` apart: H W and
 * W when contiguous) as the columns of rows (C FH FW, OH OW), its rows ld apart (ld >= OH OW: several samples side by
 * side): row (c, fy, fx) holds, for every output
 * (oy, ox), the input its window reads at (c, fy, fx), zero in the padding: the book's im2col,
 * transposed, so that each row is made of runs of the input rows (whole copies at stride 1) and
 * the product filters x rows gives the output in its own layout. */
static void FN(im2row)(const REAL *x, ptrdiff_t plane, ptrdiff_t row_at, int C, int H, int W, int FH, int FW, int stride,
                       int pad, int OH, int OW, REAL *rows, ptrdiff_t ld)
{
    for (int c = 0; c < C; ++c)
        for (int fy = 0; fy < FH; ++fy)
            for (int fx = 0; fx < FW; ++fx) {
                REAL *row = rows + ((ptrdiff_t)(c * FH + fy) * FW + fx) * ld;
                int lo, hi;
                FN(inside)(W, fx, stride, pad, OW, &lo, &hi);
                for (int oy = 0; oy < OH; ++oy) {
                    REAL *o = row + (ptrdiff_t)oy * OW;
                    const int iy = oy * stride - pad + fy;
                    if (iy < 0 || iy >= H) {
                        for (int ox = 0; ox < OW; ++ox) o[ox] = 0;
                        continue;
                    }
                    const REAL *in = x + c * plane + iy * row_at - pad + fx; /* in[ox * stride] */
                    for (int ox = 0; ox < lo; ++ox) o[ox] = 0;
                    if (stride == 1) /* loops, not memcpy and memset: runs of 7-28 entries, a library call each */
                        for (int ox = lo; ox < hi; ++ox) o[ox] = in[ox];
                    else
                        for (int ox = lo; ox < hi; ++ox) o[ox] = in[(ptrdiff_t)ox * stride];
                    for (int ox = hi; ox < OW; ++ox) o[ox] = 0;
                }
            }
}

/* The transpose of im2row: each entry of rows (ld apart, each output row `row_at` further than
 * the one before: OW when compact) added into the sample's dx (C, H, W), zeroed first. */
static void FN(row2im)(const REAL *rows, ptrdiff_t ld, ptrdiff_t row_at, int C, int H, int W, int FH, int FW, int stride,
                       int pad, int OH, int OW, REAL *dx)
{
    memset(dx, 0, sizeof(REAL) * (size_t)C * H * W);
    for (int c = 0; c < C; ++c)
        for (int fy = 0; fy < FH; ++fy)
            for (int fx = 0; fx < FW; ++fx) {
                const REAL *row = rows + ((ptrdiff_t)(c * FH + fy) * FW + fx) * ld;
                int lo, hi;
                FN(inside)(W, fx, stride, pad, OW, &lo, &hi);
                for (int oy = 0; oy < OH; ++oy) {
                    const int iy = oy * stride - pad + fy;
                    if (iy < 0 || iy >= H) continue;
                    REAL *out = dx + ((ptrdiff_t)c * H + iy) * W - pad + fx; /* out[ox * stride] */
                    const REAL *r = row + oy * row_at;
                    for (int ox = lo; ox < hi; ++ox) out[(ptrdiff_t)ox * stride] += r[ox];
                }
            }
}

/* The sample x (C, H, W; its channels `plane` apart, its rows `row_at`) into the inside of p
 * (C, H + 2 pad, W + 2 pad), whose border was zeroed once and is never written. */
static void FN(pad_inside)(const REAL *x, ptrdiff_t plane, ptrdiff_t row_at, int C, int H, int W, int pad, REAL *p)
{
    const ptrdiff_t Wp = W + 2 * pad;
    for (int c = 0; c < C; ++c)
        for (int y = 0; y < H; ++y)
            memcpy(p + ((ptrdiff_t)c * (H + 2 * pad) + y + pad) * Wp + pad, x + c * plane + y * row_at,
                   sizeof(REAL) * (size_t)W);
}

/* ---- One sample's convolution, the forward's and the flipped dx's (conv_backward_group). At
 * stride 1 it reads its windows in place: with the input padded into rows Wp = W + 2 pad wide
 * (Hp = H + 2 pad of them a channel), tap (c, fy, fx) of output (oy, ox) reads entry
 * offsets[tap] + oy Wp + ox, offsets[tap] = (c Hp + fy) Wp + fx. So the filters times the windows
 * runs on the padded input itself (tiles_times with offsets), each tap's row a shifted run of it,
 * in one of two forms:
 *   - ROWS_OF_TILES: output row by output row, when a row is whole tiles (SimpleConvNet's 24
 *     places: 3 vectors of float, 6 of double): nothing wasted, nothing copied but the padding;
 *   - GRID: the outputs as one run j = oy Wp + ox, the Wp - OW places past each row's end
 *     (reading into the next row) computed too and dropped when the output is copied out.
 * Either way no window is copied: im2row writes C FH FW x OH OW entries a sample (9x the input at
 * 3 x 3); GRID writes C Hp Wp and F OH OW and computes F C FH FW (Wp - OW) OH more products, so it
 * is taken when there are at least as many taps as filters (DeepConvNet's 3 x 3 layers over 16-64
 * channels). Otherwise, and at other strides, WINDOWS: im2row, then the product (kernels.h names
 * the forms). */
typedef struct {
    int C, H, W, F, FH, FW, stride, pad, OH, OW, form;
    const ptrdiff_t *offsets; /* in place: each tap's offset (window_offsets), shared by the threads */
    REAL *padded;             /* in place: the padded input, its border zeroed once; NULL: x read where it is */
    REAL *grid;               /* GRID: the output on the grid; NULL: the grid is the output (Wp = OW) */
    REAL *rows;               /* WINDOWS: the windows (C FH FW, OH OW) */
} FN(sample_conv);

/* The form sample_conv takes for this shape (the rules above). */
static int FN(conv_form)(int C, int W, int F, int FH, int FW, int stride, int pad)
{
    const int OW = W + 2 * pad - FW + 1;
    if (stride != 1) return FASTBP_CONV_WINDOWS;
    if (OW % FN(tile_columns)() == 0) return FASTBP_CONV_ROWS_OF_TILES;
    return F <= C * FH * FW ? FASTBP_CONV_GRID : FASTBP_CONV_WINDOWS;
}

/* The taps' offsets for a sample_conv in place (NULL when out of memory), freed by the caller. */
static ptrdiff_t *FN(window_offsets)(int C, int H, int W, int FH, int FW, int pad)
{
    const ptrdiff_t Hp = H + 2 * pad, Wp = W + 2 * pad;
    ptrdiff_t *offsets = malloc(sizeof(ptrdiff_t) * (size_t)C * FH * FW), *o = offsets;
    for (int c = 0; o && c < C; ++c)
        for (int fy = 0; fy < FH; ++fy)
            for (int fx = 0; fx < FW; ++fx) *o++ = (c * Hp + fy) * Wp + fx;
    return offsets;
}

/* A thread's buffers for one shape's sample convolutions in the given form, offsets its taps'
 * unless the form is WINDOWS (`contiguous`: inputs will have their channels H W apart, and
 * without padding are read where they are); -1 when out of memory. sample_conv_end frees them,
 * also after a failure. */
static int FN(sample_conv_start)(FN(sample_conv) *c, int form, const ptrdiff_t *offsets, int contiguous, int C, int H,
                                 int W, int F, int FH, int FW, int stride, int pad)
{
    const int Hp = H + 2 * pad, Wp = W + 2 * pad, copy = pad > 0 || !contiguous;
    *c = (FN(sample_conv)){C, H, W, F, FH, FW, stride, pad, (Hp - FH) / stride + 1, (Wp - FW) / stride + 1, form,
                           offsets, NULL, NULL, NULL};
    if (form == FASTBP_CONV_WINDOWS) {
        c->rows = malloc(sizeof(REAL) * (size_t)C * FH * FW * c->OH * c->OW);
        return c->rows ? 0 : -1;
    }
    const int grid = form == FASTBP_CONV_GRID && Wp != c->OW;
    if (copy) c->padded = calloc((size_t)C * Hp * Wp, sizeof(REAL));
    if (grid) c->grid = malloc(sizeof(REAL) * (size_t)F * ((c->OH - 1) * Wp + c->OW));
    return (copy && !c->padded) || (grid && !c->grid) ? -1 : 0;
}

static void FN(sample_conv_end)(FN(sample_conv) *c)
{
    free(c->padded);
    free(c->grid);
    free(c->rows);
}

/* out (F, OH, OW) = filters (F, C FH FW) over the sample x (its channels `plane` apart, its rows
 * `row_at` apart), plus b (NULL: none). */
static void FN(sample_conv_run)(const FN(sample_conv) *c, const REAL *x, ptrdiff_t plane, ptrdiff_t row_at,
                                const REAL *filters, const REAL *b, REAL *out)
{
    const int k = c->C * c->FH * c->FW, area = c->OH * c->OW;
    if (c->form == FASTBP_CONV_WINDOWS) {
        FN(im2row)(x, plane, row_at, c->C, c->H, c->W, c->FH, c->FW, c->stride, c->pad, c->OH, c->OW, c->rows, area);
        FN(tiles_times)(filters, c->F, k, c->rows, NULL, area, b, out, area);
        return;
    }
    const int Wp = c->W + 2 * c->pad, m = (c->OH - 1) * Wp + c->OW;
    const REAL *in = x;
    if (c->padded) {
        FN(pad_inside)(x, plane, row_at, c->C, c->H, c->W, c->pad, c->padded);
        in = c->padded;
    }
    if (c->form == FASTBP_CONV_ROWS_OF_TILES) {
        for (int oy = 0; oy < c->OH; ++oy)
            FN(tiles_times)(filters, c->F, k, in + (ptrdiff_t)oy * Wp, c->offsets, c->OW, b, out + oy * c->OW, area);
        return;
    }
    FN(tiles_times)(filters, c->F, k, in, c->offsets, m, b, c->grid ? c->grid : out, m);
    for (int f = 0; c->grid && f < c->F; ++f)
        for (int oy = 0; oy < c->OH; ++oy)
            memcpy(out + (ptrdiff_t)f * area + oy * c->OW, c->grid + (ptrdiff_t)f * m + (ptrdiff_t)oy * Wp,
                   sizeof(REAL) * (size_t)c->OW);
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
 * out_n (F, OH OW) = W (F, C FH FW) rows_n, rows_n the sample's windows (sample_conv). With
 * relu_mask (the engine's conv - relu), out is the ReLU of that, taken while the sample is in
 * cache, and relu_mask its ReLU's mask (relu_forward's). Returns -1 when out of memory. */
int FN(conv_forward)(const REAL *x, const REAL *Wt, const REAL *b, REAL *out, unsigned char *relu_mask, int N, int C,
                     int H, int W, int F, int FH, int FW, int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    const ptrdiff_t area = (ptrdiff_t)OH * OW;
    const int form = FN(conv_form)(C, W, F, FH, FW, stride, pad);
    ptrdiff_t *offsets = form != FASTBP_CONV_WINDOWS ? FN(window_offsets)(C, H, W, FH, FW, pad) : NULL;
    int failed = form != FASTBP_CONV_WINDOWS && !offsets;
#pragma omp parallel if ((ptrdiff_t)N * F * area * C * FH * FW >= parallel_min && !failed)
    {
        FN(sample_conv) conv;
        REAL *z = relu_mask ? malloc(sizeof(REAL) * (size_t)(F * area)) : NULL; /* the convolution before its ReLU */
        if (FN(sample_conv_start)(&conv, form, offsets, 1, C, H, W, F, FH, FW, stride, pad) || (relu_mask && !z)) failed = 1;
#pragma omp for schedule(static)
        for (int n = 0; n < N; ++n) {
            if (failed) continue;
            REAL *o = out + (ptrdiff_t)n * F * area;
            FN(sample_conv_run)(&conv, x + (ptrdiff_t)n * C * H * W, (ptrdiff_t)H * W, W, Wt, b, relu_mask ? z : o);
            if (relu_mask) FN(relu_forward)(z, o, relu_mask + (ptrdiff_t)n * F * area, F * area, FASTBP_SERIAL);
        }
        FN(sample_conv_end)(&conv);
        free(z);
    }
    free(offsets);
    return failed ? -1 : 0;
}

/* Samples a convolution's backward takes together: enough that G OH OW reaches
 * FASTBP_CONV_GROUP_AREA (kernels.h), so that small outputs still make long dot products. */
static int FN(conv_group)(int N, ptrdiff_t area)
{
    const ptrdiff_t g = FASTBP_CONV_GROUP_AREA / area;
    return g < 1 ? 1 : g > N ? N : (int)g;
}

/* How a convolution's backward computes dx. At stride 1 with square filters and pad < FH, dx is
 * itself a convolution: of dout, padded by FH - 1 - pad, with the filters flipped and their C and
 * F swapped (`flipped`, (C, F FH FW)), so it runs as the forward does (in place, in register
 * tiles writing dx) when F <= 2 C: its product has C rows, and SimpleConvNet's 30 filters over
 * one channel ran 1.7x slower so (one-row tiles). Otherwise W^T (C FH FW, F) times dout gives
 * each window's share, added into dx by row2im (a pass of scattered adds). Returns the matrix to
 * use, or NULL when out of memory; *flip says which. */
static REAL *FN(dx_filters)(const REAL *Wt, int C, int F, int FH, int FW, int stride, int pad, int *flip)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW;
    REAL *m = malloc(sizeof(REAL) * (size_t)(ck * F));
    *flip = stride == 1 && FH == FW && pad < FH && F <= 2 * C;
    if (!m) return NULL;
    if (!*flip) {
        FN(transposed)(Wt, (int)ck, F, m);
        return m;
    }
    for (int c = 0; c < C; ++c) /* flipped[c, (f, ky, kx)] = W[f, c, FH - 1 - ky, FW - 1 - kx] */
        for (int f = 0; f < F; ++f)
            for (int k = 0; k < FH * FW; ++k)
                m[((ptrdiff_t)c * F + f) * FH * FW + k] = Wt[((ptrdiff_t)f * C + c) * FH * FW + FH * FW - 1 - k];
    return m;
}

/* A thread's share of a convolution's backward: where a group's output gradients d lie (F rows
 * ld apart; sample g's run at g seg, its output rows row_at apart) and its buffers. Beside copied
 * windows (im2row) d is compact: seg = OH OW, row_at = OW. At stride 1 it may lie on the windows'
 * grid instead (sample_conv's: row_at = Wp, the run (OH - 1) Wp + OW rounded up to whole vectors,
 * zero past each row's end), so that dW = d x^T reads each sample's padded input in place, one
 * run per sample (times_transposed with the taps' offsets): no window copied (im2row wrote
 * C FH FW x OH OW entries a sample), for seg / (OH OW) times the products. Taken when that is at
 * most 1.15: DeepConvNet's 28 x 28 (1.07) and 14 x 14 (1.14) layers, dW + dx 0.70-0.90x the time
 * by copied windows; not its 7 x 7 ones (1.31: 1.12-1.18x) nor SimpleConvNet's (1.17). */
typedef struct {
    int in_place;
    ptrdiff_t seg, row_at;
    ptrdiff_t S;           /* in place: a sample's padded input, and the runs' reach past its end */
    const ptrdiff_t *taps; /* in place: the taps' offsets in a padded input */
    REAL *inputs;          /* in place: the group's padded inputs, S apart, their borders zero */
    REAL *rows;            /* the windows (not in place), and W^T d (dx without flip) */
    REAL *part;            /* a group's dW (F, C FH FW) */
    FN(sample_conv) back;  /* flip: dx as a convolution */
} FN(conv_back);

/* G samples' share of a convolution's backward, their output gradients in d (conv_back's
 * layout): dW += d rows^T, db += the sums of d per filter, and (dx not NULL) dx from dx_filters'
 * matrix M; x and dx are the first sample's. */
static void FN(conv_backward_group)(const REAL *d, ptrdiff_t ld, int G, const REAL *x, const REAL *M, int flip,
                                    REAL *dx, REAL *my_dW, REAL *my_db, const FN(conv_back) *w, int C, int H, int W,
                                    int F, int FH, int FW, int stride, int pad, int OH, int OW)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW, image = (ptrdiff_t)C * H * W;
    if (w->in_place) {
        for (int g = 0; g < G; ++g) FN(pad_inside)(x + g * image, (ptrdiff_t)H * W, W, C, H, W, pad, w->inputs + g * w->S);
        FN(times_transposed)(d, F, (int)w->seg, ld, G, w->inputs, w->taps, w->S, (int)ck, w->part);
    } else {
        for (int g = 0; g < G; ++g)
            FN(im2row)(x + g * image, (ptrdiff_t)H * W, W, C, H, W, FH, FW, stride, pad, OH, OW, w->rows + g * w->seg, ld);
        FN(times_transposed)(d, F, (int)ld, ld, 1, w->rows, NULL, 0, (int)ck, w->part); /* d rows^T */
    }
    for (ptrdiff_t e = 0; e < F * ck; ++e) my_dW[e] += w->part[e];
    for (int f = 0; f < F; ++f) my_db[f] += FN(lane_sum)(d + f * ld, G * w->seg);
    if (dx && flip) {
        for (int g = 0; g < G; ++g) FN(sample_conv_run)(&w->back, d + g * w->seg, ld, w->row_at, M, NULL, dx + g * image);
    } else if (dx) {
        FN(tiles_times)(M, (int)ck, F, d, NULL, (int)ld, NULL, w->rows, ld); /* W^T d, in d's layout */
        for (int g = 0; g < G; ++g)
            FN(row2im)(w->rows + g * w->seg, ld, w->row_at, C, H, W, FH, FW, stride, pad, OH, OW, dx + g * image);
    }
}

/* The threads' sums of dW and db (each thread's F C FH FW + F entries), added in thread order. */
static void FN(add_thread_sums)(const REAL *sums, int threads, ptrdiff_t weights, int F, REAL *dW, REAL *db)
{
    memset(dW, 0, sizeof(REAL) * (size_t)weights);
    memset(db, 0, sizeof(REAL) * (size_t)F);
    for (int t = 0; t < threads; ++t) {
        const REAL *s = sums + (ptrdiff_t)t * (weights + F);
        for (ptrdiff_t e = 0; e < weights; ++e) dW[e] += s[e];
        for (int f = 0; f < F; ++f) db[f] += s[weights + f];
    }
}

/* The first maximum of a window of rows x cols read at p (rows W apart), NaN winning as in
 * np.argmax (the first NaN); *at its place, row-major. Without branches: whether a place wins is
 * a coin toss on real data, and mispredicted branches cost more than the compares (measured, 2 x 2
 * windows of a SimpleConvNet batch: 2.5 ms with branches). Inlined with constant sizes for 2 x 2. */
static inline __attribute__((always_inline)) REAL FN(window_max)(const REAL *p, int W, int rows, int cols, int64_t *at)
{
    REAL best = p[0];
    int64_t where = 0;
    for (int fy = 0; fy < rows; ++fy)
        for (int fx = fy == 0; fx < cols; ++fx) {
            const REAL v = p[(ptrdiff_t)fy * W + fx];
            const int take = (v > best) | ((v != v) & (best == best));
            best = take ? v : best;
            where = take ? fy * cols + fx : where;
        }
    *at = where;
    return best;
}

/* Outputs [lo, hi) of one row of a 2 x 2, stride 2 pooling whose windows all lie inside the
 * input (rows r0 and r1 = r0 + W, window ox at column 2 ox - pad): a vector of windows at a time,
 * the four places compared in row-major order as window_max does (NaN first), blended by masks. */
#define POOL_LANES ((int)(sizeof(FN(vec)) / sizeof(REAL)))
FASTBP_SIMD static void FN(pool_row_2x2)(const REAL *r0, int W, int pad, int lo, int hi, REAL *o, int64_t *arg)
{
    typedef FN(mask) mask;
    const REAL *r1 = r0 + W;
    int ox = lo;
    mask even, odd;
    for (int l = 0; l < POOL_LANES; ++l) even[l] = 2 * l, odd[l] = 2 * l + 1;
    for (; hi - lo >= POOL_LANES && ox < hi; ox += POOL_LANES) {
        if (ox + POOL_LANES > hi) ox = hi - POOL_LANES; /* the last vector overlaps the one before: equal values */
        const ptrdiff_t c = 2 * (ptrdiff_t)ox - pad; /* the windows' columns: c, c + 2, ... */
        FN(vec) a0, a1, b0, b1, v[4];
        memcpy(&a0, r0 + c, sizeof a0), memcpy(&a1, r0 + c + POOL_LANES, sizeof a1);
        memcpy(&b0, r1 + c, sizeof b0), memcpy(&b1, r1 + c + POOL_LANES, sizeof b1);
        v[0] = __builtin_shuffle(a0, a1, even), v[1] = __builtin_shuffle(a0, a1, odd);
        v[2] = __builtin_shuffle(b0, b1, even), v[3] = __builtin_shuffle(b0, b1, odd);
        FN(vec) best = v[0];
        mask at = (mask){0};
        for (int q = 1; q < 4; ++q) {
            const mask take = (v[q] > best) | ((v[q] != v[q]) & (best == best));
            best = (FN(vec))(((mask)v[q] & take) | ((mask)best & ~take));
            at = (((mask){0} + q) & take) | (at & ~take);
        }
        for (int l = 0; l < POOL_LANES; ++l) o[ox + l] = best[l], arg[ox + l] = at[l];
    }
    for (; ox < hi; ++ox) o[ox] = FN(window_max)(r0 + 2 * ox - pad, W, 2, 2, &arg[ox]);
}
#undef POOL_LANES

/* One plane's max pooling: o (OH, OW) the maximum of each window of in (H, W) (padding counting
 * as 0) and arg its first maximum's place in the window (row-major; NaN wins, the first one, as
 * np.argmax). Windows inside the input read it directly (2 x 2 ones with the sizes known to the
 * compiler); only those reaching into the padding check each place. */
static void FN(pool_plane)(const REAL *in, REAL *o, int64_t *arg, int H, int W, int PH, int PW, int stride, int pad,
                           int OH, int OW)
{
    int lo = 0, hi = 0; /* the outputs whose windows lie inside the input's columns */
    if (PH == 2 && PW == 2 && stride == 2) {
        FN(inside)(W, 0, stride, pad, OW, &lo, &hi);
        int lo1, hi1;
        FN(inside)(W, 1, stride, pad, OW, &lo1, &hi1);
        lo = lo > lo1 ? lo : lo1, hi = hi < hi1 ? hi : hi1;
    }
    for (int oy = 0; oy < OH; ++oy) {
        const int y0 = oy * stride - pad;
        int done_lo = OW, done_hi = OW; /* the outputs pool_row_2x2 did */
        if (hi > lo && y0 >= 0 && y0 + 2 <= H) {
            FN(pool_row_2x2)(in + (ptrdiff_t)y0 * W, W, pad, lo, hi, o + (ptrdiff_t)oy * OW, arg + (ptrdiff_t)oy * OW);
            done_lo = lo, done_hi = hi;
        }
        for (int ox = 0; ox < OW; ++ox) {
            if (ox == done_lo) {
                ox = done_hi - 1;
                continue;
            }
            const int x0 = ox * stride - pad, q = oy * OW + ox;
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

/* Max pooling: out (N, C, OH, OW) and arg_max (N, C, OH, OW), plane by plane (pool_plane). */
void FN(pool_forward)(const REAL *x, REAL *out, int64_t *arg_max, int N, int C, int H, int W, int PH, int PW, int stride,
                      int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    FASTBP_FOR((ptrdiff_t)N * C * OH * OW * PH * PW >= parallel_min / FASTBP_POOL_WORK, ptrdiff_t, plane, (ptrdiff_t)N * C, {
        FN(pool_plane)(x + plane * H * W, out + plane * OH * OW, arg_max + plane * OH * OW, H, W, PH, PW, stride, pad, OH,
                       OW);
    });
}

/* One plane's pooling backward: d (H, W, its rows `row_at` apart) zeroed, then each output's
 * gradient added at its window's first maximum (none into padding); with `pooled`, only where the
 * pooled value is not <= 0 (after a ReLU: where the gradient passes it). */
static void FN(unpool_plane)(const REAL *dout, const int64_t *arg, const REAL *pooled, REAL *d, ptrdiff_t row_at, int H,
                             int W, int PH, int PW, int stride, int pad, int OH, int OW)
{
    if (row_at == W) memset(d, 0, sizeof(REAL) * (size_t)H * W);
    else
        for (int y = 0; y < H; ++y) memset(d + y * row_at, 0, sizeof(REAL) * (size_t)W);
    for (int oy = 0; oy < OH; ++oy)
        for (int ox = 0; ox < OW; ++ox) {
            const int q = oy * OW + ox;
            if (pooled && pooled[q] <= 0) continue;
            const int64_t at = arg[q];
            const int iy = oy * stride - pad + (int)(at / PW), ix = ox * stride - pad + (int)(at % PW);
            if (at >= 0 && at < (int64_t)PH * PW && iy >= 0 && iy < H && ix >= 0 && ix < W) d[iy * row_at + ix] += dout[q];
        }
}

/* dx (N, C, H, W): each output's gradient added at its window's first maximum (none into padding). */
void FN(pool_backward)(const REAL *dout, const int64_t *arg_max, REAL *dx, int N, int C, int H, int W, int PH, int PW,
                       int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    FASTBP_FOR((ptrdiff_t)N * C * H * W >= parallel_min / FASTBP_POOL_WORK, ptrdiff_t, plane, (ptrdiff_t)N * C, {
        FN(unpool_plane)(dout + plane * OH * OW, arg_max + plane * OH * OW, NULL, dx + plane * H * W, W, H, W, PH, PW, stride,
                         pad, OH, OW);
    });
}

/* ---- conv - relu - max pooling as one pass per sample: the engine's fusion of the three ops
 * (engine_impl.h). The convolution's output z stays in the thread's buffer, never written out:
 * pool(relu(z)) is relu(pool(z)), and its place is the book's, the window's first maximum after
 * the ReLU (place 0 when no entry is positive: then all tie at 0). The backward reads only the
 * pooled values and places: the gradient reaches z at the place kept where the pooled value is
 * not <= 0 (ReLU's rule), and the convolution's backward takes it from there. conv and pool are
 * the ops' shape fields (kernels.h: C, H, W, F, KH, KW, stride, pad, OH, OW). */
#define CONV_SHAPE(f) (int)(f)[FASTBP_C], (int)(f)[FASTBP_H], (int)(f)[FASTBP_W], (int)(f)[FASTBP_F], (int)(f)[FASTBP_KH], \
                      (int)(f)[FASTBP_KW], (int)(f)[FASTBP_STRIDE], (int)(f)[FASTBP_PAD], (int)(f)[FASTBP_OH], (int)(f)[FASTBP_OW]
#define POOL_SHAPE(f) (int)(f)[FASTBP_H], (int)(f)[FASTBP_W], (int)(f)[FASTBP_KH], (int)(f)[FASTBP_KW], \
                      (int)(f)[FASTBP_STRIDE], (int)(f)[FASTBP_PAD], (int)(f)[FASTBP_OH], (int)(f)[FASTBP_OW]

/* Where a convolution's backward reads its output gradient: dout itself, or (the engine's fused
 * conv - relu - pool) the pooling's gradient, taken back through the pooling and the ReLU. */
typedef struct {
    const REAL *pooled_out; /* the pooling's output: its values say where the ReLU let the gradient through */
    const int64_t *arg_max; /* the pooling's places */
    const int64_t *pool;    /* the pooling op's shape fields */
} FN(unpooling);

/* The one driver of a convolution's backward: dW = sum over samples of dout_n rows_n^T, db = sums
 * of dout per filter, dx (when not NULL) as dx_filters says, conv_group samples at a time (their
 * gradients gathered into conv_back's layout, or unpooled into place when `from` is not NULL).
 * Each thread sums its samples' dW and db, then the threads' sums are added in thread order.
 * Returns -1 when out of memory. */
static int FN(conv_backward_from)(const REAL *dout, const FN(unpooling) *from, const REAL *x, const REAL *Wt, REAL *dx,
                                  REAL *dW, REAL *db, int N, int C, int H, int W, int F, int FH, int FW, int stride,
                                  int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    const ptrdiff_t ck = (ptrdiff_t)C * FH * FW, area = (ptrdiff_t)OH * OW, image = (ptrdiff_t)C * H * W;
    const ptrdiff_t pooled = from ? from->pool[FASTBP_OH] * from->pool[FASTBP_OW] : 0;
    const int Hp = H + 2 * pad, Wp = W + 2 * pad;
    const ptrdiff_t run = ((ptrdiff_t)(OH - 1) * Wp + OW + FASTBP_LANES - 1) / FASTBP_LANES * FASTBP_LANES;
    const int in_place = stride == 1 && 20 * run <= 23 * area; /* conv_back: at most 1.15x the products */
    const ptrdiff_t seg = in_place ? run : area, row_at = in_place ? Wp : OW;
    const int G = FN(conv_group)(N, area), groups = (N + G - 1) / G, gather = from || G > 1 || in_place;
    const int threads = (ptrdiff_t)N * F * area * ck >= parallel_min ? FASTBP_MAX_THREADS() : 1;
    REAL *sums = calloc((size_t)threads * (size_t)(F * ck + F), sizeof(REAL)); /* each thread's dW, then db */
    int flip = 0;
    REAL *M = dx ? FN(dx_filters)(Wt, C, F, FH, FW, stride, pad, &flip) : NULL;
    ptrdiff_t *taps = in_place ? FN(window_offsets)(C, H, W, FH, FW, pad) : NULL;
    /* the flipped convolution: C filters over dout's F channels padded by FH - 1 - pad */
    const int back_form = dx && flip ? FN(conv_form)(F, OW, C, FH, FW, 1, FH - 1 - pad) : FASTBP_CONV_WINDOWS;
    ptrdiff_t *offsets = back_form != FASTBP_CONV_WINDOWS ? FN(window_offsets)(F, OH, OW, FH, FW, FH - 1 - pad) : NULL;
    int failed = !sums || (dx && !M) || (in_place && !taps) || (back_form != FASTBP_CONV_WINDOWS && !offsets);
#pragma omp parallel num_threads(threads) if (!failed)
    {
        const int t = FASTBP_THREAD_NUM();
        FN(conv_back) w = {in_place, seg, row_at, (ptrdiff_t)C * Hp * Wp + FASTBP_LANES, taps, NULL, NULL, NULL, {0}};
        if (in_place) w.inputs = calloc((size_t)(G * w.S), sizeof(REAL));
        if (!in_place || (dx && !flip)) w.rows = malloc(sizeof(REAL) * (size_t)(ck * G * seg));
        w.part = malloc(sizeof(REAL) * (size_t)(F * ck));
        /* the group's gradients; on the grid, zero where nothing is written */
        REAL *d = gather ? calloc((size_t)(F * G * seg), sizeof(REAL)) : NULL;
        REAL *my_dW = sums ? sums + (ptrdiff_t)t * (F * ck + F) : NULL;
        if ((in_place && !w.inputs) || ((!in_place || (dx && !flip)) && !w.rows) || !w.part || (gather && !d) ||
            (dx && flip && FN(sample_conv_start)(&w.back, back_form, offsets, 0, F, OH, OW, C, FH, FW, 1, FH - 1 - pad)))
            failed = 1;
#pragma omp for schedule(static)
        for (int q = 0; q < groups; ++q) {
            if (failed) continue;
            const int n0 = q * G, g_n = N - n0 < G ? N - n0 : G;
            /* F rows ld apart: on the grid always G runs (the zeros stay in place), compact g_n */
            const ptrdiff_t ld = in_place ? G * seg : g_n * area;
            for (int g = 0; gather && g < g_n; ++g)
                for (int f = 0; f < F; ++f) {
                    REAL *to = d + f * ld + g * seg;
                    if (!from) {
                        const REAL *plane = dout + ((ptrdiff_t)(n0 + g) * F + f) * area;
                        if (row_at == OW) memcpy(to, plane, sizeof(REAL) * (size_t)area);
                        else
                            for (int oy = 0; oy < OH; ++oy)
                                memcpy(to + oy * row_at, plane + (ptrdiff_t)oy * OW, sizeof(REAL) * (size_t)OW);
                        continue;
                    }
                    const ptrdiff_t plane = ((ptrdiff_t)(n0 + g) * F + f) * pooled;
                    FN(unpool_plane)(dout + plane, from->arg_max + plane, from->pooled_out + plane, to, row_at,
                                     POOL_SHAPE(from->pool));
                }
            FN(conv_backward_group)(gather ? d : dout + (ptrdiff_t)n0 * F * area, ld, g_n, x + n0 * image, M, flip,
                                    dx ? dx + n0 * image : NULL, my_dW, my_dW + F * ck, &w, C, H, W, F, FH, FW, stride,
                                    pad, OH, OW);
        }
        free(w.inputs);
        free(w.rows);
        free(w.part);
        free(d);
        FN(sample_conv_end)(&w.back);
    }
    if (!failed) FN(add_thread_sums)(sums, threads, F * ck, F, dW, db);
    free(sums);
    free(M);
    free(taps);
    free(offsets);
    return failed ? -1 : 0;
}

int FN(conv_backward)(const REAL *dout, const REAL *x, const REAL *Wt, REAL *dx, REAL *dW, REAL *db, int N, int C,
                      int H, int W, int F, int FH, int FW, int stride, int pad, int OH, int OW, ptrdiff_t parallel_min)
{
    return FN(conv_backward_from)(dout, NULL, x, Wt, dx, dW, db, N, C, H, W, F, FH, FW, stride, pad, OH, OW,
                                  parallel_min);
}

int FN(conv_relu_pool_forward)(const REAL *x, const REAL *Wt, const REAL *b, REAL *out, int64_t *arg_max, int N,
                               const int64_t *conv, const int64_t *pool, ptrdiff_t parallel_min)
{
    const int C = (int)conv[FASTBP_C], H = (int)conv[FASTBP_H], W = (int)conv[FASTBP_W], F = (int)conv[FASTBP_F];
    const int FH = (int)conv[FASTBP_KH], FW = (int)conv[FASTBP_KW], stride = (int)conv[FASTBP_STRIDE];
    const int pad = (int)conv[FASTBP_PAD];
    const ptrdiff_t area = conv[FASTBP_OH] * conv[FASTBP_OW], pooled = pool[FASTBP_OH] * pool[FASTBP_OW];
    const int form = FN(conv_form)(C, W, F, FH, FW, stride, pad);
    ptrdiff_t *offsets = form != FASTBP_CONV_WINDOWS ? FN(window_offsets)(C, H, W, FH, FW, pad) : NULL;
    int failed = form != FASTBP_CONV_WINDOWS && !offsets;
#pragma omp parallel if ((ptrdiff_t)N * F * area * C * FH * FW >= parallel_min && !failed)
    {
        FN(sample_conv) work;
        REAL *z = malloc(sizeof(REAL) * (size_t)(F * area));
        if (FN(sample_conv_start)(&work, form, offsets, 1, C, H, W, F, FH, FW, stride, pad) || !z) failed = 1;
#pragma omp for schedule(static)
        for (int n = 0; n < N; ++n) {
            if (failed) continue;
            FN(sample_conv_run)(&work, x + (ptrdiff_t)n * C * H * W, (ptrdiff_t)H * W, W, Wt, b, z);
            for (int f = 0; f < F; ++f) {
                REAL *o = out + ((ptrdiff_t)n * F + f) * pooled;
                int64_t *arg = arg_max + ((ptrdiff_t)n * F + f) * pooled;
                FN(pool_plane)(z + f * area, o, arg, POOL_SHAPE(pool));
                for (ptrdiff_t q = 0; q < pooled; ++q)
                    if (o[q] <= 0) o[q] = 0, arg[q] = 0; /* the ReLU: all tie at 0 (NaN stays) */
            }
        }
        FN(sample_conv_end)(&work);
        free(z);
    }
    free(offsets);
    return failed ? -1 : 0;
}

int FN(conv_relu_pool_backward)(const REAL *dout, const REAL *pooled_out, const int64_t *arg_max, const REAL *x,
                                const REAL *Wt, REAL *dx, REAL *dW, REAL *db, int N, const int64_t *conv,
                                const int64_t *pool, ptrdiff_t parallel_min)
{
    const FN(unpooling) from = {pooled_out, arg_max, pool};
    return FN(conv_backward_from)(dout, &from, x, Wt, dx, dW, db, N, CONV_SHAPE(conv), parallel_min);
}
#undef CONV_SHAPE
#undef POOL_SHAPE
