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
    DROPOUT       reserved (its ratio at FIELD_RATIO, in units of 1 / RATIO_SCALE): networks with
                  dropout train on the layer path for now
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
FIELD_RATIO = 4  # dropout's ratio
RATIO_SCALE = 1_000_000_000
OP_FIELDS = 16
AFFINE, RELU, SIGMOID, SOFTMAX_LOSS, CONV, POOL, DROPOUT = 0, 1, 2, 3, 4, 5, 6
ACTIVATIONS = {"relu": RELU, "sigmoid": SIGMOID}

# ---- update rules and the hyper-parameter vector they read -----------------------------------
SGD, MOMENTUM, ADAM, NESTEROV, ADAGRAD, RMSPROP = 0, 1, 2, 3, 4, 5
OPTIMIZERS = {"sgd": SGD, "momentum": MOMENTUM, "nesterov": NESTEROV, "adagrad": ADAGRAD, "rmsprop": RMSPROP,
              "adam": ADAM}
HYPER_LR, HYPER_BETA1, HYPER_BETA2, HYPER_EPS = 0, 1, 2, 3  # BETA1: Momentum's coefficient, RMSprop's decay too
HYPER_LENGTH = 4

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


def adam_step_size(lr, beta1, beta2, t):
    """Adam's step size at step t (1-based), the bias corrections of m and v folded in as the book
    does. kernels/optimizers.c has the same formula (tests/test_engine.py compares the two)."""
    return lr * (1.0 - beta2**t) ** 0.5 / (1.0 - beta1**t)


def hyper_vector(dtype, lr, beta1=0.0, beta2=0.0, eps=0.0) -> np.ndarray:
    """The vector an update rule reads, in the parameters' dtype."""
    hyper = np.zeros(HYPER_LENGTH, dtype=dtype)
    hyper[[HYPER_LR, HYPER_BETA1, HYPER_BETA2, HYPER_EPS]] = lr, beta1, beta2, eps
    return hyper


def op_record(code: int, n_in: int, n_out: int, param_at: int = 0) -> np.ndarray:
    record = np.zeros(OP_FIELDS, dtype=np.int64)
    record[[FIELD_CODE, FIELD_PARAM_AT, FIELD_IN, FIELD_OUT]] = code, param_at, n_in, n_out
    return record


def check_runs(program) -> None:
    """The Python engines' counterpart of the C engine's refusal: no op it cannot run yet."""
    if np.any(program[:, FIELD_CODE] == DROPOUT):
        raise ValueError("program has a dropout op, which the engine does not run yet (train on the layer path)")


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
