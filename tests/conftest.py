import importlib.machinery
import sys
from pathlib import Path

import numpy as np
import pytest


def path_without_the_checkout(root: Path, path: list[str]) -> list[str]:
    """sys.path for the tests. ``python -m pytest`` puts the current folder first on it; in a
    source checkout with a regular (non-editable) install, the checkout's fastbp/ holds no
    compiled extension and would shadow the installed package. Then the checkout goes off the
    path; it stays where it is the only fastbp (or an editable install points at it)."""
    if any((root / "fastbp").glob("_native*")):  # built in place: the checkout is complete
        return path
    others = [p for p in path if Path(p or ".").resolve() != root]
    installed = importlib.machinery.PathFinder.find_spec("fastbp", others)
    return others if installed is not None else path


sys.path[:] = path_without_the_checkout(Path(__file__).resolve().parent.parent, sys.path)

import fastbp  # noqa: E402  (after the path is settled)

BACKENDS = fastbp.available_backends()
DTYPES = [np.float64, np.float32]


@pytest.fixture(autouse=True, scope="session")
def _no_writes_to_the_users_cache(tmp_path_factory):
    """The suite's downloads and decoded MNIST copies go to a folder of its own, not ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=["float64", "float32"])
def dtype(request):
    return request.param


ISAS = ("base", "avx2", "avx512")


@pytest.fixture(params=ISAS)
def row_isa(request):
    """Runs a test with the native kernels that choose their instruction set at run time (products
    on compact rows, compaction, large softmax) on each one this CPU has, not only its best, then
    restores the one in use."""
    if "native" not in fastbp.available_backends():
        pytest.skip("the native backend is not built here")
    from fastbp import _native

    in_use, best = _native.isa()
    if ISAS.index(request.param) > ISAS.index(best):
        pytest.skip(f"this CPU has no {request.param} (its best: {best})")
    _native.isa(request.param)
    yield request.param
    _native.isa(in_use)


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


@pytest.fixture(autouse=True)
def _restore_global_backend():
    """Tests that change the global backend must not leak it into other tests."""
    before = fastbp.get_backend()
    yield
    fastbp.set_backend(before)
