/* Rows times a matrix, for one floating type (each_real.h) and one instruction set, compiled four
 * times by rows.c: ISA (the name suffix), TARGET (its attribute), VECTOR_BYTES (its vector width).
 *
 * The left operand comes one row at a time, either as compact entries (the row's nonzeros:
 * values[p] at columns indices[p]) or as a dense row (values[p] at column p). A compact row
 * costs one row of the right operand per nonzero instead of one per column: x W reads 19% of
 * W's rows for an MNIST image. Same sums as the dense product, in another order, without the
 * terms that are exactly zero. Each output row is summed in registers and written once.
 *
 * The fused compact step also computes its weight gradient x^T dout this way, from the batch's
 * entries grouped by column (each column's entries then are a compact row of x^T), and its small
 * dense products (the layers after the first) use the same loops or, for narrow outputs, the
 * register tiles below: they stay on the calling thread, where BLAS would wake its own threads
 * to fight ours.
 */
#define ISA_NAME_(name, isa) name##_##isa
#define ISA_NAME(name, isa) ISA_NAME_(name, isa)
#define CFN(name) FN(ISA_NAME(name, ISA)) /* fastbp_<name>_<isa>_<SFX> */
typedef REAL CFN(vec) __attribute__((vector_size(VECTOR_BYTES)));
#define VEC CFN(vec)
#define LANES ((int)(sizeof(VEC) / sizeof(REAL)))
#define BLOCK (8 * LANES) /* columns held in registers at once: 8 vectors */
#define COLUMN(p) (indices ? (ptrdiff_t)indices[p] : (ptrdiff_t)(p)) /* indices NULL: a dense row */

TARGET static inline __attribute__((always_inline)) VEC CFN(load)(const REAL *p)
{
    VEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

TARGET static inline __attribute__((always_inline)) void CFN(store)(REAL *p, VEC v) { memcpy(p, &v, sizeof v); }

/* x in every lane: one broadcast. x - 0 is x for every x (-0 included), so the subtraction folds
 * away; `(VEC){0} + x` does not (0 + -0 is +0): it costs a scalar addition and a register held at
 * zero, which in tiles_times' 4 x 3 tile spilled an accumulator to the stack (a store and a reload
 * on that sum's chain every step). */
TARGET static inline __attribute__((always_inline)) VEC CFN(splat)(REAL x) { return x - (VEC){0}; }

/* o[0, width) = start + sum_p values[p] * M[column p, 0, width) (start NULL: zeros), for
 * width > LANES * (nv - 1): nv vectors held in registers, the last one at offset `last` (it may
 * overlap the one before it: both hold the same sums, computed by the same operations, so the
 * overlap is written twice with equal values). Each vector is written once, at the end.
 * Up to 7 vectors, the odd entries are summed apart and added at the end: each sum's chain of
 * dependent additions is then half as long (with one chain per vector, an MNIST row's 150
 * entries waited on the FMA's latency, not its throughput). */
TARGET static inline __attribute__((always_inline)) void CFN(sum_rows)(const int nv, int last, const REAL *start,
                                                                      const REAL *M, int m, const int32_t *indices,
                                                                      const REAL *values, int64_t nnz, REAL *o)
{
    VEC acc[8], odd[7];
#pragma GCC unroll 8
    for (int q = 0; q < nv; ++q) acc[q] = start ? CFN(load)(start + (q == nv - 1 ? last : q * LANES)) : (VEC){0};
    int64_t p = 0;
    if (nv <= 7) {
#pragma GCC unroll 7
        for (int q = 0; q < nv; ++q) odd[q] = (VEC){0};
        for (; p + 1 < nnz; p += 2) {
            const VEC v0 = CFN(splat)(values[p]), v1 = CFN(splat)(values[p + 1]);
            const REAL *w0 = M + COLUMN(p) * m, *w1 = M + COLUMN(p + 1) * m;
#pragma GCC unroll 7
            for (int q = 0; q < nv; ++q) {
                acc[q] += v0 * CFN(load)(w0 + (q == nv - 1 ? last : q * LANES));
                odd[q] += v1 * CFN(load)(w1 + (q == nv - 1 ? last : q * LANES));
            }
        }
#pragma GCC unroll 7
        for (int q = 0; q < nv; ++q) acc[q] += odd[q];
    }
    for (; p < nnz; ++p) {
        const VEC v = CFN(splat)(values[p]);
        const REAL *w = M + COLUMN(p) * m;
#pragma GCC unroll 8
        for (int q = 0; q < nv; ++q) acc[q] += v * CFN(load)(w + (q == nv - 1 ? last : q * LANES));
    }
#pragma GCC unroll 8
    for (int q = 0; q < nv; ++q) CFN(store)(o + (q == nv - 1 ? last : q * LANES), acc[q]);
}

/* One case per vector count, so that each inlined copy has nv as a constant (registers, no loop). */
#define CASES_1_TO_8(nv, call)                                                                            \
    switch (nv) {                                                                                         \
    case 1: { const int NV = 1; call; } break; case 2: { const int NV = 2; call; } break;               \
    case 3: { const int NV = 3; call; } break; case 4: { const int NV = 4; call; } break;               \
    case 5: { const int NV = 5; call; } break; case 6: { const int NV = 6; call; } break;               \
    case 7: { const int NV = 7; call; } break; default: { const int NV = 8; call; } break;             \
    }

/* o[0, m) = start + (one row) M, M being (*, m). */
TARGET static inline __attribute__((always_inline)) void CFN(row_times)(const int32_t *indices, const REAL *values,
                                                                       int64_t nnz, const REAL *M, const REAL *start,
                                                                       REAL *o, int m)
{
    if (m < LANES) { /* narrower than one vector */
        for (int j = 0; j < m; ++j) o[j] = start ? start[j] : 0;
        for (int64_t p = 0; p < nnz; ++p)
            for (int j = 0; j < m; ++j) o[j] += values[p] * M[COLUMN(p) * m + j];
        return;
    }
    for (int j0 = 0; j0 < m; j0 += BLOCK) {
        const int width = m - j0 < BLOCK ? m - j0 : BLOCK, nv = (width + LANES - 1) / LANES;
        /* a partial last vector is loaded whole, ending at column m, overlapping its neighbour
         * (o is written only at the end, from start and M: the overlap gets equal values twice) */
        const int last = width % LANES ? m - LANES - j0 : (nv - 1) * LANES;
        CASES_1_TO_8(nv, CFN(sum_rows)(NV, last, start ? start + j0 : NULL, M + j0, m, indices, values, nnz, o + j0))
    }
}

/* out[r, :] = start + x_r M for n compact rows, row r being the entries [begin[r], end[r]). */
TARGET static void CFN(spans_times)(const int64_t *begin, const int64_t *end, int n, const int32_t *indices,
                             const REAL *values, const REAL *M, const REAL *start, REAL *out, int m)
{
    for (int r = 0; r < n; ++r)
        CFN(row_times)(indices + begin[r], values + begin[r], end[r] - begin[r], M, start, out + (ptrdiff_t)r * m, m);
}

/* out (k, m) = a^T B for a (n, k) and B (n, m), n at most FASTBP_FEW_ROWS: out row i is B's n
 * rows weighted by column i of a, summed in registers and written once (an affine layer's dW for
 * a few rows, where BLAS's product of inner size n spends most of its time around the sums). */
TARGET static void CFN(transposed_times)(const REAL *a, int n, int k, const REAL *B, int m, REAL *out)
{
    const int32_t *indices = NULL; /* B's rows in order: column p of the gathered row is row p of B */
    REAL column[FASTBP_FEW_ROWS];
    for (int i = 0; i < k; ++i) {
        for (int r = 0; r < n; ++r) column[r] = a[(ptrdiff_t)r * k + i];
        CFN(row_times)(indices, column, n, B, NULL, out + (ptrdiff_t)i * m, m);
    }
}

/* The sum of a vector's lanes. */
TARGET static inline __attribute__((always_inline)) REAL CFN(lanes_sum)(VEC v)
{
    REAL sum = 0;
    for (int q = 0; q < LANES; ++q) sum += v[q];
    return sum;
}

/* R rows of a (from ai, lda apart) times the Q B rows starting at b[0..Q-1]: out[r, 0..Q-1] (k
 * apart), each sum in its own register (R x Q independent chains: enough to keep both FMA units
 * busy at 3 x 4), over `segments` runs of m entries: a's s-th at s m, B's at s step. */
TARGET static inline __attribute__((always_inline)) void CFN(dots)(const int R, const int Q, const REAL *ai,
                                                                  ptrdiff_t lda, int m, int whole, int segments,
                                                                  const REAL *const *b, ptrdiff_t step, REAL *out,
                                                                  int k)
{
    VEC s[3][4];
#pragma GCC unroll 3
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int q = 0; q < Q; ++q) s[r][q] = (VEC){0};
    for (int g = 0; g < segments; ++g)
        for (int j = 0; j < whole; j += LANES) {
            VEC w[4];
#pragma GCC unroll 4
            for (int q = 0; q < Q; ++q) w[q] = CFN(load)(b[q] + g * step + j);
#pragma GCC unroll 3
            for (int r = 0; r < R; ++r) {
                const VEC v = CFN(load)(ai + (ptrdiff_t)r * lda + (ptrdiff_t)g * m + j);
#pragma GCC unroll 4
                for (int q = 0; q < Q; ++q) s[r][q] += v * w[q];
            }
        }
#pragma GCC unroll 3
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int q = 0; q < Q; ++q) {
            REAL sum = CFN(lanes_sum)(s[r][q]);
            for (int g = 0; g < segments; ++g)
                for (int j = whole; j < m; ++j)
                    sum += ai[(ptrdiff_t)r * lda + (ptrdiff_t)g * m + j] * b[q][g * step + j];
            out[(ptrdiff_t)r * k + q] = sum;
        }
}

/* B rows c .. c + Q - 1 against every row of a: tiles of 3 a rows, then the 1 or 2 left. */
TARGET static inline __attribute__((always_inline)) void CFN(dots_column)(const int Q, const REAL *a, int n,
                                                                         ptrdiff_t lda, int m, int whole,
                                                                         int segments, const REAL *B,
                                                                         const ptrdiff_t *offsets, ptrdiff_t step,
                                                                         int c, REAL *out, int k)
{
    const REAL *b[4];
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) b[q] = B + (offsets ? offsets[c + q] : (ptrdiff_t)(c + q) * m);
    int i = 0;
    out += c;
    for (; i + 3 <= n; i += 3)
        CFN(dots)(3, Q, a + (ptrdiff_t)i * lda, lda, m, whole, segments, b, step, out + (ptrdiff_t)i * k, k);
    if (n - i == 2) CFN(dots)(2, Q, a + (ptrdiff_t)i * lda, lda, m, whole, segments, b, step, out + (ptrdiff_t)i * k, k);
    if (n - i == 1) CFN(dots)(1, Q, a + (ptrdiff_t)i * lda, lda, m, whole, segments, b, step, out + (ptrdiff_t)i * k, k);
}

/* out[i, c] = sum_j a[i, j] B[c, j] for a (n, m) and B (k, m): a times B^T without a transposed
 * copy of B (an affine layer's dx for a few rows; a convolution's dW, its output gradient times
 * its windows). Each row is `segments` runs of m entries: a's row i at a + i lda, its s-th run
 * s m further; B's row c at B + offsets[c] (offsets NULL: c m, one run), its s-th run s step
 * further (a convolution's windows read in place: one run per sample, in each sample's padded
 * input). Tiles of 3 a rows x 4 B rows, each loaded vector serving 3 or 4 sums; the 1-3 B rows
 * left over (a 5 x 5 filter's 25 windows: one) in tiles of 3 x 1-3, not sum by sum (one chain of
 * dependent additions: the one row took a quarter of SimpleConvNet's dW time). */
TARGET static inline __attribute__((always_inline)) void CFN(transposed_tiles)(const REAL *a, int n, int m,
                                                                              ptrdiff_t lda, int segments,
                                                                              const REAL *B, const ptrdiff_t *offsets,
                                                                              ptrdiff_t step, int k, REAL *out)
{
    const int whole = m - m % LANES;
    int c = 0;
    for (; c + 4 <= k; c += 4) CFN(dots_column)(4, a, n, lda, m, whole, segments, B, offsets, step, c, out, k);
    switch (k - c) {
    case 3: CFN(dots_column)(3, a, n, lda, m, whole, segments, B, offsets, step, c, out, k); break;
    case 2: CFN(dots_column)(2, a, n, lda, m, whole, segments, B, offsets, step, c, out, k); break;
    case 1: CFN(dots_column)(1, a, n, lda, m, whole, segments, B, offsets, step, c, out, k); break;
    default: break;
    }
}

TARGET static void CFN(times_transposed)(const REAL *a, int n, int m, ptrdiff_t lda, int segments, const REAL *B,
                                         const ptrdiff_t *offsets, ptrdiff_t step, int k, REAL *out)
{
    if (offsets) CFN(transposed_tiles)(a, n, m, lda, segments, B, offsets, step, k, out);
    else CFN(transposed_tiles)(a, n, m, lda, 1, B, NULL, 0, k, out);
}

/* One tile of tiles_times: R rows x NV vectors of out (its rows ldo apart), summed in registers
 * over k from row_start[r] (a value per row) or col_start (a row of values: every row's start), or
 * zero; the last vector at offset `last` (overlapping the one before it when the width is not
 * whole vectors: equal sums, written twice). a's entry (r, p) at a[r ar + p ac] (a row-major (R, k)
 * block: ar = k, ac = 1; the transpose of a row-major (k, *) matrix: ar = 1). B's row p starts at
 * B + offsets[p] (offsets NULL: p m). */
TARGET static inline __attribute__((always_inline)) void CFN(tile)(const int R, const int NV, int last, const REAL *a,
                                                                  ptrdiff_t ar, ptrdiff_t ac,
                                                                  int k, const REAL *B, const ptrdiff_t *offsets,
                                                                  int m, const REAL *row_start, const REAL *col_start,
                                                                  REAL *o, ptrdiff_t ldo)
{
    VEC acc[4][3];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
        for (int q = 0; q < NV; ++q)
            acc[r][q] = col_start ? CFN(load)(col_start + (q == NV - 1 ? last : q * LANES))
                                  : CFN(splat)(row_start ? row_start[r] : (REAL)0);
    for (int p = 0; p < k; ++p) {
        const REAL *row = B + (offsets ? offsets[p] : (ptrdiff_t)p * m);
        VEC w[3];
#pragma GCC unroll 3
        for (int q = 0; q < NV; ++q) w[q] = CFN(load)(row + (q == NV - 1 ? last : q * LANES));
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            const VEC v = CFN(splat)(a[(ptrdiff_t)r * ar + (ptrdiff_t)p * ac]);
#pragma GCC unroll 3
            for (int q = 0; q < NV; ++q) acc[r][q] += v * w[q];
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
        for (int q = 0; q < NV; ++q) CFN(store)(o + (ptrdiff_t)r * ldo + (q == NV - 1 ? last : q * LANES), acc[r][q]);
}

/* tiles_times' loops, inlined where called with constants: offsets or NULL (B's rows m apart)
 * known to the compiler, so that a plain product pays no offset loads; a's strides (tile). */
TARGET static inline __attribute__((always_inline)) void CFN(tiles)(const REAL *a, ptrdiff_t ar, ptrdiff_t ac, int n,
                                                                   int k, const REAL *B, const ptrdiff_t *offsets,
                                                                   int m, const REAL *row_start, const REAL *col_start,
                                                                   REAL *out, ptrdiff_t ldo)
{
    if (m < LANES) { /* narrower than one vector */
        for (int i = 0; i < n; ++i)
            for (int j = 0; j < m; ++j) {
                REAL sum = col_start ? col_start[j] : row_start ? row_start[i] : 0;
                for (int p = 0; p < k; ++p)
                    sum += a[(ptrdiff_t)i * ar + (ptrdiff_t)p * ac] * B[(offsets ? offsets[p] : (ptrdiff_t)p * m) + j];
                out[(ptrdiff_t)i * ldo + j] = sum;
            }
        return;
    }
    for (int j0 = 0; j0 < m; j0 += 3 * LANES) {
        const int width = m - j0 < 3 * LANES ? m - j0 : 3 * LANES, nv = (width + LANES - 1) / LANES;
        const int last = width % LANES ? m - LANES - j0 : (nv - 1) * LANES;
        for (int i0 = 0; i0 < n; i0 += 4) {
            const int rows = n - i0 < 4 ? n - i0 : 4;
            const REAL *ai = a + (ptrdiff_t)i0 * ar, *start = row_start ? row_start + i0 : NULL;
            const REAL *cols = col_start ? col_start + j0 : NULL;
            REAL *o = out + (ptrdiff_t)i0 * ldo + j0;
#define TILE(R) \
    switch (nv) { \
    case 1: CFN(tile)(R, 1, last, ai, ar, ac, k, B + j0, offsets, m, start, cols, o, ldo); break; \
    case 2: CFN(tile)(R, 2, last, ai, ar, ac, k, B + j0, offsets, m, start, cols, o, ldo); break; \
    default: CFN(tile)(R, 3, last, ai, ar, ac, k, B + j0, offsets, m, start, cols, o, ldo); break; \
    }
            switch (rows) {
            case 1: TILE(1) break;
            case 2: TILE(2) break;
            case 3: TILE(3) break;
            default: TILE(4) break;
            }
#undef TILE
        }
    }
}

/* out (n, m) = a (n, k) B (k, m), plus row_start[i] on every entry of row i (NULL: none), out's
 * rows ldo apart, B's row p at B + offsets[p] (NULL: p m; a convolution's windows read in place
 * from its padded input, each row a shifted run of it): tiles of 4 rows x 3 vectors in registers, each B load
 * serving 4 rows and each a entry 3 vectors (a convolution's filters times its windows, a sample
 * at a time). Column blocks outside, so that a block of B stays in the first-level cache while
 * every row block passes it. */
/* The columns one tile of tiles_times covers: widths of whole tiles waste no lanes. */
static int CFN(tile_columns)(void) { return 3 * LANES; }

TARGET static void CFN(tiles_times)(const REAL *a, int n, int k, const REAL *B, const ptrdiff_t *offsets, int m,
                                    const REAL *row_start, REAL *out, ptrdiff_t ldo)
{
    if (offsets) CFN(tiles)(a, k, 1, n, k, B, offsets, m, row_start, NULL, out, ldo);
    else CFN(tiles)(a, k, 1, n, k, B, NULL, m, row_start, NULL, out, ldo);
}

/* out (k, m) = x^T M for x (n, k) and M (n, m): tiles reading x down its columns, where a
 * transposed copy of x cost more than the product (an MLP's 50 x 10 layer's dW at batch 100:
 * 5000 scattered stores). */
TARGET static void CFN(transposed_dense_times)(const REAL *x, int n, int k, const REAL *M, REAL *out, int m)
{
    CFN(tiles)(x, 1, k, k, n, M, NULL, m, NULL, NULL, out, m);
}

/* out = start + x M for the dense (n, k) matrix x. Outputs at most one tile wide (an MLP's 50 x 10
 * layer) as tiles of 4 rows: row by row, each output vector's sum is one chain of dependent
 * FMAs (2 vectors, 50 steps), waiting on the FMA's latency; the tiles sum in the same order, so
 * the results are the same. Wider rows keep the row loop (tiles at 784 x 50 trained 1.14x slower). */
TARGET static void CFN(dense_times)(const REAL *x, int n, int k, const REAL *M, const REAL *start, REAL *out, int m)
{
    if (n > 1 && m >= LANES && m <= 3 * LANES) {
        CFN(tiles)(x, k, 1, n, k, M, NULL, m, NULL, start, out, m);
        return;
    }
    const int32_t *indices = NULL;
    for (int r = 0; r < n; ++r)
        CFN(row_times)(indices, x + (ptrdiff_t)r * k, k, M, start, out + (ptrdiff_t)r * m, m);
}

#undef CASES_1_TO_8
#undef COLUMN
#undef BLOCK
#undef LANES
#undef VEC
#undef CFN
#undef ISA_NAME
#undef ISA_NAME_
