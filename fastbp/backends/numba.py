"""The numba backend: JIT-compiled kernels with the reference backend's signatures.

Each public function allocates its outputs and calls one private ``@njit`` kernel. Kernels
rely on the backend contract (C-contiguous arrays of one float dtype, int64 labels, shapes
already checked by the layers) and do no bounds checking.

Choices, each for a reason:
- Matrix products go through ``np.dot``, which numba hands to SciPy's BLAS. BLAS is never
  called inside ``prange`` (it has threads of its own).
- Elementwise and row-wise loops run under ``prange`` only when the array has at least
  ``PARALLEL_MIN_ELEMENTS`` elements: below that, waking threads costs more than the loop.
  The threshold is passed to the kernels as an argument because numba freezes globals at
  compile time.
- fastmath is limited to flags that keep IEEE special values: never ``nnan``/``ninf``,
  which would let the compiler assume away the NaN and inf that softmax must handle.
- ``cache=True`` keeps compiled kernels on disk beside this file (or in ``NUMBA_CACHE_DIR``),
  so only the first run on a machine pays the compile time.
"""

import numpy as np
from numba import njit, prange

# Work below this many elements runs on one thread (measured: see benchmarks/).
PARALLEL_MIN_ELEMENTS = 1 << 16

_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
_jit = njit(cache=True, nogil=True, fastmath=_FASTMATH)
_jit_parallel = njit(cache=True, nogil=True, fastmath=_FASTMATH, parallel=True)


# ---- Affine ------------------------------------------------------------------------------

@_jit
def _affine_forward(x, W, b):
    out = np.dot(x, W)
    n, m = out.shape
    for i in range(n):  # bias added in place: no (N, M) temporary as in np.dot(x, W) + b
        for j in range(m):
            out[i, j] += b[j]
    return out


@_jit
def _affine_input_grad(dout, W):
    return np.dot(dout, W.T)


@_jit
def _affine_param_grads(dout, x):
    dW = np.dot(x.T, dout)
    n, m = dout.shape
    db = np.zeros(m, dtype=dout.dtype)
    for i in range(n):
        for j in range(m):
            db[j] += dout[i, j]
    return dW, db


def affine_forward(x, W, b):
    return _affine_forward(x, W, b)


def affine_backward(dout, x, W, need_dx=True):
    dx = _affine_input_grad(dout, W) if need_dx else None
    dW, db = _affine_param_grads(dout, x)
    return dx, dW, db


# ---- ReLU (flat views: the layers hand over C-contiguous arrays) -------------------------

@_jit_parallel
def _relu_forward(x, out, mask, parallel_min):
    if x.size < parallel_min:
        for i in range(x.size):
            mask[i] = x[i] <= 0
            out[i] = 0 if mask[i] else x[i]
    else:
        for i in prange(x.size):
            mask[i] = x[i] <= 0
            out[i] = 0 if mask[i] else x[i]


@_jit_parallel
def _relu_backward(dout, mask, dx, parallel_min):
    if dout.size < parallel_min:
        for i in range(dout.size):
            dx[i] = 0 if mask[i] else dout[i]
    else:
        for i in prange(dout.size):
            dx[i] = 0 if mask[i] else dout[i]


def relu_forward(x):
    out = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.bool_)
    _relu_forward(x.reshape(-1), out.reshape(-1), mask.reshape(-1), PARALLEL_MIN_ELEMENTS)
    return out, mask


def relu_backward(dout, mask):
    dx = np.empty_like(dout)
    _relu_backward(dout.reshape(-1), mask.reshape(-1), dx.reshape(-1), PARALLEL_MIN_ELEMENTS)
    return dx


# ---- Sigmoid -----------------------------------------------------------------------------

@_jit
def _sigmoid(v):
    # through exp(-|v|), so exp never overflows (same formula as the reference)
    e = np.exp(-abs(v))
    return 1 / (1 + e) if v >= 0 else e / (1 + e)


@_jit_parallel
def _sigmoid_forward(x, out, parallel_min):
    if x.size < parallel_min:
        for i in range(x.size):
            out[i] = _sigmoid(x[i])
    else:
        for i in prange(x.size):
            out[i] = _sigmoid(x[i])


@_jit_parallel
def _sigmoid_backward(dout, out, dx, parallel_min):
    if dout.size < parallel_min:
        for i in range(dout.size):
            dx[i] = dout[i] * (1 - out[i]) * out[i]
    else:
        for i in prange(dout.size):
            dx[i] = dout[i] * (1 - out[i]) * out[i]


def sigmoid_forward(x):
    out = np.empty_like(x)
    _sigmoid_forward(x.reshape(-1), out.reshape(-1), PARALLEL_MIN_ELEMENTS)
    return out


def sigmoid_backward(dout, out):
    dx = np.empty_like(dout)
    _sigmoid_backward(dout.reshape(-1), out.reshape(-1), dx.reshape(-1), PARALLEL_MIN_ELEMENTS)
    return dx


# ---- Softmax with cross-entropy: one pass per row -----------------------------------------

@_jit
def _softmax_xent_row(x, labels, y, i):
    """Softmax of row i into y[i]; returns that row's cross-entropy -log y[i, labels[i]]."""
    c = x.shape[1]
    top = x[i, 0]
    for j in range(1, c):
        top = max(top, x[i, j])
    total = 0.0  # float64 accumulator, also for float32 rows
    for j in range(c):
        e = np.exp(x[i, j] - top)
        y[i, j] = e
        total += e
    scale = 1.0 / total
    for j in range(c):
        y[i, j] *= scale
    return np.log(total) - (x[i, labels[i]] - top)


@_jit_parallel
def _softmax_xent_forward(x, labels, y, row_loss, parallel_min):
    n = x.shape[0]
    if x.size < parallel_min:
        for i in range(n):
            row_loss[i] = _softmax_xent_row(x, labels, y, i)
    else:
        for i in prange(n):
            row_loss[i] = _softmax_xent_row(x, labels, y, i)
    total = 0.0
    for i in range(n):
        total += row_loss[i]
    return total / n


@_jit_parallel
def _softmax_xent_backward(y, labels, scale, dx, parallel_min):
    n, c = y.shape
    if y.size < parallel_min:
        for i in range(n):
            for j in range(c):
                dx[i, j] = y[i, j] * scale
            dx[i, labels[i]] -= scale
    else:
        for i in prange(n):
            for j in range(c):
                dx[i, j] = y[i, j] * scale
            dx[i, labels[i]] -= scale


def softmax_cross_entropy_forward(x, labels):
    y = np.empty_like(x)
    row_loss = np.empty(x.shape[0], dtype=np.float64)
    loss = _softmax_xent_forward(x, labels, y, row_loss, PARALLEL_MIN_ELEMENTS)
    return x.dtype.type(loss), y


def softmax_cross_entropy_backward(y, labels, dout):
    dx = np.empty_like(y)
    scale = y.dtype.type(dout / y.shape[0])
    _softmax_xent_backward(y, labels, scale, dx, PARALLEL_MIN_ELEMENTS)
    return dx


# ---- Identity output with mean squared error ---------------------------------------------

@_jit
def _half_squared_error(y, t):
    total = 0.0
    for i in range(y.size):
        d = y[i] - t[i]
        total += d * d
    return 0.5 * total


@_jit_parallel
def _scaled_difference(y, t, scale, dx, parallel_min):
    if y.size < parallel_min:
        for i in range(y.size):
            dx[i] = (y[i] - t[i]) * scale
    else:
        for i in prange(y.size):
            dx[i] = (y[i] - t[i]) * scale


def mse_forward(y, t):
    return y.dtype.type(_half_squared_error(y.reshape(-1), t.reshape(-1)) / y.shape[0])


def mse_backward(y, t, dout):
    dx = np.empty_like(y)
    scale = y.dtype.type(dout / y.shape[0])
    _scaled_difference(y.reshape(-1), t.reshape(-1), scale, dx.reshape(-1), PARALLEL_MIN_ELEMENTS)
    return dx


# ---- Parameter update --------------------------------------------------------------------

@_jit_parallel
def _sgd_update(param, grad, lr, parallel_min):
    if param.size < parallel_min:
        for i in range(param.size):
            param[i] -= lr * grad[i]
    else:
        for i in prange(param.size):
            param[i] -= lr * grad[i]


def sgd_update(param, grad, lr):
    """param -= lr * grad, in place (param must be C-contiguous, grad of the same dtype)."""
    if not param.flags.c_contiguous:  # reshape would copy, and the update would be lost
        raise ValueError("sgd_update needs a C-contiguous param to update in place")
    _sgd_update(param.reshape(-1), grad.reshape(-1), param.dtype.type(lr), PARALLEL_MIN_ELEMENTS)
