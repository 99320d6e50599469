"""The fused training engine's contract: a network as a sequence of ops over one flat parameter
buffer, the update rules, and the hyper-parameter vector.

A backend's ``train_steps`` runs a block of mini-batch steps (forward, loss, backward without the
data's own gradient, update) in one call, and ``predict_labels`` the forward pass of a whole data
set; both read the network as a *program*: one record of ``OP_FIELDS`` int64 per op::

    [code, param_at, in, out, 0, ...]     in / out: the op's items per sample

    AFFINE        W (in, out) at param_at in the flat buffer, b (out,) right after it
    RELU SIGMOID  elementwise, in == out
    CONV          W (F, C, KH, KW) at param_at, b (F,) after it; fields from FIELD_SHAPE:
                  C, H, W, F, KH, KW, stride, pad, OH, OW (in = C H W, out = F OH OW)
    POOL          max pooling, the same fields (F = C, no parameters)
    DROPOUT       the book's dropout: training keeps a unit when its draw exceeds the ratio (at
                  FIELD_RATIO, in units of 1 / RATIO_SCALE), prediction scales by 1 - ratio; the
                  draws come from the engine's generator (dropout_draws), keyed by FIELD_SEED,
                  the step and the op's index, so every backend draws the same masks
    BATCHNORM     the book's batch normalization of each of the in (= out) features over the
                  batch: gamma, beta (in each) at param_at; its momentum and eps at FIELD_MOMENTUM
                  and FIELD_EPS (a float64's bits, float_field); its running mean and variance (in
                  each, float64) at FIELD_STATS_AT of the *stats* buffer that train_steps updates
                  (running = momentum running + (1 - momentum) batch, as the layer) and
                  predict_labels reads (stats_size entries, a net's running statistics in order)
    SOFTMAX_LOSS  softmax with cross-entropy; the last op, and only there

Gradients and optimizer state use the parameters' layout, so an update is one elementwise pass
over the flat buffer (state: two rows, m and v, of the buffer's length).

The numbers here are the C engine's too (kernels/kernels.h): ``check_native`` compares them
with what the compiled module reports when the native backend loads. Plain arithmetic functions
(``adam_step_size``) are compiled by numba as they are.
"""

from __future__ import annotations

import numpy as np

# ---- op records ------------------------------------------------------------------------------
FIELD_CODE, FIELD_PARAM_AT, FIELD_IN, FIELD_OUT = 0, 1, 2, 3
FIELD_SHAPE = 4  # a window op's C, H, W, F, KH, KW, stride, pad, OH, OW
FIELD_RATIO, FIELD_SEED = 4, 5  # dropout's ratio and generator seed
RATIO_SCALE = 1_000_000_000
FIELD_MOMENTUM, FIELD_EPS, FIELD_STATS_AT = 4, 5, 6  # batch normalization's
BATCHNORM_EPS = 10e-7  # the book's BatchNormalization adds it to the variance, inside the square root
OP_FIELDS = 16
AFFINE, RELU, SIGMOID, SOFTMAX_LOSS, CONV, POOL, DROPOUT, BATCHNORM = 0, 1, 2, 3, 4, 5, 6, 7
ACTIVATIONS = {"relu": RELU, "sigmoid": SIGMOID}
ENGINE_RUNS = (AFFINE, RELU, SIGMOID, SOFTMAX_LOSS, CONV, POOL, DROPOUT, BATCHNORM)  # the ops every backend's engine runs

# ---- update rules and the hyper-parameter vector they read -----------------------------------
SGD, MOMENTUM, ADAM, NESTEROV, ADAGRAD, RMSPROP = 0, 1, 2, 3, 4, 5
OPTIMIZERS = {"sgd": SGD, "momentum": MOMENTUM, "nesterov": NESTEROV, "adagrad": ADAGRAD, "rmsprop": RMSPROP,
              "adam": ADAM}
HYPER_LR, HYPER_BETA1, HYPER_BETA2, HYPER_EPS = 0, 1, 2, 3  # BETA1: Momentum's coefficient, RMSprop's decay too
HYPER_DECAY = 4  # the book's weight decay lambda: loss + lambda/2 sum W^2 over every W (not b), dW + lambda W
HYPER_LENGTH = 5

# ---- prediction: rows per pass of the ops before the loss -------------------------------------
# Dense rows: big enough for BLAS to run at speed, small enough that the hidden outputs stay in
# cache. Compact rows: the native engine spreads chunks over its threads, so smaller ones balance
# better (MNIST's 10000 test images in 40 chunks). Measured on the 2-core machine, 784-50-10.
PREDICT_ROWS = 2048
PREDICT_ROWS_COMPACT = 256
# Rows converted at a time when x is not in the network's dtype (float32 images into the seed's
# float64 net): 512 x 784 float64 is 3 MB, read back by the product while still in cache.
# Measured, train + test accuracy of the seed's net on MNIST: 168 ms with chunks of 8192 rows,
# 116-129 ms with 512 (reference backend: 217 and 135-146 ms).
CONVERT_ROWS = 512
# Inputs at most this dense (percent of nonzero entries) skip their zeros: a data set the native
# engine keeps as compact rows, and an affine layer's input on the native backend (kernels/kernels.h
# has the measurements).
COMPACT_MAX_PERCENT = 40
# A softmax entry costs this many elementwise ones (its exp, max, sum and scale): softmax runs on
# threads from PARALLEL_MIN_ELEMENTS / SOFTMAX_WORK entries (kernels/kernels.h has the measurements)
SOFTMAX_WORK = 64


class StepsInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a block of training steps (the native engine's, between two steps): ``done``
    steps were applied, their ``losses`` recorded; the trainer keeps them and stops."""

    def __init__(self, done: int, losses: np.ndarray):
        super().__init__(f"interrupted after {done} steps of the block")
        self.done, self.losses = done, losses


def adam_step_size(lr, beta1, beta2, t):
    """Adam's step size at step t (1-based), the bias corrections of m and v folded in as the book
    does. kernels/optimizers.c has the same formula (tests/test_engine.py compares the two)."""
    return lr * (1.0 - beta2**t) ** 0.5 / (1.0 - beta1**t)


def hyper_vector(dtype, lr, beta1=0.0, beta2=0.0, eps=0.0, decay=0.0) -> np.ndarray:
    """The vector an update rule reads (and the engine's weight decay), in the parameters' dtype."""
    hyper = np.zeros(HYPER_LENGTH, dtype=dtype)
    hyper[[HYPER_LR, HYPER_BETA1, HYPER_BETA2, HYPER_EPS, HYPER_DECAY]] = lr, beta1, beta2, eps, decay
    return hyper


def weight_spans(program) -> list[tuple[int, int]]:
    """[start, stop) of every op's weights W in the flat buffer (affine and convolution; not b):
    what weight decay reads."""
    spans = []
    for op in np.asarray(program):
        at, k, m = int(op[FIELD_PARAM_AT]), int(op[FIELD_IN]), int(op[FIELD_OUT])
        if op[FIELD_CODE] == AFFINE:
            spans.append((at, at + k * m))
        elif op[FIELD_CODE] == CONV:
            c, f, kh, kw = (int(op[FIELD_SHAPE + j]) for j in (0, 3, 4, 5))
            spans.append((at, at + f * c * kh * kw))
    return spans


def op_record(code: int, n_in: int, n_out: int, param_at: int = 0) -> np.ndarray:
    record = np.zeros(OP_FIELDS, dtype=np.int64)
    record[[FIELD_CODE, FIELD_PARAM_AT, FIELD_IN, FIELD_OUT]] = code, param_at, n_in, n_out
    return record


def check_runs(program, stats=None) -> np.ndarray:
    """The engines' refusal of an op they do not run (the C engine's own check says the same), and
    ``stats`` (the batch normalization ops' running statistics) as a float64 vector of
    stats_size(program) entries, empty when the program has none."""
    codes = np.asarray(program)[:, FIELD_CODE]
    if not np.isin(codes, ENGINE_RUNS).all():
        raise ValueError(f"program has op code {int(codes[~np.isin(codes, ENGINE_RUNS)][0])}, which the engine does not run")
    need = stats_size(program)
    for op in np.asarray(program)[codes == BATCHNORM]:
        momentum, eps, at = read_float(op, FIELD_MOMENTUM), read_float(op, FIELD_EPS), int(op[FIELD_STATS_AT])
        if not (0 <= momentum <= 1 and 0 < eps < np.inf and 0 <= at <= need - 2 * int(op[FIELD_IN])):
            raise ValueError(f"program has a batch normalization op with momentum {momentum}, eps {eps} or running "
                             f"statistics at {at} out of range")
    if stats is None and not need:
        return np.empty(0)
    if not (isinstance(stats, np.ndarray) and stats.dtype == np.float64 and stats.ndim == 1 and stats.size == need
            and stats.flags.c_contiguous and stats.flags.writeable):
        got = "none" if stats is None else f"{type(stats).__name__} {getattr(stats, 'dtype', '')} {np.shape(stats)}"
        raise ValueError(f"program's batch normalization needs stats, a writable contiguous float64 vector of {need} "
                         f"running means and variances (SequentialNet.stats()), got {got}")
    return stats


def float_field(value: float) -> int:
    """A float64 kept in an op record, bit for bit (batch normalization's momentum and eps)."""
    return int(np.float64(value).view(np.int64))


def read_float(op, field: int) -> float:
    return float(np.int64(op[field]).view(np.float64))


def batchnorm_record(n: int, param_at: int, momentum: float, stats_at: int) -> np.ndarray:
    record = op_record(BATCHNORM, n, n, param_at)
    record[[FIELD_MOMENTUM, FIELD_EPS, FIELD_STATS_AT]] = float_field(momentum), float_field(BATCHNORM_EPS), stats_at
    return record


def stats_size(program) -> int:
    """Entries of the stats buffer: a running mean and variance per feature of each batch normalization."""
    program = np.asarray(program)
    return int(2 * program[program[:, FIELD_CODE] == BATCHNORM, FIELD_IN].sum())


def dropout_ratio(op) -> float:
    """A dropout record's ratio, as every backend reads it (the C divides the same way)."""
    return int(op[FIELD_RATIO]) / RATIO_SCALE


def seeded(program, seed: int) -> np.ndarray:
    """``program`` with its dropout ops drawing from generator seed ``seed`` (a copy)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    program = np.array(program, dtype=np.int64)
    program[program[:, FIELD_CODE] == DROPOUT, FIELD_SEED] = seed
    return program


# ---- the engine's generator: dropout's draws ------------------------------------------------
# SplitMix64 (Steele, Lea and Flood 2014) from a key per (seed, step, op): draw e of a step's op
# is mix64(key + (e + 1) GOLDEN)'s top 53 bits over 2^53, a float64 in [0, 1). Counter-based, so
# any thread can draw any element, and NumPy, numba and C give the same bits (kernels/engine.c).
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
DRAW_SCALE = 2.0**-53


def mix64(z):
    """SplitMix64's finalizer on uint64 (a NumPy array or scalar; numba compiles it as it is)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def dropout_keys(program, step0: int, n_steps: int) -> np.ndarray:
    """keys[s, i]: the generator's key for op i at training step step0 + s + 1 (1-based), from
    the op's FIELD_SEED (the C computes the same per step)."""
    seeds = np.asarray(program)[:, FIELD_SEED].astype(np.uint64)
    steps = np.arange(step0 + 1, step0 + n_steps + 1, dtype=np.uint64)
    ops = np.arange(len(program), dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64(mix64(seeds)[None, :] ^ (steps[:, None] << np.uint64(16) | ops[None, :]))


def dropout_draws(key, n) -> np.ndarray:
    """The ``n`` draws of one op at one step (its batch outputs in row-major order) from its key."""
    with np.errstate(over="ignore"):
        states = np.uint64(key) + np.arange(1, n + 1, dtype=np.uint64) * GOLDEN
        return (mix64(states) >> _S11).astype(np.float64) * DRAW_SCALE


def mlp_program(sizes, activation: str) -> np.ndarray:
    """The program of an MLP: Affine, activation, ..., Affine, SoftmaxWithLoss; the layers'
    parameters W1, b1, W2, b2, ... one after the other from offset 0 (fastbp.architecture.program
    builds the same from an MLP's architecture, checked; this one writes any sizes, for tests of
    the C engine's own checks)."""
    records, at = [], 0
    for layer in range(len(sizes) - 1):
        n_in, n_out = int(sizes[layer]), int(sizes[layer + 1])
        records.append(op_record(AFFINE, n_in, n_out, at))
        at += n_in * n_out + n_out
        if layer < len(sizes) - 2:
            records.append(op_record(ACTIVATIONS[activation], n_out, n_out))
    records.append(op_record(SOFTMAX_LOSS, int(sizes[-1]), int(sizes[-1])))
    return np.stack(records)


def parameter_count(sizes) -> int:
    """Entries of an MLP's flat parameter buffer."""
    return int(sum(sizes[k] * sizes[k + 1] + sizes[k + 1] for k in range(len(sizes) - 1)))


def check_native(constants: dict) -> None:
    """The compiled engine must number ops, fields, update rules and the hyper vector as this
    module does; a mismatch (a stale build) is an ImportError that says so."""
    ours = {name: value for name, value in globals().items() if name.isupper() and isinstance(value, int)}
    wrong = {name: (value, ours.get(name)) for name, value in constants.items() if ours.get(name) != value}
    if wrong:
        raise ImportError(f"fastbp._native numbers its engine differently from fastbp.engine {wrong}; "
                          f"rebuild it (pip install -e .)")
