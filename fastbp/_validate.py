"""Argument checks shared by the layers: every bad input fails here, in Python, with a message
that names the argument, its shape or dtype, and how to fix it, before any kernel runs."""

from __future__ import annotations

import math

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what the compiled kernels take
_FLOAT_CHARS = "fd"  # float32, float64: the one-character test is the fastest (every layer call makes it)


def kernel_dtype(dtype: np.dtype) -> bool:
    """Whether the compiled kernels take ``dtype``; other floats (float16) go to the reference backend."""
    return dtype.char in _FLOAT_CHARS


def float_array(name: str, value, any_float: bool = False) -> np.ndarray:
    """``value`` as an ndarray of float32 or float64 (with ``any_float``, of any floating dtype,
    float16 included); a TypeError for anything else."""
    if type(value) is np.ndarray and value.dtype.char in _FLOAT_CHARS:
        return value  # the common case, without a call into NumPy
    arr = np.asarray(value)
    if any_float and arr.dtype.kind == "f":
        return arr
    if arr.dtype not in FLOAT_DTYPES:
        hint = ""
        if arr.dtype.kind in "biu":
            hint = f"; convert it first, e.g. {name}.astype(np.float32)"
        elif arr.dtype.kind == "f":
            hint = f"; fastbp computes in float32 or float64: use {name}.astype(np.float32)"
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {arr.dtype}{hint}")
    return arr


def common_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype NumPy would compute in (float32 with float64 gives float64)."""
    first = arrays[0].dtype
    for a in arrays[1:]:  # a loop, not all(...): every layer call makes this test (a generator costs 0.5 us)
        if a.dtype != first:
            break
    else:
        return first
    if all(a.dtype.char in _FLOAT_CHARS for a in arrays):  # float32 and float64: float64, as NumPy says
        return FLOAT_DTYPES[1]
    return np.result_type(*arrays)


def kernel_ready(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """C-contiguous, of ``dtype``: copies only when the array is not already so."""
    if arr.dtype == dtype:
        if arr.flags.c_contiguous:
            return arr
    elif arr.ndim and arr.flags.c_contiguous:  # (a C array converted by astype keeps its order: 0.7 us, not 0.9)
        return arr.astype(dtype)
    return np.ascontiguousarray(arr, dtype=dtype)


class NonFiniteError(ValueError):
    """NaN or inf where a finite number is needed (training catches it as divergence)."""


# Arrays this large are checked by their sum first (MNIST's training set: 16 ms instead of 24);
# smaller ones directly, where np.errstate would cost more than the mask.
FINITE_BY_SUM = 1 << 16


def non_finite(name: str, arr: np.ndarray) -> str | None:
    """None when every entry is finite; else a message that counts and locates the NaN/inf entries."""
    if arr.size >= FINITE_BY_SUM:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing sum is no error of the caller's
            total = np.sum(arr)
        if np.isfinite(total):  # NaN and inf reach the sum: a finite one clears every entry, with no mask
            return None
    ok = np.isfinite(arr)  # a NaN or inf, or only a sum that overflowed
    if ok.all():
        return None
    bad = np.argwhere(~ok)
    first = tuple(int(i) for i in bad[0])
    return f"{name} has {len(bad)} non-finite value(s) (NaN or inf), the first at index {first}: {arr[first]!r}"


def finite(name: str, arr: np.ndarray) -> None:
    """A ValueError that counts and locates NaN/inf entries, where they would make a result meaningless."""
    problem = non_finite(name, arr)
    if problem:
        raise NonFiniteError(f"{problem}; a loss over them is meaningless. Check the input data and the learning rate.")


def scalar(name: str, value) -> float:
    """A finite real number, as a Python float (so it never changes an array's dtype)."""
    if type(value) is float or (type(value) is int and -1e300 < value < 1e300):  # the common case (dout=1): 1.5 -> 0.2 us
        if math.isfinite(value):
            return float(value)
        raise ValueError(f"{name} must be finite, got {value}")
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    result = float(arr.reshape(()))
    if not np.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result}")
    return result


def same_shape(name: str, arr: np.ndarray, expected_name: str, expected: tuple) -> None:
    if arr.shape != tuple(expected):
        raise ValueError(f"{name} has shape {arr.shape}, expected {tuple(expected)} (the shape of {expected_name})")


def affine_weights(W, b, features: int) -> tuple[np.ndarray, np.ndarray]:
    """Check an affine layer's W (features, out) and b (out,); returns them as float arrays."""
    W = float_array("W", W, any_float=True)
    b = float_array("b", b, any_float=True)
    if W.ndim != 2:
        raise ValueError(f"W must be 2-D (in_features, out_features), got shape {W.shape}")
    if b.shape != (W.shape[1],):
        raise ValueError(f"b has shape {b.shape}, expected ({W.shape[1]},) to match W of shape {W.shape}")
    if W.shape[0] != features:
        raise ValueError(f"W of shape {W.shape} expects {W.shape[0]} input features, but the input has {features}")
    return W, b


def affine_operands(x: np.ndarray, W, b) -> tuple[np.ndarray, np.ndarray]:
    """Check an affine layer's weights against its input; returns W and b as float arrays."""
    if x.ndim < 2:
        raise ValueError(
            f"Affine expects a batch of shape (N, ...), got x of shape {x.shape}; "
            f"for one sample use x.reshape(1, -1)"
        )
    if x.shape[0] == 0:
        raise ValueError(f"Affine needs at least one sample, got x of shape {x.shape}")
    width = x.shape[1] if x.ndim == 2 else math.prod(x.shape[1:])
    W = float_array("W", W, any_float=True)
    if W.ndim == 2 and width != W.shape[0]:
        raise ValueError(
            f"x of shape {x.shape} has {width} features per sample but W of shape {W.shape} "
            f"expects {W.shape[0]}"
        )
    return affine_weights(W, b, width)


# One-hot t of at most this many entries is checked as Python lists: 1, 3 and 6 rows of 10 classes
# in 2.1, 3.7 and 6.5 us instead of 7.6-8.3 us of NumPy calls; at 10 rows NumPy's (8.3 us) win.
# (Float rows, the book's, go to the native module's one pass first: 0.6 us.)
SMALL_ONE_HOT = 64

try:  # the compiled module's one-hot pass; without it, the checks below do the same in Python
    from . import _native
except ImportError:  # pragma: no cover - the native build is part of every install
    _native = None


def class_labels(t, n: int, classes: int) -> np.ndarray:
    """Integer labels (N,) or one-hot rows (N, classes) as int64 class indices.

    Soft labels (rows that are not exactly one-hot) are refused rather than silently rounded.
    """
    if (_native is not None and type(t) is np.ndarray and t.shape == (n, classes) and t.dtype.char in _FLOAT_CHARS
            and t.flags.c_contiguous and n > 0):
        labels = np.empty(n, np.int64)
        if _native.one_hot_labels(t, labels, n, classes) < 0:
            return labels  # else a row is not one-hot: the checks below name it
    t = np.asarray(t)
    if t.ndim == 2 and t.shape == (n, 1) and t.dtype.kind in "iu" and classes != 1:
        t = t.reshape(n)  # labels as a column (the book's ch07 gradient_check.py): its cross_entropy_error takes them
    if t.ndim == 1:
        if t.dtype.kind not in "iu":
            raise TypeError(
                f"t of shape {t.shape} must hold integer class labels, got dtype {t.dtype}; "
                f"use t.astype(np.int64) for labels, or pass one-hot rows of shape ({n}, {classes})"
            )
        if t.shape[0] != n:
            raise ValueError(f"t has {t.shape[0]} labels but x has {n} rows")
        if t.size and (t.min() < 0 or t.max() >= classes):
            bad = t[(t < 0) | (t >= classes)]
            raise ValueError(
                f"labels must lie in [0, {classes}) for x with {classes} columns; "
                f"found {bad.size} out of range, e.g. {bad[0]}"
            )
        return np.ascontiguousarray(t, dtype=np.int64)
    if t.ndim == 2:
        if t.shape != (n, classes):
            raise ValueError(f"one-hot t has shape {t.shape}, expected ({n}, {classes}) to match x")
        if t.dtype.kind not in "biuf":
            raise TypeError(f"one-hot t must be numeric, got dtype {t.dtype}")
        if t.size <= SMALL_ONE_HOT:  # a few rows (the book's gradient checks): list methods in C beat six NumPy calls
            labels = []
            for row in t.tolist():
                if row.count(0) != classes - 1 or row.count(1) != 1:  # (NaN counts as neither)
                    break
                labels.append(row.index(1))
            else:
                return np.array(labels, dtype=np.int64)
        labels = np.argmax(t, axis=1)
        # one-hot exactly when each row's largest entry is 1 and there are n nonzeros in all: then
        # every row holds that 1 and nothing else (three passes, where a full check takes six)
        if np.count_nonzero(t) != n or not (t[np.arange(n), labels] == 1).all():
            is_binary = (t == 0) | (t == 1)
            rows = np.flatnonzero(~(is_binary.all(axis=1) & (t.sum(axis=1) == 1)))
            raise ValueError(
                f"t of shape {t.shape} is not one-hot: row {rows[0]} is {t[rows[0]]!r} "
                f"({rows.size} such rows); soft labels are not supported, pass integer labels or 0/1 rows"
            )
        return labels.astype(np.int64, copy=False)
    raise ValueError(
        f"t must be integer labels of shape ({n},) or one-hot rows of shape ({n}, {classes}), got shape {t.shape}"
    )




def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def window_output(what: str, size: int, window: int, stride: int, pad: int, axis: str) -> int:
    """Windows of ``window`` at ``stride`` over ``size`` padded by ``pad`` on both sides: their number,
    or a ValueError when the window does not fit or the windows do not end at the edge."""
    padded = size + 2 * pad
    if window > padded:
        raise ValueError(f"{what}: the {axis} {window} is larger than the padded input ({size} + 2 x pad {pad} = {padded})")
    if (padded - window) % stride:
        raise ValueError(
            f"{what}: the output {axis} ({padded} - {window}) / stride {stride} + 1 = "
            f"{(padded - window) / stride + 1:g} is not whole; change the stride, pad or window so that it is"
        )
    return (padded - window) // stride + 1


def image_batch(name: str, x: np.ndarray) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch of images (N, C, H, W), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one image, got shape {x.shape}")


def conv_operands(x: np.ndarray, W, b, stride, pad) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Check a convolution's filters against its input; returns (W, b, out_h, out_w)."""
    image_batch("x", x)
    W = float_array("W", W, any_float=True)
    if W.ndim != 4:
        raise ValueError(f"W must be 4-D (filters FN, channels C, height FH, width FW), got shape {W.shape}")
    if np.ndim(b) == 0 and np.asarray(b).dtype.kind in "biuf":  # one bias for every filter: broadcast, as the book's +
        b = np.full(W.shape[0], b, dtype=np.result_type(W.dtype, b))
    elif isinstance(b, np.ndarray) and b.dtype.kind in "iu":
        b = b.astype(np.result_type(W.dtype, b.dtype))
    b = float_array("b", b, any_float=True)
    if b.shape != (W.shape[0],):
        raise ValueError(f"b has shape {b.shape}, expected ({W.shape[0]},): one bias per filter of W {W.shape}")
    if x.shape[1] != W.shape[1]:
        raise ValueError(f"x of shape {x.shape} has {x.shape[1]} channels but W of shape {W.shape} expects {W.shape[1]}")
    stride, pad = positive_int("stride", stride), non_negative_int("pad", pad)
    out_h = window_output("Convolution", x.shape[2], W.shape[2], stride, pad, "filter height")
    out_w = window_output("Convolution", x.shape[3], W.shape[3], stride, pad, "filter width")
    return W, b, out_h, out_w


def non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)
