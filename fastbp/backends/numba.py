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
- Kernels write into caller-provided outputs (``_*_into`` and the elementwise kernels), so
  that the fused training step (``train_steps``) calls exactly the kernels the layers call,
  on views of its preallocated buffers: the math lives in one place.
"""

import numba
import numpy as np
from numba import njit, prange

from . import _network
from ..threads import PARALLEL_MIN_ELEMENTS
from ._network import ADAM, MOMENTUM, RELU, SGD

# Elementwise work below PARALLEL_MIN_ELEMENTS runs on one thread (the reason: fastbp/threads.py).
# The whole-network kernels interleave BLAS with elementwise loops on every layer: never thread those.
_SERIAL = np.iinfo(np.int64).max

_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
_jit = njit(cache=True, nogil=True, fastmath=_FASTMATH)
_jit_parallel = njit(cache=True, nogil=True, fastmath=_FASTMATH, parallel=True)

_layer_offsets = _jit(_network.layer_offsets)
_adam_step_size = _jit(_network.adam_step_size)

# A cached function that calls a parallel one (train_steps -> _relu_forward) does not start
# numba's thread pool when it is loaded from the cache, and segfaults at its first prange
# (numba issues #8578, #9938; fix pending in numba PR #9950). get_num_threads() starts the pool.
numba.get_num_threads()


# ---- Affine ------------------------------------------------------------------------------

@_jit
def _affine_forward_into(x, W, b, out):
    np.dot(x, W, out)
    n, m = out.shape
    for i in range(n):  # bias added in place: no (N, M) temporary as in np.dot(x, W) + b
        for j in range(m):
            out[i, j] += b[j]


@_jit
def _affine_input_grad_into(dout, W, dx):
    np.dot(dout, W.T, dx)


@_jit
def _affine_param_grads_into(dout, x, dW, db):
    np.dot(x.T, dout, dW)
    n, m = dout.shape
    db[:] = 0
    for i in range(n):
        for j in range(m):
            db[j] += dout[i, j]


def affine_forward(x, W, b):
    out = np.empty((x.shape[0], W.shape[1]), dtype=x.dtype)
    _affine_forward_into(x, W, b, out)
    return out


def affine_backward(dout, x, W, need_dx=True):
    dx = None
    if need_dx:
        dx = np.empty((dout.shape[0], W.shape[0]), dtype=dout.dtype)
        _affine_input_grad_into(dout, W, dx)
    dW = np.empty(W.shape, dtype=dout.dtype)
    db = np.empty(W.shape[1], dtype=dout.dtype)
    _affine_param_grads_into(dout, x, dW, db)
    return dx, dW, db


# ---- Elementwise kernels over flat arrays (outputs may alias inputs) ----------------------

@_jit_parallel
def _relu_forward(x, out, mask, parallel_min):
    if x.size < parallel_min:
        for i in range(x.size):
            off = x[i] <= 0
            mask[i] = off
            out[i] = 0 if off else x[i]
    else:
        for i in prange(x.size):
            off = x[i] <= 0
            mask[i] = off
            out[i] = 0 if off else x[i]


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
    """Fills y with softmax(x) and returns the mean cross-entropy against labels."""
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
    """dx = scale * (y - onehot(labels)); scale is dout / N."""
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
    _softmax_xent_backward(y, labels, y.dtype.type(dout / y.shape[0]), dx, PARALLEL_MIN_ELEMENTS)
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


# ---- Optimizers: elementwise over flat, C-contiguous buffers ------------------------------

@_jit_parallel
def _sgd_update(param, grad, lr, parallel_min):
    if param.size < parallel_min:
        for i in range(param.size):
            param[i] -= lr * grad[i]
    else:
        for i in prange(param.size):
            param[i] -= lr * grad[i]


@_jit_parallel
def _momentum_update(param, grad, velocity, lr, momentum, parallel_min):
    if param.size < parallel_min:
        for i in range(param.size):
            velocity[i] = momentum * velocity[i] - lr * grad[i]
            param[i] += velocity[i]
    else:
        for i in prange(param.size):
            velocity[i] = momentum * velocity[i] - lr * grad[i]
            param[i] += velocity[i]


@_jit_parallel
def _adam_update(param, grad, m, v, lr_t, beta1, beta2, eps, parallel_min):
    if param.size < parallel_min:
        for i in range(param.size):
            m[i] += (1 - beta1) * (grad[i] - m[i])
            v[i] += (1 - beta2) * (grad[i] * grad[i] - v[i])
            param[i] -= lr_t * m[i] / (np.sqrt(v[i]) + eps)
    else:
        for i in prange(param.size):
            m[i] += (1 - beta1) * (grad[i] - m[i])
            v[i] += (1 - beta2) * (grad[i] * grad[i] - v[i])
            param[i] -= lr_t * m[i] / (np.sqrt(v[i]) + eps)


def _flat(*arrays):
    for a in arrays:
        if not a.flags.c_contiguous:  # reshape would copy, and an in-place update would be lost
            raise ValueError("optimizer kernels need C-contiguous arrays to update in place")
    return [a.reshape(-1) for a in arrays]


def sgd_update(param, grad, lr):
    """param -= lr * grad, in place."""
    p, g = _flat(param, grad)
    _sgd_update(p, g, param.dtype.type(lr), PARALLEL_MIN_ELEMENTS)


def momentum_update(param, grad, velocity, lr, momentum):
    p, g, vel = _flat(param, grad, velocity)
    dt = param.dtype.type
    _momentum_update(p, g, vel, dt(lr), dt(momentum), PARALLEL_MIN_ELEMENTS)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, t):
    p, g, m_, v_ = _flat(param, grad, m, v)
    dt = param.dtype.type
    lr_t = _network.adam_step_size(lr, beta1, beta2, t)
    _adam_update(p, g, m_, v_, dt(lr_t), dt(beta1), dt(beta2), dt(eps), PARALLEL_MIN_ELEMENTS)


# ---- Whole-network operations (layout: backends/_network.py) ------------------------------

@_jit
def _optimizer_step(optimizer, params, grads, state, hyper, t, parallel_min):
    lr, beta1, beta2, eps = hyper[0], hyper[1], hyper[2], hyper[3]
    if optimizer == SGD:
        _sgd_update(params, grads, lr, parallel_min)
    elif optimizer == MOMENTUM:
        _momentum_update(params, grads, state[0], lr, beta1, parallel_min)
    elif optimizer == ADAM:
        lr_t = hyper[:1] * _adam_step_size(1.0, beta1, beta2, t)  # a 1-element array keeps the parameters' dtype
        _adam_update(params, grads, state[0], state[1], lr_t[0], beta1, beta2, eps, parallel_min)


@_jit
def _matrix(flat, start, rows, cols):
    """A (rows, cols) C-contiguous view of flat[start:]: contiguous slices keep BLAS copy-free."""
    return flat[start:start + rows * cols].reshape((rows, cols))


@_jit
def _train_steps(x, labels, batches, params, grads, sizes, activation, optimizer, hyper, state, step0,
                 losses, parallel_min):
    n_layers = sizes.shape[0] - 1
    n_steps, batch = batches.shape
    n_classes = sizes[n_layers]
    x_rows = x.reshape(-1)
    x_batch = np.empty((batch, sizes[0]), dtype=x.dtype)
    t_batch = np.empty(batch, dtype=np.int64)
    widest, total = 0, 0
    for i in range(1, n_layers + 1):
        widest = max(widest, sizes[i])
        total += sizes[i]
    acts = np.empty(batch * total, dtype=x.dtype)  # every layer's output, hidden ones activated
    masks = np.empty(batch * total, dtype=np.bool_)  # ReLU masks, at the same offsets
    grad_buffers = np.empty((2, batch * widest), dtype=x.dtype)  # dout and dx take turns
    y = np.empty((batch, n_classes), dtype=x.dtype)
    row_loss = np.empty(batch, dtype=np.float64)
    scale = hyper[:1] * 0 + 1.0 / batch  # dout / N in the parameters' dtype

    for s in range(n_steps):
        for k in range(batch):
            row = batches[s, k]
            x_batch[k, :] = x_rows[row * sizes[0]:(row + 1) * sizes[0]]
            t_batch[k] = labels[row]

        # forward
        out = x_batch
        at = 0
        for i in range(n_layers):
            w_at, b_at = _layer_offsets(sizes, i)
            W = _matrix(params, w_at, sizes[i], sizes[i + 1])
            n_out = batch * sizes[i + 1]
            z = _matrix(acts, at, batch, sizes[i + 1])
            _affine_forward_into(out, W, params[b_at:b_at + sizes[i + 1]], z)
            if i < n_layers - 1:
                if activation == RELU:
                    _relu_forward(acts[at:at + n_out], acts[at:at + n_out], masks[at:at + n_out], parallel_min)
                else:
                    _sigmoid_forward(acts[at:at + n_out], acts[at:at + n_out], parallel_min)
            out = z
            at += n_out
        loss = _softmax_xent_forward(out, t_batch, y, row_loss, parallel_min)
        if not np.isfinite(loss):
            return s
        losses[s] = loss

        # backward
        turn = 0
        dout = _matrix(grad_buffers[turn], 0, batch, n_classes)
        _softmax_xent_backward(y, t_batch, scale[0], dout, parallel_min)
        for i in range(n_layers - 1, -1, -1):
            at -= batch * sizes[i + 1]  # now the offset of layer i's output
            w_at, b_at = _layer_offsets(sizes, i)
            below = batch * sizes[i]  # layer i's input: x_batch, or layer i-1's output
            inp = x_batch if i == 0 else _matrix(acts, at - below, batch, sizes[i])
            _affine_param_grads_into(dout, inp, _matrix(grads, w_at, sizes[i], sizes[i + 1]),
                                     grads[b_at:b_at + sizes[i + 1]])
            if i > 0:  # the first layer's input gradient is never used: not computed
                turn = 1 - turn
                dx = _matrix(grad_buffers[turn], 0, batch, sizes[i])
                _affine_input_grad_into(dout, _matrix(params, w_at, sizes[i], sizes[i + 1]), dx)
                flat_dx = grad_buffers[turn][:below]
                if activation == RELU:
                    _relu_backward(flat_dx, masks[at - below:at], flat_dx, parallel_min)
                else:
                    _sigmoid_backward(flat_dx, acts[at - below:at], flat_dx, parallel_min)
                dout = dx
        _optimizer_step(optimizer, params, grads, state, hyper, step0 + s + 1, parallel_min)
    return n_steps


def prepare_rows(x):
    """Same contract as reference.prepare_rows: numba's kernels read the dense rows."""
    return x


def train_steps(x, labels, batches, params, grads, sizes, activation, optimizer, hyper, state, step0, losses):
    """Same contract as reference.train_steps: the whole block of steps in one compiled call."""
    return _train_steps(x, labels, batches, params, grads, sizes, activation, optimizer,
                        hyper, state, step0, losses, _SERIAL)


@_jit
def _predict_labels(x, params, sizes, activation, chunk, labels, parallel_min):
    n_layers = sizes.shape[0] - 1
    n = x.shape[0]
    widest = 0
    for i in range(1, n_layers + 1):
        widest = max(widest, sizes[i])
    buffers = np.empty((2, chunk * widest), dtype=x.dtype)
    x_rows = x.reshape(-1)
    mask = np.empty(chunk * widest, dtype=np.bool_)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        out = _matrix(x_rows, start * sizes[0], rows, sizes[0])
        for i in range(n_layers):
            w_at, b_at = _layer_offsets(sizes, i)
            z = _matrix(buffers[i % 2], 0, rows, sizes[i + 1])
            _affine_forward_into(out, _matrix(params, w_at, sizes[i], sizes[i + 1]),
                                 params[b_at:b_at + sizes[i + 1]], z)
            if i < n_layers - 1:
                flat = buffers[i % 2][:rows * sizes[i + 1]]
                if activation == RELU:
                    _relu_forward(flat, flat, mask[:flat.size], parallel_min)
                else:
                    _sigmoid_forward(flat, flat, parallel_min)
            out = z
        for r in range(rows):  # argmax, first maximum wins as in np.argmax
            best = 0
            for j in range(1, out.shape[1]):
                if out[r, j] > out[r, best]:
                    best = j
            labels[start + r] = best


def predict_labels(x, params, sizes, activation):
    labels = np.empty(x.shape[0], dtype=np.int64)
    _predict_labels(x, params, sizes, activation, 2048, labels, _SERIAL)
    return labels
