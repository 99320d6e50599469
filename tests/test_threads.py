"""fastbp.threads: one thread setting for numba's driver and the native kernels, checked."""

import numba
import numpy as np
import pytest

import fastbp
from fastbp import reference
from fastbp.testing import check_layer
from fastbp.threads import get_num_threads, set_num_threads


def test_threads_setting_is_shared_and_checked():
    set_num_threads(1)
    assert get_num_threads() == 1 == numba.get_num_threads()
    if "native" in fastbp.available_backends():
        from fastbp import _native

        assert _native.openmp() in (0, 1)
    set_num_threads(numba.config.NUMBA_NUM_THREADS)
    with pytest.raises(ValueError, match="at most"):
        set_num_threads(numba.config.NUMBA_NUM_THREADS + 1)
    with pytest.raises(ValueError, match="positive integer"):
        set_num_threads(0)


def test_numbas_driver_splits_rows_and_every_slice_is_computed(monkeypatch, rng):
    """Rows split across threads must cover every row once: a large array on 2 threads matches
    the reference (and the driver really split it)."""
    import fastbp.backends.numba as numba_backend

    monkeypatch.setattr(numba_backend, "PARALLEL_MIN_ELEMENTS", 1)
    set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    calls = []
    real = numba_backend._relu_forward
    monkeypatch.setattr(numba_backend, "_relu_forward", lambda *a: calls.append(a[0].shape) or real(*a))
    x = rng.standard_normal((37, 11))
    check_layer(fastbp.Relu(backend="numba"), reference.Relu(), x, gradcheck=False)
    assert sum(shape[0] for shape in calls) == x.size and len(calls) == numba.get_num_threads()
    t = rng.integers(0, 11, 37)
    check_layer(fastbp.SoftmaxWithLoss(backend="numba"), reference.SoftmaxWithLoss(), x, t, gradcheck=False)
    set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert np.all(np.isfinite(x))


def test_openmp_threads_spin_briefly_unless_the_user_chose(monkeypatch):
    import fastbp.threads as threads

    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.configure_openmp()
    import os

    assert os.environ["GOMP_SPINCOUNT"] == threads.SPIN_COUNT
    monkeypatch.setenv("GOMP_SPINCOUNT", "7")
    threads.configure_openmp()
    assert os.environ["GOMP_SPINCOUNT"] == "7"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.configure_openmp()
    assert "GOMP_SPINCOUNT" not in os.environ
