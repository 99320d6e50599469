"""Backends: modules of functions with identical signatures that do the layers' math.

``reference`` is plain NumPy and is the specification; ``numba`` holds JIT-compiled kernels;
``native`` wraps the ahead-of-time compiled C of fastbp._native. A backend is offered only when
it implements every operation in ``OPS``.

Pick one globally with :func:`set_backend` or :func:`use_backend`, or per layer with the
``backend=`` argument of a layer or network. The default is the fastest backend that loads,
or the one named by the ``FASTBP_BACKEND`` environment variable.

Every backend function follows one contract, which the layers guarantee before calling:
arrays are C-contiguous and share one float dtype (float32 or float64), shapes are consistent,
class labels are int64 indices in range; a backend that sets ``MIXED_INPUT`` also takes the affine
ops' x in float32 with float64 weights (the book's images into its nets: converted as read). The
numba and reference functions trust it; the native extension checks lengths, dtypes and ranges
once more, so that a direct call cannot read out of bounds. The engine's operations (train_steps, predict_labels; fastbp/engine.py) take a data set
in the form the backend's prepare_rows gave it: the array itself, or the native compact rows.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from types import ModuleType

# The operations every backend implements, with the same signatures (see reference.py).
OPS = (
    "affine_forward",
    "affine_backward",
    "relu_forward",
    "relu_backward",
    "exp",
    "sigmoid_forward",
    "sigmoid_backward",
    "softmax_cross_entropy_forward",
    "softmax_cross_entropy_backward",
    "mse_forward",
    "mse_backward",
    "dropout_forward",
    "dropout_forward_numpy",
    "dropout_backward",
    "batchnorm_forward",
    "batchnorm_infer",
    "batchnorm_backward",
    "conv_forward",
    "conv_backward",
    "pool_forward",
    "pool_backward",
    "optimizer_step",
    "prepare_rows",
    "train_steps",
    "predict_labels",
)

# Known backends, fastest first (benchmarks/RESULTS.md): the default is the first one available.
# native leads: the fused MNIST experiment runs 2.6-3.3x faster than on numba, with no JIT warm-up.
KNOWN = ("native", "numba", "reference")


class BackendUnavailable(RuntimeError):
    """A backend was asked for that cannot be loaded here; the message says why."""


_loaded: dict[str, ModuleType] = {}
_unavailable: dict[str, str] = {}
_current: str | None = None
generation = 0  # changes with the global backend: layers cache the module they resolved until then


def _load(name: str) -> ModuleType:
    if name in _loaded:
        return _loaded[name]
    if name not in KNOWN:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(KNOWN)}")
    if name in _unavailable:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {_unavailable[name]}")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except Exception as exc:  # a broken build or a missing dependency must not take the other backends down
        _unavailable[name] = f"import failed ({type(exc).__name__}: {exc})"
        raise BackendUnavailable(f"backend {name!r} is unavailable: {_unavailable[name]}") from exc
    missing = [op for op in OPS if not callable(getattr(module, op, None))]
    if missing:
        _unavailable[name] = f"it does not implement {', '.join(missing)} yet"
        raise BackendUnavailable(f"backend {name!r} is unavailable: {_unavailable[name]}")
    _loaded[name] = module
    return module


def available() -> list[str]:
    """Names of the backends that load on this machine, fastest first."""
    names = []
    for name in KNOWN:
        try:
            _load(name)
        except BackendUnavailable:
            continue
        names.append(name)
    return names


def unavailable() -> dict[str, str]:
    """Backends that cannot be used here, each with the reason."""
    available()
    return dict(_unavailable)


def _default_name() -> str:
    requested = os.environ.get("FASTBP_BACKEND")
    if requested:
        try:
            _load(requested)
        except (ValueError, BackendUnavailable) as exc:
            raise BackendUnavailable(f"FASTBP_BACKEND={requested!r}: {exc}") from exc
        return requested
    for name in KNOWN:  # the first that loads: the others are not imported (numba takes a second)
        try:
            _load(name)
            return name
        except BackendUnavailable:
            continue
    raise BackendUnavailable(f"no backend loads here: {unavailable()}")


def current() -> str:
    """The name of the global backend (what layers with ``backend=None`` use)."""
    global _current
    if _current is None:
        _current = _default_name()
    return _current


def check_name(name: str | None) -> str | None:
    """Validate a backend name early (at layer construction), so a typo fails where it is made."""
    if name is not None:
        _load(name)
    return name


def get(name: str | None = None) -> ModuleType:
    """The backend module called ``name``, or the global one when ``name`` is None."""
    return _load(current() if name is None else name)


def set_backend(name: str) -> None:
    """Make ``name`` the global backend."""
    global _current, generation
    _load(name)
    _current = name
    generation += 1


@contextlib.contextmanager
def use_backend(name: str):
    """Use ``name`` as the global backend inside a ``with`` block."""
    previous = current()
    set_backend(name)
    try:
        yield get(name)
    finally:
        set_backend(previous)
