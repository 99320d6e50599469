"""Networks with the seed's API: ``params``, ordered ``layers``, ``last_layer``, ``predict``,
``loss``, ``accuracy``, ``numerical_gradient`` and ``gradient``.

All parameters live in one flat buffer (``flat_params``, layout in fastbp/engine.py);
``params['W1']`` and the layers' ``W``/``b`` are views into it. The seed's in-place update
``params['W1'] -= lr * grad['W1']`` therefore updates the layers and the buffer alike, and the
fused training step (fastbp.train) updates all parameters in one pass over the buffer.
Replace values in place (``params['W1'][...] = w``), never by rebinding the dict entry.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import _validate as check
from . import backends, checkpoint, engine
from ._system import require_memory
from .gradcheck import numerical_gradient
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss

ACTIVATION_LAYERS = {"relu": Relu, "sigmoid": Sigmoid}


@dataclass
class Prepared:
    """A data set checked once and kept as a backend's engine reads it (MultiLayerNet.prepare)."""

    rows: object  # what ops.prepare_rows returned
    n: int
    ops: object  # the backend module


def init_std(scheme, fan_in: int, activation: str) -> float:
    """Standard deviation of the initial weights: 'he' (sqrt(2/fan_in), for ReLU), 'xavier'
    (sqrt(1/fan_in), for Sigmoid), 'auto' (the one that suits ``activation``) or a number."""
    if isinstance(scheme, str):
        scheme = scheme.lower()
        if scheme == "auto":
            scheme = "he" if activation == "relu" else "xavier"
        if scheme == "he":
            return float(np.sqrt(2.0 / fan_in))
        if scheme == "xavier":
            return float(np.sqrt(1.0 / fan_in))
        raise ValueError(f"weight_init_std must be 'he', 'xavier', 'auto' or a number, got {scheme!r}")
    std = check.scalar("weight_init_std", scheme)
    if std <= 0:
        raise ValueError(f"weight_init_std must be positive, got {std}")
    return std


class MultiLayerNet:
    """Affine -> activation -> ... -> Affine -> SoftmaxWithLoss, of any depth.

    ``hidden_size_list=[50]`` is the seed's TwoLayerNet. ``dtype`` is the parameters' dtype
    (float32 trains faster; float64 suits gradient checks). ``seed`` makes the initial weights
    reproducible; without it they come from NumPy's global generator, like the seed's.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std="auto",
        dtype=np.float32,
        backend: str | None = None,
        seed: int | None = None,
    ):
        sizes = [input_size, *hidden_size_list, output_size]
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ValueError(f"layer sizes must be positive integers, got {sizes}")
        if activation not in ACTIVATION_LAYERS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATION_LAYERS)}, got {activation!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in check.FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.sizes = np.array(sizes, dtype=np.int64)
        self.activation = activation
        self.program = engine.mlp_program(self.sizes, activation)  # what the engine runs
        self.backend = backends.check_name(backend)

        count = engine.parameter_count(self.sizes)
        require_memory(count * self.dtype.itemsize, f"a {'-'.join(map(str, sizes))} network ({count:,} {self.dtype} parameters)")
        self.flat_params = np.zeros(count, dtype=self.dtype)
        self.params: dict[str, np.ndarray] = self.param_views(self.flat_params)
        rng = np.random if seed is None else np.random.default_rng(seed)
        for i in range(1, self.n_layers + 1):
            W = self.params[f"W{i}"]
            W[...] = init_std(weight_init_std, W.shape[0], activation) * rng.standard_normal(W.shape)

        self.layers: OrderedDict = OrderedDict()
        act_name = activation.capitalize()
        for i in range(1, self.n_layers + 1):
            self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"], backend=backend)
            if i < self.n_layers:
                self.layers[f"{act_name}{i}"] = ACTIVATION_LAYERS[activation](backend=backend)
        self.last_layer = SoftmaxWithLoss(backend=backend)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def param_views(self, flat: np.ndarray) -> dict:
        """{'W1': ..., 'b1': ..., ...} as views into ``flat``, a buffer in the parameters' layout
        (the parameters themselves, gradients, optimizer state)."""
        views = {}
        for i, (W, b) in enumerate(engine.layer_views(flat, self.sizes), start=1):
            views[f"W{i}"], views[f"b{i}"] = W, b
        return views

    def check_params_in_place(self) -> None:
        """Fail loudly if a params entry was rebound instead of updated in place."""
        for i, (W, b) in enumerate(engine.layer_views(self.flat_params, self.sizes), start=1):
            for name, view in ((f"W{i}", W), (f"b{i}", b)):
                p = self.params.get(name)
                if p is None or p.shape != view.shape or not np.shares_memory(p, view):
                    raise RuntimeError(
                        f"params[{name!r}] was replaced by a new array; update parameters in place "
                        f"(params[{name!r}][...] = value) so the layers and the flat buffer see it"
                    )

    def as_input(self, x, name: str = "x") -> np.ndarray:
        """x as a batch (N, inputs), checked (float, finite, the right width); one sample of
        shape (inputs,) or (1, 28, 28) becomes a batch of one."""
        x = check.float_array(name, x)
        if x.ndim >= 1 and x.size == self.sizes[0] and (x.ndim == 1 or x.shape[0] != 1):
            x = x.reshape(1, -1)  # one sample
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != self.sizes[0]:
            raise ValueError(f"{name} of shape {x.shape} does not fit a network with {self.sizes[0]} inputs")
        if x.shape[0] == 0:
            raise ValueError(f"{name} of shape {x.shape} holds no samples")
        check.finite(name, x)
        return x.reshape(x.shape[0], -1)

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def prepare(self, x, name: str = "x") -> "Prepared":
        """x checked once and kept as the backend's engine reads it fastest (native: a mostly-zero
        set as its nonzeros), for repeated predict_labels and accuracy (a trainer's evaluations)."""
        x = check.kernel_ready(self.as_input(x, name), self.dtype)
        ops = backends.get(self.backend)
        return Prepared(ops.prepare_rows(x, self.program), x.shape[0], ops)

    def predict_labels(self, x) -> np.ndarray:
        """argmax of predict(x), computed by the backend's engine; one sample of shape (inputs,)
        gives one label; x may be prepared (:meth:`prepare`)."""
        if isinstance(x, Prepared):
            return x.ops.predict_labels(x.rows, self.flat_params, self.program)
        single = np.ndim(x) == 1
        x = self.as_input(x)
        ops = backends.get(self.backend)
        if x.dtype == self.dtype and x.flags.c_contiguous:
            labels = ops.predict_labels(x, self.flat_params, self.program)
        else:  # convert a slice at a time (float32 images into a float64 net, as in the seed), never the whole set
            labels = np.empty(x.shape[0], dtype=np.int64)
            for start in range(0, x.shape[0], engine.CONVERT_ROWS):
                part = check.kernel_ready(x[start:start + engine.CONVERT_ROWS], self.dtype)
                labels[start:start + part.shape[0]] = ops.predict_labels(part, self.flat_params, self.program)
        return labels[0] if single else labels

    def predict_proba(self, x) -> np.ndarray:
        """Softmax of predict(x): class probabilities, (N, classes), or (classes,) for one sample."""
        single = np.ndim(x) == 1
        x = self.as_input(x)
        probs = np.empty((x.shape[0], int(self.sizes[-1])), dtype=np.result_type(x, self.dtype))
        ops = backends.get(self.backend)
        zeros = np.zeros(min(x.shape[0], engine.CONVERT_ROWS), dtype=np.int64)
        for start in range(0, x.shape[0], engine.CONVERT_ROWS):
            logits = check.kernel_ready(self.predict(x[start:start + engine.CONVERT_ROWS]), probs.dtype)
            _, probs[start:start + logits.shape[0]] = ops.softmax_cross_entropy_forward(logits, zeros[:logits.shape[0]])
        return probs[0] if single else probs

    def accuracy(self, x, t) -> float:
        """The fraction of samples whose predicted label is t (integer labels or one-hot rows);
        x may be prepared (:meth:`prepare`), and then t must be int64 labels."""
        if isinstance(x, Prepared):
            return float(np.sum(self.predict_labels(x) == t) / x.n)
        if np.ndim(x) == 1:  # one sample: its label a scalar, or one one-hot row
            t = np.asarray(t).reshape(1, *np.shape(t))
        x = self.as_input(x)
        labels = check.class_labels(t, x.shape[0], int(self.sizes[-1]))
        return float(np.sum(self.predict_labels(x) == labels) / x.shape[0])

    def numerical_gradient(self, x, t) -> dict:
        """Gradients by central differences (slow: two forward passes per parameter)."""
        return {key: numerical_gradient(lambda _: self.loss(x, t), param) for key, param in self.params.items()}

    def gradient(self, x, t) -> dict:
        """Gradients by backpropagation, as arrays owned by the layers (dW, db)."""
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        first, *rest = self.layers.values()
        for layer in reversed(rest):
            dout = layer.backward(dout)
        first.backward_params(dout)  # the gradient of x itself would go unused
        grads = {}
        for i in range(1, self.n_layers + 1):
            grads[f"W{i}"] = self.layers[f"Affine{i}"].dW
            grads[f"b{i}"] = self.layers[f"Affine{i}"].db
        return grads

    def save(self, path, **run_state) -> None:
        """Weights and architecture to ``.npz`` (fastbp.checkpoint); a training run adds its
        ``optimizer``, ``optimizer_state`` and ``step`` so that it can be resumed."""
        checkpoint.save(path, self.sizes, self.activation, self.params, **run_state)

    def load_params(self, path) -> None:
        """Copy weights saved by :meth:`save` into this network (same architecture), in place."""
        saved = checkpoint.read(path)
        if saved.sizes != self.sizes.tolist():
            raise ValueError(f"{path}: saved layer sizes {saved.sizes} != this network's {self.sizes.tolist()}")
        if saved.activation != self.activation:
            raise ValueError(f"{path}: saved activation {saved.activation!r} != this network's {self.activation!r}")
        for key, param in self.params.items():
            param[...] = saved.params[key]

    @classmethod
    def load(cls, path, **kwargs) -> "MultiLayerNet":
        """A network rebuilt from a ``.npz`` written by :meth:`save` (every array checked first)."""
        saved = checkpoint.read(path)
        kwargs.setdefault("dtype", saved.dtype)
        net = cls._from_saved(path, saved, **kwargs)
        for key, param in net.params.items():
            param[...] = saved.params[key]
        return net

    @classmethod
    def _from_saved(cls, path, saved: checkpoint.Saved, **kwargs) -> "MultiLayerNet":
        return cls(saved.sizes[0], saved.sizes[1:-1], saved.sizes[-1], activation=saved.activation, **kwargs)


class TwoLayerNet(MultiLayerNet):
    """The seed's network: Affine1 -> Relu1 -> Affine2 -> SoftmaxWithLoss, float64 weights of
    standard deviation ``weight_init_std``."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, *,
                 dtype=np.float64, backend=None, seed=None):
        super().__init__(input_size, [hidden_size], output_size, activation="relu",
                         weight_init_std=weight_init_std, dtype=dtype, backend=backend, seed=seed)

    @classmethod
    def _from_saved(cls, path, saved: checkpoint.Saved, **kwargs) -> "TwoLayerNet":
        if len(saved.sizes) != 3 or saved.activation != "relu":
            raise ValueError(f"{path}: a {'-'.join(map(str, saved.sizes))} {saved.activation} network is not a "
                             f"TwoLayerNet (one ReLU hidden layer); load it with MultiLayerNet.load")
        return cls(*saved.sizes, **kwargs)
