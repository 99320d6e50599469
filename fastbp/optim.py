"""The book's six optimizers (chapter 6), drop-in: ``update(params, grads)`` changes params in
place, with the book's names, defaults and formulas (Adam folds its bias correction into the
step size; Adam, AdaGrad and RMSprop add 1e-7 outside the square root).

Every update rule is one backend op, ``optimizer_step(code, param, grad, m, v, hyper, t)``
(codes and the hyper vector: fastbp/engine.py), which the engine's fused step also calls on a
network's flat buffers; an optimizer here is its code, its settings as that hyper vector, and
per-parameter state m and v. So both paths run the same rule with the same settings.

A parameter that is a Python or NumPy scalar (the book's optimizer_compare_naive.py) cannot be
changed in place: its new value is written back into ``params``, as the book's ``-=`` does.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from . import _validate as check
from . import backends, engine


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
    """An update rule: ``name`` (a key of engine.OPTIMIZERS), its settings, and per-parameter state."""

    name = ""
    state_rows = 0  # rows of state per parameter the rule reads and writes (m, then v)

    def __init__(self, lr: float, backend: str | None = None):
        self.lr = _positive("lr", lr)
        self.backend = backends.check_name(backend)
        self.iter = 0  # steps done (Adam's bias correction reads it)
        self._states: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def code(self) -> int:
        return engine.OPTIMIZERS[self.name]

    def settings(self) -> tuple[float, float, float]:
        """(beta1 or momentum, beta2, eps) for the hyper vector."""
        return 0.0, 0.0, 0.0

    def hyper(self, dtype) -> np.ndarray:
        """The vector the update rule reads (engine.hyper_vector), in ``dtype``."""
        return engine.hyper_vector(dtype, self.lr, *self.settings())

    def _state(self, key, param: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m, v) of a parameter; a rule without state gets the parameter itself, never read."""
        state = self._states.get(key)
        if state is None or state[0].shape != param.shape or (self.state_rows and state[0].dtype != param.dtype):
            rows = [np.zeros_like(param, order="C") for _ in range(self.state_rows)]
            state = self._states[key] = tuple((rows + [param, param])[:2])
        return state

    def bind_state(self, state: np.ndarray, views, step: int) -> None:
        """Keep the per-parameter state in the rows of ``state`` (2, parameter count), the fused
        path's buffer, through ``views(row) -> {key: view}``; ``step`` updates are done."""
        m, v = views(state[0]), views(state[1])
        self._states = {key: (m[key], v[key]) for key in m}
        self.iter = step

    def update(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        missing = [key for key in params if key not in grads]
        if missing:
            raise KeyError(f"no gradient for parameter(s) {missing}")
        self.iter += 1
        for key, param in list(params.items()):
            if np.ndim(param) == 0 and not isinstance(param, np.ndarray):  # a scalar: computed aside, written back
                params[key] = self._update_scalar(key, param, grads[key])
                continue
            grad = _check_param(param, grads[key], f"params[{key!r}]")
            m, v = self._state(key, param)
            _ops_for(param, self.backend).optimizer_step(self.code, param, grad, m, v, self.hyper(param.dtype), self.iter)

    def _update_scalar(self, key, value, grad) -> float:
        value, grad = check.scalar(f"params[{key!r}]", value), check.scalar(f"grads[{key!r}]", grad)
        param = np.array([value])
        m, v = self._state(key, param)
        backends.get("reference").optimizer_step(self.code, param, np.array([grad]), m, v, self.hyper(np.float64),
                                                 self.iter)
        return float(param[0])


def _state_row(row: int, doc: str) -> property:
    """A book-named view of one state row: {parameter key: its m (row 0) or v (row 1)}."""
    return property(lambda self: {key: state[row] for key, state in self._states.items()}, doc=doc)


class SGD(Optimizer):
    """W <- W - lr * dW."""

    name = "sgd"

    def __init__(self, lr: float = 0.01, backend: str | None = None):
        super().__init__(lr, backend)


class Momentum(Optimizer):
    """v <- momentum * v - lr * dW; W <- W + v."""

    name = "momentum"
    state_rows = 1
    v = _state_row(0, "The velocity of each parameter (the book's attribute).")

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, backend: str | None = None):
        super().__init__(lr, backend)
        self.momentum = _fraction("momentum", momentum)

    def settings(self):
        return self.momentum, 0.0, 0.0


class Nesterov(Momentum):
    """Nesterov's accelerated gradient, as the book writes it: W += momentum^2 v - (1 + momentum) lr dW;
    v <- momentum v - lr dW (the same settings and state as Momentum, another rule)."""

    name = "nesterov"


class AdaGrad(Optimizer):
    """h <- h + dW^2; W <- W - lr dW / (sqrt(h) + 1e-7)."""

    name = "adagrad"
    state_rows = 1
    eps = 1e-7  # the book's, outside the square root
    h = _state_row(0, "The running sum of squared gradients of each parameter (the book's attribute).")

    def __init__(self, lr: float = 0.01, backend: str | None = None):
        super().__init__(lr, backend)

    def settings(self):
        return 0.0, 0.0, self.eps


class RMSprop(AdaGrad):
    """h <- decay_rate h + (1 - decay_rate) dW^2; W <- W - lr dW / (sqrt(h) + 1e-7)."""

    name = "rmsprop"

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99, backend: str | None = None):
        super().__init__(lr, backend)
        self.decay_rate = _fraction("decay_rate", decay_rate)

    def settings(self):
        return self.decay_rate, 0.0, self.eps


class Adam(Optimizer):
    """Adam (Kingma and Ba), with the bias correction folded into the step size, as in the book."""

    name = "adam"
    state_rows = 2
    m = _state_row(0, "The first moment of each parameter.")
    v = _state_row(1, "The second moment of each parameter.")

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-7,
                 backend: str | None = None):
        super().__init__(lr, backend)
        self.beta1 = _fraction("beta1", beta1)
        self.beta2 = _fraction("beta2", beta2)
        self.eps = _positive("eps", eps)

    def settings(self):
        return self.beta1, self.beta2, self.eps


# np too: the book's common/optimizer.py hands numpy on through its star import, and its
# ch06/optimizer_compare_mnist.py uses it from there
__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "Optimizer", "make_optimizer", "sgd_step", "np"]

OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad, "rmsprop": RMSprop,
              "adam": Adam}


def make_optimizer(name: str, lr: float, backend: str | None = None, **kwargs) -> Optimizer:
    try:
        cls = OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}") from None
    return cls(lr=lr, backend=backend, **kwargs)


def sgd_step(param: np.ndarray, grad, lr: float, backend: str | None = None) -> None:
    """param -= lr * grad, in place, validated."""
    grad = _check_param(param, grad)
    SGD(lr, backend).update({"param": param}, {"param": grad})
