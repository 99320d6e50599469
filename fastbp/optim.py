"""Optimizers with the seed's interface: ``update(params, grads)`` changes params in place.

Each update calls the backend's kernel (sgd_update, momentum_update, adam_update); the fused
training step calls the same kernels on a network's flat buffers. ``hyper()`` gives the vector
that train_steps takes, so both paths run the same optimizer with the same settings.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from . import _validate as check
from . import backends
from .backends import _network


def _check_param(param, grad, role: str = "param") -> np.ndarray:
    if not isinstance(param, np.ndarray) or param.dtype not in check.FLOAT_DTYPES:
        got = f"{type(param).__name__}" + (f" of dtype {param.dtype}" if isinstance(param, np.ndarray) else "")
        raise TypeError(f"{role} must be a float32 or float64 NumPy array, got {got}")
    if not param.flags.writeable:
        raise ValueError(f"{role} is read-only; optimizers update it in place")
    grad = check.float_array("grad", grad)
    check.same_shape("grad", grad, role, param.shape)
    return check.kernel_ready(grad, param.dtype)


def _ops_for(param: np.ndarray, backend: str | None):
    # kernels update flat views in place; a strided param is updated by NumPy instead
    return backends.get(backend) if param.flags.c_contiguous else backends.get("reference")


def sgd_step(param: np.ndarray, grad, lr: float, backend: str | None = None) -> None:
    """param -= lr * grad, in place, validated."""
    grad = _check_param(param, grad)
    _ops_for(param, backend).sgd_update(param, grad, lr)


def _positive(name: str, value) -> float:
    value = check.scalar(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _fraction(name: str, value) -> float:
    value = check.scalar(name, value)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return value


class Optimizer:
    name = ""

    def __init__(self, lr: float, backend: str | None = None):
        self.lr = _positive("lr", lr)
        self.backend = backends.check_name(backend)

    def update(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        missing = [key for key in params if key not in grads]
        if missing:
            raise KeyError(f"no gradient for parameter(s) {missing}")
        self._begin_step()
        for key, param in params.items():
            grad = _check_param(param, grads[key], f"params[{key!r}]")
            self._update_one(key, param, grad, _ops_for(param, self.backend))

    def _begin_step(self) -> None:
        pass

    def bind_state(self, state: np.ndarray, views, step: int) -> None:
        """Keep the per-parameter state in rows of ``state`` (2, parameter count), the fused
        path's buffer, through ``views(row) -> {key: view}``; ``step`` updates are done."""

    def _update_one(self, key, param, grad, ops) -> None:
        raise NotImplementedError

    def hyper(self, dtype) -> np.ndarray:
        """[lr, momentum or beta1, beta2, eps] for backends' train_steps."""
        raise NotImplementedError

    @property
    def code(self) -> int:
        return _network.OPTIMIZERS[self.name]


class SGD(Optimizer):
    """W <- W - lr * dW."""

    name = "sgd"

    def __init__(self, lr: float = 0.01, backend: str | None = None):
        super().__init__(lr, backend)

    def _update_one(self, key, param, grad, ops):
        ops.sgd_update(param, grad, self.lr)

    def hyper(self, dtype):
        return np.array([self.lr, 0.0, 0.0, 0.0], dtype=dtype)


class Momentum(Optimizer):
    """v <- momentum * v - lr * dW; W <- W + v."""

    name = "momentum"

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, backend: str | None = None):
        super().__init__(lr, backend)
        self.momentum = _fraction("momentum", momentum)
        self.v: dict[str, np.ndarray] = {}

    def bind_state(self, state, views, step):
        self.v = views(state[0])

    def _update_one(self, key, param, grad, ops):
        velocity = self.v.setdefault(key, np.zeros_like(param, order="C"))
        ops.momentum_update(param, grad, velocity, self.lr, self.momentum)

    def hyper(self, dtype):
        return np.array([self.lr, self.momentum, 0.0, 0.0], dtype=dtype)


class Adam(Optimizer):
    """Adam (Kingma and Ba), with the bias correction folded into the step size, as in the book."""

    name = "adam"

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-7,
                 backend: str | None = None):
        super().__init__(lr, backend)
        self.beta1 = _fraction("beta1", beta1)
        self.beta2 = _fraction("beta2", beta2)
        self.eps = _positive("eps", eps)
        self.iter = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def _begin_step(self):
        self.iter += 1

    def bind_state(self, state, views, step):
        self.m, self.v, self.iter = views(state[0]), views(state[1]), step

    def _update_one(self, key, param, grad, ops):
        m = self.m.setdefault(key, np.zeros_like(param, order="C"))
        v = self.v.setdefault(key, np.zeros_like(param, order="C"))
        ops.adam_update(param, grad, m, v, self.lr, self.beta1, self.beta2, self.eps, self.iter)

    def hyper(self, dtype):
        return np.array([self.lr, self.beta1, self.beta2, self.eps], dtype=dtype)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, lr: float, backend: str | None = None, **kwargs) -> Optimizer:
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}") from None
    return cls(lr=lr, backend=backend, **kwargs)
