"""Choosing backends: globally, per layer, by environment variable; and the numba warning policy."""

import subprocess
import sys
import types

import numpy as np
import pytest

import fastbp
from fastbp import backends


def test_all_backends_are_available_and_native_is_the_default():
    assert fastbp.available_backends() == ["native", "numba", "reference"]
    assert fastbp.get_backend() == "native"


def test_every_available_backend_implements_every_op():
    for name in fastbp.available_backends():
        module = backends.get(name)
        assert all(callable(getattr(module, op)) for op in backends.OPS), name


def test_an_incomplete_backend_is_not_offered_and_says_why(monkeypatch):
    partial = types.ModuleType("fastbp.backends.partial")
    partial.relu_forward = lambda x: x  # one op of many
    monkeypatch.setitem(sys.modules, "fastbp.backends.partial", partial)
    monkeypatch.setattr(backends, "KNOWN", backends.KNOWN + ("partial",))
    monkeypatch.setattr(backends, "_unavailable", {})
    assert "partial" not in fastbp.available_backends()
    assert "does not implement affine_forward" in backends.unavailable()["partial"]
    with pytest.raises(fastbp.BackendUnavailable, match="partial"):
        fastbp.set_backend("partial")


def test_native_backend_is_complete_and_offered():
    assert "native" in fastbp.available_backends()
    assert "native" not in backends.unavailable()


def test_set_backend_and_use_backend():
    fastbp.set_backend("reference")
    assert fastbp.get_backend() == "reference"
    layer = fastbp.Relu()
    assert layer.ops is backends.get("reference")
    with fastbp.use_backend("numba"):
        assert layer.ops is backends.get("numba")  # unpinned layers follow the global choice
    assert fastbp.get_backend() == "reference"


def test_a_pinned_layer_ignores_the_global_choice():
    layer = fastbp.Relu(backend="numba")
    with fastbp.use_backend("reference"):
        assert layer.ops is backends.get("numba")


def test_environment_variable_picks_the_default():
    code = "import fastbp; print(fastbp.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], env={"FASTBP_BACKEND": "reference", "PATH": ""},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "reference"
    bad = subprocess.run([sys.executable, "-c", code], env={"FASTBP_BACKEND": "cuda", "PATH": ""},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "FASTBP_BACKEND='cuda'" in bad.stderr


def test_numba_performance_warning_is_an_error_in_this_suite():
    from numba import njit
    from numba.core.errors import NumbaPerformanceWarning

    @njit
    def dot(a, b):
        return np.dot(a, b)

    a = np.ones((4, 6))[:, ::2]  # 'A' layout: numba would copy it silently before BLAS
    # no local filter: pyproject.toml's filterwarnings must turn the warning into an error,
    # so a kernel that is ever handed such an array fails the suite
    with pytest.raises(NumbaPerformanceWarning):
        dot(a, np.ones((3, 2)))

