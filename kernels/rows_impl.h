/* For one floating type (each_real.h): the row products on the CPU's best instruction set, and
 * the compaction of a matrix into compact rows. */

#ifdef HAVE_AVX2_BUILD
#define ON_BEST_ISA(name, args) \
    if (use_avx2()) FN(name##_avx2) args; else FN(name##_base) args
#else
#define ON_BEST_ISA(name, args) FN(name##_base) args
#endif

void FN(spans_times)(const int64_t *begin, const int64_t *end, int n, const int32_t *indices, const REAL *values,
                     const REAL *M, const REAL *start, REAL *out, int m)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx512() && m >= 64 / (int)sizeof(REAL)) { /* (narrower rows would take its scalar loop) */
        FN(spans_times_avx512)(begin, end, n, indices, values, M, start, out, m);
        return;
    }
#endif
    ON_BEST_ISA(spans_times, (begin, end, n, indices, values, M, start, out, m));
}

void FN(dense_times)(const REAL *x, int n, int k, const REAL *M, const REAL *start, REAL *out, int m)
{
    ON_BEST_ISA(dense_times, (x, n, k, M, start, out, m));
}

void FN(transposed_dense_times)(const REAL *x, int n, int k, const REAL *M, REAL *out, int m)
{
    ON_BEST_ISA(transposed_dense_times, (x, n, k, M, out, m));
}

void FN(tiles_times)(const REAL *a, int n, int k, const REAL *B, const ptrdiff_t *offsets, int m,
                     const REAL *row_start, REAL *out, ptrdiff_t ldo)
{
    ON_BEST_ISA(tiles_times, (a, n, k, B, offsets, m, row_start, out, ldo));
}

int FN(tile_columns)(void)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx2()) return FN(tile_columns_avx2)();
#endif
    return FN(tile_columns_base)();
}

void FN(times_transposed)(const REAL *a, int n, int m, ptrdiff_t lda, int segments, const REAL *B,
                          const ptrdiff_t *offsets, ptrdiff_t step, int k, REAL *out)
{
    ON_BEST_ISA(times_transposed, (a, n, m, lda, segments, B, offsets, step, k, out));
}

void FN(transposed_times)(const REAL *a, int n, int k, const REAL *B, int m, REAL *out)
{
    ON_BEST_ISA(transposed_times, (a, n, k, B, m, out));
}

#undef ON_BEST_ISA

/* indptr[i + 1] - indptr[i] = the number of nonzeros of row i (NaN counts as nonzero), row by row
 * on the OpenMP threads, then summed up. */
void FN(count_nonzeros)(const REAL *x, int64_t n, int64_t k, int64_t *indptr)
{
    indptr[0] = 0;
    FASTBP_FOR(n * k >= FASTBP_PARALLEL_SCAN, int64_t, i, n, {
        int64_t count = 0;
        for (int64_t j = 0; j < k; ++j) count += x[i * k + j] != 0;
        indptr[i + 1] = count;
    });
    for (int64_t i = 0; i < n; ++i) indptr[i + 1] += indptr[i];
}

#ifdef HAVE_AVX2_BUILD
/* One row's nonzeros (NaN counts as nonzero) into indices/values, returning their count, by
 * AVX-512's compress: 16 floats (8 doubles) a step, the nonzero lanes packed together and
 * stored under a mask (a full store would write past the row, into another thread's rows).
 * The generic loop below does the same a scalar at a time: compact rows of MNIST's 60000
 * training images took 59 ms with it, 34 ms this way (count, compaction and column counts, 2 cores;
 * the first call in a process pays page faults on top: about 130 ms). */
AVX512 static int64_t FN(compact_row_avx512)(const REAL *row, int64_t k, int32_t *indices, REAL *values)
{
    int64_t at = 0;
    A512(COLUMNS) column = A512(FIRST_COLUMNS)();
    for (int64_t j = 0; j < k; j += A512(LANES)) {
        const A512(MASK) inside = (A512(MASK))(k - j >= A512(LANES) ? ~0u : (1u << (k - j)) - 1);
        const A512(VEC) v = A512(LOAD)(inside, row + j);
        const A512(MASK) keep = A512(NONZERO)(inside, v);
        const int count = __builtin_popcount(keep);
        const A512(MASK) first = (A512(MASK))((1u << count) - 1);
        A512(STORE_COLUMNS)(indices + at, first, keep, column);
        A512(STORE)(values + at, first, keep, v);
        at += count;
        column = A512(NEXT_COLUMNS)(column);
    }
    return at;
}
#endif

/* One row's nonzeros (NaN counts as nonzero), in column order, into indices/values: their count.
 * Without branches (zero or not is a coin toss at a digit's edges): every entry is written, and
 * the write position moves on past the nonzero ones only; indices and values hold k entries. */
int64_t FN(compact_row)(const REAL *row, int64_t k, int32_t *indices, REAL *values)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx512()) return FN(compact_row_avx512)(row, k, indices, values);
#endif
    int64_t at = 0;
    for (int64_t j = 0; j < k; ++j) {
        indices[at] = (int32_t)j;
        values[at] = row[j];
        at += values[at] != 0;
    }
    return at;
}

/* Whether the (n, k) matrix x (float32 when x_f32, else REAL) looks mostly zero: its first row at
 * most FASTBP_COMPACT_MAX_PERCENT nonzero (a probe of one row: a dense input pays k compares). A
 * few rows never do: the layers' few-row products are cheaper than compacting. */
int FN(looks_compact)(const void *x, int x_f32, int n, int k)
{
    if (n <= FASTBP_FEW_ROWS) return 0;
    int nonzero = 0;
    for (int j = 0; j < k; ++j) nonzero += (x_f32 ? (REAL)((const float *)x)[j] : ((const REAL *)x)[j]) != 0;
    return (int64_t)nonzero * 100 <= (int64_t)k * FASTBP_COMPACT_MAX_PERCENT;
}

FASTBP_SIMD int FN(all_finite)(const REAL *a, ptrdiff_t count)
{
    int bad = 0; /* a - a is 0 but for inf and NaN; an OR of compares vectorizes (a product's chain would not) */
    for (ptrdiff_t i = 0; i < count; ++i) bad |= a[i] - a[i] != 0;
    return !bad;
}

/* Row i of x (float32 when x_f32, else REAL) compacted into indices and values (k entries each;
 * spare: k floats, for a float32 x into double values): its count. */
int64_t FN(compact_input_row)(const void *x, int x_f32, ptrdiff_t i, int k, int32_t *indices, REAL *values, float *spare)
{
    if (!x_f32 || sizeof(REAL) == sizeof(float))
        return FN(compact_row)((const REAL *)x + i * k, k, indices, values);
    const int64_t count = fastbp_compact_row_f32((const float *)x + i * k, k, indices, spare);
    for (int64_t p = 0; p < count; ++p) values[p] = spare[p];
    return count;
}

/* The nonzeros of each row, in column order, at [indptr[i], indptr[i + 1]). */
void FN(compact_rows)(const REAL *x, int64_t n, int64_t k, const int64_t *indptr, int32_t *indices, REAL *values)
{
#ifdef HAVE_AVX2_BUILD
    if (use_avx512()) {
        FASTBP_FOR(n * k >= FASTBP_PARALLEL_SCAN, int64_t, i, n, {
            FN(compact_row_avx512)(x + i * k, k, indices + indptr[i], values + indptr[i]);
        });
        return;
    }
#endif
    FASTBP_FOR(n * k >= FASTBP_PARALLEL_SCAN, int64_t, i, n, {
        int64_t at = indptr[i];
        for (int64_t j0 = 0; j0 < k; j0 += 64) {
            /* in blocks of 64 on the stack: the last block of a row must not write past its
             * entries, into the next row's (another thread's) */
            int32_t column[64];
            REAL value[64];
            const int64_t count = FN(compact_row)(x + i * k + j0, k < j0 + 64 ? k - j0 : 64, column, value);
            for (int64_t c = 0; c < count; ++c) column[c] += (int32_t)j0;
            memcpy(indices + at, column, sizeof(int32_t) * (size_t)count);
            memcpy(values + at, value, sizeof(REAL) * (size_t)count);
            at += count;
        }
    });
}
