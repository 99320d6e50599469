"""Networks with the seed's API: ``params``, ordered ``layers``, ``last_layer``, ``predict``,
``loss``, ``accuracy``, ``numerical_gradient`` and ``gradient``.

All parameters live in one flat buffer (``flat_params``, layout in backends/_network.py);
``params['W1']`` and the layers' ``W``/``b`` are views into it. The seed's in-place update
``params['W1'] -= lr * grad['W1']`` therefore updates the layers and the buffer alike, and the
fused training step (fastbp.train) updates all parameters in one pass over the buffer.
Replace values in place (``params['W1'][...] = w``), never by rebinding the dict entry.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from . import _validate as check
from . import backends
from .backends import _network
from .gradcheck import numerical_gradient
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss

ACTIVATION_LAYERS = {"relu": Relu, "sigmoid": Sigmoid}


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

    # Rows converted at a time when x is not already in the network's dtype (float32 images into
    # the seed's float64 net): 512 x 784 float64 is 3 MB, read back by the product while still in
    # cache. Measured, train + test accuracy of the seed's net on MNIST, 2 cores: 168 ms with
    # chunks of 8192 rows, 116-129 ms with 512 (reference backend: 217 and 135-146 ms).
    PREDICT_CHUNK = 512

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
        self.backend = backends.check_name(backend)

        self.flat_params = np.zeros(_network.parameter_count(self.sizes), dtype=self.dtype)
        self.params: dict[str, np.ndarray] = {}
        rng = np.random if seed is None else np.random.default_rng(seed)
        for i, (W, b) in enumerate(_network.layer_views(self.flat_params, self.sizes), start=1):
            std = init_std(weight_init_std, W.shape[0], activation)
            W[...] = std * rng.standard_normal(W.shape)
            self.params[f"W{i}"], self.params[f"b{i}"] = W, b

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

    def check_params_in_place(self) -> None:
        """Fail loudly if a params entry was rebound instead of updated in place."""
        for i, (W, b) in enumerate(_network.layer_views(self.flat_params, self.sizes), start=1):
            for name, view in ((f"W{i}", W), (f"b{i}", b)):
                p = self.params.get(name)
                if p is None or p.shape != view.shape or not np.shares_memory(p, view):
                    raise RuntimeError(
                        f"params[{name!r}] was replaced by a new array; update parameters in place "
                        f"(params[{name!r}][...] = value) so the layers and the flat buffer see it"
                    )

    def _as_input(self, x) -> np.ndarray:
        x = check.float_array("x", x)
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != self.sizes[0]:
            raise ValueError(f"x of shape {x.shape} does not fit a network with {self.sizes[0]} inputs")
        return x

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def predict_labels(self, x) -> np.ndarray:
        """argmax of predict(x), computed by the backend's whole-network kernel."""
        x = self._as_input(x)
        x = x.reshape(x.shape[0], -1)
        ops, activation = backends.get(self.backend), _network.ACTIVATIONS[self.activation]
        if x.dtype == self.dtype and x.flags.c_contiguous:
            return ops.predict_labels(x, self.flat_params, self.sizes, activation)
        # convert a slice at a time (float32 images into a float64 net, as in the seed), never the whole set
        labels = np.empty(x.shape[0], dtype=np.int64)
        for start in range(0, x.shape[0], self.PREDICT_CHUNK):
            part = check.kernel_ready(x[start:start + self.PREDICT_CHUNK], self.dtype)
            labels[start:start + part.shape[0]] = ops.predict_labels(part, self.flat_params, self.sizes, activation)
        return labels

    def accuracy(self, x, t) -> float:
        t = np.asarray(t)
        x = self._as_input(x)
        labels = check.class_labels(t, x.shape[0], int(self.sizes[-1]))
        if x.shape[0] == 0:
            raise ValueError("accuracy of an empty set is undefined")
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

    def save(self, path) -> None:
        """Weights and architecture to ``.npz``."""
        np.savez(path, sizes=self.sizes, activation=np.array(self.activation), **self.params)

    def load_params(self, path) -> None:
        """Copy weights saved by :meth:`save` into this network (same architecture), in place."""
        with np.load(path) as data:
            if not np.array_equal(data["sizes"], self.sizes):
                raise ValueError(f"{path}: saved layer sizes {data['sizes'].tolist()} != this network's {self.sizes.tolist()}")
            for key, param in self.params.items():
                param[...] = data[key]

    @classmethod
    def load(cls, path, **kwargs) -> "MultiLayerNet":
        """A network rebuilt from a ``.npz`` written by :meth:`save`."""
        with np.load(path) as data:
            sizes = data["sizes"].tolist()
            activation = str(data["activation"])
            dtype = data["W1"].dtype
        net = cls(sizes[0], sizes[1:-1], sizes[-1], activation=activation, dtype=kwargs.pop("dtype", dtype), **kwargs)
        net.load_params(path)
        return net


class TwoLayerNet(MultiLayerNet):
    """The seed's network: Affine1 -> Relu1 -> Affine2 -> SoftmaxWithLoss, float64 weights of
    standard deviation ``weight_init_std``."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, *,
                 dtype=np.float64, backend=None, seed=None):
        super().__init__(input_size, [hidden_size], output_size, activation="relu",
                         weight_init_std=weight_init_std, dtype=dtype, backend=backend, seed=seed)
