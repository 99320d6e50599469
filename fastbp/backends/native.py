"""The native backend: a thin wrapper over the ahead-of-time compiled C kernels (fastbp._native).

Same contract and signatures as reference.py. This module allocates outputs (np.empty(shape,
dtype): np.empty_like and a dtype= keyword cost 0.2 us more a call at batch 1) and passes shapes,
or the extension makes the outputs itself (the elementwise ops: those functions are the
extension's own, with no Python call between); fastbp._native checks dtypes, lengths and index
ranges before any C runs. Matrix products go through SciPy's BLAS (the one numba uses), which the
extension takes from scipy.linalg.cython_blas when it loads.
"""

import ctypes
import threading

import numpy as np

from .. import _native, engine
from ..threads import PARALLEL_MIN_ELEMENTS

engine.check_native(_native.constants())  # a stale build numbers its ops differently: refuse it
_native.set_parallel_min(PARALLEL_MIN_ELEMENTS)  # the same threshold as numba's


# affine_forward, affine_backward and predict_labels also take x in float32 with float64 weights
# (the book's images into its float64 nets): the C converts a row or a block at a time, where a
# float64 copy of the batch costs a pass over twice its memory (layers.Affine and
# Sequential.predict_labels ask for it by this flag).
MIXED_INPUT = True


def affine_forward(x, W, b):
    out = np.empty((x.shape[0], W.shape[1]), W.dtype)
    (_native.affine_forward if x.dtype == W.dtype else _native.affine_forward_f32x)(
        x, W, b, out, x.shape[0], W.shape[0], W.shape[1])
    return out


def affine_backward(dout, x, W, need_dx=True):
    n, (k, m) = dout.shape[0], W.shape
    dx = np.empty((n, k), dout.dtype) if need_dx else None
    dW = np.empty((k, m), dout.dtype)
    db = np.empty(m, dout.dtype)
    (_native.affine_backward if x.dtype == W.dtype else _native.affine_backward_f32x)(dout, x, W, dx, dW, db, n, k, m)
    return dx, dW, db


# the elementwise ops: outputs made in C, no Python call between
relu_forward = _native.relu_forward  # (x) -> (out, mask)
relu_backward = _native.relu_backward  # (dout, mask) -> dx
exp = _native.exp  # (x) -> out
sigmoid_forward = _native.sigmoid_forward  # (x) -> out
sigmoid_backward = _native.sigmoid_backward  # (dout, out) -> dx


def softmax_cross_entropy_forward(x, labels):
    y = np.empty(x.shape, x.dtype)
    loss = _native.softmax_xent_forward(x, labels, y, x.shape[0], x.shape[1])
    return x.dtype.type(loss), y


def softmax_cross_entropy_backward(y, labels, dout):
    dx = np.empty(y.shape, y.dtype)
    _native.softmax_xent_backward(y, labels, dx, y.shape[0], y.shape[1], dout / y.shape[0])
    return dx


def mse_forward(y, t):
    return y.dtype.type(_native.half_squared_error(y, t) / y.shape[0])


def mse_backward(y, t, dout):
    dx = np.empty(y.shape, y.dtype)
    _native.scaled_difference(y, t, dx, dout / y.shape[0])
    return dx


def dropout_forward(x, draw, ratio):
    out = np.empty(x.shape, x.dtype)
    mask = np.empty(x.shape, np.bool_)
    _native.dropout_forward(x, draw, out, mask, ratio)
    return out, mask


_generator_view = (None, None)  # NumPy's generator last seen, and its state's view (None: not laid out as read)


def _numpy_generator_state():
    """(NumPy's global legacy generator, its MT19937 state as a uint32 array over NumPy's own
    memory: 624 words of key, then the position), or None where there is no such generator; the
    view is None where that memory is not laid out as kernels/mt19937.c reads it (checked once per
    generator against its ``state``)."""
    global _generator_view
    generator = getattr(getattr(np.random.mtrand, "_rand", None), "_bit_generator", None)
    if not isinstance(generator, np.random.MT19937):
        return None
    if _generator_view[0] is not generator:  # (held here, so its memory outlives the view)
        view = None
        try:
            words = np.ctypeslib.as_array(
                (ctypes.c_uint32 * (_native.MT19937_WORDS + 1)).from_address(generator.ctypes.state_address))
            with generator.lock:
                state = generator.state["state"]
                if np.array_equal(words[:-1], state["key"]) and int(words[-1]) == state["pos"]:
                    view = words
        except (AttributeError, TypeError, ValueError, KeyError):
            pass
        _generator_view = (generator, view)
    return _generator_view


def dropout_forward_numpy(x, ratio):
    """Same contract as reference.dropout_forward_numpy: the draws made in C from the generator's
    own state (kernels/mt19937.c, NumPy's bits), advanced in place under the generator's lock as
    NumPy's own draws are. No array of draws: the book's 100x30x24x24 dropout forward 3.4 ms
    (float64) where np.random.rand alone takes 8.7 ms."""
    found = _numpy_generator_state()
    if found is None or found[1] is None:
        return dropout_forward(x, np.random.rand(*x.shape), ratio)
    generator, state = found
    out = np.empty(x.shape, x.dtype)
    mask = np.empty(x.shape, np.bool_)
    with generator.lock:
        _native.dropout_forward_mt(x, state, out, mask, state.size, ratio)
    return out, mask


def dropout_backward(dout, mask):
    dx = np.empty(dout.shape, dout.dtype)
    _native.dropout_backward(dout, np.ascontiguousarray(mask), dx)
    return dx


def batchnorm_forward(x, gamma, beta, eps):
    n, d = x.shape
    out, xn = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    mean, var, std = (np.empty(d, x.dtype) for _ in range(3))
    _native.batchnorm_forward(x, gamma, beta, out, xn, mean, var, std, n, d, eps)
    return out, xn, mean, var, std


def batchnorm_infer(x, gamma, beta, mean, var, eps):
    out = np.empty(x.shape, x.dtype)
    _native.batchnorm_infer(x, gamma, beta, mean, var, out, x.shape[0], x.shape[1], eps)
    return out


def batchnorm_backward(dout, xn, std, gamma):
    dx = np.empty(dout.shape, dout.dtype)
    dgamma, dbeta = np.empty(gamma.shape, gamma.dtype), np.empty(gamma.shape, gamma.dtype)
    _native.batchnorm_backward(dout, xn, std, gamma, dx, dgamma, dbeta, dout.shape[0], dout.shape[1])
    return dx, dgamma, dbeta


def _windows(size, window, stride, pad):
    return (size + 2 * pad - window) // stride + 1


def conv_forward(x, W, b, stride, pad):
    (N, C, H, Wd), (F, _, FH, FW) = x.shape, W.shape
    OH, OW = _windows(H, FH, stride, pad), _windows(Wd, FW, stride, pad)
    out = np.empty((N, F, OH, OW), x.dtype)
    _native.conv_forward(x, W, b, out, N, C, H, Wd, F, FH, FW, stride, pad, OH, OW)
    return out, None  # backward reads x again: no im2col matrix kept


def conv_backward(dout, x, col, W, stride, pad, need_dx=True):
    (N, C, H, Wd), (F, _, FH, FW) = x.shape, W.shape
    dx = np.empty(x.shape, x.dtype) if need_dx else None
    dW, db = np.empty(W.shape, W.dtype), np.empty(F, W.dtype)
    _native.conv_backward(dout, x, W, dx, dW, db, N, C, H, Wd, F, FH, FW, stride, pad, dout.shape[2], dout.shape[3])
    return dx, dW, db


def pool_forward(x, pool_h, pool_w, stride, pad):
    N, C, H, W = x.shape
    OH, OW = _windows(H, pool_h, stride, pad), _windows(W, pool_w, stride, pad)
    out = np.empty((N, C, OH, OW), x.dtype)
    arg_max = np.empty((N, C, OH, OW), np.int64)
    _native.pool_forward(x, out, arg_max, N, C, H, W, pool_h, pool_w, stride, pad, OH, OW)
    return out, arg_max


def pool_backward(dout, arg_max, x_shape, pool_h, pool_w, stride, pad):
    dx = np.empty(x_shape, dout.dtype)
    _native.pool_backward(dout, np.ascontiguousarray(arg_max, dtype=np.int64), dx, *x_shape, pool_h, pool_w, stride, pad,
                          dout.shape[2], dout.shape[3])
    return dx


def optimizer_step(code, param, grad, m, v, hyper, t):
    _native.optimizer_step(param, grad, m, v, hyper, code, t)


# A data set at most this dense (fraction of nonzero entries) is kept as compact rows: then the
# first layer's products skip the zeros. Measured (benchmarks/compact_rows.py, 784-50-10 float32,
# 2 cores): compact is 2.1-2.2x faster at MNIST's 0.19, 1.2-1.4x at 0.4, level at 0.5.
COMPACT_MAX_DENSITY = engine.COMPACT_MAX_PERCENT / 100


class TooDense(ValueError):
    """A data set with more nonzeros than CompactRows was allowed to keep."""


class CompactRows:
    """A (rows, columns) data set kept as the nonzero entries of each row, in C-owned memory.

    Made once per data set by prepare_rows; immutable, so the kernels trust its column indices.
    train_steps and predict_labels take it in place of the dense array. With ``max_density``
    below 1, a set with more nonzeros raises TooDense (counted, never compacted).
    """

    def __init__(self, x: np.ndarray, max_density: float = 1.0):
        self.shape, self.dtype = x.shape, x.dtype
        self.handle, self.nnz = _native.compact_rows(x, x.shape[0], x.shape[1], int(max_density * x.size))
        if self.handle is None:
            raise TooDense(f"{self.density:.3f} of the entries are nonzero, more than max_density {max_density}")

    @property
    def density(self) -> float:
        return self.nnz / max(self.shape[0] * self.shape[1], 1)

    def __repr__(self):
        return f"CompactRows(shape={self.shape}, dtype={self.dtype}, density={self.density:.3f})"


def prepare_rows(x, program):
    """Same contract as reference.prepare_rows: compact rows when x is mostly zeros (MNIST is 19%
    nonzero) and feeds an affine op, so that it costs one weight row per nonzero pixel instead of
    per pixel; a convolution reads the dense images."""
    if x.ndim != 2 or x.size == 0 or program[0, engine.FIELD_CODE] != engine.AFFINE:
        return x
    try:
        return CompactRows(x, COMPACT_MAX_DENSITY)  # counts first, and compacts only below the threshold
    except TooDense:
        return x


def _rows(x):
    return x.handle if isinstance(x, CompactRows) else x


def train_steps(x, labels, batches, params, grads, program, optimizer, hyper, state, step0, losses, stats=None):
    """Same contract as reference.train_steps: the whole block of steps in one C call. Ctrl-C
    (on Python's main thread) stops it before its next step: engine.StepsInterrupted."""
    batches = np.ascontiguousarray(batches, dtype=np.int64)
    done, interrupted = _native.train_steps(_rows(x), x.shape[0], np.ascontiguousarray(labels, dtype=np.int64), batches,
                                            batches.shape[0], params, grads, program, optimizer, hyper, state, step0,
                                            losses, engine.check_runs(program, stats),
                                            threading.current_thread() is threading.main_thread())
    if interrupted:
        raise engine.StepsInterrupted(done, losses[:done])
    return done


def predict_labels(x, params, program, stats=None):
    labels = np.empty(x.shape[0], np.int64)
    chunk = engine.PREDICT_ROWS_COMPACT if isinstance(x, CompactRows) else engine.PREDICT_ROWS
    _native.predict_labels(_rows(x), x.shape[0], params, program, engine.check_runs(program, stats), chunk, labels)
    return labels


def engine_seconds(reset: bool = False) -> dict:
    """Seconds the native engine spent per op since the last reset, {"conv forward": s, ...,
    "update": s}: where a fused step's time goes (benchmarks/convnet_e2e.py). The compact rows'
    first layer is not in the account."""
    forward, backward = _native.engine_seconds(reset)
    names = {engine.AFFINE: "affine", engine.RELU: "relu", engine.SIGMOID: "sigmoid", engine.SOFTMAX_LOSS: "softmax loss",
             engine.CONV: "conv", engine.POOL: "pool", engine.DROPOUT: "dropout", engine.BATCHNORM: "batchnorm"}
    spent = {f"{name} {way}": seconds for code, name in names.items()
             for way, seconds in (("forward", forward[code]), ("backward", backward[code])) if seconds > 0}
    return spent | {"update": backward[-1]}
