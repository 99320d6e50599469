"""A sequential network's architecture: its input shape and a list of layers, plain data that a
weights file stores as JSON. From it come the parameters' shapes (their order in the flat buffer),
the engine's program (fastbp/engine.py) and the layer objects of fastbp.layers.

    {"input": [1, 28, 28], "layers": [
        {"op": "conv", "filters": 30, "size": [5, 5], "stride": 1, "pad": 0},
        {"op": "relu"}, {"op": "pool", "size": [2, 2], "stride": 2, "pad": 0},
        {"op": "affine", "out": 100}, {"op": "relu"}, {"op": "affine", "out": 10}]}

Layers: ``affine`` (out), ``conv`` (filters, size [h, w], stride, pad), ``pool`` (max pooling:
size, stride, pad), ``relu``, ``sigmoid``, ``dropout`` (ratio), ``batchnorm`` (momentum: the
book's BatchNormalization, each feature of a sample one feature). Softmax with cross-entropy always
follows the last layer. Parameters are named as the book names them: W1, b1, W2, b2, ... in the
order of the affine and conv layers, gamma1, beta1, ... of the batchnorm layers; a batchnorm
layer also keeps buffers (running_mean1, running_var1, ...: not trained, but saved).
"""

from __future__ import annotations

import math

import numpy as np

from . import _validate as check
from . import engine

OPS = ("affine", "conv", "pool", "relu", "sigmoid", "dropout", "batchnorm")
ACTIVATIONS = ("relu", "sigmoid")
PARAM_OPS = ("affine", "conv")


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1 or value > 2**31 - 1:
        raise ValueError(f"architecture: {name} must be a positive integer below 2^31, got {value!r}")
    return int(value)


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"architecture: {name} must be an integer or two, got {value!r}")
    return _positive(name, value[0]), _positive(name, value[1])


def shapes(arch: dict) -> list[dict]:
    """Each layer with its input and output shape per sample (``in``, ``out``) and its parameters'
    shapes (``params``: {name: shape}); a ValueError naming what does not fit."""
    if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list) or not arch["layers"]:
        raise ValueError("architecture: needs 'input' (a sample's shape) and a non-empty list of 'layers'")
    shape = tuple(_positive("input size", s) for s in arch.get("input", ()))
    if len(shape) not in (1, 3):
        raise ValueError(f"architecture: input must be (features,) or (channels, height, width), got {arch.get('input')!r}")
    out, n_params, n_norms = [], 0, 0
    for i, layer in enumerate(arch["layers"]):
        op = layer.get("op") if isinstance(layer, dict) else None
        if op not in OPS:
            raise ValueError(f"architecture: layer {i} has op {op!r}; ops are {', '.join(OPS)}")
        entry = dict(layer, **{"in": shape})
        params = {}
        if op == "affine":
            width = _positive("affine out", layer.get("out"))
            n_params += 1
            params = {f"W{n_params}": (math.prod(shape), width), f"b{n_params}": (width,)}
            shape = (width,)
        elif op in ("conv", "pool"):
            if len(shape) != 3:
                raise ValueError(f"architecture: layer {i} ({op}) needs images (C, H, W), gets {shape}")
            (kh, kw), stride = _pair(f"{op} size", layer.get("size")), _positive(f"{op} stride", layer.get("stride", 1))
            pad = layer.get("pad", 0)
            if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or not 0 <= pad < 2**20:
                raise ValueError(f"architecture: {op} pad must be a non-negative integer, got {pad!r}")
            what = "Convolution" if op == "conv" else "Pooling"
            oh = check.window_output(what, shape[1], kh, stride, pad, "height")
            ow = check.window_output(what, shape[2], kw, stride, pad, "width")
            channels = shape[0]
            if op == "conv":
                channels = _positive("conv filters", layer.get("filters"))
                n_params += 1
                params = {f"W{n_params}": (channels, shape[0], kh, kw), f"b{n_params}": (channels,)}
            entry.update(size=[kh, kw], stride=stride, pad=int(pad))
            shape = (channels, oh, ow)
        elif op == "dropout":
            ratio = layer.get("ratio", 0.5)
            if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
                raise ValueError(f"architecture: dropout ratio must lie in [0, 1), got {ratio!r}")
        elif op == "batchnorm":
            momentum = layer.get("momentum", 0.9)
            if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
                raise ValueError(f"architecture: batchnorm momentum must lie in [0, 1], got {momentum!r}")
            n_norms += 1
            features = (math.prod(shape),)
            params = {f"gamma{n_norms}": features, f"beta{n_norms}": features}
            entry["buffers"] = {f"running_mean{n_norms}": features, f"running_var{n_norms}": features}
        entry.update(out=shape, params=params)
        out.append(entry)
    if len(shape) != 1:
        raise ValueError(f"architecture: the last layer must give class scores (classes,), gives {shape}")
    return out


def normalized(arch: dict) -> dict:
    """``arch`` checked, every layer's settings written out (defaults included), as plain JSON data:
    two architectures of the same network compare equal."""
    layers = []
    for layer in shapes(arch):
        op = layer["op"]
        entry = {"op": op}
        if op == "affine":
            entry["out"] = int(layer["out"][0])
        elif op in ("conv", "pool"):
            if op == "conv":
                entry["filters"] = int(layer["out"][0])
            entry.update(size=list(layer["size"]), stride=layer["stride"], pad=layer["pad"])
        elif op == "dropout":
            entry["ratio"] = float(layer.get("ratio", 0.5))
        elif op == "batchnorm":
            entry["momentum"] = float(layer.get("momentum", 0.9))
        layers.append(entry)
    return {"input": [int(s) for s in shapes(arch)[0]["in"]], "layers": layers}


def as_mlp(arch: dict):
    """(sizes, activation) when ``arch`` is an MLP (affine and one activation in turn), else None."""
    arch = normalized(arch)
    ops = [layer["op"] for layer in arch["layers"]]
    activation = ops[1] if len(ops) > 1 else "relu"
    if activation not in ACTIVATIONS or ops != (["affine", activation] * len(ops))[:len(ops)] or ops[-1] != "affine":
        return None
    return [arch["input"][0]] + [layer["out"] for layer in arch["layers"] if layer["op"] == "affine"], activation


def extended_mlp(arch: dict):
    """MultiLayerNet's arguments (sizes, activation, use_batchnorm, use_dropout, dropout ratio)
    when ``arch`` is what ``mlp`` builds with any of its options, else None."""
    arch = normalized(arch)
    plain = [layer for layer in arch["layers"] if layer["op"] not in ("batchnorm", "dropout")]
    found = as_mlp({"input": arch["input"], "layers": plain})
    if found is None:
        return None
    norms = [layer for layer in arch["layers"] if layer["op"] == "batchnorm"]
    drops = [layer for layer in arch["layers"] if layer["op"] == "dropout"]
    ratio = drops[0]["ratio"] if drops else 0.5
    options = bool(norms), bool(drops), ratio
    if normalized(mlp(found[0], found[1], ratio if drops else None, batchnorm=bool(norms))) != arch:
        return None  # options elsewhere than mlp puts them (or momenta and ratios that differ)
    return (*found, *options)


def describe(arch: dict) -> str:
    """For messages: 'a 784-50-10 network', 'a 1x28x28-conv30-pool-100-10 network'."""
    parts = ["x".join(str(int(s)) for s in arch["input"])]
    for layer in arch["layers"]:
        if layer["op"] == "affine":
            parts.append(str(layer["out"]))
        elif layer["op"] in ("conv", "pool"):
            parts.append("conv" + str(layer["filters"]) if layer["op"] == "conv" else "pool")
    sigmoid = any(layer["op"] == "sigmoid" for layer in arch["layers"])  # ReLU unless said
    norm = any(layer["op"] == "batchnorm" for layer in arch["layers"])
    return f"a {'-'.join(parts)} {'sigmoid ' if sigmoid else ''}{'batch-normalized ' if norm else ''}network"


def param_shapes(arch: dict) -> dict:
    """{W1: shape, b1: shape, ...} in the flat buffer's order."""
    return {name: s for layer in shapes(arch) for name, s in layer["params"].items()}


def buffer_shapes(arch: dict) -> dict:
    """{running_mean1: shape, running_var1: shape, ...}: the batchnorm layers' running statistics."""
    return {name: s for layer in shapes(arch) for name, s in layer.get("buffers", {}).items()}


def classes(arch: dict) -> int:
    return shapes(arch)[-1]["out"][0]


def program(arch: dict) -> np.ndarray:
    """The engine's program of ``arch`` (fastbp/engine.py), the softmax loss last."""
    records, at, stats_at = [], 0, 0
    for layer in shapes(arch):
        n_in, n_out = math.prod(layer["in"]), math.prod(layer["out"])
        op = layer["op"]
        if op == "affine":
            records.append(engine.op_record(engine.AFFINE, n_in, n_out, at))
        elif op in ("relu", "sigmoid"):
            records.append(engine.op_record(engine.ACTIVATIONS[op], n_in, n_out))
        elif op in ("conv", "pool"):
            c, h, w = layer["in"]
            ch, oh, ow = layer["out"]
            record = engine.op_record(engine.CONV if op == "conv" else engine.POOL, n_in, n_out, at)
            record[engine.FIELD_SHAPE:engine.FIELD_SHAPE + 9] = (c, h, w, ch, *layer["size"], layer["stride"], layer["pad"], oh)
            record[engine.FIELD_SHAPE + 9] = ow
            records.append(record)
        elif op == "batchnorm":
            records.append(engine.batchnorm_record(n_in, at, layer.get("momentum", 0.9), stats_at))
            stats_at += 2 * n_in
        else:
            records.append(engine.op_record(engine.DROPOUT, n_in, n_out))
            records[-1][engine.FIELD_RATIO] = int(round(layer.get("ratio", 0.5) * engine.RATIO_SCALE))
        at += sum(math.prod(s) for s in layer["params"].values())
    out = math.prod(shapes(arch)[-1]["out"])
    records.append(engine.op_record(engine.SOFTMAX_LOSS, out, out))
    return np.stack(records)


def mlp(sizes, activation: str, dropout_ratio: float | None = None, batchnorm: bool = False) -> dict:
    """The architecture of an MLP of layer widths ``sizes`` (input first); as the book's
    MultiLayerNetExtend, a batchnorm before each hidden activation with ``batchnorm``, a dropout
    after it with ``dropout_ratio``."""
    layers = []
    for i, width in enumerate(sizes[1:]):
        layers.append({"op": "affine", "out": int(width)})
        if i < len(sizes) - 2:
            layers += [{"op": "batchnorm"}] if batchnorm else []
            layers.append({"op": activation})
            if dropout_ratio is not None:
                layers.append({"op": "dropout", "ratio": dropout_ratio})
    return {"input": [int(sizes[0])], "layers": layers}
