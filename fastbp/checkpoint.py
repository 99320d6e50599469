"""Weights files (``.npz``): a network's architecture and parameters, and optionally the optimizer
state and step count of the run that wrote them (for ``fastbp train --resume``).

Keys: ``sizes`` (int, the layer widths), ``activation`` (str), ``W1 b1 W2 b2 ...``; with a run's
state also ``optimizer`` (str), ``optimizer_state`` (2 x parameter count, the flat layout of
fastbp/engine.py), ``step`` (steps done).

Reading checks every array's declared shape and dtype against ``sizes`` from the file's headers
before any array is read, so a crafted file cannot make fastbp allocate what its sizes declare;
then that every parameter is finite. Each problem is a ValueError naming the file and the key.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _validate as check
from . import engine

ACTIVATIONS = ("relu", "sigmoid")
RUN_KEYS = ("optimizer", "optimizer_state", "step")


@dataclass
class Saved:
    """What a weights file holds, checked."""

    sizes: list[int]
    activation: str
    dtype: np.dtype
    params: dict  # W1, b1, ... as arrays
    optimizer: str | None = None
    optimizer_state: np.ndarray | None = None  # (2, parameter count)
    step: int = 0


def save(path, sizes, activation: str, params: dict, optimizer: str | None = None, optimizer_state=None,
         step: int = 0) -> None:
    arrays = {"sizes": np.asarray(sizes, dtype=np.int64), "activation": np.array(activation), **params}
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
    for key in ("sizes", "activation", "W1"):
        if key not in headers:
            _fail(path, key, "is missing: not a weights file written by fastbp")
    shape, dtype = headers["sizes"]
    if len(shape) != 1 or shape[0] < 2 or dtype.kind not in "iu":
        _fail(path, "sizes", f"must be a 1-D integer array of at least 2 layer widths, got shape {shape} of {dtype}")
    with np.load(path, allow_pickle=False) as data:
        sizes = data["sizes"].tolist()
        if not all(s > 0 for s in sizes):
            _fail(path, "sizes", f"must be positive, got {sizes}")
        n_layers = len(sizes) - 1
        # every parameter's declared shape and dtype, before reading any
        param_dtype = headers["W1"][1]
        if param_dtype not in check.FLOAT_DTYPES:
            _fail(path, "W1", f"has dtype {param_dtype}, expected float32 or float64")
        expected = {}
        for i in range(1, n_layers + 1):
            expected[f"W{i}"] = (sizes[i - 1], sizes[i])
            expected[f"b{i}"] = (sizes[i],)
        for key, want in expected.items():
            if key not in headers:
                _fail(path, key, f"is missing (sizes {sizes} declare {n_layers} layers)")
            got_shape, got_dtype = headers[key]
            if got_shape != want:
                _fail(path, key, f"has shape {got_shape}, expected {want} for layer sizes {sizes}")
            if got_dtype != param_dtype:
                _fail(path, key, f"has dtype {got_dtype}, expected {param_dtype} like W1")
        unknown = set(headers) - set(expected) - {"sizes", "activation", *RUN_KEYS}
        if unknown:
            _fail(path, sorted(unknown)[0], f"is not a key of a weights file (sizes {sizes} declare {n_layers} layers)")
        activation = data["activation"]
        if activation.dtype.kind != "U" or activation.ndim != 0 or str(activation) not in ACTIVATIONS:
            _fail(path, "activation", f"must be one of {ACTIVATIONS}, got {activation!r}")
        params = {}
        for key in expected:
            params[key] = data[key]
            if not np.isfinite(params[key]).all():
                _fail(path, key, f"has {int(np.sum(~np.isfinite(params[key])))} non-finite values (NaN or inf)")
        saved = Saved(sizes, str(activation), param_dtype, params)
        if "optimizer" in headers:
            _read_run_state(path, data, headers, saved)
    return saved


def _read_run_state(path, data, headers, saved: Saved) -> None:
    count = engine.parameter_count(saved.sizes)
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
