/* Products whose left operand is mostly zeros (MNIST's pixels: 81% are zero), for one floating
 * type and one instruction set, compiled four times by compact.c:
 *   REAL, SFX (f32/f64), VEC (a GCC vector of REAL), ISA (name suffix), TARGET (attribute).
 *
 * The left operand is "compact rows" (CSR): row i's nonzero entries are values[p] at columns
 * indices[p] for p in [indptr[i], indptr[i + 1]). A product then costs one row of the right
 * operand per nonzero instead of one per column: x W reads 19% of W's rows per image.
 * Same sums as the dense product, in another order, without the terms that are exactly zero.
 */
#define CCAT_(a, b, c) a##_##b##_##c
#define CCAT(a, b, c) CCAT_(a, b, c)
#define CFN(name) CCAT(fastbp_compact_##name, SFX, ISA)
#define LANES ((int)(sizeof(VEC) / sizeof(REAL)))
#define BLOCK (8 * LANES) /* columns held in registers at once: 8 vectors */

TARGET static inline __attribute__((always_inline)) VEC CFN(load)(const REAL *p)
{
    VEC v;
    memcpy(&v, p, sizeof v);
    return v;
}

TARGET static inline __attribute__((always_inline)) void CFN(store)(REAL *p, VEC v) { memcpy(p, &v, sizeof v); }

/* o[0, width) = start + sum_p values[p] * M[indices[p], 0, width), for width > LANES * (nv - 1):
 * nv vectors held in registers, the last one at offset `last` (it may overlap the one before it:
 * both hold the same sums, computed by the same operations, so the overlap is written twice
 * with equal values). Each vector is written once, at the end. */
TARGET static inline __attribute__((always_inline)) void CFN(sum_rows)(const int nv, int last, const REAL *start,
                                                                      const REAL *M, int m, const int32_t *indices,
                                                                      const REAL *values, int64_t nnz, REAL *o)
{
    VEC acc[8];
#pragma GCC unroll 8
    for (int q = 0; q < nv; ++q) acc[q] = CFN(load)(start + (q == nv - 1 ? last : q * LANES));
    for (int64_t p = 0; p < nnz; ++p) {
        const VEC v = (VEC){0} + values[p];
        const REAL *w = M + (ptrdiff_t)indices[p] * m;
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

/* out[r, :] = b + x[row r] W, for the n rows rows[r] (rows NULL: row0 + r); W is (k, m), out (n, m). */
TARGET void CFN(affine_forward)(const int64_t *indptr, const int32_t *indices, const REAL *values,
                                const int64_t *rows, int64_t row0, int n, const REAL *W, const REAL *b, REAL *out,
                                int m)
{
    for (int r = 0; r < n; ++r) {
        const int64_t row = rows ? rows[r] : row0 + r, first = indptr[row], nnz = indptr[row + 1] - first;
        REAL *o = out + (ptrdiff_t)r * m;
        if (m < LANES) { /* narrower than one vector */
            for (int j = 0; j < m; ++j) o[j] = b[j];
            for (int64_t p = first; p < first + nnz; ++p)
                for (int j = 0; j < m; ++j) o[j] += values[p] * W[(ptrdiff_t)indices[p] * m + j];
            continue;
        }
        for (int j0 = 0; j0 < m; j0 += BLOCK) {
            const int width = m - j0 < BLOCK ? m - j0 : BLOCK, nv = (width + LANES - 1) / LANES;
            /* a partial last vector is loaded whole, ending at column m, overlapping its neighbour
             * (out is written only at the end, from b and W: the overlap gets equal values twice) */
            const int last = width % LANES ? m - LANES - j0 : (nv - 1) * LANES;
            CASES_1_TO_8(nv, CFN(sum_rows)(NV, last, b + j0, W + j0, m, indices + first, values + first, nnz, o + j0))
        }
    }
}

/* dW[c, j0 + ...] += v * d[...] for every nonzero (c, v) of one row: nv whole vectors of d held
 * in registers, then `rest` (< LANES) columns one at a time. */
TARGET static inline __attribute__((always_inline)) void CFN(scatter_row)(const int nv, int rest, const REAL *d,
                                                                         REAL *dW, int m, const int32_t *indices,
                                                                         const REAL *values, int64_t nnz)
{
    VEC dv[8];
#pragma GCC unroll 8
    for (int q = 0; q < nv; ++q) dv[q] = CFN(load)(d + q * LANES);
    for (int64_t p = 0; p < nnz; ++p) {
        const VEC v = (VEC){0} + values[p];
        REAL *g = dW + (ptrdiff_t)indices[p] * m;
#pragma GCC unroll 8
        for (int q = 0; q < nv; ++q) CFN(store)(g + q * LANES, CFN(load)(g + q * LANES) + v * dv[q]);
        for (int t = nv * LANES; t < nv * LANES + rest; ++t) g[t] += values[p] * d[t];
    }
}

#define CASES_0_TO_8(nv, call) \
    if ((nv) == 0) { const int NV = 0; call; } else CASES_1_TO_8(nv, call)

/* dW = x^T dout over the n rows rows[r]: each nonzero (c, v) of row r adds v * dout[r, :] to
 * dW[c, :]; rows of dW no nonzero touches are zero. dW is (k, m), dout (n, m). */
TARGET void CFN(weight_grad)(const int64_t *indptr, const int32_t *indices, const REAL *values, const int64_t *rows,
                             int n, const REAL *dout, REAL *dW, int k, int m)
{
    memset(dW, 0, sizeof(REAL) * (size_t)k * (size_t)m);
    for (int r = 0; r < n; ++r) {
        const int64_t first = indptr[rows[r]], nnz = indptr[rows[r] + 1] - first;
        for (int j0 = 0; j0 < m; j0 += BLOCK) {
            const int width = m - j0 < BLOCK ? m - j0 : BLOCK;
            CASES_0_TO_8(width / LANES, CFN(scatter_row)(NV, width % LANES, dout + (ptrdiff_t)r * m + j0, dW + j0, m,
                                                        indices + first, values + first, nnz))
        }
    }
}

#undef CASES_0_TO_8
#undef CASES_1_TO_8
#undef BLOCK
#undef LANES
#undef CFN
#undef CCAT
#undef CCAT_
