"""Weights files (``.npz``): a network's architecture and parameters, and optionally the optimizer
state and step count of the run that wrote them (for ``fastbp train --resume``).

Keys: ``architecture`` (a JSON string, fastbp/architecture.py), ``W1 b1 W2 b2 ...``; with a run's
state also ``optimizer`` (str), ``optimizer_state`` (2 x parameter count, the flat layout of
fastbp/engine.py), ``step`` (steps done). Files of fastbp 0.1 spell an MLP's architecture as
``sizes`` (int, the layer widths) and ``activation`` (str); they are read as they are.

Reading checks every array's declared shape and dtype against the architecture from the file's
headers before any parameter is read, so a crafted file cannot make fastbp allocate what it
declares; then that every parameter is finite. Each problem is a ValueError naming the file and
the key. The book's pickled parameter dicts (``params.pkl``) are read by :func:`read_pickle`,
which builds arrays and nothing else.
"""

from __future__ import annotations

import json
import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _validate as check
from . import architecture as arch_
from . import engine

RUN_KEYS = ("optimizer", "optimizer_state", "step")
ARCHITECTURE_CHARS = 1 << 20  # a sequential network's JSON is a few hundred characters


@dataclass
class Saved:
    """What a weights file holds, checked."""

    architecture: dict  # normalized (fastbp/architecture.py)
    dtype: np.dtype
    params: dict  # W1, b1, ... as arrays
    buffers: dict = field(default_factory=dict)  # running_mean1, running_var1, ... (float64)
    optimizer: str | None = None
    optimizer_state: np.ndarray | None = None  # (2, parameter count)
    step: int = 0

    @property
    def mlp(self):
        """(sizes, activation) of an MLP, else None."""
        return arch_.as_mlp(self.architecture)


def save(path, architecture: dict, params: dict, optimizer: str | None = None, optimizer_state=None,
         step: int = 0, buffers: dict | None = None) -> None:
    arrays = {"architecture": np.array(json.dumps(arch_.normalized(architecture))), **params, **(buffers or {})}
    if optimizer is not None:
        arrays.update(optimizer=np.array(optimizer), optimizer_state=optimizer_state, step=np.int64(step))
    np.savez(path, **arrays)


def _headers(path: Path) -> dict:
    """{key: (shape, dtype)} of every array in the .npz, read from the headers only."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"unexpected member {info.filename!r}")
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                headers[info.filename[:-4]] = (tuple(shape), np.dtype(dtype))
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a weights file written by fastbp ({exc})") from exc
    return headers


def _fail(path, key, problem):
    raise ValueError(f"{path}: {key!r} {problem}")


def read(path) -> Saved:
    """A weights file, checked (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such weights file")
    headers = _headers(path)
    if "W1" not in headers:
        _fail(path, "W1", "is missing: not a weights file written by fastbp")
    with np.load(path, allow_pickle=False) as data:
        architecture = _read_architecture(path, data, headers)
        # every parameter's declared shape and dtype, before reading any
        param_dtype = headers["W1"][1]
        if param_dtype not in check.FLOAT_DTYPES:
            _fail(path, "W1", f"has dtype {param_dtype}, expected float32 or float64")
        expected = arch_.param_shapes(architecture)
        buffers = arch_.buffer_shapes(architecture)
        declares = f"{arch_.describe(architecture)} has {sum(k[0] == 'W' for k in expected)} weight layers"
        for key, want in {**expected, **buffers}.items():
            if key not in headers:
                _fail(path, key, f"is missing ({declares})")
            got_shape, got_dtype = headers[key]
            if got_shape != want:
                _fail(path, key, f"has shape {got_shape}, expected {want} for {arch_.describe(architecture)}")
            if got_dtype != (np.float64 if key in buffers else param_dtype):
                _fail(path, key, f"has dtype {got_dtype}, expected " + ("float64" if key in buffers else f"{param_dtype} like W1"))
        unknown = set(headers) - set(expected) - set(buffers) - {"architecture", "sizes", "activation", *RUN_KEYS}
        if unknown:
            _fail(path, sorted(unknown)[0], f"is not a key of a weights file ({declares})")
        arrays = {}
        for key in [*expected, *buffers]:
            arrays[key] = data[key]
            if not np.isfinite(arrays[key]).all():
                _fail(path, key, f"has {int(np.sum(~np.isfinite(arrays[key])))} non-finite values (NaN or inf)")
            if key.startswith("running_var") and (arrays[key] < 0).any():
                _fail(path, key, "has negative variances")
        saved = Saved(architecture, param_dtype, {k: arrays[k] for k in expected}, {k: arrays[k] for k in buffers})
        if "optimizer" in headers:
            _read_run_state(path, data, headers, saved)
    return saved


def _read_architecture(path, data, headers) -> dict:
    """The file's architecture: its JSON, or the sizes and activation of a fastbp 0.1 MLP file."""
    if "architecture" in headers:
        shape, dtype = headers["architecture"]
        if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * ARCHITECTURE_CHARS:
            _fail(path, "architecture", f"must be a JSON string of at most {ARCHITECTURE_CHARS} characters, "
                                        f"got shape {shape} of {dtype}")
        try:
            return arch_.normalized(json.loads(str(data["architecture"])))
        except (ValueError, TypeError, AttributeError) as exc:
            _fail(path, "architecture", f"does not describe a network: {exc}")
    for key in ("sizes", "activation"):
        if key not in headers:
            _fail(path, key, "is missing: not a weights file written by fastbp (no 'architecture' either)")
    shape, dtype = headers["sizes"]
    if len(shape) != 1 or shape[0] < 2 or dtype.kind not in "iu":
        _fail(path, "sizes", f"must be a 1-D integer array of at least 2 layer widths, got shape {shape} of {dtype}")
    sizes = data["sizes"].tolist()
    if not all(s > 0 for s in sizes):
        _fail(path, "sizes", f"must be positive, got {sizes}")
    activation = data["activation"]
    if activation.dtype.kind != "U" or activation.ndim != 0 or str(activation) not in arch_.ACTIVATIONS:
        _fail(path, "activation", f"must be one of {arch_.ACTIVATIONS}, got {activation!r}")
    try:
        return arch_.normalized(arch_.mlp(sizes, str(activation)))
    except ValueError as exc:
        _fail(path, "sizes", str(exc))


def _read_run_state(path, data, headers, saved: Saved) -> None:
    count = sum(math.prod(shape) for shape in arch_.param_shapes(saved.architecture).values())
    for key in RUN_KEYS:
        if key not in headers:
            _fail(path, key, "is missing: a file with an optimizer holds its state and step too")
    if headers["optimizer_state"] != ((2, count), saved.dtype):
        _fail(path, "optimizer_state", f"has shape and dtype {headers['optimizer_state']}, expected ((2, {count}), {saved.dtype})")
    saved.optimizer = str(data["optimizer"])
    if saved.optimizer not in engine.OPTIMIZERS:
        _fail(path, "optimizer", f"must be one of {sorted(engine.OPTIMIZERS)}, got {saved.optimizer!r}")
    saved.optimizer_state = data["optimizer_state"]
    if not np.isfinite(saved.optimizer_state).all():
        _fail(path, "optimizer_state", "has non-finite values (NaN or inf)")
    step = data["step"]
    if step.ndim != 0 or step.dtype.kind not in "iu" or int(step) < 0:
        _fail(path, "step", f"must be a non-negative integer, got {step!r}")
    saved.step = int(step)


# ---- the book's pickled parameters ---------------------------------------------------------

class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays, dtypes and plain containers; any other class is refused, so that a
    .pkl file cannot run code (plain pickle.load would run whatever the file names)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED or (module.startswith("numpy") and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a parameters file holds arrays only")


def save_pickle(path, params: dict) -> None:
    """The book's save_params: a dict of arrays, pickled."""
    with open(path, "wb") as f:
        pickle.dump({key: np.array(value) for key, value in params.items()}, f)


def read_pickle(path, shapes: dict) -> dict:
    """A pickled dict of parameters (the book's ``params.pkl``) with exactly the keys and shapes
    of ``shapes``, each finite; a ValueError naming the file and key otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such parameters file")
    try:
        with open(path, "rb") as f:
            params = _ArraysOnly(f).load()
    except Exception as exc:  # a truncated or foreign file fails in many ways; each is "not a params file"
        raise ValueError(f"{path}: not a pickled dict of parameters ({exc})") from exc
    if not isinstance(params, dict):
        raise ValueError(f"{path}: holds a {type(params).__name__}, expected a dict of parameters")
    for key, want in shapes.items():
        value = params.get(key)
        if not isinstance(value, np.ndarray) or value.shape != tuple(want) or value.dtype.kind != "f":
            got = f"{value.dtype} of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            _fail(path, key, f"is {got if key in params else 'missing'}, expected a float array of shape {tuple(want)}")
        if not np.isfinite(value).all():
            _fail(path, key, f"has {int(np.sum(~np.isfinite(value)))} non-finite values (NaN or inf)")
    unknown = set(params) - set(shapes)
    if unknown:
        _fail(path, sorted(map(str, unknown))[0], f"is not a parameter of this network ({', '.join(shapes)})")
    return params
