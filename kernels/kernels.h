/* fastbp native kernels: plain C over contiguous buffers, one file family per op family:
 *
 *   elementwise.c  ReLU, Sigmoid, Dropout        affine.c      Affine (the one product rule)
 *   conv.c         Convolution, max Pooling      batchnorm.c   BatchNormalization
 *   loss.c         softmax + cross-entropy, MSE  optimizers.c  the update rules
 *   rows.c         row-by-row products, compact rows (AVX2 and baseline)
 *   engine.c       whole-network training and prediction: a network as a sequence of ops
 *   mt19937.c      NumPy's legacy generator, for the book's Dropout mask
 *   blas.c         row-major products on SciPy's BLAS          module.c  the Python bindings
 *
 * Each family's code for float and double is one template (<family>_impl.h) compiled per type by
 * each_real.h. Callers (module.c) have already checked lengths, formats, contiguity and index
 * ranges: kernels do no bounds checking of their own.
 */
#ifndef FASTBP_KERNELS_H
#define FASTBP_KERNELS_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "vexp.h"

/* Elementwise loops get an AVX2 + FMA version beside the baseline one, chosen when the module
 * loads (GCC function multiversioning): a wheel built here runs on any x86-64, fast on AVX2.
 * FASTBP_AVX512 marks a function compiled for AVX-512 beside them, called only for work of at
 * least FASTBP_WIDE_MIN items on a CPU that has it (fastbp_isa): the same operations in the same
 * order, so the same results. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
/* feature-based: "arch=haswell" would dispatch on the CPU model and give AMD the baseline clone;
 * x86-64-v3 (AVX2, FMA, ...) and v4 (AVX-512 F/BW/CD/DQ/VL) are feature levels (GCC 12), and FMA
 * makes exp's polynomial 1.5x faster */
#if __GNUC__ >= 12
#define FASTBP_SIMD __attribute__((target_clones("arch=x86-64-v3", "default")))
#define FASTBP_AVX512 __attribute__((target("arch=x86-64-v4")))
#else
#define FASTBP_SIMD __attribute__((target_clones("avx2", "default")))
#endif
#else
#define FASTBP_SIMD
#endif
#define FASTBP_WIDE_MIN 16384

/* FASTBP_FOR(cond, type, i, n, { body }): for (type i = 0; i < n; ++i) body, split between the
 * OpenMP threads when cond holds (callers pass the size threshold of fastbp/threads.py, or
 * FASTBP_SERIAL for "never"); FASTBP_FOR_SUM also sums `total` over the threads. The body is
 * written once and expanded twice, so that a serial loop never enters libgomp: a parallel region
 * with its `if` false still makes and frees a one-thread team, 0.65 us a call (measured: half of
 * a 100 x 10 ReLU's call). */
#ifdef _OPENMP
#include <omp.h>
#define FASTBP_PRAGMA(x) _Pragma(#x)
#define FASTBP_FOR_WITH(clauses, cond, type, i, n, ...)                                                               \
    do {                                                                                                              \
        if (cond) {                                                                                                   \
            FASTBP_PRAGMA(omp parallel for schedule(static) clauses)                                                  \
            for (type i = 0; i < (n); ++i) __VA_ARGS__                                                                \
        } else {                                                                                                      \
            for (type i = 0; i < (n); ++i) __VA_ARGS__                                                                \
        }                                                                                                             \
    } while (0)
#define FASTBP_FOR(cond, type, i, n, ...) FASTBP_FOR_WITH(, cond, type, i, n, __VA_ARGS__)
#define FASTBP_FOR_SUM(cond, total, type, i, n, ...) FASTBP_FOR_WITH(reduction(+ : total), cond, type, i, n, __VA_ARGS__)
#define FASTBP_THREAD_NUM() omp_get_thread_num()
#define FASTBP_MAX_THREADS() omp_get_max_threads()
#else
#define FASTBP_FOR(cond, type, i, n, ...) for (type i = 0; i < (n); ++i) __VA_ARGS__
#define FASTBP_FOR_SUM(cond, total, type, i, n, ...) for (type i = 0; i < (n); ++i) __VA_ARGS__
#define FASTBP_THREAD_NUM() 0
#define FASTBP_MAX_THREADS() 1
#endif
#define FASTBP_SERIAL PTRDIFF_MAX
/* partial results a reduction keeps so that its loop vectorizes: one AVX2 vector of float */
#define FASTBP_LANES 8
/* a data set of this many items or more is compacted on the OpenMP threads */
#define FASTBP_PARALLEL_SCAN ((int64_t)1 << 20)

/* The one rule for when a product runs on fastbp's own row loops (rows.c) instead of BLAS, for
 * the layers and the engine alike (affine_impl.h):
 *   - a few rows: the forward product for at most FASTBP_FEW_ROWS rows, and dx = dout W^T for at
 *     most FASTBP_FEW_ROWS_DX, where BLAS's call overhead and its few-row kernels lose (measured,
 *     784x50 float64 on the 2-core machine: forward 1 row 6.7 us by the loop, 7.6 by NumPy's
 *     BLAS; 3 rows 16.6 vs 31.4; 6 rows 31.6 vs 40.8; 8 rows 44.1 vs 29.9), and dW = x^T dout
 *     for at most FASTBP_FEW_ROWS (784x50 dW alone: float64 1 row 10.6-11.8 us by the loop, 17.9-18.8
 *     by BLAS; 3 rows 15.0 vs 21.5; 6 rows 23.0 vs 29.2; float32 1 row 7.5 vs 9.8, 6 rows level);
 *   - weights of at most FASTBP_OWN_PRODUCT entries (the later layers of an MLP, 50x10) when the
 *     caller asks to stay on its thread: the engine, whose OpenMP threads BLAS's own would fight.
 *     Asked from Python, one such call is faster by BLAS (100x50x10 float32 forward + backward:
 *     13 us by BLAS, 18 us by the loops and their transposed copies). */
#define FASTBP_OWN_PRODUCT (1 << 15)
/* OpenBLAS threads a product of more multiply-adds than this (interface/gemm.c: 65536 times its
 * GEMM_MULTITHREAD_THRESHOLD, 4); the layers run such products on their OpenMP team instead
 * (affine_impl.h: layer_on_team), never on BLAS's threads. */
#define FASTBP_BLAS_THREADED_WORK ((int64_t)1 << 18)
#define FASTBP_FEW_ROWS 6
/* ... and among those few rows, from this many in float64 the forward runs as register tiles
 * (tiles_times: each W row read once for all the rows, where the row loop reads W once per row):
 * 784x50 float64, 3 rows 13 us (the row loop 17), 4 rows 15 (21-24), 6 rows 24 (31); 1 row 8.3
 * (6.7); in float32 the tiles were no faster at any of 1-6 rows (W half the size stays closer) */
#define FASTBP_FEW_ROWS_TILED 3
#define FASTBP_FEW_ROWS_DX 3
/* Inputs at most this dense (percent of nonzero entries) skip their zeros: a data set the engine
 * keeps as compact rows (fastbp/backends/native.py), and a layer's input whose first row is so
 * (affine_impl.h), on the OpenMP team from FASTBP_COMPACT_TEAM_ROWS rows. Measured on the 2-core
 * machine, an affine layer 784 x 50 (float32 inputs into float64 weights, batch 100, random
 * positions), forward + backward: compact 1.75x faster than dense at 20%, 1.26x at 40%, 1.07x at
 * 50%, 0.91x at 60%; the engine's fused step (float32) 2.1-2.2x at MNIST's 19%, 1.2-1.4x at 40%. */
#define FASTBP_COMPACT_MAX_PERCENT 40
#define FASTBP_COMPACT_TEAM_ROWS 32
#define FASTBP_COMPACT_DW_ENTRIES ((int64_t)1 << 22)
/* float32 inputs into float64 weights are converted this many rows at a time (fastbp/engine.py's CONVERT_ROWS) */
#define FASTBP_CONVERT_ROWS 512
/* A pooling window's element costs this many times an elementwise loop's (compares, bounds,
 * the argmax): pooling threads from a PARALLEL_MIN_ELEMENTS / FASTBP_POOL_WORK elements. */
#define FASTBP_POOL_WORK 8
/* ... and a softmax entry (its exp, max, sum and scale) this many times: softmax threads from 2^16
 * entries (2-core AMD machine, forward, one thread -> two: 1000 x 100 float32 84-97 -> 53-78 us,
 * float64 153 -> 86-132; 256 x 1024 float64 362-394 -> 216-263) */
#define FASTBP_SOFTMAX_WORK 64
/* A convolution's backward takes samples together until their outputs reach this many places
 * (8 samples of DeepConvNet's 8 x 8 planes, 2 of 14 x 14; one of 28 x 28): its dW dot products
 * run over the group's outputs, long enough that each sum's final reduction is paid rarely. */
#define FASTBP_CONV_GROUP_AREA 512
/* The forms of one sample's convolution (conv_impl.h: sample_conv). */
enum { FASTBP_CONV_WINDOWS, FASTBP_CONV_ROWS_OF_TILES, FASTBP_CONV_GRID };
/* The fused compact step groups a batch's entries by column into buckets of one place per batch
 * row while all the buckets hold at most this many places (else it counts them first). */
#define FASTBP_BUCKET_ENTRIES (1 << 22)
/* Where the engine's products run: on the calling thread, split on its OpenMP team, or on BLAS's
 * threads (an MLP step whose later affine ops hold at least FASTBP_LATER_ON_BLAS weights: a deep
 * MLP, whose later products would otherwise run on one thread, while the others wait in a compact
 * step; its compact first layer then runs on one thread). Measured on the 2-core machine, ms a
 * step at batch 100, MNIST as compact rows: 784-100x5-10 with batch normalization 1.78-1.84 ->
 * 1.15-1.21 (float64), 0.80-0.82 -> 0.60 (float32); 784-100-100-100-10 0.47-0.49 -> 0.43-0.44; but
 * 784-100-100-10 (11000 later weights) 0.305 -> 0.354-0.361 and 784-50-50-10 0.118 -> 0.178 on
 * BLAS: it pays from about 2^14. Dense rows, float64 with batch normalization: 784-100x5-10
 * 2.74-2.98 -> 1.46-2.15, 784-100x3-10 1.73-1.78 -> 1.05-1.44. */
enum { FASTBP_PRODUCTS_HERE = 0, FASTBP_PRODUCTS_TEAM = 1, FASTBP_PRODUCTS_BLAS = 2 };
#define FASTBP_LATER_ON_BLAS (1 << 14)

/* ---- the engine's contract; fastbp/engine.py holds the same numbers and checks them against
 * these (module.c's constants()) when the native backend loads ------------------------------ */

/* A network is a sequence of op records, FASTBP_OP_FIELDS int64 each: */
enum { FASTBP_FIELD_CODE = 0, FASTBP_FIELD_PARAM_AT, FASTBP_FIELD_IN, FASTBP_FIELD_OUT, FASTBP_FIELD_SHAPE,
       FASTBP_OP_FIELDS = 16 };
/* a dropout op's fields: its ratio in units of 1 / FASTBP_RATIO_SCALE, its generator's seed */
enum { FASTBP_FIELD_RATIO = 4, FASTBP_FIELD_SEED = 5, FASTBP_RATIO_SCALE = 1000000000 };
/* a batch normalization's: momentum and eps (a double's bits), its running mean and variance at
 * this offset of the engine's float64 stats buffer */
enum { FASTBP_FIELD_MOMENTUM = 4, FASTBP_FIELD_EPS = 5, FASTBP_FIELD_STATS_AT = 6 };
/* the engine's generator keys a step's op by (step << 16 | op): at most this many ops */
#define FASTBP_MAX_OPS 65536
/* a window op's fields from FASTBP_FIELD_SHAPE on */
enum { FASTBP_C = 0, FASTBP_H, FASTBP_W, FASTBP_F, FASTBP_KH, FASTBP_KW, FASTBP_STRIDE, FASTBP_PAD, FASTBP_OH, FASTBP_OW };
/* op codes: AFFINE (W at PARAM_AT, IN x OUT, then b), activations (IN = OUT), the loss (last),
 * CONV (W (F, C, KH, KW) at PARAM_AT, then b), POOL (max), DROPOUT (the book's: x * (draw > ratio) in
 * training, x * (1 - ratio) in prediction), BATCHNORM (gamma, beta (IN = OUT each) at PARAM_AT; the
 * batch's statistics in training, updating the running ones; the running ones in prediction) */
enum { FASTBP_OP_AFFINE = 0, FASTBP_OP_RELU = 1, FASTBP_OP_SIGMOID = 2, FASTBP_OP_SOFTMAX_LOSS = 3, FASTBP_OP_CONV = 4,
       FASTBP_OP_POOL = 5, FASTBP_OP_DROPOUT = 6, FASTBP_OP_BATCHNORM = 7, FASTBP_OP_COUNT };
/* update rules, and the hyper-parameter vector they read */
enum { FASTBP_SGD = 0, FASTBP_MOMENTUM = 1, FASTBP_ADAM = 2, FASTBP_NESTEROV = 3, FASTBP_ADAGRAD = 4, FASTBP_RMSPROP = 5,
       FASTBP_OPTIMIZER_COUNT };
enum { FASTBP_HYPER_LR = 0, FASTBP_HYPER_BETA1, FASTBP_HYPER_BETA2, FASTBP_HYPER_EPS, FASTBP_HYPER_DECAY,
       FASTBP_HYPER_LENGTH }; /* DECAY: the engine's weight decay lambda (every W, not b) */

/* The input of the engine: a dense row-major matrix, or compact rows (CSR: row i's nonzeros
 * are values[p] at columns indices[p], p in [indptr[i], indptr[i + 1])). */
typedef struct {
    const void *dense; /* NULL when the rows are compact */
    int dense_f32;     /* dense rows of float32 into a float64 network (predict_labels only) */
    const int64_t *indptr;
    const int32_t *indices;
    const void *values;
    const int64_t *column_counts; /* entries per column, over all rows */
    /* where each row's entries cross the column ranges of split_threads threads (fastbp_split_columns):
     * row i's range t starts at indptr[i] + splits[i (split_threads - 1) + t - 1] (t > 0); NULL: not made */
    const int32_t *splits;
    int split_threads;
} fastbp_rows;

/* type-independent helpers of the engine and of compact rows */
void fastbp_column_counts(const int32_t *indices, int64_t nnz, int64_t *counts, int64_t k);
void fastbp_split_columns(const int64_t *counts, int k, int threads, int32_t *cuts);
/* splits (n_rows x (threads - 1)) of compact rows for the column ranges of `threads` threads, or
 * NULL when out of memory */
int32_t *fastbp_row_splits(const fastbp_rows *x, int64_t n_rows, int k, int threads);
/* The entries [begin[r], end[r]) of rows[r] in thread t's column range [lo, hi) of `threads` */
void fastbp_own_spans(const fastbp_rows *x, const int64_t *rows, int n, int t, int threads, int32_t lo, int32_t hi,
                      int k, int64_t *begin, int64_t *end);
/* Asks the caches for the next step's rows (their column indices and `item`-byte values) while
 * this step computes: a batch's rows are random rows of a data set larger than the caches. Each
 * thread asks for its own range's entries where the rows' splits are made, else for whole rows. */
void fastbp_prefetch_rows(const fastbp_rows *x, const int64_t *rows, int n, size_t item, int t, int threads);
double fastbp_adam_step_size(double lr, double beta1, double beta2, int64_t t);
/* NumPy's legacy generator (mt19937.c): keep[e] = next double > ratio; returns the new position */
#define FASTBP_MT19937_WORDS 624
int fastbp_mt19937_above(uint32_t *key, int pos, double ratio, unsigned char *keep, ptrdiff_t n);
/* the engine's generator (fastbp/engine.py: dropout_keys, dropout_draws) */
uint64_t fastbp_dropout_key(int64_t seed, int64_t step, int op);
void fastbp_dropout_draws(uint64_t key, ptrdiff_t n, double *draw);

/* Set (by module.c's SIGINT handler, while a training call runs on Python's main thread) to stop
 * the engine before its next step: a block of steps is interrupted within one step. */
extern volatile sig_atomic_t fastbp_stop_requested;

/* Seconds the engine spent per op code, forward ([0]) and backward ([1]); the update rule's at
 * op code FASTBP_OP_COUNT (backward). Summed over the engine's calls until read and reset
 * (module.c's engine_seconds): where a fused step's time goes, for the benchmarks. */
extern double fastbp_engine_seconds[2][FASTBP_OP_COUNT + 1];
double fastbp_clock(void);
void fastbp_engine_time(int backward, int code, double since);

/* rows.c's instruction sets: the CPU's best, the one in use, and a lower one chosen (-1: the CPU
 * lacks it) */
enum { FASTBP_ISA_BASE, FASTBP_ISA_AVX2, FASTBP_ISA_AVX512 };
int fastbp_cpu_isa(void);
int fastbp_isa(void);
int fastbp_set_isa(int isa);

#define FASTBP_TEMPLATE "declarations.h"
#include "each_real.h"

#endif
