"""The layers of chapter 5, written once, with the seed's interface and attribute names.

Each layer validates its arguments (fastbp._validate) and hands the math to a backend
(fastbp.backends): ``backend=None`` follows the global choice, a name pins the layer.

Fixes over the seed's code: ``Relu.backward`` leaves the caller's ``dout`` alone,
``SoftmaxWithLoss`` is stable for any finite logits, takes one-hot or integer labels and
honours ``dout``; ``Affine`` takes N-D input and restores its shape in backward; MulLayer and
AddLayer sum gradients back to their inputs' shapes when the inputs were broadcast.
"""

from __future__ import annotations

import numpy as np

from . import _validate as check
from . import backends


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

    def forward(self, x):
        x = check.float_array("x", x)
        out, mask = self.ops.relu_forward(check.kernel_ready(x, x.dtype))
        self.mask = mask.reshape(x.shape)
        return out.reshape(x.shape)

    def backward(self, dout):
        self._require_forward("mask")
        dout = check.float_array("dout", dout)
        check.same_shape("dout", dout, "the ReLU output", self.mask.shape)
        dx = self.ops.relu_backward(check.kernel_ready(dout, dout.dtype), check.kernel_ready(self.mask, np.bool_))
        return dx.reshape(dout.shape)


class Sigmoid(Layer):
    """out = 1 / (1 + exp(-x)); backward uses only the output: dx = dout * (1 - out) * out."""

    def __init__(self, backend: str | None = None):
        super().__init__(backend)
        self.out = None

    def forward(self, x):
        x = check.float_array("x", x)
        self.out = self.ops.sigmoid_forward(check.kernel_ready(x, x.dtype)).reshape(x.shape)
        return self.out

    def backward(self, dout):
        self._require_forward("out")
        dout = check.float_array("dout", dout)
        check.same_shape("dout", dout, "the Sigmoid output", self.out.shape)
        dtype = check.common_dtype(dout, self.out)
        dx = self.ops.sigmoid_backward(check.kernel_ready(dout, dtype), check.kernel_ready(self.out, dtype))
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

    def forward(self, x):
        x = check.float_array("x", x)
        W, b = check.affine_operands(x, self.W, self.b)
        dtype = check.common_dtype(x, W, b)
        self.original_x_shape = x.shape
        self.x = check.kernel_ready(x.reshape(x.shape[0], W.shape[0]), dtype)
        return self.ops.affine_forward(self.x, check.kernel_ready(W, dtype), check.kernel_ready(b, dtype))

    def backward(self, dout):
        """Sets dW and db; returns dx, shaped like the forward input."""
        return self._backward(dout, need_dx=True).reshape(self.original_x_shape)

    def backward_params(self, dout) -> None:
        """Sets dW and db only: for a layer whose input needs no gradient (a network's first
        layer, fed the data), which spares the product dout W^T."""
        self._backward(dout, need_dx=False)

    def _backward(self, dout, need_dx: bool):
        self._require_forward("x")
        dout = check.float_array("dout", dout)
        W, _ = check.affine_weights(self.W, self.b, self.x.shape[1])  # W may have been rebound since forward
        check.same_shape("dout", dout, "the Affine output", (self.x.shape[0], W.shape[1]))
        dtype = check.common_dtype(dout, self.x, W)
        dx, self.dW, self.db = self.ops.affine_backward(
            check.kernel_ready(dout, dtype), check.kernel_ready(self.x, dtype), check.kernel_ready(W, dtype), need_dx
        )
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

    def forward(self, x, t):
        x = check.float_array("x", x)
        x2, t2 = _as_batch(x, t, "SoftmaxWithLoss")
        if x2.shape[0] == 0 or x2.shape[1] == 0:
            raise ValueError(f"SoftmaxWithLoss needs at least one sample and one class, got x of shape {x.shape}")
        labels = check.class_labels(t2, *x2.shape)
        check.finite("x (the logits)", x2)
        self.loss, y = self.ops.softmax_cross_entropy_forward(check.kernel_ready(x2, x2.dtype), labels)
        self.y = y.reshape(x.shape)
        self.t = t
        self._labels = labels
        return self.loss

    def backward(self, dout=1):
        self._require_forward("y")
        dout = check.scalar("dout", dout)
        y2 = self.y.reshape(self._labels.shape[0], -1)
        return self.ops.softmax_cross_entropy_backward(y2, self._labels, dout).reshape(self.y.shape)


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
