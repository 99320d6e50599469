"""Networks with the book's API, each a :class:`fastbp.sequential.SequentialNet` (one flat
parameter buffer, the engine's program, the book's ``params``, ``layers``, ``predict``, ``loss``,
``accuracy``, ``gradient``, ``numerical_gradient``):

- ``TwoLayerNet`` and ``MultiLayerNet``: the seed's MLPs (chapter 5);
- ``SimpleConvNet`` (chapter 7) and ``DeepConvNet`` (chapter 8), with the book's constructors;
  their ``save_params``/``load_params`` read and write the book's ``.pkl`` files too.

With ``np.random.seed(s)`` and no ``seed``, each network draws the book's initial weights.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import _validate as check
from . import architecture, checkpoint
from .sequential import Prepared, SequentialNet  # noqa: F401  (Prepared: what prepare returns)


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


class MultiLayerNet(SequentialNet):
    """Affine -> activation -> ... -> Affine -> SoftmaxWithLoss, of any depth.

    ``hidden_size_list=[50]`` is the seed's TwoLayerNet. ``dtype`` is the parameters' dtype
    (float32 trains faster; float64 suits gradient checks). ``seed`` makes the initial weights
    reproducible; without it they come from NumPy's global generator, like the seed's.
    The book's options (its MultiLayerNet and MultiLayerNetExtend): ``weight_decay_lambda``
    (lambda/2 sum W^2 on the loss, lambda W on each dW), ``use_dropout`` with ``dropout_ration``
    (a Dropout after each hidden activation), ``use_batchnorm`` (a BatchNormalization before each
    hidden activation; the fused engine updates its running statistics as the layer does); ``weight_init_std``
    also takes the book's 'relu' and 'sigmoid' for 'he' and 'xavier'.
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
        weight_decay_lambda=0,
        use_dropout: bool = False,
        dropout_ration=0.5,
        use_batchnorm: bool = False,
    ):
        sizes = [input_size, *hidden_size_list, output_size]
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ValueError(f"layer sizes must be positive integers, got {sizes}")
        if activation not in architecture.ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(architecture.ACTIVATIONS)}, got {activation!r}")
        self.sizes = np.array(sizes, dtype=np.int64)
        self.activation = activation
        if isinstance(weight_init_std, str) and weight_init_std.lower() in ("relu", "sigmoid"):  # the book's names
            weight_init_std = {"relu": "he", "sigmoid": "xavier"}[weight_init_std.lower()]
        stds = [init_std(weight_init_std, int(fan_in), activation) for fan_in in sizes[:-1]]
        for name, flag in (("use_dropout", use_dropout), ("use_batchnorm", use_batchnorm)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        self.use_dropout, self.use_batchnorm = bool(use_dropout), bool(use_batchnorm)
        arch = architecture.mlp(sizes, activation, check.scalar("dropout_ration", dropout_ration) if use_dropout else None,
                                batchnorm=self.use_batchnorm)
        super().__init__(arch, stds, dtype=dtype, backend=backend, seed=seed, weight_decay_lambda=weight_decay_lambda)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @classmethod
    def _from_saved(cls, path, saved: checkpoint.Saved, **kwargs) -> "MultiLayerNet":
        found = architecture.extended_mlp(saved.architecture)
        if found is None:
            raise ValueError(f"{path}: holds {architecture.describe(saved.architecture)}, not an MLP; "
                             f"load it with fastbp.sequential.SequentialNet.load")
        sizes, activation, use_batchnorm, use_dropout, ratio = found
        return cls(sizes[0], sizes[1:-1], sizes[-1], activation=activation, use_batchnorm=use_batchnorm,
                   use_dropout=use_dropout, dropout_ration=ratio, **kwargs)


class TwoLayerNet(MultiLayerNet):
    """The seed's network: Affine1 -> Relu1 -> Affine2 -> SoftmaxWithLoss, float64 weights of
    standard deviation ``weight_init_std``."""

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, *,
                 dtype=np.float64, backend=None, seed=None):
        super().__init__(input_size, [hidden_size], output_size, activation="relu",
                         weight_init_std=weight_init_std, dtype=dtype, backend=backend, seed=seed)

    @classmethod
    def _from_saved(cls, path, saved: checkpoint.Saved, **kwargs) -> "TwoLayerNet":
        mlp = saved.mlp
        if mlp is None or len(mlp[0]) != 3 or mlp[1] != "relu":
            raise ValueError(f"{path}: {architecture.describe(saved.architecture)} is not a TwoLayerNet (one ReLU "
                             f"hidden layer); load it with MultiLayerNet.load")
        return cls(*mlp[0], **kwargs)


def _image_shape(input_dim) -> tuple[int, int, int]:
    if not isinstance(input_dim, (tuple, list)) or len(input_dim) != 3:
        raise ValueError(f"input_dim must be (channels, height, width), got {input_dim!r}")
    return tuple(check.positive_int(f"input_dim[{i}]", v) for i, v in enumerate(input_dim))


class SimpleConvNet(SequentialNet):
    """The book's chapter 7 network: conv - relu - pool - affine - relu - affine - softmax.

    The book's constructor and numbers (``conv_param`` filter_num, filter_size, pad, stride;
    2 x 2 max pooling of stride 2; weights of standard deviation ``weight_init_std``) and
    ``layers`` Conv1, Relu1, Pool1, Affine1, Relu2, Affine2. Float64 like the book's unless
    ``dtype`` says otherwise.
    """

    def __init__(self, input_dim=(1, 28, 28), conv_param=None, hidden_size=100, output_size=10,
                 weight_init_std=0.01, *, dtype=np.float64, backend=None, seed=None):
        conv = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}
        if conv_param is not None:
            unknown = set(conv_param) - set(conv)
            if unknown:
                raise ValueError(f"conv_param: unknown key {sorted(unknown)[0]!r}; keys are {', '.join(conv)}")
            conv.update(conv_param)
        arch = {"input": list(_image_shape(input_dim)), "layers": [
            {"op": "conv", "filters": conv["filter_num"], "size": conv["filter_size"], "stride": conv["stride"],
             "pad": conv["pad"]},
            {"op": "relu"}, {"op": "pool", "size": 2, "stride": 2},
            {"op": "affine", "out": hidden_size}, {"op": "relu"}, {"op": "affine", "out": output_size}]}
        super().__init__(arch, check.scalar("weight_init_std", weight_init_std), dtype=dtype, backend=backend, seed=seed)


class DeepConvNet(SequentialNet):
    """The book's chapter 8 network: (conv - relu - conv - relu - pool) x 3 with 16, 16, 32, 32,
    64, 64 filters of 3 x 3 - affine 50 - relu - dropout - affine 10 - dropout - softmax.

    The book's constructor, He initial weights and ``layers`` (a list, as the book's). On the
    layer path dropout draws from ``np.random.rand`` as the book's does; the fused engine draws
    from its own generator (fastbp/engine.py), seeded by the trainer's seed.
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1=None, conv_param_2=None, conv_param_3=None,
                 conv_param_4=None, conv_param_5=None, conv_param_6=None,
                 hidden_size=50, output_size=10, *, dropout_ratio=0.5, dtype=np.float64, backend=None, seed=None):
        defaults = [(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]  # the book's filters and pads
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6)
        convs = []
        for i, ((filters, pad), param) in enumerate(zip(defaults, given), start=1):
            conv = {"filter_num": filters, "filter_size": 3, "pad": pad, "stride": 1}
            if param is not None:
                unknown = set(param) - set(conv)
                if unknown:
                    raise ValueError(f"conv_param_{i}: unknown key {sorted(unknown)[0]!r}; keys are {', '.join(conv)}")
                conv.update(param)
            convs.append({"op": "conv", "filters": conv["filter_num"], "size": conv["filter_size"],
                          "stride": conv["stride"], "pad": conv["pad"]})
        layers = []
        for i, conv in enumerate(convs):
            layers += [conv, {"op": "relu"}]
            if i % 2 == 1:
                layers.append({"op": "pool", "size": 2, "stride": 2})
        layers += [{"op": "affine", "out": hidden_size}, {"op": "relu"}, {"op": "dropout", "ratio": dropout_ratio},
                   {"op": "affine", "out": output_size}, {"op": "dropout", "ratio": dropout_ratio}]
        arch = {"input": list(_image_shape(input_dim)), "layers": layers}
        # He: sqrt(2 / fan_in), each layer's fan-in (the book's pre_node_nums)
        stds = [np.sqrt(2.0 / np.prod(s["params"][w][1:] if s["op"] == "conv" else s["params"][w][:1]))
                for s in architecture.shapes(arch) for w in s["params"] if w.startswith("W")]
        super().__init__(arch, stds, dtype=dtype, backend=backend, seed=seed)
        self.layers = [layer for _, layer in self._layers]  # the book's DeepConvNet keeps a list
