"""The numba backend: JIT-compiled kernels with the reference backend's signatures.

Each loop body is written once, as a serial ``@njit`` worker over whole arrays (the rows it is
given); ``_in_parallel`` is the one driver that splits rows across threads, for arrays of at
least ``PARALLEL_MIN_ELEMENTS`` elements (fastbp/threads.py), and the engine calls the workers
directly. Workers rely on the backend contract (C-contiguous arrays of one float dtype, int64
labels, shapes already checked by the layers) and do no bounds checking.

Choices, each for a reason:
- Matrix products go through ``np.dot``, which numba hands to SciPy's BLAS (threaded by BLAS).
- The driver runs the workers on Python threads: they are compiled ``nogil``, so the threads run
  at once, and a worker then stays an ordinary cached function (numba cannot cache a function
  that takes another as an argument, nor a closure). One exception: softmax, whose entries cost an
  exp each, threads from 64x fewer entries (engine.SOFTMAX_WORK), where the Python threads wake
  too slowly (1000 x 100 float32: 122 -> 374 us); it splits its rows with numba's ``prange``
  (104 -> 53 us for the forward on the 2-core AMD machine).
- fastmath is limited to flags that keep IEEE special values: never ``nnan``/``ninf``,
  which would let the compiler assume away the NaN and inf that softmax must handle.
- ``cache=True`` keeps compiled kernels on disk beside this file (or in ``NUMBA_CACHE_DIR``),
  so only the first run on a machine pays the compile time.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit
from numba.extending import overload

from .. import engine
from ..threads import PARALLEL_MIN_ELEMENTS

_FASTMATH = {"nsz", "arcp", "contract", "reassoc"}
# error_model="numpy": a float division by zero gives inf or NaN, as in NumPy (the reference),
# instead of numba's Python-style check and raise, whose branch keeps a loop from vectorizing
# (sigmoid over 5000 float32: 28 us with the check, 6 us without).
_jit = njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")

_adam_step_size = _jit(engine.adam_step_size)
_mix64 = _jit(engine.mix64)
_pool = None


def _in_parallel(worker, arrays, *rest, size=None):
    """worker(*arrays, *rest), with the arrays split along their first axis across numba's thread
    count when they hold at least PARALLEL_MIN_ELEMENTS elements (``size``: default the first's)."""
    global _pool
    if (arrays[0].size if size is None else size) < PARALLEL_MIN_ELEMENTS:
        return worker(*arrays, *rest)  # (numba.get_num_threads() alone costs about 1 us a call)
    threads, rows = numba.get_num_threads(), arrays[0].shape[0]
    if threads == 1 or rows < threads:
        return worker(*arrays, *rest)
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fastbp-numba")
    cuts = [rows * t // threads for t in range(threads + 1)]
    jobs = [_pool.submit(worker, *(a[cuts[t]:cuts[t + 1]] for a in arrays), *rest) for t in range(threads)]
    for job in jobs:
        job.result()


# ---- Affine: BLAS products into caller-provided outputs ---------------------------------------

@_jit
def _affine_forward_into(x, W, b, out):
    np.dot(x, W, out)
    n, m = out.shape
    for i in range(n):  # bias added in place: no (N, M) temporary as in np.dot(x, W) + b
        for j in range(m):
            out[i, j] += b[j]


@_jit
def _affine_backward_into(dout, x, W, dx, dW, db, need_dx):
    if need_dx:
        np.dot(dout, W.T, dx)
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
    dx = np.empty((dout.shape[0], W.shape[0]) if need_dx else (1, 1), dtype=dout.dtype)
    dW = np.empty(W.shape, dtype=dout.dtype)
    db = np.empty(W.shape[1], dtype=dout.dtype)
    _affine_backward_into(dout, x, W, dx, dW, db, need_dx)
    return (dx if need_dx else None), dW, db


# ---- exp: the native kernels' algorithm (kernels/vexp.h) --------------------------------------
# numba's np.exp is a scalar call per element; these are arithmetic and bit moves only, so the
# loops that call them vectorize (2-3x NumPy's SIMD exp here). exp(x) = 2^n exp(r): n rounded by
# adding 1.5 * 2^(mantissa bits), r = x - n ln 2 (ln 2 in two parts), exp(r) by its Taylor
# polynomial, 2^n as two powers of two built from bits (subnormal results rounded once). fastmath
# is limited to contraction (FMA) and set explicitly, else numba compiles them with a caller's
# flags: reassociation folds the rounding trick (x + s) - s back into x (measured: exp(1) = 2).
_exact_jit = njit(cache=True, nogil=True, fastmath={"contract"})


@_exact_jit
def _exp_f32(x):
    x = np.float32(89.0) if x > np.float32(89.0) else x  # exp overflows above 88.73, is 0 below -103.98
    x = np.float32(-104.0) if x < np.float32(-104.0) else x  # (a NaN passes both: its comparisons are false)
    shifter = np.float32(12582912.0)  # 1.5 * 2^23
    t = x * np.float32(1.44269504088896341) + shifter
    n = t - shifter
    k = np.float32(t).view(np.int32) - np.int32(0x4B400000)
    r = (x - n * np.float32(0.693359375)) + n * np.float32(2.12194440e-4)
    p = np.float32(1 / 5040)
    for c in (1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1.0, 1.0):
        p = p * r + np.float32(c)
    k1 = k >> 1
    s1 = np.int32((k1 + 127) << 23).view(np.float32)
    s2 = np.int32((k - k1 + 127) << 23).view(np.float32)
    return p * s1 * s2


@_exact_jit
def _exp_f64(x):
    x = 710.0 if x > 710.0 else x
    x = -746.0 if x < -746.0 else x
    shifter = 6755399441055744.0  # 1.5 * 2^52
    t = x * 1.4426950408889634074 + shifter
    n = t - shifter
    k = np.float64(t).view(np.int64) - np.int64(0x4338000000000000)
    r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
    p = 1 / 6227020800
    for c in (1 / 479001600, 1 / 39916800, 1 / 3628800, 1 / 362880, 1 / 40320, 1 / 5040, 1 / 720, 1 / 120,
              1 / 24, 1 / 6, 0.5, 1.0, 1.0):
        p = p * r + c
    k1 = k >> 1
    s1 = np.int64((k1 + 1023) << 52).view(np.float64)
    s2 = np.int64((k - k1 + 1023) << 52).view(np.float64)
    return p * s1 * s2


def _vexp(x):
    return np.exp(x)


@overload(_vexp)
def _vexp_typed(x):
    if x == numba.types.float32:
        return lambda x: _exp_f32(x)
    return lambda x: _exp_f64(x)


@_jit
def _exp_worker(x, out):
    for i in range(x.size):
        out[i] = _vexp(x[i])


def exp(x):
    out = np.empty_like(x)
    _in_parallel(_exp_worker, (x.reshape(-1), out.reshape(-1)))
    return out


# ---- Elementwise workers over flat arrays (outputs may alias inputs) --------------------------

@_jit
def _relu_forward(x, out, mask):
    for i in range(x.size):
        off = x[i] <= 0
        mask[i] = off
        out[i] = 0 if off else x[i]


@_jit
def _relu_backward(dout, mask, dx):
    for i in range(dout.size):
        dx[i] = 0 if mask[i] else dout[i]


@_jit
def _sigmoid_forward(x, out):
    for i in range(x.size):
        e = _vexp(-abs(x[i]))  # through exp(-|x|), so exp never overflows (the reference's formula)
        out[i] = (1 if x[i] >= 0 else e) / (1 + e)  # one division after the choice: the loop vectorizes


@_jit
def _sigmoid_backward(dout, out, dx):
    for i in range(dout.size):
        dx[i] = dout[i] * (1 - out[i]) * out[i]


# The workers over arrays of any shape (C-contiguous, the backend contract), flattened inside one
# compiled call: below the parallel threshold the ops call these, as at the book's small shapes
# the reshapes in Python cost more than the loop (ReLU forward + backward at 100 x 10: 3.7 us
# with them, 2.9 us without; the reference's 7.6).

@_jit
def _relu_forward_nd(x, out, mask):
    _relu_forward(x.reshape(-1), out.reshape(-1), mask.reshape(-1))


@_jit
def _relu_backward_nd(dout, mask, dx):
    _relu_backward(dout.reshape(-1), mask.reshape(-1), dx.reshape(-1))


@_jit
def _sigmoid_forward_nd(x, out):
    _sigmoid_forward(x.reshape(-1), out.reshape(-1))


@_jit
def _sigmoid_backward_nd(dout, out, dx):
    _sigmoid_backward(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))


def relu_forward(x):
    out, mask = np.empty_like(x), np.empty(x.shape, dtype=np.bool_)
    if x.size < PARALLEL_MIN_ELEMENTS:
        _relu_forward_nd(x, out, mask)
    else:
        _in_parallel(_relu_forward, (x.reshape(-1), out.reshape(-1), mask.reshape(-1)))
    return out, mask


def relu_backward(dout, mask):
    dx = np.empty_like(dout)
    if dout.size < PARALLEL_MIN_ELEMENTS:
        _relu_backward_nd(dout, mask, dx)
    else:
        _in_parallel(_relu_backward, (dout.reshape(-1), mask.reshape(-1), dx.reshape(-1)))
    return dx


def sigmoid_forward(x):
    out = np.empty_like(x)
    if x.size < PARALLEL_MIN_ELEMENTS:
        _sigmoid_forward_nd(x, out)
    else:
        _in_parallel(_sigmoid_forward, (x.reshape(-1), out.reshape(-1)))
    return out


def sigmoid_backward(dout, out):
    dx = np.empty_like(dout)
    if dout.size < PARALLEL_MIN_ELEMENTS:
        _sigmoid_backward_nd(dout, out, dx)
    else:
        _in_parallel(_sigmoid_backward, (dout.reshape(-1), out.reshape(-1), dx.reshape(-1)))
    return dx


# ---- Softmax with cross-entropy: one pass per row ----------------------------------------------

@_jit
def _row_max(r):
    """The largest entry of the row r (r[0] when that is NaN; a NaN elsewhere is passed over, and
    the softmax of its row is NaN all the same). Eight running maxima, merged at the end: one
    dependent chain of comparisons took 40 us at 1000 x 100, these 15."""
    c = r.shape[0]
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = r[0]
    j = 0
    while j + 8 <= c:
        t0 = r[j] if r[j] > t0 else t0
        t1 = r[j + 1] if r[j + 1] > t1 else t1
        t2 = r[j + 2] if r[j + 2] > t2 else t2
        t3 = r[j + 3] if r[j + 3] > t3 else t3
        t4 = r[j + 4] if r[j + 4] > t4 else t4
        t5 = r[j + 5] if r[j + 5] > t5 else t5
        t6 = r[j + 6] if r[j + 6] > t6 else t6
        t7 = r[j + 7] if r[j + 7] > t7 else t7
        j += 8
    for j in range(j, c):
        t0 = r[j] if r[j] > t0 else t0
    t0 = t1 if t1 > t0 else t0
    t2 = t3 if t3 > t2 else t2
    t4 = t5 if t5 > t4 else t4
    t6 = t7 if t7 > t6 else t6
    t0 = t2 if t2 > t0 else t0
    t4 = t6 if t6 > t4 else t4
    return t4 if t4 > t0 else t0


@_jit
def _softmax_xent_forward(x, labels, y, row_loss):
    """y = softmax(x) row by row; row_loss[i] = -log y[i, labels[i]]."""
    c = x.shape[1]
    for i in range(x.shape[0]):
        top = _row_max(x[i])
        for j in range(c):
            y[i, j] = _vexp(x[i, j] - top)
        total = 0.0  # float64 accumulator, also for float32 rows
        for j in range(c):
            total += y[i, j]
        # rounded to the row's type, as the native kernel does: a float64 scale made every product
        # of a float32 row a conversion to float64 and back (1000 x 100: 270 us, 153 this way)
        scale = y.dtype.type(1.0 / total)
        for j in range(c):
            y[i, j] *= scale
        row_loss[i] = np.log(total) - (x[i, labels[i]] - top)


@_jit
def _softmax_xent_backward(y, labels, dx, scale):
    """dx = scale * (y - onehot(labels)); scale is dout / N."""
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            dx[i, j] = y[i, j] * scale
        dx[i, labels[i]] -= scale


@njit(parallel=True, cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
def _softmax_xent_forward_parts(x, labels, y, row_loss, parts):
    """_softmax_xent_forward on ``parts`` slices of the rows, on numba's own threads."""
    n = x.shape[0]
    for p in numba.prange(parts):
        lo, hi = n * p // parts, n * (p + 1) // parts
        _softmax_xent_forward(x[lo:hi], labels[lo:hi], y[lo:hi], row_loss[lo:hi])


# numba's workqueue threading layer (where neither OpenMP nor TBB loads) aborts the process when
# two Python threads launch parallel code at once: launches go one at a time
_launch = threading.Lock()


def softmax_cross_entropy_forward(x, labels):
    y = np.empty_like(x)
    row_loss = np.empty(x.shape[0], dtype=np.float64)
    threads = numba.get_num_threads() if x.size * engine.SOFTMAX_WORK >= PARALLEL_MIN_ELEMENTS else 1
    if threads > 1 and x.shape[0] >= threads:
        with _launch:
            _softmax_xent_forward_parts(x, labels, y, row_loss, threads)
    else:
        _softmax_xent_forward(x, labels, y, row_loss)
    return x.dtype.type(np.sum(row_loss) / x.shape[0]), y


def softmax_cross_entropy_backward(y, labels, dout):
    dx = np.empty_like(y)
    _in_parallel(_softmax_xent_backward, (y, labels, dx), y.dtype.type(dout / y.shape[0]), size=y.size)
    return dx


# ---- Identity output with mean squared error ---------------------------------------------------

@_jit
def _half_squared_error(y, t):
    total = 0.0
    for i in range(y.size):
        d = y[i] - t[i]
        total += d * d
    return 0.5 * total


@_jit
def _scaled_difference(y, t, dx, scale):
    for i in range(y.size):
        dx[i] = (y[i] - t[i]) * scale


def mse_forward(y, t):
    return y.dtype.type(_half_squared_error(y.reshape(-1), t.reshape(-1)) / y.shape[0])


def mse_backward(y, t, dout):
    dx = np.empty_like(y)
    _in_parallel(_scaled_difference, (y.reshape(-1), t.reshape(-1), dx.reshape(-1)), y.dtype.type(dout / y.shape[0]))
    return dx


# ---- Dropout and batch normalization ------------------------------------------------------------

@_jit
def _dropout_forward(x, draw, out, mask, ratio):
    for i in range(x.size):
        keep = draw[i] > ratio
        mask[i] = keep
        out[i] = x[i] * keep  # a product, as the book's: NaN * 0 stays NaN


@_jit
def _dropout_backward(dout, mask, dx):
    for i in range(dout.size):
        dx[i] = dout[i] * mask[i]


def dropout_forward(x, draw, ratio):
    out = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.bool_)
    _in_parallel(_dropout_forward, (x.reshape(-1), draw.reshape(-1), out.reshape(-1), mask.reshape(-1)), ratio)
    return out, mask


def dropout_forward_numpy(x, ratio):
    """Same contract as reference.dropout_forward_numpy (NumPy draws; this module's kernel)."""
    return dropout_forward(x, np.random.rand(*x.shape), ratio)


def dropout_backward(dout, mask):
    dx = np.empty_like(dout)
    _in_parallel(_dropout_backward, (dout.reshape(-1), np.ascontiguousarray(mask).reshape(-1), dx.reshape(-1)))
    return dx


@_jit
def _dropout_draws(key, draw):
    """engine.dropout_draws(key, draw.size), into draw."""
    for e in range(draw.size):
        draw[e] = (_mix64(key + np.uint64(e + 1) * engine.GOLDEN) >> np.uint64(11)) * engine.DRAW_SCALE


@_jit
def _batchnorm_forward(x, gamma, beta, eps, out, xn, mean, var, std):
    n, d = x.shape
    for j in range(d):  # column sums of x minus its first row: a large mean does not cancel the variance
        s1, s2 = 0.0, 0.0
        for i in range(n):
            e = x[i, j] - x[0, j]
            s1 += e
            s2 += e * e
        m = s1 / n
        v = max(s2 / n - m * m, 0.0)
        mean[j], var[j], std[j] = x[0, j] + m, v, np.sqrt(v + eps)
    for i in range(n):
        for j in range(d):
            xn[i, j] = (x[i, j] - mean[j]) / std[j]
            out[i, j] = gamma[j] * xn[i, j] + beta[j]


@_jit
def _batchnorm_backward(dout, xn, std, gamma, dx, dgamma, dbeta):
    n, d = dout.shape
    dgamma[:] = 0
    dbeta[:] = 0
    for i in range(n):
        for j in range(d):
            dbeta[j] += dout[i, j]
            dgamma[j] += xn[i, j] * dout[i, j]
    for i in range(n):  # the book's chain of steps, simplified
        for j in range(d):
            dx[i, j] = gamma[j] / std[j] * (dout[i, j] - dbeta[j] / n - xn[i, j] * dgamma[j] / n)


def batchnorm_forward(x, gamma, beta, eps):
    out, xn = np.empty_like(x), np.empty_like(x)
    mean, var, std = (np.empty(x.shape[1], dtype=x.dtype) for _ in range(3))
    _batchnorm_forward(x, gamma, beta, eps, out, xn, mean, var, std)
    return out, xn, mean, var, std


@_jit
def _batchnorm_infer(x, gamma, beta, mean, var, eps, out):
    """out = gamma (x - mean) / sqrt(var + eps) + beta, mean, var and eps rounded to x's dtype first."""
    n, d = x.shape
    for j in range(d):
        m, root = x.dtype.type(mean[j]), np.sqrt(x.dtype.type(var[j]) + x.dtype.type(eps))
        for i in range(n):
            out[i, j] = gamma[j] * ((x[i, j] - m) / root) + beta[j]


def batchnorm_infer(x, gamma, beta, mean, var, eps):
    out = np.empty_like(x)
    _batchnorm_infer(x, gamma, beta, mean, var, eps, out)
    return out


def batchnorm_backward(dout, xn, std, gamma):
    dx, dgamma, dbeta = np.empty_like(dout), np.empty_like(gamma), np.empty_like(gamma)
    _batchnorm_backward(dout, xn, std, gamma, dx, dgamma, dbeta)
    return dx, dgamma, dbeta


# ---- Convolution (each sample's windows as a transposed im2col matrix, one BLAS product) ------
# ---- and max pooling (the first maximum of each window, as the book's np.argmax) -------------

@_jit
def _inside(size, out_size, k, stride, pad):
    """[lo, hi): the outputs o whose input index o * stride - pad + k lies in [0, size)."""
    lo = max(0, (pad - k + stride - 1) // stride)
    hi = min(out_size, (size - 1 + pad - k) // stride + 1)
    return lo, max(lo, hi)


# The two loops below index flat arrays with unsigned integers: numba checks a signed index for a
# negative value (to count from the end) on every access, which kept these copies from vectorizing
# (im2col of a 16 x 28 x 28 sample for a 3 x 3 filter: 85 us with 3-d signed indexing, 35 us so).
# Every index is computed in signed arithmetic and is non-negative before it is converted.

@_jit
def _im2col_t(x, fh, fw, stride, pad, oh, ow, cf, ld, start):
    """The windows of one sample x (C, H, W) as the columns [start, start + OH OW) of the flat
    (C FH FW, ld) matrix cf, zero in the padding: per filter tap, the outputs whose windows reach
    the padding are found once, so that the copy between them tests no bounds."""
    c_in, h, w = x.shape
    xf = x.reshape(-1)
    for c in range(c_in):
        for fy in range(fh):
            ylo, yhi = _inside(h, oh, fy, stride, pad)
            for fx in range(fw):
                lo, hi = _inside(w, ow, fx, stride, pad)
                at = ((c * fh + fy) * fw + fx) * ld + start
                for oy in range(oh):
                    if oy < ylo or oy >= yhi:
                        lo_y, hi_y = ow, ow  # the whole row is padding
                    else:
                        lo_y, hi_y = lo, hi
                    for ox in range(lo_y):
                        cf[np.uint64(at + ox)] = 0
                    src = (c * h + oy * stride - pad + fy) * w + fx - pad  # + ox * stride >= 0 for ox >= lo
                    if stride == 1:  # a contiguous run: a vector copy
                        for ox in range(lo_y, hi_y):
                            cf[np.uint64(at + ox)] = xf[np.uint64(src + ox)]
                    else:
                        for ox in range(lo_y, hi_y):
                            cf[np.uint64(at + ox)] = xf[np.uint64(src + ox * stride)]
                    for ox in range(hi_y, ow):
                        cf[np.uint64(at + ox)] = 0
                    at += ow


@_jit
def _col2im_t(cf, ld, start, fh, fw, stride, pad, oh, ow, dx):
    """The transpose of _im2col_t: those columns' entries added into one sample's dx (C, H, W),
    zeroed first."""
    c_in, h, w = dx.shape
    dx[:] = 0
    df = dx.reshape(-1)
    for c in range(c_in):
        for fy in range(fh):
            ylo, yhi = _inside(h, oh, fy, stride, pad)
            for fx in range(fw):
                lo, hi = _inside(w, ow, fx, stride, pad)
                row = ((c * fh + fy) * fw + fx) * ld + start
                for oy in range(ylo, yhi):
                    at = row + oy * ow
                    to = (c * h + oy * stride - pad + fy) * w + fx - pad
                    if stride == 1:
                        for ox in range(lo, hi):
                            df[np.uint64(to + ox)] += cf[np.uint64(at + ox)]
                    else:
                        for ox in range(lo, hi):
                            df[np.uint64(to + ox * stride)] += cf[np.uint64(at + ox)]


# Samples are taken in groups, their windows side by side in one matrix, so that each BLAS call
# is a large product: one call per sample (SimpleConvNet's 30 x 25 by 25 x 576) spent more time
# waking and parking BLAS's threads than multiplying (fused-numba's ch07 run: 37% of its profile
# in the BLAS thread server). A group's window matrix holds at most GROUP_ITEMS entries.
GROUP_ITEMS = 1 << 20


@_jit
def _conv_group(n, ck, area):
    return max(1, min(n, GROUP_ITEMS // (ck * area)))


@_jit
def _conv_forward(x, W2, b, fh, fw, stride, pad, oh, ow, out):
    n, f_n, ck, area = x.shape[0], W2.shape[0], W2.shape[1], oh * ow
    group = _conv_group(n, ck, area)
    col = np.empty((ck, group * area), dtype=x.dtype)
    prod = np.empty((f_n, group * area), dtype=x.dtype)
    for n0 in range(0, n, group):
        g_n = min(group, n - n0)
        if g_n < group:  # the last group, smaller: matrices of its own width (np.dot takes whole arrays)
            col = np.empty((ck, g_n * area), dtype=x.dtype)
            prod = np.empty((f_n, g_n * area), dtype=x.dtype)
        for g in range(g_n):
            _im2col_t(x[n0 + g], fh, fw, stride, pad, oh, ow, col.reshape(-1), g_n * area, g * area)
        np.dot(W2, col, prod)
        for g in range(g_n):
            for f in range(f_n):
                for j in range(area):
                    out[n0 + g, f, j] = prod[f, g * area + j] + b[f]


@_jit
def _conv_backward(dout, x, W2, fh, fw, stride, pad, oh, ow, dx, dW2, db, need_dx):
    n, f_n, ck, area = x.shape[0], W2.shape[0], W2.shape[1], oh * ow
    group = _conv_group(n, ck, area)
    col = np.empty((ck, group * area), dtype=x.dtype)
    d = np.empty((f_n, group * area), dtype=x.dtype)  # the group's output gradients, side by side
    dcol = np.empty((ck, group * area), dtype=x.dtype)
    part = np.empty(dW2.shape, dtype=x.dtype)
    W2t = W2.T.copy()
    dW2[:] = 0
    db[:] = 0
    for n0 in range(0, n, group):
        g_n = min(group, n - n0)
        if g_n < group:
            col = np.empty((ck, g_n * area), dtype=x.dtype)
            d = np.empty((f_n, g_n * area), dtype=x.dtype)
            dcol = np.empty((ck, g_n * area), dtype=x.dtype)
        for g in range(g_n):
            _im2col_t(x[n0 + g], fh, fw, stride, pad, oh, ow, col.reshape(-1), g_n * area, g * area)
            for f in range(f_n):
                d[f, g * area:(g + 1) * area] = dout[n0 + g, f]
        np.dot(d, col.T, part)
        dW2 += part
        for f in range(f_n):
            db[f] += np.sum(d[f])
        if need_dx:
            np.dot(W2t, d, dcol)
            for g in range(g_n):
                _col2im_t(dcol.reshape(-1), g_n * area, g * area, fh, fw, stride, pad, oh, ow, dx[n0 + g])


def _windows(size, window, stride, pad):
    return (size + 2 * pad - window) // stride + 1


def conv_forward(x, W, b, stride, pad):
    (N, _, H, Wd), (F, _, FH, FW) = x.shape, W.shape
    OH, OW = _windows(H, FH, stride, pad), _windows(Wd, FW, stride, pad)
    out = np.empty((N, F, OH * OW), dtype=x.dtype)
    _conv_forward(x, W.reshape(F, -1), b, FH, FW, stride, pad, OH, OW, out)
    return out.reshape(N, F, OH, OW), None  # backward reads x again: no im2col matrix kept


def conv_backward(dout, x, col, W, stride, pad, need_dx=True):
    F, _, FH, FW = W.shape
    OH, OW = dout.shape[2], dout.shape[3]
    dx = np.empty_like(x)
    dW, db = np.empty_like(W), np.empty(F, dtype=W.dtype)
    _conv_backward(dout.reshape(dout.shape[0], F, OH * OW), x, W.reshape(F, -1), FH, FW, stride, pad, OH, OW, dx,
                   dW.reshape(F, -1), db, need_dx)
    return (dx if need_dx else None), dW, db


@njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _first_max_2x2(a0, a1, a2, a3):
    """(the largest of four values, the first place holding it), none of them NaN: a tree of
    comparisons whose places are sums, not branches (whether a place wins is a coin toss on real
    data, and the mispredicted branches cost more than the window). Strict comparisons keep the
    first of equal values."""
    g01, g23 = a1 > a0, a3 > a2
    b01, b23 = (a1 if g01 else a0), (a3 if g23 else a2)
    g = b23 > b01
    p01, p23 = np.int64(g01), 2 + np.int64(g23)
    return (b23 if g else b01), p01 + np.int64(g) * (p23 - p01)


@_jit
def _pool_forward(x, ph, pw, stride, pad, out, arg_max):
    """Each window's first maximum (a NaN winning, the first one, as np.argmax) and its place.
    2 x 2 windows inside the input, a row of them at a time, by _first_max_2x2 without a branch
    or bounds test (flat unsigned indices: see _im2col_t); a row holding a NaN, and the other
    windows, place by place. SimpleConvNet's pooling: 9.4 ms place by place, 1.5 ms so."""
    n_, c_, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    xf, of, af = x.reshape(-1), out.reshape(-1), arg_max.reshape(-1)
    ylo, yhi = _inside(h - ph + 1, oh, 0, stride, pad)  # the windows whose rows all lie in [0, h)
    xlo, xhi = _inside(w - pw + 1, ow, 0, stride, pad)
    for plane in range(n_ * c_):
        base = plane * h * w
        for oy in range(oh):
            q, y0 = (plane * oh + oy) * ow, oy * stride - pad
            lo, hi = (xlo, xhi) if ph == 2 and pw == 2 and oy >= ylo and oy < yhi else (0, 0)
            nan = False
            for ox in range(lo, hi):
                first = base + y0 * w + ox * stride - pad
                a0, a1 = xf[np.uint64(first)], xf[np.uint64(first + 1)]
                a2, a3 = xf[np.uint64(first + w)], xf[np.uint64(first + w + 1)]
                total = a0 + a1 + a2 + a3
                nan |= total != total  # (an inf - inf too: that row then goes place by place, as it may)
                of[np.uint64(q + ox)], af[np.uint64(q + ox)] = _first_max_2x2(a0, a1, a2, a3)
            if nan:
                lo = hi = 0
            for ox in range(ow):
                if ox >= lo and ox < hi:
                    continue
                x0, best, at = ox * stride - pad, x.dtype.type(0), -1
                for fy in range(ph):
                    for fx in range(pw):
                        iy, ix = y0 + fy, x0 + fx  # the padding counts as zeros
                        v = xf[base + iy * w + ix] if iy >= 0 and iy < h and ix >= 0 and ix < w else x.dtype.type(0)
                        if at < 0 or (best == best and (v > best or v != v)):
                            best, at = v, fy * pw + fx
                of[q + ox], af[q + ox] = best, at


@_jit
def _pool_backward(dout, arg_max, ph, pw, stride, pad, dx):
    n_, c_, h, w = dx.shape
    oh, ow = dout.shape[2], dout.shape[3]
    dx[:] = 0
    df, gf, af = dx.reshape(-1), dout.reshape(-1), arg_max.reshape(-1)
    for plane in range(n_ * c_):
        base, q = plane * h * w, plane * oh * ow
        for oy in range(oh):
            for ox in range(ow):
                at = af[np.uint64(q)]
                iy, ix = oy * stride - pad + at // pw, ox * stride - pad + at % pw
                if iy >= 0 and iy < h and ix >= 0 and ix < w:
                    df[np.uint64(base + iy * w + ix)] += gf[np.uint64(q)]
                q += 1


def pool_forward(x, pool_h, pool_w, stride, pad):
    N, C, H, W = x.shape
    OH, OW = _windows(H, pool_h, stride, pad), _windows(W, pool_w, stride, pad)
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    arg_max = np.empty((N, C, OH, OW), dtype=np.int64)
    _pool_forward(x, pool_h, pool_w, stride, pad, out, arg_max)
    return out, arg_max


def pool_backward(dout, arg_max, x_shape, pool_h, pool_w, stride, pad):
    dx = np.empty(x_shape, dtype=dout.dtype)
    _pool_backward(dout, np.ascontiguousarray(arg_max, dtype=np.int64), pool_h, pool_w, stride, pad, dx)
    return dx


# ---- Update rules: one worker, every rule, over flat parameters and their state --------------

@_jit
def _optimizer_step(param, grad, m, v, code, hyper, t):
    lr, beta1 = hyper[engine.HYPER_LR], hyper[engine.HYPER_BETA1]
    if code == engine.SGD:
        for i in range(param.size):
            param[i] -= lr * grad[i]
    elif code == engine.MOMENTUM:
        for i in range(param.size):
            m[i] = beta1 * m[i] - lr * grad[i]
            param[i] += m[i]
    elif code == engine.NESTEROV:
        for i in range(param.size):
            param[i] += beta1 * beta1 * m[i]
            param[i] -= (1 + beta1) * lr * grad[i]
            m[i] = beta1 * m[i] - lr * grad[i]
    elif code == engine.ADAGRAD or code == engine.RMSPROP:
        eps = hyper[engine.HYPER_EPS]
        for i in range(param.size):
            if code == engine.RMSPROP:
                m[i] = beta1 * m[i] + (1 - beta1) * grad[i] * grad[i]
            else:
                m[i] += grad[i] * grad[i]
            param[i] -= lr * grad[i] / (np.sqrt(m[i]) + eps)
    elif code == engine.ADAM:
        beta2, eps = hyper[engine.HYPER_BETA2], hyper[engine.HYPER_EPS]
        lr_t = hyper[:1] * 0 + _adam_step_size(1.0 * lr, 1.0 * beta1, 1.0 * beta2, t)  # in the parameters' dtype
        for i in range(param.size):
            m[i] += (1 - beta1) * (grad[i] - m[i])
            v[i] += (1 - beta2) * (grad[i] * grad[i] - v[i])
            param[i] -= lr_t[0] * m[i] / (np.sqrt(v[i]) + eps)


def optimizer_step(code, param, grad, m, v, hyper, t):
    """Same contract as reference.optimizer_step; flat views of C-contiguous arrays, updated in place."""
    _in_parallel(_optimizer_step, tuple(a.reshape(-1) for a in (param, grad, m, v)), code, hyper, t)


# ---- The engine: a network as a sequence of ops (fastbp/engine.py) ---------------------------

@_jit
def _matrix(flat, start, rows, cols):
    """A (rows, cols) C-contiguous view of flat[start:]: contiguous slices keep BLAS copy-free."""
    return flat[start:start + rows * cols].reshape((rows, cols))


@_jit
def _forward_ops(program, params, x, last, outs, masks, args, out_at, keys, stats, floats, norms, norm_at):
    """Runs ops [0, last) on the rows of x; op i writes its output at outs[out_at[i]:] (a ReLU or
    dropout its mask, a pooling its argmax, at the same place of masks and args). ``keys``: each
    op's generator key for this training step (engine.dropout_keys); empty to predict. A batch
    normalization reads its momentum and eps in ``floats[i]``, its running statistics in ``stats``
    (updated in training), and keeps xn and std for backward at norms[norm_at[i]:]. Returns the
    last op's output."""
    rows = x.shape[0]
    out = x
    for i in range(last):
        code, at = program[i, engine.FIELD_CODE], program[i, engine.FIELD_PARAM_AT]
        k, m = program[i, engine.FIELD_IN], program[i, engine.FIELD_OUT]
        z = _matrix(outs, out_at[i], rows, m)
        if code == engine.AFFINE:
            _affine_forward_into(out, _matrix(params, at, k, m), params[at + k * m:at + k * m + m], z)
        elif code == engine.RELU:
            _relu_forward(out.reshape(-1), z.reshape(-1), masks[out_at[i]:out_at[i] + rows * m])
        elif code == engine.SIGMOID:
            _sigmoid_forward(out.reshape(-1), z.reshape(-1))
        elif code == engine.DROPOUT:
            ratio = program[i, engine.FIELD_RATIO] / engine.RATIO_SCALE
            if keys.size:
                draw = np.empty(rows * m)
                _dropout_draws(keys[i], draw)
                _dropout_forward(out.reshape(-1), draw, z.reshape(-1), masks[out_at[i]:out_at[i] + rows * m], ratio)
            else:
                scale = np.empty(1, dtype=z.dtype)
                scale[0] = 1.0 - ratio  # rounded to the dtype first, as the layer's x * dtype(1 - ratio)
                z[:, :] = out * scale[0]
        elif code == engine.BATCHNORM:
            gamma, beta = params[at:at + k], params[at + k:at + 2 * k]
            momentum, eps, s0 = floats[i, 0], floats[i, 1], program[i, engine.FIELD_STATS_AT]
            if keys.size:  # the batch's statistics; the running ones updated in float64, as the layer's
                mean, var = np.empty(k, dtype=z.dtype), np.empty(k, dtype=z.dtype)
                _batchnorm_forward(out, gamma, beta, eps, z, _matrix(norms, norm_at[i], rows, k), mean, var,
                                   norms[norm_at[i] + rows * k:norm_at[i] + rows * k + k])
                for j in range(k):
                    stats[s0 + j] = momentum * stats[s0 + j] + (1 - momentum) * np.float64(mean[j])
                    stats[s0 + k + j] = momentum * stats[s0 + k + j] + (1 - momentum) * np.float64(var[j])
            else:  # the running statistics rounded to the dtype first, as the layer's
                _batchnorm_infer(out, gamma, beta, stats[s0:s0 + k], stats[s0 + k:s0 + 2 * k], eps, z)
        else:
            f = program[i, engine.FIELD_SHAPE:engine.FIELD_SHAPE + 10]
            c, h, w, fn, kh, kw, stride, pad, oh, ow = f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]
            images = out.reshape((rows, c, h, w))
            if code == engine.CONV:
                weights = fn * c * kh * kw
                _conv_forward(images, _matrix(params, at, fn, c * kh * kw), params[at + weights:at + weights + fn], kh, kw,
                              stride, pad, oh, ow, z.reshape((rows, fn, oh * ow)))
            else:
                _pool_forward(images, kh, kw, stride, pad, z.reshape((rows, c, oh, ow)),
                              args[out_at[i]:out_at[i] + rows * m].reshape((rows, c, oh, ow)))
        out = z
    return out


@_jit
def _pools(program):
    for i in range(program.shape[0]):
        if program[i, engine.FIELD_CODE] == engine.POOL:
            return True
    return False


@_jit
def _norm_offsets(program, rows):
    """Where each batch normalization keeps its xn (rows x features) and std (features); the total last."""
    norm_at = np.zeros(program.shape[0] + 1, dtype=np.int64)
    for i in range(program.shape[0]):
        grow = (rows + 1) * program[i, engine.FIELD_IN] if program[i, engine.FIELD_CODE] == engine.BATCHNORM else 0
        norm_at[i + 1] = norm_at[i] + grow
    return norm_at


@_jit
def _output_offsets(program, rows):
    out_at = np.zeros(program.shape[0] + 1, dtype=np.int64)
    for i in range(program.shape[0]):
        out_at[i + 1] = out_at[i] + rows * program[i, engine.FIELD_OUT]
    return out_at


@_jit
def _train_steps(x, labels, batches, params, grads, program, optimizer, hyper, state, step0, losses, keys, spans, stats,
                 floats):
    n_steps, batch = batches.shape
    n_ops = program.shape[0]
    classes = program[n_ops - 1, engine.FIELD_OUT]
    widest = 0
    for i in range(n_ops):
        widest = max(widest, program[i, engine.FIELD_IN], program[i, engine.FIELD_OUT])
    out_at = _output_offsets(program, batch)
    outs = np.empty(out_at[n_ops], dtype=x.dtype)
    masks = np.empty(out_at[n_ops], dtype=np.bool_)
    args = np.empty(out_at[n_ops] if _pools(program) else 0, dtype=np.int64)
    norm_at = _norm_offsets(program, batch)
    norms = np.empty(norm_at[n_ops], dtype=x.dtype)
    grad_buffers = np.empty((2, batch * widest), dtype=x.dtype)  # dout and dx take turns
    x_batch = np.empty((batch, program[0, engine.FIELD_IN]), dtype=x.dtype)
    t_batch = np.empty(batch, dtype=np.int64)
    y = np.empty((batch, classes), dtype=x.dtype)
    row_loss = np.empty(batch, dtype=np.float64)
    scale = hyper[:1] * 0 + 1.0 / batch  # dout / N in the parameters' dtype

    for s in range(n_steps):
        for r in range(batch):
            x_batch[r, :] = x[batches[s, r]].reshape(-1)
            t_batch[r] = labels[batches[s, r]]
        logits = _forward_ops(program, params, x_batch, n_ops - 1, outs, masks, args, out_at, keys[s], stats, floats, norms,
                              norm_at)
        _softmax_xent_forward(logits, t_batch, y, row_loss)
        loss = np.sum(row_loss) / batch
        decay = hyper[engine.HYPER_DECAY]
        if decay != 0:  # the book's weight decay: lambda/2 sum W^2 on the loss, lambda W on dW (below)
            squares = 0.0
            for j in range(spans.shape[0]):
                for e in range(spans[j, 0], spans[j, 1]):
                    squares += np.float64(params[e]) * np.float64(params[e])
            loss += 0.5 * np.float64(decay) * squares
        if not np.isfinite(loss):
            return s
        losses[s] = loss

        turn = 0
        dout = _matrix(grad_buffers[turn], 0, batch, classes)
        _softmax_xent_backward(y, t_batch, dout, scale[0])
        for i in range(n_ops - 2, -1, -1):  # op 0's input is the data: no gradient for it
            code, at = program[i, engine.FIELD_CODE], program[i, engine.FIELD_PARAM_AT]
            k, m = program[i, engine.FIELD_IN], program[i, engine.FIELD_OUT]
            dx = _matrix(grad_buffers[1 - turn], 0, batch, k)
            inp = x_batch if i == 0 else _matrix(outs, out_at[i - 1], batch, k)
            if code == engine.AFFINE:
                _affine_backward_into(dout, inp, _matrix(params, at, k, m), dx, _matrix(grads, at, k, m),
                                      grads[at + k * m:at + k * m + m], i > 0)
            elif code == engine.RELU:
                _relu_backward(dout.reshape(-1), masks[out_at[i]:out_at[i] + batch * m], dx.reshape(-1))
            elif code == engine.SIGMOID:
                _sigmoid_backward(dout.reshape(-1), outs[out_at[i]:out_at[i] + batch * m], dx.reshape(-1))
            elif code == engine.DROPOUT:
                _dropout_backward(dout.reshape(-1), masks[out_at[i]:out_at[i] + batch * m], dx.reshape(-1))
            elif code == engine.BATCHNORM:
                _batchnorm_backward(dout, _matrix(norms, norm_at[i], batch, k),
                                    norms[norm_at[i] + batch * k:norm_at[i] + batch * k + k], params[at:at + k], dx,
                                    grads[at:at + k], grads[at + k:at + 2 * k])
            else:
                f = program[i, engine.FIELD_SHAPE:engine.FIELD_SHAPE + 10]
                c, h, w, fn, kh, kw, stride, pad, oh, ow = f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]
                if code == engine.CONV:
                    weights = fn * c * kh * kw
                    _conv_backward(dout.reshape((batch, fn, oh * ow)), inp.reshape((batch, c, h, w)),
                                   _matrix(params, at, fn, c * kh * kw), kh, kw, stride, pad, oh, ow,
                                   dx.reshape((batch, c, h, w)), _matrix(grads, at, fn, c * kh * kw),
                                   grads[at + weights:at + weights + fn], i > 0)
                else:
                    _pool_backward(dout.reshape((batch, c, oh, ow)),
                                   args[out_at[i]:out_at[i] + batch * m].reshape((batch, c, oh, ow)), kh, kw, stride, pad,
                                   dx.reshape((batch, c, h, w)))
            turn = 1 - turn
            dout = dx
        if decay != 0:
            for j in range(spans.shape[0]):
                for e in range(spans[j, 0], spans[j, 1]):
                    grads[e] += decay * params[e]
        _optimizer_step(params, grads, state[0], state[1], optimizer, hyper, step0 + s + 1)
    return n_steps


def prepare_rows(x, program):
    """Same contract as reference.prepare_rows: numba's kernels read the dense rows."""
    return x


def _norm_floats(program):
    """Each batch normalization op's (momentum, eps), read from its record (zeros for other ops)."""
    floats = np.zeros((len(program), 2))
    for i, op in enumerate(program):
        if op[engine.FIELD_CODE] == engine.BATCHNORM:
            floats[i] = engine.read_float(op, engine.FIELD_MOMENTUM), engine.read_float(op, engine.FIELD_EPS)
    return floats


def train_steps(x, labels, batches, params, grads, program, optimizer, hyper, state, step0, losses, stats=None):
    """Same contract as reference.train_steps: the whole block of steps in one compiled call."""
    stats = engine.check_runs(program, stats)
    keys = engine.dropout_keys(program, step0, len(batches))
    spans = np.array(engine.weight_spans(program), dtype=np.int64).reshape(-1, 2)
    return _train_steps(x, labels, batches, params, grads, program, optimizer, hyper, state, step0, losses, keys, spans,
                        stats, _norm_floats(program))


@_jit
def _predict_labels(x, params, program, chunk, labels, stats, floats):
    n_ops = program.shape[0]
    out_at = _output_offsets(program, chunk)
    outs = np.empty(out_at[n_ops], dtype=x.dtype)
    masks = np.empty(out_at[n_ops], dtype=np.bool_)
    args = np.empty(out_at[n_ops] if _pools(program) else 0, dtype=np.int64)
    rows = x.reshape((x.shape[0], -1))
    for start in range(0, x.shape[0], chunk):
        logits = _forward_ops(program, params, rows[start:start + chunk], n_ops - 1, outs, masks, args, out_at,
                              np.empty(0, dtype=np.uint64), stats, floats, outs[:0], out_at)
        for r in range(logits.shape[0]):  # argmax, first maximum wins as in np.argmax
            best = 0
            for j in range(1, logits.shape[1]):
                if logits[r, j] > logits[r, best]:
                    best = j
            labels[start + r] = best


def predict_labels(x, params, program, stats=None):
    stats = engine.check_runs(program, stats)
    labels = np.empty(x.shape[0], dtype=np.int64)
    _predict_labels(x, params, program, engine.PREDICT_ROWS, labels, stats, _norm_floats(program))
    return labels
