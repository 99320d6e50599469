/* Elementwise activations for one floating type (each_real.h). Same math as
 * fastbp/backends/reference.py; loops thread when n >= parallel_min. */

FASTBP_SIMD void FN(relu_forward)(const REAL *restrict x, REAL *restrict out, unsigned char *restrict mask, ptrdiff_t n,
                                  ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, {
        const int off = x[i] <= (REAL)0;
        mask[i] = (unsigned char)off;
        out[i] = off ? (REAL)0 : x[i];
    });
}

FASTBP_SIMD void FN(relu_backward)(const REAL *restrict dout, const unsigned char *restrict mask, REAL *restrict dx,
                                   ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, { dx[i] = mask[i] ? (REAL)0 : dout[i]; });
}

FASTBP_SIMD void FN(exp)(const REAL *restrict x, REAL *restrict out, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, { out[i] = EXP(x[i]); });
}

static inline REAL FN(sigmoid1)(REAL v)
{
    const REAL e = EXP(-FABS(v)); /* exp never overflows */
    return (v >= 0 ? (REAL)1 : e) / ((REAL)1 + e);
}

FASTBP_SIMD void FN(sigmoid_forward)(const REAL *x, REAL *out, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, { out[i] = FN(sigmoid1)(x[i]); });
}

FASTBP_SIMD void FN(sigmoid_backward)(const REAL *dout, const REAL *out, REAL *dx, ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, { dx[i] = dout[i] * ((REAL)1 - out[i]) * out[i]; });
}

/* Dropout: a unit is kept where draw > ratio (draw: np.random.rand's numbers); out = x * keep. */
FASTBP_SIMD void FN(dropout_forward)(const REAL *x, const double *draw, double ratio, REAL *out, unsigned char *keep,
                                     ptrdiff_t n, ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, {
        const int on = draw[i] > ratio;
        keep[i] = (unsigned char)on;
        out[i] = x[i] * (REAL)on; /* a product, as the book's: NaN * 0 stays NaN */
    });
}

FASTBP_SIMD void FN(dropout_backward)(const REAL *dout, const unsigned char *keep, REAL *dx, ptrdiff_t n,
                                      ptrdiff_t parallel_min)
{
    FASTBP_FOR(n >= parallel_min, ptrdiff_t, i, n, { dx[i] = dout[i] * (REAL)keep[i]; });
}

/* The same, the draws made here from NumPy's legacy generator (mt19937.c) instead of passed in:
 * `state` is its key (FASTBP_MT19937_WORDS words) and then its position (an int), NumPy's own
 * memory, advanced in place. */
void FN(dropout_forward_mt)(const REAL *x, uint32_t *state, double ratio, REAL *out, unsigned char *keep, ptrdiff_t n,
                            ptrdiff_t parallel_min)
{
    int pos;
    memcpy(&pos, &state[FASTBP_MT19937_WORDS], sizeof pos);
    pos = pos >= 0 && pos <= FASTBP_MT19937_WORDS ? pos : FASTBP_MT19937_WORDS; /* (never otherwise: a twist is safe) */
    pos = fastbp_mt19937_above(state, pos, ratio, keep, n);
    memcpy(&state[FASTBP_MT19937_WORDS], &pos, sizeof pos);
    FN(dropout_backward)(x, keep, out, n, parallel_min); /* x * keep */
}
