"""Optimizers with the seed's interface: ``update(params, grads)`` changes params in place."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from . import _validate as check
from . import backends


def sgd_step(param: np.ndarray, grad, lr: float, backend: str | None = None) -> None:
    """param -= lr * grad, in place, validated; a non-contiguous param is updated by NumPy."""
    if not isinstance(param, np.ndarray) or param.dtype not in check.FLOAT_DTYPES:
        raise TypeError(f"param must be a float32 or float64 NumPy array, got {type(param).__name__}"
                        + (f" of dtype {param.dtype}" if isinstance(param, np.ndarray) else ""))
    if not param.flags.writeable:
        raise ValueError("param is read-only; SGD updates it in place")
    grad = check.float_array("grad", grad)
    check.same_shape("grad", grad, "param", param.shape)
    grad = check.kernel_ready(grad, param.dtype)
    ops = backends.get(backend) if param.flags.c_contiguous else backends.get("reference")
    ops.sgd_update(param, grad, lr)


class SGD:
    """Stochastic gradient descent: W <- W - lr * dW for every parameter."""

    def __init__(self, lr: float = 0.01, backend: str | None = None):
        self.lr = check.scalar("lr", lr)
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.backend = backends.check_name(backend)

    def update(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        missing = [key for key in params if key not in grads]
        if missing:
            raise KeyError(f"no gradient for parameter(s) {missing}")
        for key, param in params.items():
            sgd_step(param, grads[key], self.lr, self.backend)
