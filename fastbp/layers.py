"""The book's layers (chapters 5-7), written once, with its interface and attribute names.

Each layer validates its arguments (fastbp._validate) and hands the math to a backend
(fastbp.backends): ``backend=None`` follows the global choice, a name pins the layer.

Fixes over the seed's code: ``Relu.backward`` leaves the caller's ``dout`` alone,
``SoftmaxWithLoss`` is stable for any finite logits, takes one-hot or integer labels and
honours ``dout``; ``Affine`` takes N-D input and restores its shape in backward; MulLayer and
AddLayer sum gradients back to their inputs' shapes when the inputs were broadcast; results
keep the input's float dtype (the book's col2im, Pooling and Dropout make float64).

Float32 and float64 run on the layer's backend; any other float dtype (the book's ch08 casts to
float16) runs on the reference backend, with NumPy's own semantics.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

from . import _validate as check
from . import backends, engine
from .util import col2im, im2col  # noqa: F401  (the book's layers module hands them on)


# The one backend whose arithmetic raises NumPy's floating-point warnings (np.errstate governs
# them); the compiled kernels raise none, and entering np.errstate costs 1.3 us a call.
_NUMPY_OPS = backends.get("reference")
_NO_CONTEXT = contextlib.nullcontext()


class NonFiniteWarning(RuntimeWarning):
    """A loss computed over NaN or inf inputs (the book's code lets a network diverge and goes on)."""


def _sum_to_shape(grad, shape: tuple):
    """Undo NumPy broadcasting: sum ``grad`` down to an input of ``shape``."""
    if np.shape(grad) == shape:
        return grad
    grad = np.asarray(grad)
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    stretched = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True).reshape(shape)


def _check_dout(layer: str, dout, out_shape: tuple) -> None:
    """dout must have the forward output's shape: a broadcast would silently sum it away."""
    if out_shape is None:
        raise RuntimeError(f"{layer}.backward called before forward")
    if np.shape(dout) != out_shape:
        raise ValueError(f"{layer}.backward: dout has shape {np.shape(dout)}, expected {out_shape} (the shape of the forward output)")


class MulLayer:
    """out = x * y; backward swaps the inputs: dx = dout * y, dy = dout * x."""

    def __init__(self):
        self.x = None
        self.y = None
        self.out_shape = None

    def forward(self, x, y):
        self.x = x
        self.y = y
        out = x * y
        self.out_shape = np.shape(out)
        return out

    def backward(self, dout):
        _check_dout("MulLayer", dout, self.out_shape)
        dx = _sum_to_shape(dout * self.y, np.shape(self.x))
        dy = _sum_to_shape(dout * self.x, np.shape(self.y))
        return dx, dy


class AddLayer:
    """out = x + y; backward passes dout through to both inputs."""

    def __init__(self):
        self.x_shape = None
        self.y_shape = None
        self.out_shape = None

    def forward(self, x, y):
        self.x_shape = np.shape(x)
        self.y_shape = np.shape(y)
        out = x + y
        self.out_shape = np.shape(out)
        return out

    def backward(self, dout):
        _check_dout("AddLayer", dout, self.out_shape)
        dx = _sum_to_shape(dout * 1, self.x_shape)
        dy = _sum_to_shape(dout * 1, self.y_shape)
        return dx, dy


class Layer:
    """Base of the layers whose math lives in a backend.

    ``param_names`` lists the parameter attributes; the gradient of ``W`` is ``dW``.
    """

    param_names: tuple[str, ...] = ()
    default_backend: str | None = None  # None: follow fastbp.set_backend

    def __init__(self, backend: str | None = None):
        self.backend = backends.check_name(backend if backend is not None else self.default_backend)
        self._ops = (None, None, None)  # (backend, generation, module) last resolved

    @property
    def ops(self):
        """The backend module this layer calls (set_backend applies at the next call)."""
        backend, generation, module = self._ops
        if backend != self.backend or generation != backends.generation:
            module = backends.get(self.backend)
            self._ops = (self.backend, backends.generation, module)
        return module

    def ops_for(self, dtype: np.dtype):
        """The backend for arrays of ``dtype``: this layer's, or NumPy's own for other floats (float16)."""
        if not check.kernel_dtype(dtype):
            return _NUMPY_OPS
        backend, generation, module = self._ops  # (the ops property, inline: every layer call asks)
        return module if backend == self.backend and generation == backends.generation else self.ops

    def _require_forward(self, attr: str) -> None:
        if getattr(self, attr) is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")


def with_backend(cls: type, backend: str) -> type:
    """A subclass of layer ``cls`` whose instances use ``backend`` unless told otherwise."""
    return type(cls.__name__, (cls,), {"default_backend": backend, "__doc__": cls.__doc__})


class Relu(Layer):
    """out = max(x, 0); mask marks the inputs that were clipped (x <= 0)."""

    def __init__(self, backend: str | None = None):
        super().__init__(backend)
        self.mask = None
        self._made = None  # the mask forward made: kernel-ready as it is (one set in its place is checked)

    def forward(self, x):
        x = check.float_array("x", x, any_float=True)
        out, mask = self.ops_for(x.dtype).relu_forward(check.kernel_ready(x, x.dtype))
        if out.shape != x.shape:  # (the backends keep x's shape; a reshape is 0.3 us a call at batch 1)
            out, mask = out.reshape(x.shape), mask.reshape(x.shape)
        self.mask = self._made = mask
        return out

    def backward(self, dout):
        mask = self.mask
        if mask is None:
            raise RuntimeError("Relu.backward called before forward")
        dout = check.float_array("dout", dout, any_float=True)
        if dout.shape != mask.shape:
            check.same_shape("dout", dout, "the ReLU output", mask.shape)
        if mask is not self._made:
            mask = check.kernel_ready(mask, np.bool_)
        dx = self.ops_for(dout.dtype).relu_backward(check.kernel_ready(dout, dout.dtype), mask)
        return dx if dx.shape == dout.shape else dx.reshape(dout.shape)


class Sigmoid(Layer):
    """out = 1 / (1 + exp(-x)); backward uses only the output: dx = dout * (1 - out) * out."""

    def __init__(self, backend: str | None = None):
        super().__init__(backend)
        self.out = None

    def forward(self, x):
        x = check.float_array("x", x, any_float=True)
        self.out = self.ops_for(x.dtype).sigmoid_forward(check.kernel_ready(x, x.dtype)).reshape(x.shape)
        return self.out

    def backward(self, dout):
        self._require_forward("out")
        dout = check.float_array("dout", dout, any_float=True)
        check.same_shape("dout", dout, "the Sigmoid output", self.out.shape)
        dtype = check.common_dtype(dout, self.out)
        dx = self.ops_for(dtype).sigmoid_backward(check.kernel_ready(dout, dtype), check.kernel_ready(self.out, dtype))
        return dx.reshape(dout.shape)  # a 0-d input stays 0-d (the kernels see 1-d arrays)


class Affine(Layer):
    """out = x W + b for a batch x of shape (N, ...), flattened to (N, features).

    ``W`` and ``b`` are held by reference: updating ``params['W1']`` in place updates the layer.
    """

    param_names = ("W", "b")

    def __init__(self, W, b, backend: str | None = None):
        super().__init__(backend)
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None
        self._checked = None  # the last call's weights, when they went to the kernel as they are

    def _weights_for(self, x):
        """(W, b, dtype) for input x, checked, in the dtype the product runs in. The checks' answer
        is remembered while the same W and b objects, of the same shapes, meet inputs of the same
        dtype and width and need no conversion (at batch 1-3 the checks cost as much as the
        product: 2 us of a 10 us call)."""
        known = self._checked
        if (known is not None and self.W is known[0] and self.b is known[1] and x.dtype == known[2]
                and x.ndim == 2 and x.shape[1] == known[3] and x.shape[0] > 0
                and self.W.shape == known[4] and self.b.shape == known[5]):
            return self.W, self.b, known[6]
        W, b = check.affine_operands(x, self.W, self.b)
        dtype = check.common_dtype(x, W, b)
        ready_W, ready_b = check.kernel_ready(W, dtype), check.kernel_ready(b, dtype)
        width = ready_W.shape[0]
        # remembered only when the kernel reads the weights themselves (a converted copy would
        # miss the book's in-place updates of params)
        self._checked = ((self.W, self.b, x.dtype, width, W.shape, b.shape, dtype)
                         if ready_W is self.W and ready_b is self.b else None)
        return ready_W, ready_b, dtype

    def forward(self, x):
        x = check.float_array("x", x, any_float=True)
        W, b, dtype = self._weights_for(x)
        self.original_x_shape = x.shape
        x2, ops = x.reshape(x.shape[0], W.shape[0]), self.ops_for(dtype)
        if x2.dtype != dtype and x2.dtype.char == "f" and getattr(ops, "MIXED_INPUT", False):
            # float32 images into float64 weights, converted by the backend as it reads them
            self.x = check.kernel_ready(x2, x2.dtype)
            return ops.affine_forward(self.x, W, b)
        if x2.dtype != dtype and x2.shape[0] > engine.CONVERT_ROWS:
            # float32 images into float64 weights (the book's accuracy over all of MNIST): converted
            # a block of rows at a time, each multiplied while still in cache, instead of a float64
            # copy of the whole input (60000 x 784: 376 MB written, then read back); backward, if
            # it comes, converts again
            self.x = x2
            out = np.empty((x2.shape[0], W.shape[1]), dtype=dtype)
            for start in range(0, x2.shape[0], engine.CONVERT_ROWS):
                part = np.ascontiguousarray(x2[start:start + engine.CONVERT_ROWS], dtype=dtype)
                out[start:start + part.shape[0]] = ops.affine_forward(part, W, b)
            return out
        self.x = check.kernel_ready(x2, dtype)
        return ops.affine_forward(self.x, W, b)

    def backward(self, dout):
        """Sets dW and db; returns dx, shaped like the forward input."""
        return self._backward(dout, need_dx=True).reshape(self.original_x_shape)

    def backward_params(self, dout) -> None:
        """Sets dW and db only: for a layer whose input needs no gradient (a network's first
        layer, fed the data), which spares the product dout W^T."""
        self._backward(dout, need_dx=False)

    def _backward(self, dout, need_dx: bool):
        self._require_forward("x")
        dout = check.float_array("dout", dout, any_float=True)
        known = self._checked  # forward's weights, unless W or b was rebound or reshaped since
        if (known is not None and self.W is known[0] and self.b is known[1] and self.W.shape == known[4]
                and self.b.shape == known[5] and dout.dtype == known[6] and self.x.dtype in (known[2], known[6])):
            W, dtype = self.W, known[6]
        else:
            W, _ = check.affine_weights(self.W, self.b, self.x.shape[1])
            dtype = check.common_dtype(dout, self.x, W)
        check.same_shape("dout", dout, "the Affine output", (self.x.shape[0], W.shape[1]))
        ops = self.ops_for(dtype)
        x = self.x  # float32 into float64 weights stays so where the backend converts it (forward kept it so)
        if x.dtype != dtype and not (x.dtype.char == "f" and getattr(ops, "MIXED_INPUT", False)):
            x = check.kernel_ready(x, dtype)
        dx, self.dW, self.db = ops.affine_backward(check.kernel_ready(dout, dtype), x, check.kernel_ready(W, dtype), need_dx)
        return dx


def _as_batch(x: np.ndarray, t, layer: str):
    """A single sample (x 1-D) becomes a batch of one; returns (x2, t2)."""
    if x.ndim == 2:
        return x, t
    if x.ndim == 1:
        t = np.asarray(t)
        if t.ndim > 1:
            raise ValueError(f"{layer}: x is one sample of shape {x.shape} but t has shape {t.shape}")
        return x.reshape(1, -1), t.reshape((1,) + t.shape)
    raise ValueError(f"{layer} expects x of shape (N, classes) or (classes,), got shape {x.shape}")


class SoftmaxWithLoss(Layer):
    """Softmax output with mean cross-entropy loss; backward gives dout * (y - t) / N.

    ``t`` is integer labels (N,) or one-hot rows (N, classes).
    """

    def __init__(self, backend: str | None = None):
        super().__init__(backend)
        self.loss = None
        self.y = None  # softmax output
        self.t = None  # labels as given
        self._labels = None  # int64 class indices, what the kernels use
        self._remembered = (None, None)  # a small t's (dtype, shapes, bytes) and its labels

    def forward(self, x, t):
        x = check.float_array("x", x, any_float=True)
        x2, t2 = _as_batch(x, t, "SoftmaxWithLoss")
        if x2.shape[0] == 0 or x2.shape[1] == 0:
            raise ValueError(f"SoftmaxWithLoss needs at least one sample and one class, got x of shape {x.shape}")
        labels = self._labels_of(t2, x2.shape)
        ops = self.ops_for(x2.dtype)
        x2 = check.kernel_ready(x2, x2.dtype)
        with np.errstate(invalid="ignore", over="ignore") if ops is _NUMPY_OPS else _NO_CONTEXT:
            self.loss, y = ops.softmax_cross_entropy_forward(x2, labels)
        # A NaN or +inf logit makes its row's loss NaN, and -inf at the label makes it inf (at another
        # class it is a probability of exactly 0, the loss finite and exact): the logits are searched
        # only when the loss is not finite (a check of every call cost more than the kernel at batch 1).
        problem = None if math.isfinite(self.loss) else check.non_finite("x (the logits)", x2)
        if problem:  # the book's networks diverge on purpose (ch06 batch_norm_test.py): NumPy's NaN, said aloud
            warnings.warn(f"SoftmaxWithLoss: {problem}; the loss and its gradient are NaN or inf, as NumPy computes them",
                          NonFiniteWarning, stacklevel=2)
            if ops is not _NUMPY_OPS:  # NumPy's NaN and inf, entry for entry
                ops = _NUMPY_OPS
                with np.errstate(invalid="ignore", over="ignore"):
                    self.loss, y = ops.softmax_cross_entropy_forward(x2, labels)
        self._forward_ops = ops  # backward runs where forward ran
        self.y = y.reshape(x.shape)
        self.t = t
        self._labels = labels
        return self.loss

    # t of at most this many bytes is remembered with its labels: a numerical gradient calls forward
    # thousands of times with one t (the book's ch07 gradient check: labels (3, 1)), and its check
    # costs several us; comparing the bytes costs well under 1 us. Float one-hot rows (the book's
    # ch05) are not: the native module's pass over them costs what the comparison would.
    REMEMBERED_T_BYTES = 1 << 16

    def _labels_of(self, t, shape) -> np.ndarray:
        """check.class_labels(t, *shape), reused while t holds the same values (compared as bytes)."""
        key = None
        if isinstance(t, np.ndarray) and t.nbytes <= self.REMEMBERED_T_BYTES and t.dtype.char not in "fd":
            key = (t.dtype, t.shape, shape, t.tobytes())
            if key == self._remembered[0]:
                return self._remembered[1]
        labels = check.class_labels(t, *shape)
        self._remembered = (key, labels)
        return labels

    def backward(self, dout=1):
        self._require_forward("y")
        dout = check.scalar("dout", dout)
        y, ops = self.y, self._forward_ops
        y2 = y if y.ndim == 2 else y.reshape(self._labels.shape[0], -1)
        with np.errstate(invalid="ignore") if ops is _NUMPY_OPS else _NO_CONTEXT:  # NaN logits: warned about in forward
            dx = ops.softmax_cross_entropy_backward(y2, self._labels, dout)
        return dx if y.ndim == 2 else dx.reshape(y.shape)


class IdentityWithLoss(Layer):
    """Identity output with mean squared error: loss = sum((y - t)**2) / (2 N); dx = dout * (y - t) / N.

    x of shape (N, ...) is a batch of N samples; a 1-D x is one sample.
    """

    def __init__(self, backend: str | None = None):
        super().__init__(backend)
        self.loss = None
        self.y = None
        self.t = None

    @staticmethod
    def _rows(a: np.ndarray) -> np.ndarray:
        return a.reshape(1, -1) if a.ndim == 1 else a.reshape(a.shape[0], -1)

    def forward(self, x, t):
        x = check.float_array("x", x)
        t = np.asarray(t)
        if t.dtype.kind not in "iuf":
            raise TypeError(f"t must be a numeric array, got dtype {t.dtype}")
        check.same_shape("t", t, "x", x.shape)
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"IdentityWithLoss needs at least one sample, got x of shape {x.shape}")
        check.finite("x", x)
        check.finite("t", t)
        dtype = check.common_dtype(x, t) if t.dtype.kind == "f" else x.dtype
        self.y = check.kernel_ready(x, dtype)
        self.t = check.kernel_ready(t, dtype)
        self.loss = self.ops.mse_forward(self._rows(self.y), self._rows(self.t))
        return self.loss

    def backward(self, dout=1):
        self._require_forward("y")
        dout = check.scalar("dout", dout)
        return self.ops.mse_backward(self._rows(self.y), self._rows(self.t), dout).reshape(self.y.shape)


# ---- Chapter 6: Dropout and BatchNormalization --------------------------------------------------

_NUMPY_RAND = np.random.rand


class Dropout(Layer):
    """Training: each unit is kept when a uniform draw exceeds ``dropout_ratio`` (the book's
    ``np.random.rand(*x.shape) > dropout_ratio``: the same draw, so ``np.random.seed`` gives the
    book's masks); out = x * mask. Inference: out = x * (1 - dropout_ratio)."""

    def __init__(self, dropout_ratio=0.5, backend: str | None = None):
        super().__init__(backend)
        ratio = check.scalar("dropout_ratio", dropout_ratio)
        if not 0 <= ratio < 1:
            raise ValueError(f"dropout_ratio must lie in [0, 1), got {ratio}")
        self.dropout_ratio = ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        x = check.float_array("x", x, any_float=True)
        if not train_flg:
            return x * x.dtype.type(1.0 - self.dropout_ratio)
        ops, x = self.ops_for(x.dtype), check.kernel_ready(x, x.dtype)
        if np.random.rand is _NUMPY_RAND:  # the book's draw, made by the backend from NumPy's generator
            out, mask = ops.dropout_forward_numpy(x, self.dropout_ratio)
        else:  # np.random.rand replaced (by a test, by the user): its numbers
            out, mask = ops.dropout_forward(x, np.random.rand(*x.shape), self.dropout_ratio)
        self.mask = mask.reshape(x.shape)
        return out.reshape(x.shape)

    def backward(self, dout):
        self._require_forward("mask")
        dout = check.float_array("dout", dout, any_float=True)
        check.same_shape("dout", dout, "the Dropout output", self.mask.shape)
        return self.ops_for(dout.dtype).dropout_backward(check.kernel_ready(dout, dout.dtype), self.mask).reshape(dout.shape)


class BatchNormalization(Layer):
    """Each feature normalised over the batch, then scaled by ``gamma`` and shifted by ``beta``.

    A 4-D input (N, C, H, W) is flattened per sample, as the book does: each (c, h, w) position
    is one feature (not each channel). Training keeps running averages of the batch mean and
    variance (``running = momentum * running + (1 - momentum) * batch``); inference uses them.
    ``gamma`` and ``beta`` are held by reference, like Affine's W and b.
    """

    param_names = ("gamma", "beta")
    EPS = engine.BATCHNORM_EPS  # the book's 10e-7, inside the square root

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None, backend: str | None = None):
        super().__init__(backend)
        self.gamma, self.beta = gamma, beta
        self.momentum = check.scalar("momentum", momentum)
        self.input_shape = None
        self.running_mean, self.running_var = running_mean, running_var
        self.batch_size = self.xn = self.std = None
        self.dgamma = self.dbeta = None

    @property
    def xc(self):
        """x minus the batch mean (the book's attribute; computed when asked, from xn and std)."""
        return None if self.xn is None else self.xn * self.std

    def _features(self, x, name):
        if x.ndim not in (2, 4):
            raise ValueError(f"BatchNormalization takes (N, D) or (N, C, H, W), got {name} of shape {x.shape}")
        return x.reshape(x.shape[0], -1)

    def forward(self, x, train_flg=True):
        x = check.float_array("x", x, any_float=True)
        x2 = self._features(x, "x")
        gamma = check.float_array("gamma", self.gamma, any_float=True)
        beta = check.float_array("beta", self.beta, any_float=True)
        for name, p in (("gamma", gamma), ("beta", beta)):
            check.same_shape(name, p, "a feature of x", (x2.shape[1],))
        if self.running_mean is None:
            self.running_mean, self.running_var = np.zeros(x2.shape[1]), np.zeros(x2.shape[1])
        dtype = check.common_dtype(x2, gamma, beta)
        ops = self.ops_for(dtype)
        self.input_shape = x.shape
        x2, gamma, beta = (check.kernel_ready(a, dtype) for a in (x2, gamma, beta))
        if train_flg:
            if x2.shape[0] == 0:
                raise ValueError(f"BatchNormalization needs at least one sample to train, got x of shape {x.shape}")
            out, self.xn, mu, var, self.std = ops.batchnorm_forward(x2, gamma, beta, self.EPS)
            self.batch_size = x2.shape[0]
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            out = ops.batchnorm_infer(x2, gamma, beta, check.kernel_ready(np.asarray(self.running_mean), dtype),
                                      check.kernel_ready(np.asarray(self.running_var), dtype), self.EPS)
        return out.reshape(x.shape)

    def backward(self, dout):
        self._require_forward("xn")
        dout = check.float_array("dout", dout, any_float=True)
        check.same_shape("dout", dout, "the BatchNormalization output", self.input_shape)
        gamma = check.float_array("gamma", self.gamma, any_float=True)
        dtype = check.common_dtype(dout, self.xn, gamma)
        dx, self.dgamma, self.dbeta = self.ops_for(dtype).batchnorm_backward(
            check.kernel_ready(dout.reshape(dout.shape[0], -1), dtype), check.kernel_ready(self.xn, dtype),
            check.kernel_ready(self.std, dtype), check.kernel_ready(gamma, dtype))
        return dx.reshape(self.input_shape)


# ---- Chapter 7: Convolution and Pooling ----------------------------------------------------------

class Convolution(Layer):
    """Filters W (FN, C, FH, FW) and biases b (FN,) over a batch x (N, C, H, W), with ``stride``
    and zero ``pad``ding: out (N, FN, OH, OW). ``col`` and ``col_W`` are the book's im2col
    matrices on the reference backend; the compiled backends compute the same sums window by
    window, without them (``col`` is then None, ``col_W`` a view of W)."""

    param_names = ("W", "b")

    def __init__(self, W, b, stride=1, pad=0, backend: str | None = None):
        super().__init__(backend)
        self.W, self.b = W, b
        self.stride, self.pad = check.positive_int("stride", stride), check.non_negative_int("pad", pad)
        self.x = self.col = self.col_W = None
        self.dW = self.db = None

    def forward(self, x):
        x = check.float_array("x", x, any_float=True)
        W, b, _, _ = check.conv_operands(x, self.W, self.b, self.stride, self.pad)
        dtype = check.common_dtype(x, W, b)
        self.x = check.kernel_ready(x, dtype)
        W = check.kernel_ready(W, dtype)
        out, self.col = self.ops_for(dtype).conv_forward(self.x, W, check.kernel_ready(b, dtype), self.stride, self.pad)
        self.col_W = W.reshape(W.shape[0], -1).T
        return out

    def backward(self, dout):
        """Sets dW and db; returns dx, shaped like the input."""
        return self._backward(dout, need_dx=True)

    def backward_params(self, dout) -> None:
        """Sets dW and db only: for a layer whose input is the data (a network's first layer)."""
        self._backward(dout, need_dx=False)

    def _backward(self, dout, need_dx: bool):
        self._require_forward("x")
        dout = check.float_array("dout", dout, any_float=True)
        W, _, out_h, out_w = check.conv_operands(self.x, self.W, self.b, self.stride, self.pad)
        check.same_shape("dout", dout, "the Convolution output", (self.x.shape[0], W.shape[0], out_h, out_w))
        dtype = check.common_dtype(dout, self.x, W)
        dx, self.dW, self.db = self.ops_for(dtype).conv_backward(
            check.kernel_ready(dout, dtype), check.kernel_ready(self.x, dtype), self.col, check.kernel_ready(W, dtype),
            self.stride, self.pad, need_dx)
        return dx


class Pooling(Layer):
    """Max pooling over pool_h x pool_w windows at ``stride``, with zero ``pad``ding (which can
    win a window of negatives, as in the book). backward sends each output's gradient to the first
    maximum of its window, in the window's row order: the book's rule, which decides the numbers
    after ReLU, where windows of zeros tie. ``arg_max`` is that place per output, in the book's
    order (n, out_y, out_x, c). The default stride is the book's, 1; its output size ignores
    ``pad`` (and breaks with one), this one counts it."""

    def __init__(self, pool_h, pool_w, stride=1, pad=0, backend: str | None = None):
        super().__init__(backend)
        self.pool_h, self.pool_w = check.positive_int("pool_h", pool_h), check.positive_int("pool_w", pool_w)
        self.stride, self.pad = check.positive_int("stride", stride), check.non_negative_int("pad", pad)
        self.x = self._arg_max = None  # (N, C, OH, OW), as the backends keep it
        self._out_shape = None

    @property
    def arg_max(self):
        """The place of each output's first maximum in its window, in the book's order (n, oh, ow, c)."""
        return None if self._arg_max is None else self._arg_max.transpose(0, 2, 3, 1).reshape(-1)

    def forward(self, x):
        x = check.float_array("x", x, any_float=True)
        check.image_batch("x", x)
        out_h = check.window_output("Pooling", x.shape[2], self.pool_h, self.stride, self.pad, "pool height")
        out_w = check.window_output("Pooling", x.shape[3], self.pool_w, self.stride, self.pad, "pool width")
        self.x = check.kernel_ready(x, x.dtype)
        out, self._arg_max = self.ops_for(x.dtype).pool_forward(self.x, self.pool_h, self.pool_w, self.stride, self.pad)
        self._out_shape = (x.shape[0], x.shape[1], out_h, out_w)
        return out

    def backward(self, dout):
        self._require_forward("_arg_max")
        dout = check.float_array("dout", dout, any_float=True)
        check.same_shape("dout", dout, "the Pooling output", self._out_shape)
        return self.ops_for(dout.dtype).pool_backward(check.kernel_ready(dout, dout.dtype), self._arg_max, self.x.shape,
                                                      self.pool_h, self.pool_w, self.stride, self.pad)


# The book's common/layers.py has no __all__: its star import also hands over numpy as np and its
# im2col/col2im, and the book's scripts lean on that (ch06/optimizer_compare_mnist.py uses np)
__all__ = ["AddLayer", "Affine", "BatchNormalization", "Convolution", "Dropout", "IdentityWithLoss", "Layer", "MulLayer",
           "NonFiniteWarning", "Pooling", "Relu", "Sigmoid", "SoftmaxWithLoss", "col2im", "im2col", "np"]
