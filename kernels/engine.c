/* The engine: mini-batch training and prediction of a whole network in one call, the network a
 * sequence of ops (kernels.h: op records; fastbp/engine.py builds them) over one flat parameter
 * buffer. Each op runs the kernels its layer runs (affine.c, elementwise.c, loss.c,
 * optimizers.c); compact rows (rows.c) feed the first affine op on all threads.
 */
#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "kernels.h"

double fastbp_engine_seconds[2][FASTBP_OP_COUNT + 1];
volatile sig_atomic_t fastbp_stop_requested;

double fastbp_clock(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

/* Adds the time since `since` to the op's account (atomically: prediction runs chunks on threads). */
void fastbp_engine_time(int backward, int code, double since)
{
    const double spent = fastbp_clock() - since;
#ifdef _OPENMP
#pragma omp atomic
#endif
    fastbp_engine_seconds[backward][code] += spent;
}

/* SplitMix64's finalizer: the engine's generator, bit for bit fastbp/engine.py's mix64. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

#define GOLDEN UINT64_C(0x9E3779B97F4A7C15)

uint64_t fastbp_dropout_key(int64_t seed, int64_t step, int op)
{
    return mix64(mix64((uint64_t)seed) ^ ((uint64_t)step << 16 | (uint64_t)op));
}

/* draw[e] = the top 53 bits of mix64(key + (e + 1) GOLDEN) over 2^53: uniform in [0, 1). */
void fastbp_dropout_draws(uint64_t key, ptrdiff_t n, double *draw)
{
    for (ptrdiff_t e = 0; e < n; ++e) draw[e] = (double)(mix64(key + (uint64_t)(e + 1) * GOLDEN) >> 11) * 0x1p-53;
}

/* cuts[0] = 0 <= cuts[1] <= ... <= cuts[threads] = k: column ranges holding about equal
 * numbers of entries (counts[j]: the entries of column j). */
void fastbp_split_columns(const int64_t *counts, int k, int threads, int32_t *cuts)
{
    double total = 0, seen = 0;
    for (int j = 0; j < k; ++j) total += (double)counts[j];
    int j = 0;
    cuts[0] = 0;
    for (int t = 1; t < threads; ++t) {
        while (j < k && seen < total * t / threads) seen += (double)counts[j++];
        cuts[t] = j;
    }
    cuts[threads] = k;
}

/* The first entry in [lo, hi) whose column is at least col, else hi (a row's columns are
 * sorted): lo plus the count of columns below col, one vectorized pass over the row, whose
 * loads are independent (a binary search's each wait for the one before). */
FASTBP_SIMD static int64_t first_column_at_least(const int32_t *indices, int64_t lo, int64_t hi, int32_t col)
{
    int32_t below = 0;
    for (int64_t p = lo; p < hi; ++p) below += indices[p] < col;
    return lo + below;
}

/* [begin[r], end[r]): the entries of compact row rows[r] whose columns are in [lo, hi). */
int32_t *fastbp_row_splits(const fastbp_rows *x, int64_t n_rows, int k, int threads)
{
    int32_t *cuts = malloc(sizeof(int32_t) * (size_t)(threads + 1));
    int32_t *splits = malloc(sizeof(int32_t) * (size_t)(n_rows > 0 ? n_rows : 1) * (size_t)(threads - 1));
    if (!cuts || !splits) {
        free(cuts);
        free(splits);
        return NULL;
    }
    fastbp_split_columns(x->column_counts, k, threads, cuts);
    FASTBP_FOR(n_rows >= 4096, int64_t, i, n_rows, {
        const int64_t first = x->indptr[i], last = x->indptr[i + 1];
        int64_t at = first;
        for (int t = 1; t < threads; ++t) {
            at = first_column_at_least(x->indices, at, last, cuts[t]);
            splits[i * (threads - 1) + t - 1] = (int32_t)(at - first);
        }
    });
    free(cuts);
    return splits;
}

/* Row i's entries in range t: [*begin, *end). */
static void split_span(const fastbp_rows *x, int64_t i, int t, int threads, int64_t *begin, int64_t *end)
{
    const int64_t first = x->indptr[i];
    const int32_t *at = x->splits + i * (threads - 1);
    *begin = t > 0 ? first + at[t - 1] : first;
    *end = t < threads - 1 ? first + at[t] : x->indptr[i + 1];
}

void fastbp_own_spans(const fastbp_rows *x, const int64_t *rows, int n, int t, int threads, int32_t lo, int32_t hi,
                      int k, int64_t *begin, int64_t *end)
{
    if (x->splits && x->split_threads == threads) {
        for (int r = 0; r < n; ++r) split_span(x, rows[r], t, threads, &begin[r], &end[r]);
        return;
    }
    for (int r = 0; r < n; ++r) {
        const int64_t first = x->indptr[rows[r]], last = x->indptr[rows[r] + 1];
        begin[r] = lo > 0 ? first_column_at_least(x->indices, first, last, lo) : first;
        end[r] = hi < k ? first_column_at_least(x->indices, begin[r], last, hi) : last;
    }
}

void fastbp_prefetch_rows(const fastbp_rows *x, const int64_t *rows, int n, size_t item, int t, int threads)
{
    const char *values = x->values;
    const int own = x->splits && x->split_threads == threads;
    for (int r = 0; r < n; ++r) {
        int64_t first = x->indptr[rows[r]], last = x->indptr[rows[r] + 1];
        if (own) split_span(x, rows[r], t, threads, &first, &last);
        if (last == first) continue;
        /* a cache line at a time, and the last entry's (the row need not start on a line) */
        for (int64_t p = first; p < last; p += 64 / (int64_t)sizeof(int32_t)) __builtin_prefetch(x->indices + p);
        __builtin_prefetch(x->indices + last - 1);
        for (int64_t p = first; p < last; p += 64 / (int64_t)item) __builtin_prefetch(values + p * (int64_t)item);
        __builtin_prefetch(values + (last - 1) * (int64_t)item);
    }
}

/* The compact step's barrier: two a step, microseconds apart, around the small later layers (on
 * every thread, each on its rows, or on thread 0 alone). OpenMP's own barrier sleeps after GOMP_SPINCOUNT spins, and fastbp keeps that count low
 * (fastbp/threads.py: so that idle threads leave the cores to BLAS between the layers' loops);
 * this one spins until its wait grows long (then yields the core, to a competing process too). */
typedef struct {
    int count, sense, threads;
} fastbp_barrier;

#define FASTBP_BARRIER_SPINS 200000

static void fastbp_barrier_wait(fastbp_barrier *b, int *my_sense)
{
    *my_sense = !*my_sense;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->threads) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, *my_sense, __ATOMIC_RELEASE); /* everything before it is seen after */
        return;
    }
    for (long spins = 0; __atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != *my_sense; ++spins) {
        if (spins > FASTBP_BARRIER_SPINS) sched_yield();
#if defined(__x86_64__) || defined(__i386__)
        else __builtin_ia32_pause();
#endif
    }
}

#define FASTBP_TEMPLATE "engine_impl.h"
#include "each_real.h"
