"""A network as a sequence of the book's layers, given by its architecture (fastbp/architecture.py),
with the book's network API: ``params``, ``layers``, ``last_layer``, ``predict(x, train_flg)``,
``loss``, ``accuracy``, ``gradient``, ``numerical_gradient``, ``save_params``/``load_params``.

All parameters live in one flat buffer (``flat_params``, the engine's layout, fastbp/engine.py):
``params['W1']`` and the layers' ``W``/``b`` are views into it, so the book's in-place update
``params['W1'] -= lr * grad['W1']`` updates the layers and the buffer alike, and the fused
training step (fastbp.train) updates every parameter in one pass over the buffer. Replace values
in place (``params['W1'][...] = w``), never by rebinding the dict entry.

Prediction of labels and accuracy run on the backend's engine (large chunks, compiled, threaded)
when it runs every op of the network (engine.ENGINE_RUNS), else layer by layer.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _validate as check
from . import architecture, backends, checkpoint, engine
from ._system import require_memory
from .gradcheck import numerical_gradient
from .layers import Affine, BatchNormalization, Convolution, Dropout, Pooling, Relu, Sigmoid, SoftmaxWithLoss

# the book's layer names, numbered per kind: Conv1, Relu1, Pool1, Affine1, Relu2, Affine2
LAYER_NAMES = {"affine": "Affine", "conv": "Conv", "pool": "Pool", "relu": "Relu", "sigmoid": "Sigmoid",
               "dropout": "Dropout", "batchnorm": "BatchNorm"}
TRAIN_MODE_LAYERS = (Dropout, BatchNormalization)  # forward(x, train_flg)


@dataclass
class Prepared:
    """A data set checked once and kept as a backend's engine reads it (SequentialNet.prepare)."""

    rows: object  # what ops.prepare_rows returned
    n: int
    ops: object  # the backend module


class SequentialNet:
    """The network of architecture ``arch``, its weights drawn with standard deviations
    ``weight_std`` (one per affine or convolution layer, in order; biases start at 0).

    ``seed`` makes the weights reproducible; without it they come from NumPy's global generator,
    drawn in the book's order (W1, W2, ...), so that ``np.random.seed`` gives the book's weights.
    ``dtype`` is the parameters' (float32 trains faster; float64 is the book's).
    ``weight_decay_lambda`` is the book's weight decay: the loss gains lambda/2 sum W^2 over every
    weight matrix or filter bank (not the biases), each dW gains lambda W (the fused engine too).
    """

    def __init__(self, arch: dict, weight_std, dtype=np.float32, backend: str | None = None, seed: int | None = None,
                 weight_decay_lambda=0):
        self.architecture = architecture.normalized(arch)  # every setting written out, as a weights file stores it
        self._shapes = architecture.shapes(self.architecture)
        self.dtype = np.dtype(dtype)
        if self.dtype not in check.FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.backend = backends.check_name(backend)
        self.weight_decay_lambda = check.scalar("weight_decay_lambda", weight_decay_lambda)
        if not 0 <= self.weight_decay_lambda < np.inf:
            raise ValueError(f"weight_decay_lambda must be a non-negative number, got {weight_decay_lambda!r}")
        self.program = architecture.program(self.architecture)  # what the engine runs
        self.input_shape = tuple(self._shapes[0]["in"])
        self.n_classes = int(self._shapes[-1]["out"][0])

        shapes = architecture.param_shapes(self.architecture)
        count = sum(math.prod(s) for s in shapes.values())
        require_memory(count * self.dtype.itemsize, f"{self.describe()} ({count:,} {self.dtype} parameters)")
        self.flat_params = np.zeros(count, dtype=self.dtype)
        self.params: dict[str, np.ndarray] = self.param_views(self.flat_params)
        weights = [name for name in shapes if name.startswith("W")]
        stds = list(weight_std) if np.ndim(weight_std) else [weight_std] * len(weights)
        if len(stds) != len(weights):
            raise ValueError(f"weight_std: {len(stds)} values for {len(weights)} weight layers")
        rng = np.random if seed is None else np.random.default_rng(seed)
        for name, std in zip(weights, stds):
            W = self.params[name]
            W[...] = std * rng.standard_normal(W.shape)
        for name in shapes:
            if name.startswith("gamma"):  # the book's batch normalization starts as the identity
                self.params[name][...] = 1

        self._layers = self._build_layers()
        self.layers = OrderedDict(self._layers)
        self.last_layer = SoftmaxWithLoss(backend=backend)

    # ---- structure -------------------------------------------------------------------------

    def describe(self) -> str:
        """For messages: 'a 784-50-10 network', 'a 1x28x28-conv30-pool-100-10 network'."""
        return architecture.describe(self.architecture)

    def _build_layers(self) -> list:
        """[(name, layer)] over views of the parameters, named as the book names them."""
        layers, counts, n_params = [], {}, 0
        backend = self.backend
        for spec in self._shapes:
            op = spec["op"]
            counts[op] = counts.get(op, 0) + 1
            name = f"{LAYER_NAMES[op]}{counts[op]}"
            if op in ("affine", "conv"):
                n_params += 1
                W, b = self.params[f"W{n_params}"], self.params[f"b{n_params}"]
                layer = (Affine(W, b, backend=backend) if op == "affine" else
                         Convolution(W, b, spec["stride"], spec["pad"], backend=backend))
            elif op == "pool":
                layer = Pooling(*spec["size"], spec["stride"], spec["pad"], backend=backend)
            elif op == "dropout":
                layer = Dropout(spec.get("ratio", 0.5), backend=backend)
            elif op == "batchnorm":
                k = counts[op]
                features = spec["params"][f"gamma{k}"]
                layer = BatchNormalization(self.params[f"gamma{k}"], self.params[f"beta{k}"], spec.get("momentum", 0.9),
                                           np.zeros(features), np.zeros(features), backend=backend)
            else:
                layer = {"relu": Relu, "sigmoid": Sigmoid}[op](backend=backend)
            layers.append((name, layer))
        return layers

    def _each_layer(self):
        """The layers in order: ``layers`` is an ordered dict, or a list as in the book's DeepConvNet."""
        return self.layers.values() if isinstance(self.layers, dict) else self.layers

    @property
    def param_layers(self) -> list:
        """The layers that hold parameters (affine, convolution), in the order of W1, W2, ..."""
        return [layer for _, layer in self._layers if isinstance(layer, (Affine, Convolution))]

    @property
    def norm_layers(self) -> list:
        """The batch normalization layers, in the order of gamma1, gamma2, ..."""
        return [layer for _, layer in self._layers if isinstance(layer, BatchNormalization)]

    def buffers(self) -> dict:
        """The batch normalization layers' running statistics (running_mean1, running_var1, ...),
        float64 as the layers keep them: saved with the weights."""
        out = {}
        for i, layer in enumerate(self.norm_layers, start=1):
            out[f"running_mean{i}"] = np.asarray(layer.running_mean, dtype=np.float64)
            out[f"running_var{i}"] = np.asarray(layer.running_var, dtype=np.float64)
        return out

    def set_buffers(self, buffers: dict) -> None:
        for i, layer in enumerate(self.norm_layers, start=1):
            layer.running_mean = np.array(buffers[f"running_mean{i}"], dtype=np.float64)
            layer.running_var = np.array(buffers[f"running_var{i}"], dtype=np.float64)

    def running_stats(self) -> np.ndarray:
        """The batch normalization layers' running statistics as the engine's stats buffer (a new
        float64 vector: running_mean1, running_var1, running_mean2, ...; engine.stats_size)."""
        parts = [part for part in self.buffers().values()]
        return np.concatenate(parts) if parts else np.empty(0)

    def set_running_stats(self, stats: np.ndarray) -> None:
        """The layers' running statistics from the engine's stats buffer (the inverse of running_stats)."""
        at = 0
        for layer in self.norm_layers:
            d = np.size(layer.running_mean)
            layer.running_mean, layer.running_var = stats[at:at + d].copy(), stats[at + d:at + 2 * d].copy()
            at += 2 * d

    @property
    def engine_runs_it(self) -> bool:
        """Whether the backends' engines run every op of the network (else it predicts and trains layer by layer)."""
        return bool(np.isin(self.program[:, engine.FIELD_CODE], engine.ENGINE_RUNS).all())

    def param_views(self, flat: np.ndarray) -> dict:
        """{'W1': ..., 'b1': ..., ...} as views into ``flat``, a buffer in the parameters' layout
        (the parameters themselves, gradients, optimizer state)."""
        views, at = {}, 0
        for name, shape in architecture.param_shapes(self.architecture).items():
            size = math.prod(shape)
            views[name] = flat[at:at + size].reshape(shape)
            at += size
        return views

    def check_params_in_place(self) -> None:
        """Fail loudly if a params entry was rebound instead of updated in place."""
        for name, view in self.param_views(self.flat_params).items():
            p = self.params.get(name)
            if p is None or p.shape != view.shape or not np.shares_memory(p, view):
                raise RuntimeError(
                    f"params[{name!r}] was replaced by a new array; update parameters in place "
                    f"(params[{name!r}][...] = value) so the layers and the flat buffer see it"
                )

    # ---- the book's API --------------------------------------------------------------------

    def as_input(self, x, name: str = "x") -> np.ndarray:
        """x as a batch (N, *input shape), checked (float, finite, the right size); one sample
        becomes a batch of one. Images may come flattened, flat rows as images (MNIST either way)."""
        x = check.float_array(name, x)
        size = math.prod(self.input_shape)
        if x.ndim >= 1 and x.size == size and (x.ndim == 1 or x.shape[0] != 1):
            x = x.reshape(1, -1)  # one sample
        if x.ndim < 2 or math.prod(x.shape[1:]) != size:
            images = f" (images of shape {self.input_shape}, or their flattened rows)" if len(self.input_shape) > 1 else ""
            raise ValueError(f"{name} of shape {x.shape} does not fit a network with {size} inputs{images}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} of shape {x.shape} holds no samples")
        check.finite(name, x)
        return x.reshape(x.shape[0], *self.input_shape)

    def predict(self, x, train_flg: bool = False):
        """The scores before the loss; ``train_flg`` switches dropout and batch normalization to
        training (the book's)."""
        for layer in self._each_layer():
            x = layer.forward(x, train_flg) if isinstance(layer, TRAIN_MODE_LAYERS) else layer.forward(x)
        return x

    def loss(self, x, t, train_flg: bool = True):
        """Softmax-with-loss of the scores, plus the weight decay term when there is one."""
        loss = self.last_layer.forward(self.predict(x, train_flg), t)
        return loss + self.decay_loss() if self.weight_decay_lambda else loss

    def decay_loss(self) -> float:
        """The book's weight decay term, lambda/2 sum W^2 over the weights (0 without decay)."""
        if not self.weight_decay_lambda:
            return 0.0
        squares = sum(float(np.sum(self.params[name].astype(np.float64) ** 2)) for name in self.params if name[0] == "W")
        return 0.5 * self.weight_decay_lambda * squares

    def gradient(self, x, t) -> dict:
        """Gradients by backpropagation (dropout in training mode), as arrays owned by the layers."""
        self.loss(x, t)
        dout = self.last_layer.backward(1)
        first, *rest = self._each_layer()
        for layer in reversed(rest):
            dout = layer.backward(dout)
        if hasattr(first, "backward_params"):
            first.backward_params(dout)  # the gradient of x itself would go unused
        else:
            first.backward(dout)
        grads = {}
        for i, layer in enumerate(self.param_layers, start=1):
            grads[f"W{i}"], grads[f"b{i}"] = layer.dW, layer.db
            if self.weight_decay_lambda:  # a new array, as the book's dW + lambda W
                grads[f"W{i}"] = layer.dW + layer.dW.dtype.type(self.weight_decay_lambda) * layer.W
        for i, layer in enumerate(self.norm_layers, start=1):
            grads[f"gamma{i}"], grads[f"beta{i}"] = layer.dgamma, layer.dbeta
        return grads

    def numerical_gradient(self, x, t) -> dict:
        """Gradients by central differences (slow: two forward passes per parameter)."""
        return {key: numerical_gradient(lambda _: self.loss(x, t), param) for key, param in self.params.items()}

    def prepare(self, x, name: str = "x", checked: bool = False) -> Prepared:
        """x checked once and kept as the backend's engine reads it fastest (native: a mostly-zero
        set feeding an affine op as its nonzeros), for repeated predict_labels and accuracy.
        ``checked``: x already came through as_input in the network's dtype (the trainer's sets),
        so its pass over every value for NaN and inf is not made twice."""
        x = x if checked else check.kernel_ready(self.as_input(x, name), self.dtype)
        ops = backends.get(self.backend)
        return Prepared(ops.prepare_rows(x, self.program) if self.engine_runs_it else x, x.shape[0], ops)

    def predict_labels(self, x) -> np.ndarray:
        """argmax of predict(x), on the backend's engine in large chunks; one sample gives one
        label; x may be prepared (:meth:`prepare`)."""
        if isinstance(x, Prepared):
            if self.engine_runs_it:
                return x.ops.predict_labels(x.rows, self.flat_params, self.program, self.running_stats())
            return self._layer_labels(x.rows)
        single = self._is_one_sample(x)
        labels = self._checked_labels(self.as_input(x))
        return labels[0] if single else labels

    def _checked_labels(self, x) -> np.ndarray:
        """predict_labels of an x that came through as_input (its pass over every value made once)."""
        ops = backends.get(self.backend)
        if not self.engine_runs_it:
            labels = self._layer_labels(x)
        elif x.dtype == self.dtype and x.flags.c_contiguous:
            labels = ops.predict_labels(x, self.flat_params, self.program, self.running_stats())
        elif x.dtype.char == "f" and self.dtype == np.float64 and getattr(ops, "MIXED_INPUT", False):
            # float32 images into a float64 net (the seed's): the backend converts (or compacts) as it reads
            labels = ops.predict_labels(check.kernel_ready(x, x.dtype), self.flat_params, self.program, self.running_stats())
        else:  # other dtypes, or a backend that reads only its own: convert a slice at a time, never the whole set
            labels, stats = np.empty(x.shape[0], dtype=np.int64), self.running_stats()
            for start in range(0, x.shape[0], engine.CONVERT_ROWS):
                part = check.kernel_ready(x[start:start + engine.CONVERT_ROWS], self.dtype)
                labels[start:start + part.shape[0]] = ops.predict_labels(part, self.flat_params, self.program, stats)
        return labels

    def _layer_labels(self, x, batch_size: int = engine.CONVERT_ROWS) -> np.ndarray:
        labels = np.empty(x.shape[0], dtype=np.int64)
        for start in range(0, x.shape[0], batch_size):
            labels[start:start + batch_size] = np.argmax(self.predict(x[start:start + batch_size]), axis=1)
        return labels

    def _is_one_sample(self, x) -> bool:
        """A flat sample (features,), or one image (C, H, W) of an image network."""
        shape = np.shape(x)
        return len(shape) == 1 or (len(self.input_shape) == 3 and shape == self.input_shape)

    def predict_proba(self, x) -> np.ndarray:
        """Softmax of predict(x): class probabilities, (N, classes), or (classes,) for one sample."""
        single = self._is_one_sample(x)
        x = self.as_input(x)
        probs = np.empty((x.shape[0], self.n_classes), dtype=np.result_type(x, self.dtype))
        ops = backends.get(self.backend)
        zeros = np.zeros(min(x.shape[0], engine.CONVERT_ROWS), dtype=np.int64)
        for start in range(0, x.shape[0], engine.CONVERT_ROWS):
            logits = check.kernel_ready(self.predict(x[start:start + engine.CONVERT_ROWS]), probs.dtype)
            _, probs[start:start + logits.shape[0]] = ops.softmax_cross_entropy_forward(logits, zeros[:logits.shape[0]])
        return probs[0] if single else probs

    def accuracy(self, x, t, batch_size: int = 100) -> float:
        """The fraction of samples whose predicted label is t (integer labels or one-hot rows);
        x may be prepared (:meth:`prepare`), and then t must be int64 labels. ``batch_size`` is
        the book's argument: the engine predicts in its own chunks, with the same result."""
        if isinstance(x, Prepared):
            return float(np.sum(self.predict_labels(x) == t) / x.n)
        if self._is_one_sample(x):  # one sample: its label a scalar, or one one-hot row
            t = np.asarray(t).reshape(1, *np.shape(t))
        x = self.as_input(x)
        labels = check.class_labels(t, x.shape[0], self.n_classes)
        return float(np.sum(self._checked_labels(x) == labels) / x.shape[0])

    # ---- weights files ---------------------------------------------------------------------

    def save(self, path, **run_state) -> None:
        """Weights and architecture to ``.npz`` (fastbp.checkpoint); a training run adds its
        ``optimizer``, ``optimizer_state`` and ``step`` so that it can be resumed."""
        checkpoint.save(path, self.architecture, self.params, buffers=self.buffers(), **run_state)

    def save_params(self, file_name="params.pkl") -> None:
        """The book's: the params as a pickled dict (``.pkl``); a ``.npz`` name saves as :meth:`save`."""
        if Path(file_name).suffix == ".npz":
            self.save(file_name)
        else:
            checkpoint.save_pickle(file_name, self.params)

    def load_params(self, file_name="params.pkl") -> None:
        """Copy saved weights into this network (same architecture), in place: a ``.npz`` written by
        :meth:`save`, or the book's pickled dict (read without running any code from the file)."""
        if Path(file_name).suffix == ".npz":
            saved = checkpoint.read(file_name)
            if saved.architecture != self.architecture:
                raise ValueError(f"{file_name}: saved for {architecture.describe(saved.architecture)}, not {self.describe()}")
            params = saved.params
            self.set_buffers(saved.buffers)
        else:  # the book's pickle holds no running statistics (nor does the book's own load)
            params = checkpoint.read_pickle(file_name, architecture.param_shapes(self.architecture))
        for key, param in self.params.items():
            param[...] = params[key]

    @classmethod
    def load(cls, path, **kwargs) -> "SequentialNet":
        """A network rebuilt from a ``.npz`` written by :meth:`save` (every array checked first)."""
        saved = checkpoint.read(path)
        kwargs.setdefault("dtype", saved.dtype)
        net = cls._from_saved(path, saved, **kwargs)
        for key, param in net.params.items():
            param[...] = saved.params[key]
        net.set_buffers(saved.buffers)
        return net

    @classmethod
    def _from_saved(cls, path, saved: checkpoint.Saved, **kwargs) -> "SequentialNet":
        return SequentialNet(saved.architecture, 0.0, **kwargs)

